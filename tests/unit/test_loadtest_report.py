"""The benchmark report's process table: CPU per request and how busy the box was."""

from __future__ import annotations

from loadtest.report import process_table


def _run(sends: int, duration: float, **cpu: float) -> dict:
    return {"sends": sends, "duration_s": duration,
            "resources": {name: {"rss_max_mib": 50.0, "cpu_s": s} for name, s in cpu.items()}}


def test_cpu_per_request_and_the_share_of_the_box_are_computed_per_run():
    runs = {"max": _run(1000, 2.0, pricing=0.5, kafka=0.1, **{"load tool": 0.2}),
            "rate_100": _run(200, 2.0, pricing=0.4, kafka=0.6)}
    text = "\n".join(process_table(runs, 2))
    # max: 0.5 s for 1,000 requests is 0.5 ms each; rate_100: 0.4 s for 200 is 2 ms each.
    assert "| pricing | 50.0 | 0.5 | 0.500 | 50.0 | 0.4 | 2.000 |" in text
    # A process seen in one run only leaves the other run's cells empty.
    assert "| load tool | 50.0 | 0.2 | 0.200 |  |  |  |" in text
    assert "max: all processes 0.8 CPU-s in 2.0 s = 0.40 of 2 cores busy; 0.80 ms of CPU per request in all." in text
    assert "rate_100: all processes 1.0 CPU-s in 2.0 s = 0.50 of 2 cores busy; 5.00 ms" in text


def test_the_box_is_as_busy_as_the_cpu_over_the_span_it_was_sampled_over():
    # The CPU figures cover the sampler's span, about 1.5 s longer than the run's answers (the
    # replay's start, its grace for late answers); dividing by the run's duration made a short run's
    # box 10-15 % busier than it was (the bench review, session 36).
    run = _run(1000, 2.0, pricing=0.5, kafka=0.1) | {"cpu_window_s": 3.0}
    text = "\n".join(process_table({"max": run}, 2))
    assert ("max: all processes 0.6 CPU-s in 3.0 s sampled (its answers span 2.0 s) = 0.20 of 2 cores busy; "
            "0.60 ms of CPU per request in all.") in text


async def test_the_sampler_says_the_span_its_cpu_figures_cover():
    import asyncio
    import os
    import time

    from loadtest.observe import ProcessSampler

    sampler = ProcessSampler({"me": os.getpid()}, interval=0.05)
    t0 = time.monotonic()
    sampler.start()
    await asyncio.sleep(0.3)
    await sampler.stop()
    assert 0.3 <= sampler.window_s <= time.monotonic() - t0


def test_no_resources_no_table():
    assert process_table({"max": {"sends": 1}}, 2) == []


def test_out_of_reach_2000_per_s_reports_the_latency_at_a_steady_high_rate():
    from loadtest.report import judge

    def run(tput: float, p99: float) -> dict:
        return {"throughput_per_s": tput, "sends": 40_000, "latency_ms": {"p99": p99}}

    report = {"runs": {"rate_100": run(100, 180.0), "max": run(1200, 2500.0), "rate_high": run(900, 420.0)},
              "rss_max_mib": {}}
    target = next(t for t in judge(report) if t["target"].startswith("p99 < 250 ms"))
    assert target["met"] is False
    assert target["measured"] == "2,000/s not reachable: at most 1200/s sustained; at a steady 900/s p99 420.0 ms"


