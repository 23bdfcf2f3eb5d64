"""The median of several benches: each target judged by the median of its figure over ``make bench``
runs, beside every run's own figure.

    python -m loadtest.summary [RESULTS_DIR ...] [--last 3] [--no-docs]

One bench is one sample: on one machine, within an hour, the same code's p99 at 100/s moved by 15–20
ms and the bare pipeline's throughput (so our share of it) by a third between benches
(docs/BENCHMARKS.md, 2026-12-05). This reads the benches' report.json files (by default the last
``--last`` folders under loadtest/results that have one), prints a table of each figure per bench,
its median and the target's verdict on the median, and appends it to docs/BENCHMARKS.md. A
figure a bench did not measure is left out of its median, and so is every figure of a bench that
failed its checks; benches of different code, machines, commands, settings or loads are
summarised too, and the entry says so in bold.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtest import report as rpt
from loadtest.bench import _held, checks_passed

RESULTS = rpt.ROOT / "loadtest" / "results"
OUT_OF_REACH = math.inf  # p99 at a steady 2,000/s when the bench could not sustain 2,000/s


def _tput(run: dict[str, Any] | None) -> float | None:
    return (run or {}).get("throughput_per_s") or None


def _paced_p99(run: dict[str, Any] | None) -> float | None:
    """A paced run's p99, or out of reach when the run fell behind its pace: the rate was not held,
    and the report judges no p99 target by it (a review, session 48: the median took its p99)."""
    if run and run.get("short_of_pace"):
        return OUT_OF_REACH
    return rpt._p99(run)


def _p99_2000(report: dict[str, Any]) -> float | None:
    fast = report["runs"].get("rate_2000")
    if fast:
        return _paced_p99(fast)
    return OUT_OF_REACH if _tput(report["runs"].get("max")) else None


def _steady_rate(report: dict[str, Any]) -> float | None:
    """The highest rate held with p99 < 250 ms: the search's answer, or (a bench from before the
    search took the 100/s run as its first point) the 100/s run when it held; 0 when nothing held.
    A bench that reached 2,000/s runs that rate instead of a search: its rate when it held, else
    not measured (the rate held lies between 100 and 2,000/s, unsearched)."""
    steady = report.get("steady")
    if steady and steady.get("rate"):
        return steady["rate"]
    fast = report["runs"].get("rate_2000")
    if fast:
        # Read as the 100/s run before: a bench whose steady 2,000/s met its target showed 99.9/s
        # here (a review, session 36).
        return fast["throughput_per_s"] if _held(fast) else None
    fixed = report["runs"].get("rate_100")
    if fixed and _held(fixed):
        return fixed["throughput_per_s"]
    return 0.0 if steady and steady.get("probes") else None


def _share(report: dict[str, Any]) -> float | None:
    ours, bare = _tput(report["runs"].get("max")), _tput(report["runs"].get("reference"))
    return ours / bare if ours and bare else None


def _cpu_per_request(run: dict[str, Any] | None) -> float | None:
    """Milliseconds of CPU per request of every process sampled in a run (the services, Kafka,
    Postgres, Redis, the load tool): it moves far less with a busy or slow phase of the machine than
    throughput and latency do, so it tells two versions of the code apart where they cannot."""
    resources, sends = (run or {}).get("resources") or {}, (run or {}).get("sends")
    if not resources or not sends:
        return None
    return rpt.all_cpu_s(resources) / sends * 1000


def _rss(report: dict[str, Any]) -> float | None:
    rss = report.get("rss_max_mib") or {}
    return max((mib for name, mib in rss.items() if name.partition("@")[0] in rpt.SERVICE_NAMES), default=None)


@dataclass(frozen=True)
class Figure:
    name: str
    read: Callable[[dict[str, Any]], float | None]
    unit: str = ""  # "ms", "/s", "minutes", "MiB", "%" (a share, shown as a percentage)
    target: str = ""
    met: Callable[[float], bool] | None = None


FIGURES = (
    Figure("p99 at 100/s", lambda r: _paced_p99(rpt.at_rate(r["runs"].get("rate_100"), 100)), "ms", "< 50 ms",
           lambda v: v < 50),
    Figure("the bare pipeline's p99 at 100/s", lambda r: rpt._p99(r["runs"].get("reference_rate_100")), "ms"),
    Figure("p99 at the national peak hour", lambda r: rpt._p99(r["runs"].get("rate_peak")), "ms"),
    Figure("p99 at a steady 2,000/s", _p99_2000, "ms", "< 250 ms", lambda v: v < 250),
    Figure("highest steady rate held with p99 < 250 ms", _steady_rate, "/s"),
    Figure("as fast as possible", lambda r: _tput(r["runs"].get("max")), "/s"),
    Figure("a 650,000-settlement day", lambda r: rpt.day_minutes(r["runs"].get("max")), "minutes", "< 6 minutes",
           lambda v: v < 6),
    Figure("the bare pipeline", lambda r: _tput(r["runs"].get("reference")), "/s"),
    Figure("our share of the bare pipeline", _share, "%", "≥ 50 %", lambda v: v >= 0.5),
    Figure("the largest service's RSS", _rss, "MiB", "< 150 MiB", lambda v: v < 150),
    Figure("CPU per request, all processes, as fast as possible", lambda r: _cpu_per_request(r["runs"].get("max")),
           "ms per request"),
    Figure("CPU per request, all processes, at 100/s", lambda r: _cpu_per_request(r["runs"].get("rate_100")),
           "ms per request"),
)


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if value == OUT_OF_REACH:
        return "out of reach"
    if unit == "%":
        return f"{value:.0%}"
    if unit == "ms per request":
        return f"{value:.3f}"
    return f"{value:.1f}"


def median(values: list[float]) -> float | None:
    """The median of what was measured (an even count: the mean of the middle two, or the upper one
    when it is out of reach)."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2 or math.isinf(ordered[mid]):
        return ordered[mid]
    return statistics.median(ordered)


