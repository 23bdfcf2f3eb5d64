"""``make bench``: a bounded day replayed against Yidi and the bare pipeline, measured, recorded.

    python -m loadtest.bench [--settlements 40000] [--rate 100 --rate-seconds 30] [--no-docs]

1. generates a world and the days (loadtest.generator) under loadtest/results/<timestamp>/;
2. starts the four services in a fresh namespace with a database of their own (dropped at the end),
   loads the world through the feeds;
3. warms up until the broker's JIT compiler has settled (loadtest.warmup), then replays a
   fixed-rate run at the national peak hour's rate (21.6/s), one at 100/s (the latency target),
   then the whole day
   as fast as a window of outstanding answers allows (throughput), checking exactly-once and the
   ledger after each; samples RSS and CPU of every process and the stage metrics before and after;
   when 2,000/s is out of reach, bisects with short paced runs for the highest rate held with p99
   under 250 ms (``rate_high``);
4. optionally profiles the services with py-spy during one more max-rate replay;
5. vacuums the run's database (the bare pipeline does not use Postgres, and autovacuum catching up
   on the services' runs would take CPU from it), then runs the bare pipeline
   (loadtest.reference_pipeline) in its own namespace under the same day, three times by default
   (``--reference-rounds``; its figure is the median round's), then at 100/s;
6. runs the eligibility micro-benchmark (Redis warm, Redis down);
7. writes report.json and report.png, prints the headline, appends docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import contextlib
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from loadtest import report as rpt
from loadtest.bench_eligibility import bench as bench_eligibility
from loadtest.generator import DayOptions, peak_hour_rate, write_day, write_refdata
from loadtest.observe import (ProcessSampler, gc_deltas, histogram_quantiles, infrastructure_pids, scrape, stage_deltas, start_profile,
                              top_frames)
from loadtest.procs import (REFERENCE_STAGES, SERVICES, Processes, bench_database, child_settings, env_pair, instances,
                            not_passed_on, own_database, postgres_settings, transaction_versions)
from loadtest.checks import MIN_SETTLED_SHARE, run_passed, settled_share
from loadtest.replay import Pace, replay_file, sweep
from loadtest import warmup
from loadtest.world import World
from yidi.platform.db import execute_alone
from yidi.platform.errors import YidiError
from yidi.platform.kafka import delete_namespace_topics, ensure_topics
from yidi.platform.settings import Settings
from yidi.refdata.loader import load

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = {"pre_settlements": 0.02, "cancellations": 0.005, "duplicates": 0.005, "malformed": 0.002}
STEADY_P99_MS = 250.0  # the bound of the 2,000/s target: the steady search finds the rate that keeps it
# The busiest hour of a 2024-like national day (650,000 settlements, clinic-hour peaks): the rate
# the platform actually meets, against which 100/s is a target with room to grow.
PEAK_RATE = peak_hour_rate(rpt.DAY_SETTLEMENTS)


def _round_rate(rate: float) -> int:
    """A probe's rate: a multiple of 25/s from 100/s, of 5/s below (a slow machine still gets a
    search), at least 5."""
    step = 25 if rate >= 100 else 5
    return max(5, int(rate / step) * step)


def passed(result: dict[str, Any]) -> bool:
    """Whether a replay's checks passed: exactly once, the ledger where it was read, and most
    settlements settled."""
    return run_passed(result)


def verdict(result: dict[str, Any]) -> tuple[bool, str]:
    """A replay's checks: ``passed``, and their summary."""
    text = result["exactly_once"]["summary"] + ("; " + result["ledger"]["summary"] if "ledger" in result else "")
    share = settled_share(result)
    if result.get("answered_before_run"):
        text += f"; {result['answered_before_run']} answers were made before the run began (an earlier run's msgids)"
    if result.get("reused_msgids"):
        text += (f"; {result['reused_msgids']} requests were refused MODIFIED_REQUEST (an earlier run's msgids "
                 "with other payloads)")
    if result.get("stalled"):
        text += f"; {result['stalled']}"
    if share is not None and share < MIN_SETTLED_SHARE:
        text += (f"; only {share:.1%} of {result['settlements']['answered']} settlements settled "
                 f"(errors: {result.get('err_codes')})")
    return passed(result), text


