"""Summarise ``loadtest.traced`` files: where each hop's time goes (medians and p90 over batches).

    python -m loadtest.hops DIR [SINCE_MS]

Leaves out what was traced before ``SINCE_MS`` (epoch ms), by default before the time
``latency_probe`` wrote to ``DIR/measured_from`` when its warm-up ended.

Per stage: ``deliver`` = record timestamp (the upstream producer's send) → getmany returned it
(upstream's remaining commit, the transaction markers, the fetch); ``handler``; ``sends`` (the
outputs handed to the producer); ``offsets`` (send_offsets_to_transaction: AddPartitionsToTxn,
AddOffsetsToTxn, TxnOffsetCommit in turn); ``end`` (flush + EndTxn); ``commit`` total; and the
Kafka requests each batch sent, with how many were answered CONCURRENT_TRANSACTIONS (51).
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson


MEASURED_FROM = "measured_from"


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def summarise(folder: Path, since_ms: float = 0.0) -> str:
    batches: dict[str, list[dict]] = defaultdict(list)
    reqs: dict[str, list[dict]] = defaultdict(list)
    fetches: dict[str, list[dict]] = defaultdict(list)
    pg: dict[str, list[dict]] = defaultdict(list)  # per file: matched to that file's batches below
    for f in sorted(folder.glob("*.jsonl")):
        file_batches = []
        for line in f.read_bytes().splitlines():
            e = orjson.loads(line)
            if e["ev"] == "pg" and e["t0"] >= since_ms:
                pg[f.name].append(e)
            if e["ev"] == "batch" and e.get("got", 0) >= since_ms:
                e["file"] = f.name
                batches[e["stage"]].append(e)
                file_batches.append(e)
            elif e["ev"] == "req" and e["t0"] >= since_ms:
                reqs[e["who"]].append(e)
            elif e["ev"] == "fetch" and e["t0"] >= since_ms:
                fetches[e["who"]].append(e)
    out = []
    for stage, bs in sorted(batches.items(), key=lambda kv: min(b["got"] for b in kv[1])):
        deliver = [b["got"] - t for b in bs for t in b["ts"]]
        rows = {
            "deliver (per record)": deliver,
            "poll→got (idle wait)": [b["got"] - b["poll"] for b in bs],
            "handler": [b.get("handler_ms", b.get("h1", 0) - b.get("h0", 0)) for b in bs if "h1" in b],
            "handler calls/txn": [b.get("handled", 1) for b in bs],
            "handler→commit (wait)": [b["c0"] - b["h1"] for b in bs if "h1" in b],
            "sends": [b["off0"] - b["c0"] for b in bs if "off0" in b],
            "offsets": [b["off1"] - b["off0"] for b in bs if "off1" in b],
            "end": [b["end1"] - b["end0"] for b in bs if "end1" in b],
            "commit": [b["c1"] - b["c0"] for b in bs if "c1" in b],
            "got→done": [b["done"] - b["got"] for b in bs],
        }
        sizes = [b["n"] for b in bs]
        windows = sorted((b["h0"], b["h1"]) for b in bs if "h1" in b)
        starts = [w[0] for w in windows]
        in_handler = []
        for e in pg.get(bs[0]["file"], []):
            i = int(np.searchsorted(starts, e["t0"], side="right")) - 1
            if i >= 0 and e["t0"] <= windows[i][1]:
                in_handler.append((i, e))
        if in_handler:
            per_batch = Counter(i for i, _ in in_handler)
            ms_batch: Counter[int] = Counter()
            by_q: dict[str, list[float]] = defaultdict(list)
            for i, e in in_handler:
                ms_batch[i] += e["t1"] - e["t0"]
                by_q[f"{e['op']} {e['q']}"].append(e["t1"] - e["t0"])
            counts = [per_batch.get(i, 0) for i in range(len(windows))]
            spent = [ms_batch.get(i, 0.0) for i in range(len(windows))]
        out.append(f"== {stage}: {len(bs)} batches, mean {np.mean(sizes):.2f} records")
        for name, v in rows.items():
            out.append(f"   {name:24s} p50 {pct(v, 50):7.1f}  p90 {pct(v, 90):7.1f}  p99 {pct(v, 99):7.1f}  mean {np.mean(v) if v else float('nan'):7.1f} ms")
        if in_handler:
            out.append(f"   postgres in handler: {np.mean(counts):.1f} round trips/batch, p50 {pct(spent, 50)} p90 {pct(spent, 90)} ms/batch")
            for q, v in sorted(by_q.items(), key=lambda kv: -sum(kv[1]))[:12]:
                out.append(f"      {len(v) / len(windows):5.2f}/batch p50 {pct(v, 50):5.1f} p90 {pct(v, 90):5.1f} ms  {q}")
        rq = reqs.get(f"{stage}/producer", [])
        by_api: dict[str, list[float]] = defaultdict(list)
        errs: Counter[str] = Counter()
        for r in rq:
            api = r["api"].split("_v")[0]
            by_api[api].append(r["t1"] - r["t0"])
            if r.get("err"):
                errs[f"{api}:{r['err']}"] += 1
        for api, v in sorted(by_api.items()):
            out.append(f"   req {api:28s} n {len(v):6d} ({len(v) / len(bs):.2f}/batch)  p50 {pct(v, 50):6.1f}  p90 {pct(v, 90):6.1f} ms")
        if errs:
            out.append(f"   errors: {dict(errs)}")
        fs = fetches.get(f"{stage}/consumer", [])
        if fs:
            full = [x["t1"] - x["t0"] for x in fs if x["bytes"] > 0]
            empty = [x["t1"] - x["t0"] for x in fs if x["bytes"] == 0]
            out.append(f"   fetches: {len(fs)} ({len(full)} with data p50 {pct(full, 50)} ms, {len(empty)} empty p50 {pct(empty, 50)} ms)")
    return "\n".join(out)


def measured_from(folder: Path) -> float:
    """When the measured runs began (``latency_probe`` writes it after its warm-up), in epoch ms; 0 if unknown."""
    marker = folder / MEASURED_FROM
    return float(marker.read_text()) if marker.exists() else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.hops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, metavar="DIR", help="the trace folder (latency_probe --trace DIR)")
    parser.add_argument("since", type=float, nargs="?", metavar="SINCE_MS",
                        help="leave out what was traced before this time (epoch ms); default: DIR/measured_from")
    args = parser.parse_args(argv)
    folder: Path = args.folder
    if not folder.is_dir():
        parser.error(f"{folder}: no such folder")
    if not any(folder.glob("*.jsonl")):
        parser.error(f"{folder}: no trace files (*.jsonl) in it")
    since = args.since if args.since is not None else measured_from(folder)
    if since:
        print(f"(what was traced before {since:.0f} ms, the warm-up, is left out)")
    print(summarise(folder, since))


if __name__ == "__main__":
    main()