def summarise(reports: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Each figure per bench and its median over the benches that passed their checks."""
    ok = [checks_passed(r) for r in reports]
    rows = []
    for figure in FIGURES:
        values = [figure.read(r) for r in reports]
        mid = median([v for v, good in zip(values, ok, strict=True) if v is not None and good])
        met = None if figure.met is None or mid is None else figure.met(mid)
        rows.append({"figure": figure.name, "unit": figure.unit, "values": values, "median": mid,
                     "target": figure.target, "met": met})
    return {"benches": names, "commits": [r.get("commit", "?") for r in reports],
            "started": [r.get("started", "?") for r in reports], "machines": [r.get("machine", {}) for r in reports],
            "commands": [r.get("command", "?") for r in reports], "env": [r.get("env") or {} for r in reports],
            "loads": [r.get("load_summary", "?") for r in reports], "passed": ok, "rows": rows}


def markdown(summary: dict[str, Any], repo: Path = rpt.ROOT) -> str:
    benches, commits = summary["benches"], summary["commits"]
    started = summary["started"]
    ok = summary.get("passed") or [True] * len(benches)
    loops = [m.get("python_loop_ms") for m in summary["machines"]]
    models = sorted({f"{m.get('nproc')} cores ({m.get('cpu_model')})" for m in summary["machines"]})
    lines = [f"## Summary of {len(benches)} benches, {min(started)} to {max(started)} — "
             f"commit{'s' if len(set(commits)) > 1 else ''} {', '.join(dict.fromkeys(commits))}", "",
             "- Command: `python -m loadtest.summary " + " ".join(benches) + "`",
             "- Benches: " + ", ".join(f"`{b}` ({s}, commit {c})" for b, s, c in zip(benches, started, commits, strict=True)),
             f"- Machine{'s' if len(models) > 1 else ''}: {'; '.join(models)}"
             + ("; a million additions in a Python loop " + ", ".join("?" if v is None else f"{v}" for v in loops) + " ms"
                if any(loops) else "")]
    if any("uncommitted" in c for c in commits):
        lines.append("- **A bench ran uncommitted changes**: what it measured is not in any commit, and the "
                     "medians may mix code.")
    elif len(set(commits)) > 1:
        lines.append("- The benches ran different commits, " + (
            "whose code is the same (only documentation differs between them)." if same_code(commits, repo) else
            "**whose code differs** (or could not be compared): the medians mix them."))
    if len(models) > 1:
        lines.append("- **The benches ran on different machines**: the medians mix them.")
    for what, key in (("commands", "commands"), ("settings", "env"), ("loads", "loads")):
        seen = summary.get(key) or []
        if len({orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in seen}) > 1:
            lines.append(f"- **The benches ran different {what}**: "
                         + "; ".join(f"{s[5:16]}: `{v}`" for s, v in zip(started, seen, strict=True)))
    if not all(ok):
        lines.append("- **Failed its checks, left out of the medians**: "
                     + ", ".join(f"{s[5:16]} (`{b}`)" for b, s, good in zip(benches, started, ok, strict=True) if not good))
    lines += ["", "| figure | " + " | ".join((s[5:16] if len(s) >= 16 else s) + ("" if good else " (failed)")
                                          for s, good in zip(started, ok, strict=True))
              + " | median | target | met by the median |",
              "|---|" + "---|" * len(benches) + "---|---|---|"]
    for row in summary["rows"]:
        unit = f", {row['unit']}" if row["unit"] not in ("", "%") else ""
        met = "" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(f"| {row['figure']}{unit} | " + " | ".join(_cell(v, row["unit"]) for v in row["values"])
                     + f" | {_cell(row['median'], row['unit'])} | {row['target'] or '—'} | {met} |")
    lines += ["", "Each bench's figures are its entry's (above); the medians are over the benches that passed "
                  "their checks, and the median of an even count is the mean of the middle two. A steady 2,000/s "
                  "is \"out of reach\" when the bench could not sustain it, as is a p99 whose paced run fell behind "
                  "its pace (from 2026-12-07 19:45; before, its p99 was counted); the highest steady rate held is the "
                  "search's answer, or the 100/s run when it held (benches before 2026-12-05 17:45 did not say), "
                  "and 0 when nothing held; a bench that reached 2,000/s searched nothing: its steady 2,000/s "
                  "run's rate when it held, else blank (summaries before 2026-12-06 14:10 showed its 100/s "
                  "run).", ""]
    return "\n".join(lines)


def same_code(commits: list[str], repo: Path = rpt.ROOT) -> bool:
    """Whether ``commits`` differ in documentation only (Markdown, docs/): their benches measured the
    same code. False when one had uncommitted changes or git cannot tell."""
    if any(not c or " " in c or c == "?" for c in commits):  # "abc1234 (with uncommitted changes)", unknown
        return False
    first = commits[0]
    for other in commits[1:]:
        changed = subprocess.run(["git", "diff", "--name-only", first, other, *rpt.CODE_PATHS],
                                 cwd=repo, capture_output=True, text=True, check=False)
        if changed.returncode != 0 or changed.stdout.strip():
            return False
    return True


def latest(results: Path, count: int) -> list[Path]:
    """The last ``count`` bench folders (named by their start, so in order) that have a report."""
    found = sorted(p.parent for p in results.glob("*/report.json"))
    return found[-count:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", nargs="*", type=Path, help="results folders (default: the last --last)")
    parser.add_argument("--last", type=int, default=3, help="how many of the latest benches, when none is named")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--docs", type=Path, default=rpt.ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--no-docs", action="store_true", help="do not append to docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.last < 1:
        parser.error("--last must be at least 1")
    folders = args.benches or latest(args.results, args.last)
    if not folders:
        parser.error(f"no bench with a report.json under {args.results}")
    reports = []
    for folder in folders:
        path = folder / "report.json" if folder.is_dir() else folder
        try:
            reports.append(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            parser.error(f"{path}: {exc}")
    names = [str(f.relative_to(rpt.ROOT)) if f.resolve().is_relative_to(rpt.ROOT) else str(f) for f in
             (f.resolve() for f in folders)]
    entry = markdown(summarise(reports, names))
    print(entry)
    if not args.no_docs:
        rpt.append_benchmarks(args.docs, entry)
        print(f"appended to {args.docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