def test_the_national_peak_hour_run_is_reported_beside_the_100_per_s_target():
    from loadtest.report import headline, judge

    def run(tput: float, p50: float, p99: float) -> dict:
        return {"throughput_per_s": tput, "sends": 600, "latency_ms": {"p50": p50, "p95": p99, "p99": p99}}

    report = {"runs": {"rate_peak": run(21.6, 35.0, 70.0), "rate_100": run(99.8, 120.0, 230.0)}, "rss_max_mib": {},
              "commit": "abc", "results_dir": "r", "window": 2000}
    report["targets"] = judge(report)
    target = next(t for t in report["targets"] if t["target"] == "p99 < 50 ms at 100/s")
    assert target["met"] is False  # judged at 100/s, whatever the peak hour gives
    assert target["measured"] == "p99 230.0 ms at 99.8/s; at the national peak hour's 21.6/s p99 70.0 ms"
    assert "  at the national peak hour (21.6/s): p50 35.0 ms, p95 70.0 ms, p99 70.0 ms" in headline(report)


def test_a_latency_target_is_not_met_by_a_run_whose_checks_failed_or_that_fell_behind_its_pace():
    # Before (a review, session 36): "met" looked at p99 alone, which counts only the answers that
    # came, so a rate_100 run that lost 3 % of its answers and fell behind its pace met p99 < 50 ms.
    from loadtest.report import judge

    def met(**run: object) -> tuple[bool | None, str]:
        base = {"sends": 3000, "throughput_per_s": 97.0, "latency_ms": {"p99": 41.0},
                "exactly_once": {"ok": True, "summary": "exactly once"}}
        runs = {"rate_100": base | run, "rate_2000": base | run | {"throughput_per_s": 1990.0}}
        targets = {t["target"]: t for t in judge({"runs": runs, "rss_max_mib": {}})}
        assert targets["p99 < 250 ms at 2,000/s sustained"]["met"] is targets["p99 < 50 ms at 100/s"]["met"]
        return targets["p99 < 50 ms at 100/s"]["met"], targets["p99 < 50 ms at 100/s"]["measured"]

    assert met() == (True, "p99 41.0 ms at 97.0/s")
    assert met(exactly_once={"ok": False, "summary": "NOT exactly once: missing 90"}) == (
        False, "p99 41.0 ms at 97.0/s; the run's checks failed")
    assert met(short_of_pace=True) == (False, "p99 41.0 ms at 97.0/s; the run fell behind its pace")


def test_the_steady_search_is_reported_with_its_probes():
    from loadtest.report import judge

    run = {"throughput_per_s": 740.0, "sends": 40_000, "latency_ms": {"p99": 4300.0}}
    steady = {"p99_bound_ms": 250.0, "rate": 274.1, "probes": [
        {"rate": 350, "sent_per_s": 349.0, "p99_ms": 900.0, "held": False},
        {"rate": 175, "sent_per_s": 175.0, "p99_ms": 120.0, "held": True},
        {"rate": 275, "sent_per_s": 274.9, "p99_ms": 210.0, "held": True}]}
    report = {"runs": {"max": run, "rate_high": run | {"throughput_per_s": 274.1}}, "steady": steady, "rss_max_mib": {}}
    target = next(t for t in judge(report) if t["target"].startswith("p99 < 250 ms"))
    assert target["measured"] == (
        "2,000/s not reachable: at most 740.0/s sustained; held with p99 < 250 ms: 274.1/s (tried 350/s not held "
        "(p99 900.0 ms), 175/s held (p99 120.0 ms), 275/s held (p99 210.0 ms))")
    steady["rate"] = None
    assert "no rate tried held p99 < 250 ms" in next(
        t for t in judge(report) if t["target"].startswith("p99 < 250 ms"))["measured"]


