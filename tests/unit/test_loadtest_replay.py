"""The replay's bookkeeping without Kafka: answers matched to sends, cancellations sent after their target's answer."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from loadtest.observe import gc_deltas, histogram_quantiles, parse_metrics, stage_deltas, top_frames
from loadtest.replay import Pace, Replay, series
from loadtest.report import judge


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        self.sent.append((topic, value, key))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def replay() -> tuple[Replay, FakeProducer]:
    r = Replay("unused:0", "ns.", Pace(window=100), progress=False)
    producer = FakeProducer()
    r._producer = producer  # type: ignore[assignment]
    return r, producer


def settle_line(msgid: str, kind: str = "outpatient") -> dict[str, Any]:
    return {"t": 1.0, "op": "send", "kind": kind, "msgid": msgid, "key": "P1",
            "request": {"infno": "2207", "msgid": msgid, "input": {"data": {"psn_no": "P1"}}}}


def cancel_line(msgid: str, target: str) -> dict[str, Any]:
    return {"t": 2.0, "op": "cancel", "kind": "cancellation", "msgid": msgid, "key": "P1", "target": target,
            "request": {"infno": "2208", "msgid": msgid, "input": {"data": {"psn_no": "P1", "mdtrt_id": "V1", "setl_id": ""}}}}


def answer(msgid: str, infno: str = "2207", ok: bool = True, setl_id: str = "S1") -> bytes:
    info = {"setl_id": setl_id, "fund_pay_sumamt": "48.89", "psn_cash_pay": "15.40", "acct_pay": "0.00"}
    return orjson.dumps({"msgid": msgid, "infno": infno, "infcode": 0 if ok else -1,
                         "err_code": None if ok else "NOT_FILED", "output": {"setlinfo": info} if ok else {}})


async def test_each_answer_is_matched_to_a_send_and_timed():
    r, producer = replay()
    await r._send_line(settle_line("M1"))
    await r._send_line(settle_line("M1", kind="duplicate"))
    assert r.outstanding == 2 and len(producer.sent) == 2
    r._on_answer(answer("M1"), r.started + 10.0)
    r._on_answer(answer("M1"), r.started + 10.0)
    assert r.outstanding == 0 and len(r.latency) == 2
    assert r.exactly_once().ok
    assert r.answer_totals().count == 1  # a duplicate's answer is the same settlement


async def test_a_resend_answered_with_another_settlement_fails_the_check():
    r, _ = replay()
    await r._send_line(settle_line("M1"))
    await r._send_line(settle_line("M1", kind="duplicate"))
    r._on_answer(answer("M1", setl_id="S1"), r.started + 1.0)
    r._on_answer(answer("M1", setl_id="S999"), r.started + 2.0)  # settled a second time
    check = r.exactly_once()
    assert not check.ok and check.inconsistent == {"M1": 1}
    assert "answered otherwise than the first time 1" in check.summary()
    assert r.result()["exactly_once"]["inconsistent"] == 1


async def test_a_resend_answered_alike_at_another_moment_passes():
    r, _ = replay()
    await r._send_line(settle_line("M1"))
    await r._send_line(settle_line("M1", kind="duplicate"))
    first, again = orjson.loads(answer("M1")), orjson.loads(answer("M1"))
    again |= {"respond_time": "2026-12-04 08:00:01", "refmsg_time": "2026-12-04 08:00:00.500"}
    r._on_answer(orjson.dumps(first), r.started + 1.0)
    r._on_answer(orjson.dumps(again), r.started + 2.0)
    assert r.exactly_once().ok


async def test_a_cancellation_waits_for_its_target_and_carries_its_setl_id():
    r, producer = replay()
    await r._send_line(settle_line("M1"))
    await r._send_line(cancel_line("C1", "M1"))
    assert len(producer.sent) == 1, "the cancellation needs the target's setl_id first"
    r._on_answer(answer("M1", setl_id="S-M1"), 0.0)
    line = r._ready.get_nowait()
    await r._send_line(line)
    sent = orjson.loads(producer.sent[-1][1])
    assert (sent["infno"], sent["input"]["data"]["setl_id"]) == ("2208", "S-M1")
    r._on_answer(answer("C1", infno="2208", setl_id="S-M1"), 0.0)
    assert r.exactly_once().ok
    assert r.answer_totals().count == 0  # settled, then cancelled


async def test_a_cancellation_of_a_refused_settlement_is_skipped_not_owed():
    r, producer = replay()
    await r._send_line(settle_line("M1"))
    r._on_answer(answer("M1", ok=False), 0.0)
    await r._send_line(cancel_line("C1", "M1"))
    assert len(producer.sent) == 1
    assert r.cancels["skipped (target not settled)"] == 1
    assert r.exactly_once().ok


async def test_an_extra_answer_makes_the_replay_fail_its_check():
    r, _ = replay()
    await r._send_line(settle_line("M1"))
    r._on_answer(answer("M1"), 0.0)
    r._on_answer(answer("M1"), 0.0)
    assert r.exactly_once().duplicated == {"M1": 1}


def test_series_has_answers_per_second_and_percentiles():
    import numpy as np

    at = np.array([0.1, 0.2, 1.5, 1.6, 1.7])
    lat = np.array([0.010, 0.020, 0.030, 0.040, 0.050])
    s = series(at, lat, step=1.0)
    assert s["per_s"] == [2.0, 4.3]  # the last slot spans 1.0–1.7 s: 3 answers in 0.7 s
    assert s["p50_ms"][1] == 40.0


def test_a_steady_rate_does_not_end_in_a_dip():
    import numpy as np

    at = np.arange(1, 251) / 100  # 100 answers a second for 2.5 s
    per_s = series(at, np.full(len(at), 0.01), step=1.0)["per_s"]
    assert per_s[:2] == [99.0, 100.0] and 98 <= per_s[2] <= 102, per_s


METRICS_BEFORE = """
# HELP yidi_stage_batch_seconds x
yidi_stage_batch_seconds_bucket{stage="pricing",le="0.1"} 5.0
yidi_stage_batch_seconds_bucket{stage="pricing",le="0.25"} 10.0
yidi_stage_batch_seconds_bucket{stage="pricing",le="+Inf"} 10.0
yidi_stage_batch_seconds_sum{stage="pricing"} 1.0
yidi_stage_batch_seconds_count{stage="pricing"} 10.0
yidi_stage_batch_size_sum{stage="pricing"} 100.0
"""
METRICS_AFTER = """
yidi_stage_batch_seconds_bucket{stage="pricing",le="0.1"} 5.0
yidi_stage_batch_seconds_bucket{stage="pricing",le="0.25"} 19.0
yidi_stage_batch_seconds_bucket{stage="pricing",le="+Inf"} 20.0
yidi_stage_batch_seconds_sum{stage="pricing"} 3.0
yidi_stage_batch_seconds_count{stage="pricing"} 20.0
yidi_stage_batch_size_sum{stage="pricing"} 1100.0
yidi_stage_batch_seconds_count{stage="idle"} 0.0
yidi_stage_retries_total{stage="pricing",reason="TransientError"} 2.0
"""


def test_stage_deltas_give_the_mean_batch_between_two_scrapes():
    deltas = stage_deltas(parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AFTER))
    # Between the scrapes: 9 batches in (0.1, 0.25] s, 1 over 0.25 s, none under 0.1 s.
    assert deltas == {"pricing": {"batches": 10, "records": 1000, "mean_batch_ms": 200.0, "mean_batch_size": 100.0,
                                  "batch_ms_p50": 183.33, "batch_ms_p99": 250.0,
                                  "ms_per_record": 2.0, "busy_s": 2.0, "retries": 2}}


def test_histogram_quantiles_read_buckets_as_prometheus_does():
    def scrape_of(counts: dict[str, dict[str, float]]) -> dict:
        return parse_metrics("\n".join(
            f'yidi_settlement_latency_seconds_bucket{{service="{svc}",infno="{infno}",le="{le}"}} {n}'
            for svc, by_le in counts.items() for infno in ("2207", "2304") for le, n in by_le.items()))

    before = scrape_of({"clearing": {"0.05": 0, "0.1": 0, "+Inf": 0}})
    after = scrape_of({"clearing": {"0.05": 50, "0.1": 100, "+Inf": 100}, "eligibility": {"0.05": 0, "0.1": 0, "+Inf": 0}})
    q = histogram_quantiles(before, after, "yidi_settlement_latency_seconds", "service")
    # 200 answers (both infnos summed): 100 up to 50 ms, 100 in (50, 100] ms; eligibility answered none.
    assert q == {"clearing": {"p50": 50.0, "p95": 95.0, "p99": 99.0}}
    # Cut at what no observation exceeded (the replay's exact maximum), not spread over the bucket.
    cut = histogram_quantiles(before, after, "yidi_settlement_latency_seconds", "service", ceiling_ms=80.0)
    assert cut == {"clearing": {"p50": 50.0, "p95": 80.0, "p99": 80.0}}


def test_no_latency_bucket_is_wider_than_half_its_lower_bound_from_20_ms_to_10_s():
    # 1.0–2.5 s read a p99 of about 1.4 s as 2.4 s in the benches' reports (a review, session 46).
    from yidi.platform.metrics import LATENCY_BUCKETS

    for lower, upper in zip(LATENCY_BUCKETS, LATENCY_BUCKETS[1:]):
        if lower >= 0.02:
            assert upper <= lower * 1.5 + 1e-9, (lower, upper)
    assert {0.1, 0.25, 0.5, 1.0, 2.5, 10.0} <= set(LATENCY_BUCKETS)  # the alerts' and dashboards' bounds kept


def test_gc_deltas_count_the_collections_and_pauses_between_two_scrapes():
    def scrape_of(by_generation: dict[str, tuple[float, float, dict[str, float]]]) -> dict:
        lines = []
        for g, (count, seconds, buckets) in by_generation.items():
            lines += [f'yidi_gc_pause_seconds_count{{generation="{g}"}} {count}',
                      f'yidi_gc_pause_seconds_sum{{generation="{g}"}} {seconds}']
            lines += [f'yidi_gc_pause_seconds_bucket{{generation="{g}",le="{le}"}} {n}' for le, n in buckets.items()]
        return parse_metrics("\n".join(lines))

    before = scrape_of({"0": (10, 0.01, {"0.001": 10, "0.01": 10, "0.05": 10, "+Inf": 10}),
                        "2": (1, 0.03, {"0.001": 0, "0.01": 0, "0.05": 1, "+Inf": 1})})
    after = scrape_of({"0": (30, 0.05, {"0.001": 25, "0.01": 30, "0.05": 30, "+Inf": 30}),
                       "2": (1, 0.03, {"0.001": 0, "0.01": 0, "0.05": 1, "0.25": 1, "+Inf": 1})})
    # 20 young collections in 40 ms, 5 of them over 1 ms; the full collection was before the run.
    assert gc_deltas(before, after) == {"collections": 20, "seconds": 0.04, "full_collections": 0, "full_seconds": 0.0,
                                        "longest_pause_under_ms": 10.0}
    assert gc_deltas(after, after)["longest_pause_under_ms"] is None
    assert gc_deltas({}, {}) is None  # a process without the histogram: not measured
    # one full collection of 0.4 s: beyond the last bound
    longer = scrape_of({"2": (2, 0.43, {"0.001": 0, "0.01": 0, "0.05": 1, "0.25": 1, "+Inf": 2})})
    over = gc_deltas(after, longer)
    assert over["longest_pause_under_ms"] is None and over["longest_pause_over_ms"] == 250.0
    from loadtest.report import gc_summary
    assert gc_summary("pricing", over) == "pricing 0.4 s in 1 collections (1 full, 0.4 s), longest over 250.0 ms"
    assert gc_summary("ref-answer", None) == "ref-answer not measured"


def test_top_frames_groups_py_spy_samples_by_package(tmp_path):
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "main (services/pricing/__main__.py:7);_price (services/pricing/handlers.py:20);"
        "model_validate (pydantic/main.py:600) 3\n"
        "main (services/pricing/__main__.py:7);select (selectors.py:468) 1\n"
    )
    frames = top_frames(stacks)
    assert frames["by_package"][0] == ("pydantic (validate, dump)", 75.0)
    assert ("_price (pricing/handlers.py)", 75.0) in frames["project_inclusive"]


def test_targets_are_judged_from_the_runs():
    run = {"sends": 1000, "throughput_per_s": 100.0, "latency_ms": {"p99": 40.0}}
    report = {"runs": {"rate_100": run, "max": run | {"throughput_per_s": 3000.0}, "reference": run | {"throughput_per_s": 4000.0}},
              "rss_max_mib": {"filing": 50.0, "eligibility": 160.0, "pricing": 80.0, "clearing": 70.0}}
    met = {t["target"]: t["met"] for t in judge(report)}
    assert met["p99 < 50 ms at 100/s"] is True
    assert met["a 650,000-settlement day in < 6 minutes"] is True
    assert met["throughput ≥ half of the bare pipeline's"] is True
    assert met["each service < 150 MiB RSS"] is False


def test_throughput_targets_are_not_met_by_a_run_whose_checks_failed():
    # A platform refusing most settlements answers fast: the p99 targets said so, the throughput
    # ones were "met" (a review, session 48).
    run = {"sends": 1000, "throughput_per_s": 3000.0, "latency_ms": {"p99": 40.0},
           "exactly_once": {"ok": True, "summary": "exactly once"}, "settlements": {"sent": 900, "answered": 900, "settled": 90}}
    report = {"runs": {"max": run, "reference": run | {"throughput_per_s": 4000.0}}, "rss_max_mib": {}}
    judged = {t["target"]: t for t in judge(report)}
    for target in ("a 650,000-settlement day in < 6 minutes", "throughput ≥ half of the bare pipeline's"):
        assert judged[target]["met"] is False and judged[target]["measured"].endswith("; the run's checks failed"), target
    run["settlements"]["settled"] = 900
    assert all(judged["met"] for judged in judge(report) if "day" in judged["target"] or "half" in judged["target"])


def test_a_whole_day_is_judged_by_its_own_duration_not_a_projection():
    day = {"sends": 670_000, "throughput_per_s": 2000.0, "latency_ms": {"p99": 900.0}}
    judged = {t["target"]: t for t in judge({"runs": {"max": day}, "rss_max_mib": {}})}
    target = judged["a 650,000-settlement day in < 6 minutes"]
    assert "replayed: 670000 requests" in target["measured"] and target["measured"].startswith("5.6 minutes")
    assert target["met"] is True
    small = {"sends": 40_000, "throughput_per_s": 2000.0, "latency_ms": {"p99": 900.0}}
    judged = {t["target"]: t for t in judge({"runs": {"max": small}, "rss_max_mib": {}})}
    assert "projected from 40000 requests" in judged["a 650,000-settlement day in < 6 minutes"]["measured"]


@pytest.mark.parametrize(("settlements", "replayed"), [(650_000, True), (640_000, False), (1_000_000, False)])
def test_a_whole_day_is_told_by_its_settlements_not_its_requests(settlements, replayed):
    # A review, session 46: 640,000 settlements with their extras were over 650,000 requests and
    # taken for a whole day; a million settlements were judged on their own minutes.
    from loadtest.report import day_minutes

    extras = settlements // 30  # pre-settlements, duplicates, cancellations, malformed
    run = {"sends": settlements + extras, "throughput_per_s": 2000.0, "latency_ms": {"p99": 900.0},
           "kinds_sent": {"outpatient": settlements, "pre_settlement": extras}}
    target = next(t for t in judge({"runs": {"max": run}, "rss_max_mib": {}})
                  if t["target"] == "a 650,000-settlement day in < 6 minutes")
    assert ("replayed:" in target["measured"]) is replayed, target
    # Either way, the minutes of 650,000 settlements and their share of extras.
    assert day_minutes(run) == pytest.approx((650_000 + 650_000 * extras / settlements) / 2000.0 / 60)


def test_the_100_per_s_target_is_judged_only_on_a_run_at_100_per_s_and_the_rss_on_every_instance():
    # A review, session 46: a run at --rate 50 was judged "p99 < 50 ms at 100/s", and pricing@2
    # left out of "each service < 150 MiB RSS".
    from loadtest.summary import FIGURES

    slow = {"sends": 1000, "throughput_per_s": 50.0, "latency_ms": {"p99": 40.0}, "pace": "fixed rate 50/s (window 2000)",
            "pace_rate_per_s": 50.0}
    report = {"runs": {"rate_100": slow}, "rss_max_mib": {"pricing": 90.0, "pricing@2": 160.0, "kafka": 700.0}}
    judged = {t["target"]: t for t in judge(report)}
    assert judged["p99 < 50 ms at 100/s"]["met"] is None
    assert "not run at 100/s" in judged["p99 < 50 ms at 100/s"]["measured"]
    assert judged["each service < 150 MiB RSS"]["met"] is False and "pricing@2 160.0" in judged["each service < 150 MiB RSS"]["measured"]
    figure = {f.name: f.read for f in FIGURES}
    assert figure["p99 at 100/s"](report) is None and figure["the largest service's RSS"](report) == 160.0
    at_100 = slow | {"pace": "fixed rate 100/s (window 2000)", "pace_rate_per_s": 100.0}
    assert figure["p99 at 100/s"]({"runs": {"rate_100": at_100}}) == 40.0
    older = {k: v for k, v in at_100.items() if k != "pace_rate_per_s"}  # a report from before the rate was kept
    assert judge({"runs": {"rate_100": older}, "rss_max_mib": {}})[0]["met"] is True


async def test_a_paced_publish_held_back_counts_its_wait_from_when_it_was_due():
    """Coordinated omission (found by review): at a fixed rate, a publish held back by a full window
    used to start its clock when it finally went out, so a system that fell behind looked fast."""
    import time

    base = time.perf_counter() - 5.0  # the schedule began 5 s ago
    r = Replay("unused:0", "ns.", Pace(rate=100, window=1), progress=False)
    r._producer = FakeProducer()  # type: ignore[assignment]
    r.started = base
    await r._send_line(settle_line("M1"), due=base)
    # M2 was due 10 ms later but waits for room: M1 is answered 2 s in, M2 goes out after that.
    waiting = asyncio.create_task(r._send_line(settle_line("M2"), due=base + 0.01))
    await asyncio.sleep(0)
    assert not waiting.done()
    r._on_answer(answer("M1"), base + 2.0)
    await waiting
    assert r._pending["M2"][0] == base + 0.01  # the clock runs from the schedule, not from the publish
    r._on_answer(answer("M2", setl_id="S2"), base + 2.05)
    assert [round(x, 3) for x in r.latency] == [2.0, 2.04]
    assert r.pacing()["short_of_pace"] and r.pacing()["behind_schedule_ms"]["max"] > 0


async def test_as_fast_as_possible_latency_runs_from_the_publish():
    r, _ = replay()
    await r._send_line(settle_line("M1"))
    sent = r._pending["M1"][0]
    r._on_answer(answer("M1"), sent + 0.5)
    assert list(r.latency) == [0.5] and r.pacing() == {}


def test_the_progress_line_has_a_bar_an_eta_and_latency_so_far():
    import numpy as np

    r = Replay("unused:0", "ns.", Pace(rate=100), progress=False, total=200)
    r.started, r.lines_done = 0.0, 50
    r.latency.extend([0.010, 0.020, 0.030, 0.400])
    line = r.progress_line(10.0, 1.0, np.array([0.400]), 5.0)
    assert "[#####...............]  25.0% ETA    30s" in line
    assert "last 1s   400/  400 ms" in line and "so far    25/  389 ms" in line
    # Over everything so far again only once there is a tenth more of it (it is not free at a day's size).
    def so_far() -> str:
        a50, a99 = np.percentile(np.array(r.latency), [50, 99]) * 1000
        return f"so far {a50:5.0f}/{a99:5.0f} ms"

    r.latency.extend([0.010] * 96)
    at_100 = so_far()
    assert at_100 in r.progress_line(11.0, 1.0, None, 5.0)
    r.latency.extend([0.400] * 8)
    assert so_far() != at_100 and at_100 in r.progress_line(12.0, 1.0, None, 5.0)  # 108: as at 100
    r.latency.extend([0.400] * 4)
    assert so_far() in r.progress_line(13.0, 1.0, None, 5.0)  # 112: again


def test_the_ledger_check_fails_on_a_row_under_a_request_that_is_not_a_settlement():
    from loadtest.checks import Totals, check_ledger

    same = Totals(1, 4889, 1540, 0)
    assert check_ledger(same, same).ok
    stray = check_ledger(same, same, strays=1)
    assert not stray.ok and "not settlements" in stray.summary()


async def test_a_run_on_pace_is_not_flagged_for_cancellations_sent_after_its_schedule():
    """Deferred cancellations go out when their target is answered, after the schedule: they
    stretched the span the pace was judged over, and an on-time run was flagged (found by review)."""
    import time

    r = Replay("unused:0", "ns.", Pace(rate=200), progress=False)
    r._producer = FakeProducer()  # type: ignore[assignment]
    r.started = time.perf_counter()
    for i in range(200):  # one second on the schedule, each publish on time
        due = await r._wait_turn(i, 0.0, 0.0)
        await r._send_line(settle_line(f"M{i}"), due=due)
    await asyncio.sleep(0.6)
    await r._send_line(settle_line("LATE-CANCEL"))  # unpaced, 0.6 s after the schedule ended
    assert r.pacing()["short_of_pace"] is False


async def test_a_paced_run_publishes_in_ticks_never_more_than_a_tick_early(monkeypatch):
    """At 2,000/s a wake-up per line (every 0.5 ms) doubled the tool's CPU per request: the lines
    due within a tick of the one slept for go with it."""
    import time

    import loadtest.replay as replay_module

    sleeps = []
    real_sleep = asyncio.sleep

    async def counted_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(replay_module.asyncio, "sleep", counted_sleep)
    r = Replay("unused:0", "ns.", Pace(rate=2000), progress=False)
    r.started = time.perf_counter()
    early = []
    for i in range(400):  # 0.2 s on the schedule
        due = await r._wait_turn(i, 0.0, 0.0)
        early.append(due - time.perf_counter())
    assert max(early) <= replay_module.PACE_TICK
    # about one wake-up per tick (40 in 0.2 s), not one per line (400)
    assert len(sleeps) <= 0.2 / replay_module.PACE_TICK * 1.5
    # a line sent early is timed from its send, not from when it was due
    r._producer = FakeProducer()  # type: ignore[assignment]
    due = time.perf_counter() + 60
    await r._send_line(settle_line("EARLY"), due=due)
    assert r._pending["EARLY"][0] < due


async def test_a_slow_paced_run_sends_each_line_at_its_time():
    """Below 400/s each line waits for its own time: ticks sent every other line early, in pairs."""
    import time

    import loadtest.replay as replay_module

    r = Replay("unused:0", "ns.", Pace(rate=200), progress=False)
    r.started = time.perf_counter()
    early = []
    for i in range(40):
        due = await r._wait_turn(i, 0.0, 0.0)
        early.append(due - time.perf_counter())
    assert sum(e > 0.001 for e in early) <= 1
    assert max(early) < replay_module.PACE_TICK


def test_cpu_steal_is_read_from_proc_stat(tmp_path):
    from loadtest.observe import cpu_counters, steal_share

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n")
    before = cpu_counters(stat)
    assert before == (35, 1000)
    stat.write_text("cpu  200 0 100 1500 20 0 10 170 0 0\n")
    assert steal_share(before, cpu_counters(stat)) == round(135 / 1000, 4)
    assert steal_share(None, before) is None and cpu_counters(tmp_path / "missing") is None
    assert cpu_counters() is not None  # this machine is Linux


_TREE_ROOT = """
import subprocess, sys
burn = ("import sys, time\\nt = time.process_time()\\nwhile time.process_time() - t < float(sys.argv[1]): pass\\n"
        "print('burnt', flush=True)\\nsys.stdin.read()")
