"""Latency at a fixed low rate, quickly: the bare pipeline or the services, optionally traced per hop.

    python -m loadtest.latency_probe reference --runs 3 --seconds 15 [--trace DIR]
    python -m loadtest.latency_probe services --runs 3 --seconds 20 --persons 400 [--trace DIR]

Starts the processes in a fresh namespace (services: loads a small world through the feeds),
warms up until the broker's JIT settles (loadtest.warmup), then ``--runs`` fixed-rate replays of
``--seconds`` each, prints p50/p95/p99 of each run and their medians, stops the processes and
deletes the namespace's topics. With ``--trace DIR`` every stage runs under ``loadtest.traced``
and ``loadtest.hops`` summarises DIR. Extra environment for the processes: ``--env KEY=VALUE``
(repeatable; e.g. the reference pipeline's ``LOADTEST_PRODUCER_OPTIONS``). ``--instances pricing=2``
runs a second instance of a service in its consumer groups, as ``loadtest.bench`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from loadtest.checks import MIN_SETTLED_SHARE, run_passed, settled_share
from loadtest.generator import DayOptions, write_day, write_refdata
from loadtest.hops import MEASURED_FROM
from loadtest.observe import ProcessSampler, infrastructure_pids
from loadtest.procs import (REFERENCE_STAGES, SERVICES, Processes, env_pair, instances, not_passed_on,
                            own_database, transaction_versions)
from loadtest.replay import Pace, replay_file
from loadtest.warmup import ROUND_SECONDS, add_arguments as add_warmup_arguments, summary as warm_summary, warm_up
from loadtest.world import World
from yidi.platform.kafka import ensure_topics
from yidi.platform.settings import Settings
from yidi.refdata.loader import load

ROOT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    print(f"probe: {text}", file=sys.stderr, flush=True)


def _spawn(procs: Processes, name: str, module_argv: list[str], up: str, trace: Path | None,
           env: dict[str, str]) -> None:
    argv = [sys.executable, "-m"]
    if trace:
        argv += ["loadtest.traced", str(trace / f"{name}.jsonl"), *module_argv]
    elif "LOADTEST_KAFKA_SOURCE" in env:
        argv += ["loadtest.traced", "-", *module_argv]
    else:
        argv += module_argv
    procs._spawn(name, argv, env)
    procs.up[name] = up


async def probe(args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    settings = Settings().model_copy(update={"namespace": f"probe{tag}."})
    if args.target != "services":  # the bare pipeline uses no database
        return await _probe(args, tag, settings)
    async with own_database(settings, f"p{tag}") as settings:
        return await _probe(args, tag, settings)


async def _probe(args: argparse.Namespace, tag: str, settings: Settings) -> dict[str, Any]:
    work = (args.dir or ROOT / "loadtest" / "results" / f"probe-{tag}")
    work.mkdir(parents=True, exist_ok=True)
    trace = args.trace
    if trace:
        trace.mkdir(parents=True, exist_ok=True)
    env = dict(args.env)
    if ignored := not_passed_on():
        say(f"not passed on to the processes (they get the code's defaults and --env): {', '.join(ignored)}")
    world = World(persons=args.persons, seed=args.seed, run_id=f"P{tag.upper()}")
    warmup = work / "warmup.jsonl"
    write_day(world, DayOptions(settlements=300, seed=args.seed + 2, tag=f"W{tag}"), warmup)
    days = []
    for i in range(args.runs):
        day = work / f"day{i}.jsonl"
        write_day(world, DayOptions(settlements=int(args.rate * args.seconds), seed=args.seed + 10 + i,
                                    tag=f"R{i}{tag}"), day)
        days.append(day)
    await ensure_topics(settings)
    procs = Processes(settings, work / "logs")
    results: list[dict[str, Any]] = []
    warm_ok = True
    try:
        if args.target == "reference":
            for stage in REFERENCE_STAGES:
                _spawn(procs, f"ref-{stage}", [args.reference_module, "--stage", stage], f"ref-{stage}",
                       trace, env)
        else:
            for service in SERVICES:
                _spawn(procs, service, [f"services.{service}"], service, trace, env)
                for n in range(2, args.instances.get(service, 1) + 1):
                    _spawn(procs, f"{service}@{n}", [f"services.{service}"], service, trace,
                           env | {"YIDI_INSTANCE": str(n)})
        await procs.wait_ready()
        if args.target == "services":
            write_refdata(world, work / "refdata.json")
            t = time.monotonic()
            await load(str(work / "refdata.json"), bootstrap=settings.kafka_bootstrap, namespace=settings.namespace,
                       wait=600)
            say(f"reference data applied in {time.monotonic() - t:.0f}s")

        def round_day(k: int) -> Path:
            day = work / f"warmup{k + 1}.jsonl"
            write_day(world, DayOptions(settlements=int(args.rate * ROUND_SECONDS), seed=args.seed + 100 + k,
                                        tag=f"W{k + 1}{tag}"), day)
            return day

        warm = await warm_up(warmup, round_day, bootstrap=settings.kafka_bootstrap, namespace=settings.namespace,
                             rate=args.rate, broker_pid=infrastructure_pids().get("kafka"),
                             max_seconds=args.warmup_seconds, say=say)
        say("warm-up: " + warm_summary(warm))
        warm_ok = all(r["exactly_once"]["ok"] for r in warm["results"])
        if not warm_ok:
            say("warm-up: **not exactly once**: " + "; ".join(r["exactly_once"]["summary"] for r in warm["results"]
                                                          if not r["exactly_once"]["ok"]))
        if trace:
            # loadtest.hops leaves out what was traced before this: the warm-up's batches of ~200 records
            # otherwise pass for the fixed-rate runs' slowest deliveries.
            (trace / MEASURED_FROM).write_text(f"{time.time() * 1000:.0f}\n")
        for i, day in enumerate(days):
            if args.pause:
                await asyncio.sleep(args.pause)
            sampler = ProcessSampler(procs.pids() | infrastructure_pids() | {"load tool": os.getpid()})
            sampler.start()
            r = await replay_file(day, bootstrap=settings.kafka_bootstrap, namespace=settings.namespace,
                                  pace=Pace(rate=args.rate, window=2000), progress=False)
            resources = await sampler.stop()
            cpu = {name: round(v.get("cpu_s", 0.0), 1) for name, v in resources.items()}
            lat = r["latency_ms"]
            # The bench's checks, not exactly-once alone (a review, session 46): a setting that has
            # eligibility refuse every settlement answers after one hop, fast, and measures nothing.
            checks = probe_checks(r)
            say(f"run {i}: {r['answers_matched']} answers at {r['throughput_per_s']}/s: p50 {lat['p50']} "
                f"p95 {lat['p95']} p99 {lat['p99']} max {lat['max']} ms; {r['exactly_once']['summary']}"
                f"{'' if checks['ok'] else '; **not measuring the platform**: ' + checks['why']}; CPU s {cpu}")
            results.append({k: r[k] for k in ("latency_ms", "throughput_per_s", "exactly_once", "err_codes")}
                           | {"cpu_s": cpu, "checks": checks})
    finally:
        codes = procs.stop_all()
        if any(c not in (0, None) for c in codes.values()):
            say(f"exit codes {codes}")
        if not args.keep_topics:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            await admin.start()
            try:
                topics = [t for t in await admin.list_topics() if t.startswith(settings.namespace)]
                if topics:
                    await admin.delete_topics(topics)
            finally:
                await admin.close()
    summary = {k: round(statistics.median(r["latency_ms"][k] for r in results), 2)
               for k in ("p50", "p95", "p99", "max")}
    say(f"median of {len(results)} runs: " + ", ".join(f"{k} {v} ms" for k, v in summary.items()))
    out = {"target": args.target, "env": env, "kafka_transactions": transaction_versions(work / "logs", procs.log_starts),
           "runs": results, "median": summary,
           "warm_up_exactly_once": warm_ok, "exactly_once": warm_ok and all(r["exactly_once"]["ok"] for r in results),
           "checks_ok": all(r["checks"]["ok"] for r in results)}
    (work / "probe.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return out


def probe_checks(result: dict[str, Any]) -> dict[str, Any]:
    """A probe run's checks, as the bench's paced runs have them (``checks.run_passed``): exactly
    once, most settlements settled, no earlier run's msgids, and the pace held. ``why``: what failed."""
    why = []
    if not result["exactly_once"]["ok"]:
        why.append("not exactly once")
    share = settled_share(result)
    if share is not None and share < MIN_SETTLED_SHARE:
        why.append(f"{share:.0%} of the settlements settled (err_codes {dict(result.get('err_codes') or {})})")
    if result.get("answered_before_run") or result.get("reused_msgids"):
        why.append("an earlier run's msgids answered from the store or refused MODIFIED_REQUEST")
    if result.get("short_of_pace"):
        why.append("the run fell behind its pace")
    ok = run_passed(result) and not result.get("short_of_pace")
    return {"ok": ok, "why": "; ".join(why), "settled_share": None if share is None else round(share, 4),
            "short_of_pace": bool(result.get("short_of_pace"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.latency_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["reference", "services"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--persons", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--instances", type=instances, default={}, metavar="SERVICE=N[,SERVICE=N]",
                        help="run N instances of a service in its consumer groups (services only)")
    add_warmup_arguments(parser)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--trace", type=Path, help="trace every stage into this folder (loadtest.traced)")
    parser.add_argument("--env", type=env_pair, action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the processes (repeatable); the shell's YIDI_* variables are not passed on")
    parser.add_argument("--dir", type=Path, help="work folder (default loadtest/results/probe-<tag>)")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--reference-module", default="loadtest.reference_pipeline",
                        help="the bare pipeline's module (an experiment's variant of it)")
    args = parser.parse_args(argv)
    out = asyncio.run(probe(args))
    sys.exit(0 if out["exactly_once"] and out["checks_ok"] else 1)


if __name__ == "__main__":
    main()