async def test_the_steady_search_bisects_for_the_highest_rate_held(tmp_path):
    """A system that holds p99 < 250 ms up to 300/s: probes at 500 (no), 250 (yes), 375 (no)."""
    import argparse

    from loadtest.bench import Bench

    bench = Bench.__new__(Bench)
    bench.args = argparse.Namespace(steady_steps=3, high_seconds=1.0, window=2000, seed=1)
    bench.run_id, bench.settings, bench.report = "BTEST", None, {"runs": {}}
    bench._day = lambda name, settlements, seed, extras=True, tag="": tmp_path / f"{tag}.jsonl"  # type: ignore[method-assign]
    tried = []

    async def measured(name, procs, day, pace, settings, ledger, keep=True):
        tried.append(pace.rate)
        p99 = 100.0 if pace.rate <= 300 else 2000.0
        return {"latency_ms": {"p99": p99}, "short_of_pace": pace.rate > 300, "exactly_once": {"ok": True},
                "ledger": {"ok": True}, "send_rate_per_s": pace.rate, "throughput_per_s": pace.rate - 1}

    bench._measured = measured  # type: ignore[method-assign]
    await bench._steady(None, 1000.0)  # type: ignore[arg-type]
    assert tried == [500, 250, 375]
    assert bench.report["steady"]["rate"] == 249 and bench.report["runs"]["rate_high"]["throughput_per_s"] == 249
    assert [p["held"] for p in bench.report["steady"]["probes"]] == [False, True, False]


async def test_the_fixed_rate_run_is_the_steady_searchs_first_point(tmp_path):
    """A slow machine whose 100/s run held: the probes go above 100/s only, and when none of them
    holds, the 100/s run is the answer (not "no rate held")."""
    import argparse

    from loadtest.bench import Bench
    from loadtest.report import headline, judge

    def bench_for(limit: float, rate: float = 100.0, steps: int = 3) -> tuple[Bench, list[float]]:
        bench = Bench.__new__(Bench)
        bench.args = argparse.Namespace(steady_steps=steps, high_seconds=1.0, window=2000, seed=1, rate=rate)
        bench.run_id, bench.settings, bench.report = "BTEST", None, {"runs": {}}
        bench._day = lambda name, settlements, seed, extras=True, tag="": tmp_path / f"{tag}.jsonl"  # type: ignore[method-assign]
        tried: list[float] = []

        async def measured(name, procs, day, pace, settings, ledger, keep=True):
            tried.append(pace.rate)
            return {"latency_ms": {"p50": 80.0, "p95": 150.0, "p99": 100.0 if pace.rate <= limit else 400.0},
                    "short_of_pace": False, "exactly_once": {"ok": True}, "ledger": {"ok": True},
                    "send_rate_per_s": pace.rate, "throughput_per_s": pace.rate - 0.2, "sends": 100}

        bench._measured = measured  # type: ignore[method-assign]
        return bench, tried

    def fixed(p99: float, tput: float = 99.8) -> dict:
        return {"latency_ms": {"p50": 85.0, "p95": 120.0, "p99": p99}, "short_of_pace": False,
                "exactly_once": {"ok": True}, "ledger": {"ok": True}, "throughput_per_s": tput, "sends": 3100}

    def steady_text(bench: Bench) -> str:
        report = {**bench.report, "rss_max_mib": {}, "commit": "c", "results_dir": "r", "window": 2000}
        report["runs"]["max"] = {"throughput_per_s": 1100.0, "sends": 41_000, "latency_ms": {"p50": 1, "p95": 2, "p99": 3}}
        report["targets"] = judge(report)
        assert "not held: the last probe" not in headline(report)
        return next(t for t in report["targets"] if t["target"].startswith("p99 < 250 ms"))["measured"]

    bench, tried = bench_for(150.0)
    await bench._steady(None, 1100.0, fixed(181.6))  # type: ignore[arg-type]
    assert tried == [600, 350, 225]  # half way between 100/s and the max, and on down
    steady = bench.report["steady"]
    assert steady["rate"] == 99.8 and steady["held_by"] == "rate_100" and "rate_high" not in bench.report["runs"]
    assert "held with p99 < 250 ms: 99.8/s (the fixed-rate run; no faster probe held)" in steady_text(bench)
    # A probe above it that holds is the answer, as before.
    bench, tried = bench_for(400.0)
    await bench._steady(None, 1100.0, fixed(181.6))  # type: ignore[arg-type]
    assert tried == [600, 350, 475] and bench.report["steady"]["rate"] == 349.8
    assert "held_by" not in bench.report["steady"] and bench.report["runs"]["rate_high"]["throughput_per_s"] == 349.8
    # A max just above 100/s: the grid has no rate between, so nothing is probed again or below it.
    bench, tried = bench_for(99.0)
    await bench._steady(None, 140.0, fixed(181.6))  # type: ignore[arg-type]
    assert tried == [] and bench.report["steady"]["rate"] == 99.8 and bench.report["steady"]["held_by"] == "rate_100"
    # A fixed rate off the grid (--rate 110): the probes stay above it, and a slower one never replaces it.
    bench, tried = bench_for(130.0, rate=110.0)
    await bench._steady(None, 140.0, fixed(181.6, tput=109.8))  # type: ignore[arg-type]
    assert tried == [125] and bench.report["steady"]["rate"] == 124.8
    bench, tried = bench_for(100.0, rate=110.0)
    await bench._steady(None, 200.0, fixed(181.6, tput=109.8))  # type: ignore[arg-type]
    assert all(r > 110 for r in tried) and bench.report["steady"]["rate"] == 109.8
    # With no probe to run (--steady-steps 0), the fixed-rate run is still the answer, and says so.
    bench, tried = bench_for(150.0, steps=0)
    await bench._steady(None, 1100.0, fixed(181.6))  # type: ignore[arg-type]
    assert tried == [] and "held with p99 < 250 ms: 99.8/s (the fixed-rate run" in steady_text(bench)
    # A fixed-rate run that did not hold changes nothing: the search starts at half the max.
    bench, tried = bench_for(100.0)
    await bench._steady(None, 1100.0, fixed(300.0))  # type: ignore[arg-type]
    assert tried == [550, 275, 125] and bench.report["steady"]["rate"] is None
    assert bench.report["runs"]["rate_high"]["throughput_per_s"] == tried[-1] - 0.2  # the last probe, as before