old = subprocess.Popen([sys.executable, "-c", burn, "0.5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
old.stdout.readline()
print("ready", flush=True)
sys.stdin.readline()
for _ in range(3):  # short lives between two samples, as a Postgres parallel worker's
    subprocess.run([sys.executable, "-c", burn, "0.1"], input="", stdout=subprocess.DEVNULL, check=True)
old.stdin.close()
old.wait()
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_sampled_tree_counts_children_that_lived_between_samples_and_not_what_an_old_one_used_before():
    import subprocess
    import sys

    from loadtest.observe import ProcessSampler

    with subprocess.Popen([sys.executable, "-c", _TREE_ROOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as root:
        try:
            assert root.stdout.readline().strip() == "ready"  # a child has used 0.5 s of CPU, and lives on
            sampler = ProcessSampler({"db": root.pid}, tree={"db"})
            sampler.sample()
            root.stdin.write("go\n")
            root.stdin.flush()
            assert root.stdout.readline().strip() == "done"  # three children of 0.1 s came and went; the old one exited
            sampler.sample()
            used = sampler.watched["db"].cpu_s()
        finally:
            root.kill()
    # 0.3 s burnt and three interpreters' start-up (~0.03 s each); not the old child's 0.5 s from
    # before the first sample (that would be 0.8 s and more), nor nothing (the children were never
    # sampled alive).
    assert 0.28 <= used <= 0.7, used


@pytest.mark.parametrize("sample", ["first", "last"])
@pytest.mark.parametrize("when", ["before its read", "after its read"])
def test_a_child_reaped_while_a_sample_reads_the_tree_is_counted_once(when, sample):
    import contextlib
    from types import SimpleNamespace

    import psutil

    from loadtest.observe import ProcessSampler, _Watched

    state = SimpleNamespace(reaped=0.0, child_cpu=1.0, exits=False, gone=False)

    class Proc:
        def __init__(self, pid: int, ppid: int) -> None:
            self.pid, self._ppid = pid, ppid

        def oneshot(self):
            return contextlib.nullcontext()

        def memory_info(self):
            return SimpleNamespace(rss=1)

        def ppid(self) -> int:
            return self._ppid

        def children(self, recursive: bool = False) -> list[Proc]:
            return [] if state.gone else [child]

        def cpu_times(self):
            if self is root:
                return SimpleNamespace(user=0.0, system=0.0, children_user=state.reaped, children_system=0.0)
            if state.exits:  # exits, and the root reaps it, while the sample reads the tree
                state.exits, state.gone, state.reaped = False, True, state.child_cpu
                if when == "before its read":
                    raise psutil.NoSuchProcess(self.pid)
            return SimpleNamespace(user=state.child_cpu, system=0.0)

    root, child = Proc(1, 0), Proc(2, 1)
    sampler = ProcessSampler({}, tree={"db"})
    sampler.watched["db"] = watched = _Watched(root, True)
    if sample == "first":  # it has used 1 s before the run, and exits as the first sample reads it
        state.exits = True
        sampler.sample()
        sampler.sample()
        assert watched.cpu_s() == pytest.approx(0.0)
        return
    sampler.sample()  # the child has used 1 s before the run
    state.child_cpu, state.exits = 1.5, True  # 0.5 s more in the run; it exits as the last sample reads it
    sampler.sample()
    assert watched.cpu_s() == pytest.approx(0.5)


async def test_a_replay_file_tells_it_has_ended_before_it_checks_the_ledger(tmp_path, monkeypatch):
    """A bench stops measuring there: the ledger check's queries are the load tool's own work."""
    from loadtest import replay as replay_module
    from loadtest.checks import LedgerCheck, Totals

    calls: list[str] = []

    async def run(self, lines):
        calls.append("replay")
        return {}

    async def ledger_check(self, database_url):
        calls.append("ledger check")
        return LedgerCheck(Totals(0, 0, 0, 0), Totals(0, 0, 0, 0), 0)

    async def replayed():
        calls.append("ended")

    monkeypatch.setattr(replay_module.Replay, "run", run)
    monkeypatch.setattr(replay_module.Replay, "ledger_check", ledger_check)
    day = tmp_path / "day.jsonl"
    day.write_text("")
    await replay_module.replay_file(day, bootstrap="unused:0", namespace="ns.", pace=Pace(), database_url="postgresql://unused",
                                    progress=False, replayed=replayed)
    assert calls == ["replay", "ended", "ledger check"]


def test_the_latency_histogram_counts_every_answer_in_its_log_spaced_bucket():
    import numpy as np

    from loadtest.replay import latency_histogram

    h = latency_histogram(np.array([0.00005, 0.001, 0.0011, 0.050, 0.2, 500.0]))
    assert len(h["counts"]) == len(h["le_ms"]) + 1 and sum(h["counts"]) == 6
    found = {(h["le_ms"][i] if i < len(h["le_ms"]) else "over"): c for i, c in enumerate(h["counts"]) if c}
    assert found == {0.1: 1, 1.0: 1, 1.2589: 1, 50.1187: 1, 251.1886: 1, "over": 1}


async def test_a_request_answered_twice_before_its_resend_and_the_resend_unanswered_fails_the_check():
    # The counts per msgid agree (two sends, two answers), but the second answer came when nothing
    # was owed one, and the resend is still waiting: one duplicated, one missing.
    r, _ = replay()
    await r._send_line(settle_line("M1"))
    r._on_answer(answer("M1"), 0.0)
    r._on_answer(answer("M1"), 0.0)
    await r._send_line(settle_line("M1", kind="duplicate"))
    check = r.exactly_once()
    assert not check.ok
    assert (check.missing, check.duplicated) == ({"M1": 1}, {"M1": 1})
    assert r.result()["exactly_once"]["missing"] == 1


async def test_lost_answers_that_fill_the_window_end_the_run_with_them_missing_instead_of_hanging():
    r = Replay("unused:0", "ns.", Pace(window=3), progress=False, drain_timeout=0.3, grace=0.0)
    producer = FakeProducer()

    async def nothing() -> None:
        return None

    async def never_answers() -> None:
        await asyncio.Event().wait()

    producer.flush = nothing  # type: ignore[attr-defined]
    r._start = nothing  # type: ignore[method-assign]
    r._stop = nothing  # type: ignore[method-assign]
    r._read = never_answers  # type: ignore[method-assign]
    r._producer = producer  # type: ignore[assignment]
    result = await asyncio.wait_for(r.run([settle_line(f"M{i}") for i in range(5)]), 10)
    assert len(producer.sent) == 3
    assert "no answer for 0.3 s" in result["stalled"]
    assert not result["exactly_once"]["ok"] and result["exactly_once"]["missing"] == 3


async def test_answers_made_before_the_run_began_are_counted():
    r, _ = replay()
    r._answered_before = "20261205100000000"
    await r._send_line(settle_line("M1"))
    await r._send_line(settle_line("M2"))
    await r._send_line(settle_line("M3"))
    # An earlier run's answer, sent again now: made then (its inf_refmsgid), sent now (respond_time).
    stored = orjson.loads(answer("M1")) | {"inf_refmsgid": "YD20261204093000123ABCDEF12",
                                          "respond_time": "20261205100003000"}
    fresh = orjson.loads(answer("M2")) | {"inf_refmsgid": "YD20261205100003000ABCDEF12",
                                         "respond_time": "20261205100003000"}
    older = orjson.loads(answer("M3")) | {"respond_time": "20261204093000123"}  # no inf_refmsgid: respond_time
    for one in (stored, fresh, older):
        r._on_answer(orjson.dumps(one), 1.0)
    assert r.answered_before_run == 2
    assert r.result()["answered_before_run"] == 2


def test_the_replay_refuses_a_pace_or_window_that_is_not_positive(tmp_path, capsys):
    from loadtest.replay import main

    day = tmp_path / "day.jsonl"
    day.write_text("")
    for flags in (["--speed", "0"], ["--rate", "-5"], ["--window", "0"]):
        with pytest.raises(SystemExit) as exc:
            main([str(day), *flags])
        assert exc.value.code == 2
        assert "must be greater than 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "absent.jsonl")])
    assert exc.value.code == 2 and "no day file" in capsys.readouterr().err


async def test_a_stall_met_by_a_deferred_cancellation_is_reported_too():
    r = Replay("unused:0", "ns.", Pace(window=1), progress=False, drain_timeout=0.3, grace=0.0)
    producer = FakeProducer()
    r._producer = producer  # type: ignore[assignment]
    await r._send_line(settle_line("M1"))
    await r._send_line(cancel_line("C1", "M1"))  # deferred until M1's answer gives its setl_id
    r._on_answer(answer("M1", setl_id="S-M1"), 0.0)  # C1 ready to go
    await r._send_line(settle_line("M2"))  # the window's one place, never answered
    task = asyncio.create_task(r._send_deferred())
    await asyncio.wait_for(task, 5)  # ends, instead of raising WindowStalled into run()
    assert "no answer for 0.3 s" in r.stalled


async def test_a_settlement_answered_under_another_infno_is_still_counted_as_one_and_fails_the_check():
    # Before (a review, session 36): settlements were told by the answer's own infno, so a platform
    # answering every 2207 as a 2206 (or with no infno) settled nothing, and every check passed:
    # no settlement answered, no settled share to judge, nothing owed in the ledger.
    from loadtest.checks import replay_passed, settled_share

    r, _ = replay()
    await r._send_line(settle_line("M1"))
    await r._send_line(settle_line("M2"))
    r._on_answer(answer("M1", infno="2206", setl_id=""), 0.0)
    r._on_answer(orjson.dumps(orjson.loads(answer("M2", setl_id="S2")) | {"infno": ""}), 0.0)
    check = r.exactly_once()
    assert not check.ok and check.mismatched == {"M1": 1, "M2": 1}
    assert "answered about something else than was sent 2" in check.summary()
    result = r.result()
    assert result["settlements"] == {"sent": 2, "answered": 2, "settled": 2} and settled_share(result) == 1.0
    assert set(r.settled) == {"M1", "M2"}  # what the ledger must hold is decided by what was sent
    assert result["exactly_once"]["mismatched"] == 2 and not replay_passed(result)


async def test_an_unreadable_extra_answer_fails_the_check_as_the_sweep_counts_it():
    # Before (a review, session 36): an answer that was not JSON was only counted in err_codes, so a
    # garbled second answer to a request passed the replay (the bench's sweep failed it).
    from loadtest.checks import replay_passed
    from loadtest.replay import UNREADABLE_ANSWER

    r, _ = replay()
    await r._send_line(settle_line("M1"))
    r._on_answer(answer("M1"), 0.0)
    r._on_answer(b'{"msgid": "M1", "infcode": 0, "output": {"setl', 0.0)
    check = r.exactly_once()
    assert not check.ok and check.unexpected == {UNREADABLE_ANSWER: 1}
    result = r.result()
    assert result["err_codes"]["UNREADABLE_ANSWER"] == 1 and not replay_passed(result)


async def test_an_answer_that_is_not_an_object_or_whose_fields_cannot_be_read_is_counted_not_raised():
    # Before (a review, session 36): a list, a string, an output that is not an object or an amount
    # with three decimals raised in the answer reader, which died, and the run gave no result.
    from loadtest.checks import replay_passed
    from loadtest.replay import UNREADABLE_ANSWER

    r, _ = replay()
    for m in ("M1", "M2", "M3"):
        await r._send_line(settle_line(m))
    r._on_answer(b"[1, 2]", 0.0)
    r._on_answer(b'"M1"', 0.0)
    r._on_answer(orjson.dumps({"msgid": "M1", "infno": "2207", "infcode": 0, "output": ["setlinfo"]}), 0.0)
    three_decimals = orjson.loads(answer("M2"))
    three_decimals["output"]["setlinfo"]["fund_pay_sumamt"] = "48.891"
    r._on_answer(orjson.dumps(three_decimals), 0.0)
    r._on_answer(answer("M3"), 0.0)  # the reader goes on
    assert r.outstanding == 0 and "M3" in r.settled
    check = r.exactly_once()
    assert not check.ok and check.unreadable == {"M1": 1, "M2": 1} and check.unexpected == {UNREADABLE_ANSWER: 2}
    assert "unreadable 2" in check.summary() and not replay_passed(r.result())


def test_a_settlement_refused_modified_request_fails_the_replay_with_the_hint_to_use_a_new_tag(
        tmp_path, monkeypatch, capsys):
    # Before (a review, session 36): a day generated again with a new --run-id but the same --tag
    # reused the earlier run's msgids; the platform refused every settlement MODIFIED_REQUEST with
    # an answer made now (answered_before_run stayed 0), and the replay passed, nothing settled.
    from loadtest.bench import verdict
    from loadtest.checks import replay_passed

    async def refused() -> dict[str, Any]:
        r, _ = replay()
        await r._send_line(settle_line("M1"))
        r._on_answer(orjson.dumps(orjson.loads(answer("M1", ok=False)) | {"err_code": "MODIFIED_REQUEST"}), 0.0)
        return r.result()

    result = asyncio.run(refused())
    assert result["exactly_once"]["ok"] and result["reused_msgids"] == 1
    assert not replay_passed(result)
    ok, text = verdict(result)
    assert not ok and "1 requests were refused MODIFIED_REQUEST" in text

    command = replay_command_giving(result, tmp_path, monkeypatch)
    assert command() == 1
    err = capsys.readouterr().err
    assert "1 requests were refused MODIFIED_REQUEST" in err and "with a new --tag and --run-id" in err


def replay_command_giving(result: dict[str, Any], tmp_path, monkeypatch):
    """``python -m loadtest.replay`` on an empty day whose replay gives ``result``: a function of
    the further arguments that returns the command's exit status."""
    from loadtest import replay as replay_module

    async def replay_file(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return result

    monkeypatch.setattr(replay_module, "replay_file", replay_file)
    day = tmp_path / "day.jsonl"
    day.write_text("")

    def run(*argv: str) -> int:
        with pytest.raises(SystemExit) as exc:
            replay_module.main([str(day), *argv])
        return exc.value.code

    return run


def test_the_replay_command_fails_a_run_where_few_settlements_settle_as_the_bench_does(
        tmp_path, monkeypatch, capsys):
    # Before (left in session 36): the bench failed a run under 90 % settled (a platform refusing
    # for a reason the day does not mean, whose speed is not the settlements'), the replay command
    # passed it; `--min-settled 0` is for a day meant to be refused.
    async def mostly_refused() -> dict[str, Any]:
        r, _ = replay()
        for i in range(10):
            await r._send_line(settle_line(f"M{i}"))
            r._on_answer(answer(f"M{i}", ok=i < 8), 0.0)
        return r.result()

    result = asyncio.run(mostly_refused())
    assert result["exactly_once"]["ok"] and result["settlements"]["settled"] == 8

    command = replay_command_giving(result, tmp_path, monkeypatch)
    assert command() == 1
    assert "only 80.0% of 10 settlements answered settled, under --min-settled 90%" in capsys.readouterr().err
    for share, code in (("0.8", 0), ("0", 0), ("0.81", 1)):
        assert command("--min-settled", share) == code, share
    assert command("--min-settled", "90") == 2
    assert "a share between 0 and 1, not 90" in capsys.readouterr().err


def bill_line(msgid: str, psn_no: str, mdtrt_id: str, total: str) -> dict[str, Any]:
    return {"t": 1.0, "op": "send", "kind": "outpatient", "msgid": msgid, "key": psn_no,
            "request": {"infno": "2207", "msgid": msgid,
                        "input": {"data": {"psn_no": psn_no, "mdtrt_id": mdtrt_id, "medfee_sumamt": total}}}}


def bill_answer(msgid: str, setl_id: str, psn_no: str, mdtrt_id: str, total: str) -> bytes:
    body = orjson.loads(answer(msgid, setl_id=setl_id))
    body["output"]["setlinfo"] |= {"psn_no": psn_no, "mdtrt_id": mdtrt_id, "medfee_sumamt": total}
    return orjson.dumps(body)


async def test_an_answer_about_another_requests_visit_and_bill_fails_the_check():
    # Before (a review, session 36): answers were matched to requests by msgid alone, so two
    # settlements whose results were swapped (each answer under its own msgid, with the other's
    # patient, visit and bill) passed every check, the ledger written from the same swap.
    r, _ = replay()
    await r._send_line(bill_line("M1", "P1", "V1", "64.29"))
    await r._send_line(bill_line("M2", "P2", "V2", "300.00"))
    await r._send_line(bill_line("M3", "P3", "V3", "12.00"))
    r._on_answer(bill_answer("M1", "S2", "P2", "V2", "300.00"), 0.0)
    r._on_answer(bill_answer("M2", "S1", "P1", "V1", "64.29"), 0.0)
    r._on_answer(bill_answer("M3", "S3", "P3", "V3", "12.00"), 0.0)  # its own: fine
    check = r.exactly_once()
    assert not check.ok and check.mismatched == {"M1": 1, "M2": 1}
    # The bare pipeline's answers name no visit (a setl_id only): nothing to compare, no failure.
    r, _ = replay()
    await r._send_line(bill_line("M1", "P1", "V1", "64.29"))
    r._on_answer(answer("M1"), 0.0)
    assert r.exactly_once().ok


async def test_a_cancellation_answered_for_another_setl_id_fails_the_check():
    # Before (a review, session 36): a cancellation's answer was taken at its word, so the platform
    # cancelling another settlement than the one sent (S2 for S1) passed, its ledger agreeing.
    r, producer = replay()
    await r._send_line(settle_line("M1"))
    await r._send_line(settle_line("M2"))
    r._on_answer(answer("M1", setl_id="S1"), 0.0)
    r._on_answer(answer("M2", setl_id="S2"), 0.0)
    await r._send_line(cancel_line("C1", "M1"))
    assert orjson.loads(producer.sent[-1][1])["input"]["data"]["setl_id"] == "S1"
    r._on_answer(answer("C1", infno="2208", setl_id="S2"), 0.0)
    check = r.exactly_once()
    assert not check.ok and check.mismatched == {"C1": 1}
    assert r.result()["exactly_once"]["mismatched"] == 1


def refused(msgid: str, infno: str = "2207", code: str = "INVALID_INPUT") -> bytes:
    return orjson.dumps({"msgid": msgid, "infno": infno, "infcode": -1, "err_code": code, "output": {}})


@pytest.mark.parametrize("judged", [True, False])
async def test_a_malformed_request_must_be_refused_invalid_input_on_the_platform(judged):
    # A bill whose total is not its lines' sum, settled, counted as a settlement: its row was
    # expected in the ledger, and the run passed (a review, session 48). The bare pipeline answers
    # every request alike: not judged there.
    r = Replay("unused:0", "ns.", Pace(window=100), progress=False, judge_malformed=judged)
    r._producer = FakeProducer()  # type: ignore[assignment]
    await r._send_line(settle_line("M1"))
    await r._send_line(settle_line("BADSUM", kind="invalid-sum"))
    await r._send_line(settle_line("BADSUM2", kind="invalid-sum"))
    await r._send_line({"t": 1.0, "op": "raw", "kind": "malformed-json", "msgid": "CUT", "key": "P1",
                        "raw": '{"infno": "2207", "msgid": "CUT", "inp'})
    await r._send_line({"t": 1.0, "op": "raw", "kind": "malformed-json", "msgid": "CUT2", "key": "P1",
                        "raw": '{"infno": "2207", "msgid": "CUT2", "inp'})
    for a in (answer("M1"), answer("BADSUM", setl_id="S2"), refused("BADSUM2"), answer("CUT", setl_id="S3"),
              refused("CUT2")):
        r._on_answer(a, r.started + 1.0)
    check = r.exactly_once()
    assert r.settlements == {"sent": 1, "answered": 1, "settled": 1}  # the malformed ones are not settlements
    assert r.answer_totals().count == 1
    assert set(r.malformed) == {"BADSUM", "BADSUM2", "CUT", "CUT2"} and "BADSUM" not in r.fingerprints
    if judged:
        assert not check.ok and check.not_refused == {"BADSUM": 1, "CUT": 1}
        assert "malformed but not refused INVALID_INPUT 2" in check.summary()
        assert r.result()["exactly_once"]["not_refused"] == 2
    else:
        assert check.ok, check.summary()


def test_the_headline_names_the_rate_the_fixed_rate_run_was_paced_at():
    # make bench --rate 50 still printed "at 100/s" (a review, session 48).
    from loadtest.report import fixed_rate, headline

    run = {"sends": 1000, "throughput_per_s": 50.0, "latency_ms": {"p50": 20.0, "p95": 30.0, "p99": 40.0, "max": 50.0},
           "pace": "fixed rate 50/s (window 2000)", "pace_rate_per_s": 50.0}
    assert fixed_rate(run) == 50.0 and fixed_rate(None) == 100.0
    assert fixed_rate({k: v for k, v in run.items() if k != "pace_rate_per_s"}) == 50.0
    text = headline({"runs": {"rate_100": run}, "rss_max_mib": {}, "window": 2000, "commit": "abc", "results_dir": "r", "targets": []})
    assert "at 50/s:" in text and "at 100/s:" not in text