def verdicts(results: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> tuple[bool, str]:
    """``verdict`` of one replay, or of several summed up (a warm-up's rounds), the failed quoted."""
    if len(results) == 1:
        return verdict(results[0])
    failed = [verdict(r)[1] for r in results if not passed(r)]
    if failed:
        return False, "; ".join(failed)
    ledger = "" if any("ledger" not in r for r in results) else " and ledger = answers"
    return True, f"{len(results)} replays, {sum(r['sends'] for r in results)} sends, each exactly once{ledger}"


def _held(run: dict[str, Any]) -> bool:
    """A paced run held its rate: sent on pace, p99 under ``STEADY_P99_MS``, its checks passed."""
    p99 = run["latency_ms"].get("p99")
    return not run.get("short_of_pace") and p99 is not None and p99 < STEADY_P99_MS and passed(run)


def checks_passed(report: dict[str, Any]) -> bool:
    """Whether a bench passed its checks (its exit code): every run's, and the other replays' and
    sweeps'. A bench that failed writes its report.json all the same (loadtest.summary reads it)."""
    return all(passed(run) for run in report["runs"].values()) and all(report.get("other_checks_ok", {}).values())


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of median throughput, marked with its number and how many there were: one short run of
    the bare pipeline moved by a third between benches on one machine in one hour (docs/BENCHMARKS.md,
    2026-12-05 16:30 UTC), so the yardstick is a median. Of an even count the upper middle one (the
    smaller share of it: the target is not flattered); a round without a throughput is not a
    candidate unless none has one."""
    measured = [k for k, r in enumerate(rounds) if r.get("throughput_per_s")] or list(range(len(rounds)))
    order = sorted(measured, key=lambda k: rounds[k].get("throughput_per_s") or 0.0)
    k = order[len(order) // 2]
    return {**rounds[k], "round": k + 1, "rounds": len(rounds)}


def round_summary(run: dict[str, Any]) -> dict[str, Any]:
    """A bare round in report["reference_rounds"]: its throughput, p99 and checks, and the CPU seconds
    of every process sampled in it (the bare stages, the broker, Redis, Postgres, the load tool)."""
    return {"throughput_per_s": run["throughput_per_s"], "p99_ms": run["latency_ms"].get("p99"),
            "cpu_s_all_processes": round(rpt.all_cpu_s(run.get("resources", {})), 2),
            "exactly_once": run["exactly_once"]["ok"]}


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.id = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.dir = (args.results or ROOT / "loadtest" / "results") / self.id
        self.dir.mkdir(parents=True, exist_ok=True)
        base = Settings()
        tag = uuid.uuid4().hex[:6]
        self.settings = base.model_copy(update={"namespace": f"bench{tag}."})
        self.ref_settings = base.model_copy(update={"namespace": f"bref{tag}."})
        self.run_id = f"B{tag.upper()}"
        self.env = dict(args.env)
        self.report: dict[str, Any] = {
            "started": rpt.stamp(), "commit": rpt.commit(), "machine": rpt.machine(),
            "command": ("make bench  # python -m loadtest.bench " + shlex.join(sys.argv[1:])).strip(),
            "results_dir": str(self.dir.relative_to(ROOT)) if self.dir.is_relative_to(ROOT) else str(self.dir),
            "window": args.window, "env": self.env, "runs": {}, "notes": [],
        }

    # Days ----------------------------------------------------------------------------------------

    def _day(self, name: str, settlements: int, seed: int, extras: bool = True, tag: str = "") -> Path:
        options = DayOptions(settlements=settlements, seed=seed, tag=tag or f"{name[0].upper()}{self.run_id}",
                             **(EXTRAS if extras else {}))
        path = self.dir / f"day-{name}.jsonl"
        kinds = write_day(self.world, options, path)
        self.report.setdefault("days", {})[name] = {"settlements": settlements, "lines": kinds}
        return path

    # Runs ----------------------------------------------------------------------------------------

    async def _measured(self, name: str, procs: Processes, day: Path, pace: Pace, settings: Settings,
                        ledger: bool, keep: bool = True) -> dict[str, Any]:
        ports = {n: procs.ports[n] for n in procs.procs}
        before = {n: scrape(p) for n, p in ports.items()}
        # The load tool itself (this process: replay, sampling) shares the box: it is measured too.
        infrastructure = infrastructure_pids()
        sampler = ProcessSampler(procs.pids() | infrastructure | {"load tool": os.getpid()},
                                 jit_pid=infrastructure.get("kafka"))
        sampler.start()
        say(f"{name}: {pace.describe()}")
        resources: dict[str, Any] = {}

        async def replayed() -> None:  # before the ledger check: its queries are the tool's, not the system's
            resources.update(await sampler.stop())

        result = await replay_file(day, bootstrap=settings.kafka_bootstrap, namespace=settings.namespace, pace=pace,
                                   database_url=settings.database_url if ledger else None, label=f"{name} ",
                                   replayed=replayed)
        result["resources"] = resources
        result["cpu_window_s"] = round(sampler.window_s, 3)
        result["cpu_steal_share"] = sampler.steal_share
        result["broker_jit_cores"] = sampler.broker_jit_cores
        after = {n: scrape(p) for n, p in ports.items()}
        result["stages"] = {stage if "@" not in n else f"{stage} ({n})": s
                            for n in ports for stage, s in stage_deltas(before[n], after[n]).items()}
        result["gc"] = {n: gc_deltas(before[n], after[n]) for n in ports}
        # The services' own clock: from a request's publish to its answer's commit, by the service
        # that answered (eligibility its refusals, clearing the settlements), without the replay's read:
        # within the replay's latency, so never above its exact maximum (buckets are read linearly).
        ceiling = (result.get("latency_ms") or {}).get("max")
        result["service_latency_ms"] = {
            service if "@" not in n else f"{service} ({n})": q for n in ports
            for service, q in histogram_quantiles(before[n], after[n], "yidi_settlement_latency_seconds", "service",
                                                  ceiling_ms=ceiling).items()}
        if keep:
            self.report["runs"][name] = result
        else:
            self._other_check(name, result)
        say(f"{name}: {result['throughput_per_s']}/s, p99 {result['latency_ms']['p99']} ms; {verdict(result)[1]}")
        return result

    async def services(self) -> None:
        args, s = self.args, self.settings
        await ensure_topics(s)
        procs = Processes(s, self.dir / "logs")
        for service in SERVICES:
            procs.start_service(service, self.env)
            for n in range(2, args.instances.get(service, 1) + 1):
                procs.start_service(service, self.env, instance=str(n))
        try:
            await procs.wait_ready()
            say(f"services ready in namespace {s.namespace}; loading {len(self.world.persons)} persons and their filings")
            started = time.monotonic()
            counts = await load(str(self.dir / "refdata.json"), bootstrap=s.kafka_bootstrap, namespace=s.namespace,
                                wait=900)
            self.report["refdata_load"] = {"records": counts, "seconds": round(time.monotonic() - started, 1)}
            say(f"reference data applied in {time.monotonic() - started:.0f}s")
            await self._warm_up("warm-up", s, ledger=True)
            if self.peak_day:
                await self._measured("rate_peak", procs, self.peak_day, Pace(rate=PEAK_RATE, window=args.window), s,
                                     True)
            if self.rate_day:  # --rate-seconds 0: not run (the report says so)
                await self._measured("rate_100", procs, self.rate_day, Pace(rate=args.rate, window=args.window), s, True)
            full = await self._measured("max", procs, self.max_day, Pace(window=args.window), s, True)
            if (full["throughput_per_s"] or 0) >= 2000 * 1.1:
                day = self._day("rate2000", 2000 * 20, args.seed + 4, tag=f"T{self.run_id}")  # rate100's is R
                await self._measured("rate_2000", procs, day, Pace(rate=2000, window=args.window), s, True)
            elif args.high_seconds > 0 and full["throughput_per_s"]:
                # 2,000/s is out of reach: the highest steady rate this machine holds with p99 under
                # 250 ms (the max run's latency is queueing in its window, not what a steady load sees).
                await self._steady(procs, full["throughput_per_s"], self.report["runs"].get("rate_100"))
            if args.profile_seconds > 0:
                await self._profile(procs, full["throughput_per_s"] or 100)
        finally:
            self.report["exit_codes"] = procs.stop_all()
        await self._sweep("every answer, swept after the services stopped", s)
        measured = [*self.report["runs"].values(), *self.report.get("steady", {}).get("probes", [])]
        # Every service process, further instances (pricing@2) included: the target is per process.
        names = dict.fromkeys(name for run in measured for name in run.get("resources", {})
                              if name.partition("@")[0] in SERVICES)
        self.report["rss_max_mib"] = {
            name: max(run["resources"][name]["rss_max_mib"] for run in measured if name in run.get("resources", {}))
            for name in names
        }

    def _warm_round(self, k: int) -> Path:
        """The warm-up's round ``k`` (the same day for the services and the bare pipeline)."""
        path = self.dir / f"day-warmup{k + 1}.jsonl"
        if path.exists():
            return path
        return self._day(f"warmup{k + 1}", int(self.args.rate * warmup.ROUND_SECONDS), self.args.seed + 100 + k,
                         extras=False, tag=f"W{k + 1}{self.run_id}")

    async def _warm_up(self, name: str, settings: Settings, ledger: bool) -> None:
        """A burst, then rounds at ``--rate`` until the broker's JIT has settled (loadtest.warmup):
        the measured runs then see the broker a platform in service has, not one still compiling."""
        args = self.args
        say(f"{name}: rounds at {args.rate:g}/s until the broker's JIT settles (at most {args.warmup_seconds:g} s)")
        warm = await warmup.warm_up(
            self.warmup, self._warm_round, bootstrap=settings.kafka_bootstrap, namespace=settings.namespace,
            rate=args.rate, broker_pid=infrastructure_pids().get("kafka"),
            database_url=settings.database_url if ledger else None, max_seconds=args.warmup_seconds, say=say)
        self._other_check(name, *warm.pop("results"))
        self.report.setdefault("warm_ups", {})[name] = warm
        say(f"{name}: " + warmup.summary(warm))

    async def _steady(self, procs: Processes, max_tput: float, fixed: dict[str, Any] | None = None) -> None:
        """Bisect for the highest fixed rate the system holds (sends on pace) with p99 under
        ``STEADY_P99_MS``: ``--steady-steps`` paced runs of ``--high-seconds``, between 0 and the max
        run's throughput, starting half way. The fixed-rate run (``rate_100`` at ``--rate``,
        ``fixed``) is the search's first point: when it held, the probes go above ``--rate`` only, and
        it is the answer when none of them holds (``steady["held_by"]``); before 2026-12-05 17:45 a
        bench on a slow machine read "no rate tried held" while its 100/s run had. The fastest probe
        that held is kept as ``rate_high``; when nothing held, the last one tried; when only the
        fixed-rate run held, none (it is in the table already). Every probe is listed in ``steady``."""
        args = self.args
        lo, hi = 0.0, float(max_tput)
        best: dict[str, Any] | None = None
        held_by: str | None = None
        if fixed is not None and _held(fixed) and args.rate < hi:
            lo, best, held_by = float(args.rate), fixed, "rate_100"
        rate = _round_rate((lo + hi) / 2)
        probes: list[dict[str, Any]] = []
        last: dict[str, Any] | None = None
        # (lo is 0 unless the fixed-rate run held; then no rate on the grid may lie above it.)
        for step in range(args.steady_steps if rate > lo else 0):
            day = self._day(f"steady{step}", int(rate * args.high_seconds), args.seed + 10 + step,
                            tag=f"S{step}{self.run_id}")
            result = await self._measured(f"steady probe {step + 1} at {rate}/s", procs, day,
                                          Pace(rate=rate, window=args.window), self.settings, True, keep=False)
            p99 = result["latency_ms"]["p99"]
            held = _held(result)
            probes.append({"rate": rate, "sent_per_s": result["send_rate_per_s"], "p50_ms": result["latency_ms"].get("p50"),
                           "p99_ms": p99, "behind_p99_ms": result.get("behind_schedule_ms", {}).get("p99"),
                           "cpu_steal_share": result.get("cpu_steal_share"), "held": held,
                           "resources": result.get("resources", {})})
            last = result
            if held:
                lo = rate
                if best is None or result["throughput_per_s"] > best["throughput_per_s"]:
                    best, held_by = result, None
            else:
                hi = rate
            # Every rate tried is at most lo (held) or at least hi (not): only one between them is new.
            following = _round_rate((lo + hi) / 2)
            if following <= lo or following >= hi:
                break
            rate = following
        self.report["steady"] = {"p99_bound_ms": STEADY_P99_MS, "probes": probes,
                                 "rate": best["throughput_per_s"] if best else None}
        if held_by:
            self.report["steady"]["held_by"] = held_by
        # A probe that held, or (nothing held) the last one tried; not the fixed-rate run again.
        kept = last if best is None else None if held_by else best
        if kept is not None:
            self.report["runs"]["rate_high"] = kept

    async def _profile(self, procs: Processes, throughput: float) -> None:
        seconds = self.args.profile_seconds
        day = self._day("profile", int(throughput * (seconds + 10)), self.args.seed + 3)
        profilers = {}
        for service in ("eligibility", "pricing", "clearing"):
            p = start_profile(procs.procs[service].pid, self.dir / f"profile-{service}.txt", seconds)
            if p is None:
                self.report["notes"].append("py-spy not found: no profile")
                return
            profilers[service] = p
        say(f"profiling eligibility, pricing, clearing with py-spy for {seconds}s during a max-rate replay")
        replay = asyncio.create_task(replay_file(day, bootstrap=self.settings.kafka_bootstrap,
                                                 namespace=self.settings.namespace, pace=Pace(window=self.args.window),
                                                 database_url=self.settings.database_url, label="profile "))
        services: dict[str, Any] = {}
        for service, p in profilers.items():
            _, err = await asyncio.to_thread(p.communicate)
            out = self.dir / f"profile-{service}.txt"
            if p.returncode == 0 and out.exists():
                services[service] = top_frames(out)
            else:
                services[service] = {"error": err.decode(errors="replace")[-500:]}
        result = await replay
        self._other_check("profile replay", result)
        self.report["profile"] = {"seconds": seconds, "services": services,
                                  "replay": {k: result[k] for k in ("sends", "throughput_per_s", "exactly_once", "ledger")}}

    def _other_check(self, name: str, *results: dict[str, Any]) -> None:
        """The verdicts of replays that are not measured runs (warm-up, profile): they count too."""
        ok, text = verdicts(results)
        self.report.setdefault("other_checks", {})[name] = text if ok else f"**{text}**"
        self.report.setdefault("other_checks_ok", {})[name] = ok

    async def _vacuum(self) -> None:
        """VACUUM (ANALYZE) the run's database, so that autovacuum has nothing left to do during the
        bare pipeline: catching up on the services' runs, it took up to a quarter of a core from it
        (docs/BENCHMARKS.md, 2026-12-04, "Parallel workers")."""
        started = time.monotonic()
        try:
            await execute_alone(self.settings.database_url, "VACUUM (ANALYZE)")  # outside any transaction
        except (YidiError, OSError, asyncpg.PostgresError) as exc:  # the bare pipeline runs anyway, and says so
            self.report["vacuum_before_reference_s"] = None
            say(f"the run's database was not vacuumed before the bare pipeline: {exc!r}")
            return
        self.report["vacuum_before_reference_s"] = round(time.monotonic() - started, 1)
        say(f"the run's database vacuumed before the bare pipeline in {self.report['vacuum_before_reference_s']} s")

    async def reference(self) -> None:
        """The bare pipeline under the same day, ``--reference-rounds`` times (the median round is the
        run ``reference``), then at 100/s: the stages' own Kafka client settings
        (loadtest.reference_pipeline takes what-if settings from LOADTEST_*_OPTIONS, for experiments)."""
        s = self.ref_settings
        await ensure_topics(s)
        procs = Processes(s, self.dir / "logs")
        for stage in REFERENCE_STAGES:
            procs.start_reference(stage, self.env)
        try:
            await procs.wait_ready()
            await self._warm_up("bare pipeline's warm-up", s, ledger=False)
            rounds = [await self._measured(f"reference round {k + 1}", procs, day, Pace(window=self.args.window), s,
                                           False, keep=False)
                      for k, day in enumerate(self.ref_days)]
            self.report["runs"]["reference"] = median_round(rounds)
            self.report["reference_rounds"] = [round_summary(r) for r in rounds]
            if self.ref_rate_day:
                await self._measured("reference_rate_100", procs, self.ref_rate_day,
                                     Pace(rate=self.args.rate, window=self.args.window), s, False)
        finally:
            procs.stop_all()
        await self._sweep("every answer of the bare pipeline, swept after it stopped", s)

    async def _sweep(self, name: str, s: Settings) -> None:
        """Each replay checks its own answers a moment after its last; this reads the namespace's
        requests and answers again once nothing can answer any more, every run's together, so an
        extra answer that came late (or to an earlier run's request) fails the bench too."""
        check = await sweep(s.kafka_bootstrap, s.namespace)
        self.report.setdefault("other_checks", {})[name] = check.summary() if check.ok else f"**{check.summary()}**"
        self.report.setdefault("other_checks_ok", {})[name] = check.ok
        say(f"{name}: {check.summary()}")

    async def cleanup(self) -> None:
        await delete_namespace_topics(self.settings.kafka_bootstrap, self.settings.namespace, self.ref_settings.namespace)

    async def run(self) -> dict[str, Any]:
        args = self.args
        persons = args.persons or max(200, args.settlements // 8)
        self.world = World(persons=persons, seed=args.seed, run_id=self.run_id)
        write_refdata(self.world, self.dir / "refdata.json")
        self.warmup = self._day("warmup", 300, args.seed + 2, extras=False)
        # "national": its first letter tags the day's msgids, and "p" is the profile day's.
        peak_count = int(PEAK_RATE * args.peak_seconds)
        self.peak_day = self._day("national", peak_count, args.seed + 6) if peak_count > 0 else None
        rate_count, ref_rate_count = int(args.rate * args.rate_seconds), int(args.rate * args.reference_rate_seconds)
        self.rate_day = self._day("rate100", rate_count, args.seed + 1) if rate_count > 0 else None
        self.max_day = self._day("max", args.settlements, args.seed)
        self.ref_rate_day = self._day("refrate100", ref_rate_count, args.seed + 5) if ref_rate_count > 0 else None
        # The bare pipeline's rounds replay the max run's day again: the same requests under msgids of
        # their own (a msgid answered twice in one namespace would fail the sweep).
        self.ref_days = [self.max_day] + [self._day(f"max-bare{k + 1}", args.settlements, args.seed, tag=f"B{k + 1}{self.run_id}")
                                          for k in range(1, 0 if args.no_reference else args.reference_rounds)]
        self.report["load_summary"] = (
            f"{args.settlements} settlements of {persons} persons as fast as possible (window {args.window}); "
            + (f"{peak_count} at the national peak hour's {PEAK_RATE:g}/s; " if peak_count > 0 else "")
            + f"{int(args.rate * args.rate_seconds)} at {args.rate:g}/s; extras "
            + ", ".join(f"{k} {v:.1%}" for k, v in EXTRAS.items()))
        say(f"results in {self.dir}")
        if ignored := not_passed_on():
            say(f"not passed on to the services (they get the code's defaults and --env): {', '.join(ignored)}")
        base = self.settings
        async with own_database(base, self.run_id, keep=args.keep_database) as self.settings:
            self.report["database"] = bench_database(self.run_id)
            self.report["postgres"] = await postgres_settings(self.settings.database_url)
            if args.keep_database:
                say(f"the run's database is kept: {self.report['database']}")
            try:
                await self.services()
                if not args.no_reference:
                    await self._vacuum()
                    await self.reference()
            finally:
                if not args.keep_topics:
                    with contextlib.suppress(Exception):
                        await self.cleanup()
                self.report["kafka_transactions"] = transaction_versions(self.dir / "logs")
            if not args.no_eligibility:
                say("eligibility micro-benchmark")
                self.report["eligibility"] = await bench_eligibility(
                    child_settings(self.settings, self.env).model_copy(update={"namespace": "benchelig."}))
        self.settings = base  # the run's database is gone
        self.report["targets"] = rpt.judge(self.report)
        return self.report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settlements", type=int, default=40_000, help="the day replayed as fast as possible")
    parser.add_argument("--persons", type=int, help="default: an eighth of the settlements")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0, help="the fixed-rate run's requests per second")
    parser.add_argument("--rate-seconds", type=float, default=30.0)
    parser.add_argument("--peak-seconds", type=float, default=30.0,
                        help=f"a run at the national peak hour's {PEAK_RATE:g}/s first (0: do not)")
    parser.add_argument("--instances", type=instances, default={}, metavar="SERVICE=N[,SERVICE=N]",
                        help="run N instances of a service in its consumer groups, e.g. pricing=2")
    warmup.add_arguments(parser)
    parser.add_argument("--steady-steps", type=int, default=3,
                        help="paced runs bisecting for the highest rate held with p99 < 250 ms (when 2,000/s is out of reach)")
    parser.add_argument("--high-seconds", type=float, default=20.0,
                        help="when 2,000/s is out of reach: the seconds of each steady probe (0: none)")
    parser.add_argument("--reference-rounds", type=int, default=3,
                        help="the bare pipeline's max runs, each on the max run's day; the median is its figure")
    parser.add_argument("--reference-rate-seconds", type=float, default=15.0,
                        help="the bare pipeline's fixed-rate run")
    parser.add_argument("--window", type=int, default=2000, help="most answers outstanding in the max run")
    parser.add_argument("--profile-seconds", type=float, default=20.0, help="py-spy the services (0: do not)")
    parser.add_argument("--env", type=env_pair, action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the services and the bare pipeline (repeatable); the shell's "
                             "YIDI_* variables are not passed on")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--no-eligibility", action="store_true")
    parser.add_argument("--keep-topics", action="store_true", help="leave the run's Kafka topics in place")
    parser.add_argument("--keep-database", action="store_true",
                        help="leave the run's database (yidi_bench_<run id>) in place, e.g. to read its ledger")
    parser.add_argument("--results", type=Path, help="folder for the run's folder (default loadtest/results)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--no-docs", action="store_true", help="do not append to docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.reference_rounds < 1:
        parser.error("--reference-rounds must be at least 1")
    bench = Bench(args)
    report = asyncio.run(bench.run())
    (bench.dir / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    rpt.plot(report, bench.dir / "report.png")
    entry = rpt.markdown(report)
    (bench.dir / "report.md").write_text(entry)
    if not args.no_docs:
        rpt.append_benchmarks(args.docs, entry)
    print(rpt.headline(report))
    checks_ok = checks_passed(report)
    if not checks_ok:
        print("bench: a check failed (exactly-once, the ledger, the settled share or the sweep): see the entry's "
              "runs table and notes, and report.json", file=sys.stderr)
    sys.exit(0 if checks_ok else 1)


if __name__ == "__main__":
    main()