def test_a_steady_search_with_no_probe_or_none_held_says_so():
    from loadtest.bench import _round_rate
    from loadtest.report import headline, judge

    run = {"throughput_per_s": 740.0, "sends": 40_000, "latency_ms": {"p50": 900.0, "p95": 1000.0, "p99": 1200.0}}
    report = {"runs": {"max": run, "rate_high": run | {"throughput_per_s": 74.0}}, "rss_max_mib": {},
              "steady": {"p99_bound_ms": 250.0, "rate": None, "probes": []}, "commit": "abc", "results_dir": "r",
              "window": 2000}
    report["targets"] = judge(report)
    assert next(t for t in report["targets"] if t["target"].startswith("p99 < 250 ms"))["measured"].endswith(
        "; no steady probe run")
    assert "at a steady 74.0/s (not held: the last probe):" in headline(report)
    # A slow machine still gets a search below 100/s (steps of 5, not 25).
    assert [_round_rate(r) for r in (30.0, 42.5, 99.0, 100.0, 130.0, 2.0)] == [30, 40, 95, 100, 125, 5]


def test_a_run_where_few_settlements_settle_fails_its_checks():
    from loadtest.bench import passed, verdict

    def run(answered: int, settled: int) -> dict:
        return {"exactly_once": {"ok": True, "summary": "exactly once: 5 sends, 5 answers"},
                "ledger": {"ok": True, "summary": "ledger = answers: 0 settled"},
                "settlements": {"answered": answered, "settled": settled}, "err_codes": {"NOT_FILED": answered - settled}}

    assert not passed(run(5, 0))  # every settlement refused: nothing measured is the platform's work
    ok, text = verdict(run(5, 0))
    assert not ok and "only 0.0% of 5 settlements settled" in text
    assert passed(run(1000, 975)) and verdict(run(1000, 975)) == (True, "exactly once: 5 sends, 5 answers; ledger = answers: 0 settled")
    assert passed(run(0, 0))  # the bare pipeline's runs, or a day of no settlements
    assert passed({"exactly_once": {"ok": True, "summary": ""}})  # a result from before the count


