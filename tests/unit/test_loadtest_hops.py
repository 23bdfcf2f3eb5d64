"""loadtest.hops: the per-hop summary of a traced probe leaves the warm-up out."""

from __future__ import annotations

import orjson
import pytest

from loadtest.hops import MEASURED_FROM, main, measured_from, summarise


def _batch(got: float, n: int, deliver_ms: float) -> dict:
    return {"ev": "batch", "stage": "pricing", "n": n, "poll": got - 1, "got": got, "ts": [got - deliver_ms] * n,
            "h0": got, "h1": got + 2, "c0": got + 2, "c1": got + 7, "done": got + 7}


def test_what_was_traced_before_the_measured_runs_is_left_out(tmp_path):
    warmup = [_batch(1_000.0 + i, 200, 300.0) for i in range(5)]
    measured = [_batch(10_000.0 + 50 * i, 1, 6.0) for i in range(20)]
    (tmp_path / "pricing.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in warmup + measured))

    everything = summarise(tmp_path)
    assert "25 batches" in everything
    assert measured_from(tmp_path) == 0.0  # no marker: nothing to leave out

    (tmp_path / MEASURED_FROM).write_text("9000\n")
    since = measured_from(tmp_path)
    assert since == 9000.0
    text = summarise(tmp_path, since)
    assert "== pricing: 20 batches, mean 1.00 records" in text
    deliver = next(line for line in text.splitlines() if "deliver" in line)
    assert "p99     6.0" in deliver  # the warm-up's 300 ms deliveries are not among them


def test_a_missing_or_empty_trace_folder_exits_2_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "no-such-trace")])
    assert exited.value.code == 2
    assert "no-such-trace: no such folder" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path)])
    assert exited.value.code == 2
    assert "no trace files" in capsys.readouterr().err


def test_main_prints_the_summary(tmp_path, capsys):
    (tmp_path / "pricing.jsonl").write_bytes(b"\n".join(orjson.dumps(_batch(10_000.0 + 50 * i, 1, 6.0)) for i in range(3)))
    main([str(tmp_path), "9000"])
    out = capsys.readouterr().out
    assert out.startswith("(what was traced before 9000 ms, the warm-up, is left out)\n")
    assert "== pricing: 3 batches" in out