def test_the_runs_table_shows_the_settled_share_in_bold_when_the_run_failed_on_it():
    from loadtest.report import _settled

    assert _settled({"settlements": {"answered": 1000, "settled": 985}}) == "98.5%"
    assert _settled({"settlements": {"answered": 5, "settled": 0}}) == "**0.0% (under 90%)**"
    assert _settled({"settlements": {"answered": 0, "settled": 0}}) == "n/a"


def test_the_machine_line_says_how_fast_the_machine_runs_python():
    from loadtest.report import headline, machine, markdown

    m = machine()
    assert m["nproc"] >= 1 and 0 < m["python_loop_ms"] < 60_000
    report = {"machine": m, "runs": {}, "started": "s", "commit": "c", "command": "make bench", "load_summary": "l",
              "settings": {}, "results_dir": "r", "targets": [], "rss_max_mib": {}}
    line = next(x for x in markdown(report).splitlines() if x.startswith("- Machine:"))
    assert line.endswith(f"; a million additions in a Python loop {m['python_loop_ms']} ms")
    assert f"a million additions in a Python loop {m['python_loop_ms']} ms" in headline({**report, "window": 2000})
    # A report from before the figure still reads.
    old = {**report, "machine": {k: v for k, v in m.items() if k != "python_loop_ms"}}
    assert "Python loop" not in next(x for x in markdown(old).splitlines() if x.startswith("- Machine:"))


def _bare(tput: float, cpu: float = 10.0, ok: bool = True) -> dict:
    return {"throughput_per_s": tput, "sends": 41_000, "pace": "as fast as possible",
            "latency_ms": {"p50": 200.0, "p95": 250.0, "p99": 300.0},
            "exactly_once": {"ok": ok}, "resources": {"kafka": {"rss_max_mib": 600.0, "cpu_s": cpu / 2},
                          "load tool": {"rss_max_mib": 100.0, "cpu_s": cpu / 2}}}


def test_the_bare_pipeline_figure_is_the_median_of_its_rounds():
    from loadtest.bench import median_round, round_summary

    rounds = [_bare(4920.1), _bare(6763.4), _bare(5280.8)]
    median = median_round(rounds)
    assert median["throughput_per_s"] == 5280.8 and median["round"] == 3 and median["rounds"] == 3
    assert "round" not in rounds[2]  # the round itself is left as measured
    # Of an even count the upper middle one (the smaller share); of one round, that round.
    assert median_round([_bare(900.0), _bare(700.0), _bare(800.0), _bare(600.0)])["throughput_per_s"] == 800.0
    # A round without a throughput is no candidate.
    assert median_round([_bare(None), _bare(None), _bare(5000.0)])["round"] == 3
    assert median_round([_bare(800.0)])["round"] == 1
    assert round_summary(_bare(5280.8, cpu=12.0, ok=False)) == {
        "throughput_per_s": 5280.8, "p99_ms": 300.0, "cpu_s_all_processes": 12.0, "exactly_once": False}


def test_the_share_names_the_bare_pipelines_rounds():
    from loadtest.bench import median_round, round_summary
    from loadtest.report import headline, judge, markdown

    rounds = [_bare(4920.1), _bare(6763.4), _bare(5280.8)]
    ours = {**_bare(1101.0), "pace": "as fast as possible"}
    report = {"runs": {"max": ours, "reference": median_round(rounds)},
              "reference_rounds": [round_summary(r) for r in rounds], "rss_max_mib": {}, "commit": "c",
              "results_dir": "r", "window": 2000, "machine": {"nproc": 2, "cpu_model": "x", "memory_gib": 1,
                                                                "kernel": "k", "python": "3.11"},
              "started": "s", "command": "make bench", "load_summary": "l"}
    report["targets"] = judge(report)
    share = next(t for t in report["targets"] if t["target"] == "throughput ≥ half of the bare pipeline's")
    assert share["measured"] == ("21% (1101.0/s vs 5280.8/s, the median of 3 rounds: 4920.1, 6763.4 and 5280.8/s "
                                 "(shares 16%–22%))")
    assert share["met"] is False
    assert "bare pipeline: 5280.8/s, the median of 3 rounds: 4920.1, 6763.4 and 5280.8/s → Yidi is 21% of it" \
        in headline(report)
    row = next(x for x in markdown(report).splitlines() if x.startswith("| reference "))
    assert row.startswith("| reference (as fast as possible), the median of 3 rounds (round 3) | 41000 |")
    # One round (--reference-rounds 1, or a report from before the rounds): as before.
    single = {**report, "runs": {"max": ours, "reference": _bare(5280.8)}, "reference_rounds": None}
    single["targets"] = judge(single)
    assert next(t for t in single["targets"] if t["target"].startswith("throughput"))["measured"] == \
        "21% (1101.0/s vs 5280.8/s)"
    assert next(x for x in markdown(single).splitlines() if x.startswith("| reference ")).startswith(
        "| reference (as fast as possible) | 41000 |")


def test_rounds_that_give_one_share_say_so_once():
    from loadtest.report import bare_rounds

    report = {"reference_rounds": [{"throughput_per_s": 4412.6}, {"throughput_per_s": 4419.1}]}
    assert bare_rounds(report, 1033.0) == ", the median of 2 rounds: 4412.6 and 4419.1/s (a share of 23% in each)"
    assert bare_rounds(report) == ", the median of 2 rounds: 4412.6 and 4419.1/s"
    assert bare_rounds({"reference_rounds": [{"throughput_per_s": 4412.6}]}, 1033.0) == ""
    # A round without a throughput still counts, and shows as such.
    report["reference_rounds"].append({"throughput_per_s": None})
    assert bare_rounds(report) == ", the median of 3 rounds: 4412.6, 4419.1 and —/s"


def test_a_single_replay_is_drawn_into_a_png(tmp_path):
    import numpy as np

    from loadtest.replay import latency_histogram, latency_summary, series
    from loadtest.report import plot_replay

    lat = np.array([0.02, 0.03, 0.05, 0.2] * 50)
    at = np.linspace(0.1, 20.0, len(lat))
    result = {"pace": "fixed rate 10/s", "sends": 200, "throughput_per_s": 10.0, "latency_from": "due time",
              "latency_ms": latency_summary(lat), "latency_histogram": latency_histogram(lat), "series": series(at, lat),
              "exactly_once": {"summary": "exactly once: 200 sends, 200 answers"}}
    out = tmp_path / "replay.png"
    plot_replay(result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_a_latency_probe_run_that_does_not_measure_the_platform_fails_its_checks():
    # A review, session 46: the probe judged exactly-once alone, so a setting that has eligibility
    # refuse every settlement gave a fast p99, exit 0.
    from loadtest.latency_probe import probe_checks

    def result(settled: int, **extra) -> dict:
        return {"exactly_once": {"ok": True, "summary": "ok"}, "settlements": {"sent": 100, "answered": 100,
                                                                             "settled": settled},
                "err_codes": {"NOT_INSURED": 100 - settled}} | extra

    assert probe_checks(result(98)) == {"ok": True, "why": "", "settled_share": 0.98, "short_of_pace": False}
    refused = probe_checks(result(3))
    assert not refused["ok"] and "3% of the settlements settled" in refused["why"] and "NOT_INSURED" in refused["why"]
    behind = probe_checks(result(98, short_of_pace=True))
    assert not behind["ok"] and "fell behind its pace" in behind["why"]
    reused = probe_checks(result(98, reused_msgids=4))
    assert not reused["ok"] and "earlier run's msgids" in reused["why"]
