"""A day of cross-region settlements as JSON lines, deterministic by seed (same options ⇒ same bytes).

    python -m loadtest.generator --settlements 40000 --seed 7 --out loadtest/results/day7
    → day7/refdata.json (for yidi-load) and day7/day.jsonl (for python -m loadtest.replay)

Each line is one thing the replay does, in time order (``t``: seconds after midnight):

- ``{"op": "send", "kind": ..., "msgid", "key", "request": {...}}``  publish a request; a
  ``duplicate`` resends an earlier request under its msgid (a gateway retrying after a timeout)
- ``{"op": "send", "kind": "year-so-far", ...}``  a cashier's 5206 before a bill (``--queries``)
- ``{"op": "raw", "kind": "malformed-json", "msgid", "key", "raw": "..."}``  publish bytes that are
  not JSON; the msgid is recoverable, so an ``INVALID_INPUT`` answer is due
- ``{"op": "cancel", "target": <msgid>, "request": {...}}``  cancel the settlement ``target``: its
  ``setl_id`` is known only from its answer, so the replay fills ``input.data.setl_id`` in then
  (and skips the cancellation when the target was refused)

Requests stream out one at a time (only an hour's send times and the next minutes' duplicates and
cancellations are held), so a 650,000-settlement day needs little memory.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson

from yidi.contracts.envelope import Infno

from loadtest.bills import INPATIENT_DISEASES, MIX, OUTPATIENT_DISEASES, BillMaker, CareKind, draw_total, total_of, yuan
from loadtest.world import CHRONIC_DISEASES, DEFAULT_DAY, FACILITY_WEIGHT, Person, World

# Settlements per hour of the day: clinic hours make two humps, 8–11h and 14–17h.
HOURLY_PROFILE = (0.2, 0.15, 0.1, 0.1, 0.1, 0.2, 0.6, 1.8, 5.5, 7.5, 7.5, 6.0,
                  2.5, 2.0, 5.5, 6.5, 6.0, 4.0, 2.0, 1.5, 1.2, 0.9, 0.6, 0.3)
DAY_SECONDS = 86_400.0
CHRONIC_DIAGNOSIS = {code: (dise, name) for code, dise, name in CHRONIC_DISEASES}


# The kinds of malformed request a day holds: JSON cut short (its msgid recoverable), and a bill
# whose total is not the sum of its lines. The platform owes each an INVALID_INPUT answer.
MALFORMED_JSON, INVALID_SUM = "malformed-json", "invalid-sum"
MALFORMED_KINDS = frozenset({MALFORMED_JSON, INVALID_SUM})
# A cashier's 5206 before a bill: what is left of the person's deductible, cap and quota this year.
YEAR_SO_FAR = "year-so-far"


@dataclass(frozen=True)
class DayOptions:
    settlements: int = 650_000
    seed: int = 1
    tag: str = ""  # goes into every msgid; default "D<seed>"
    pre_settlements: float = 0.0  # share of settlements preceded by a pre-settlement (2206/2303)
    cancellations: float = 0.0  # share of settlements cancelled later (2208/2305)
    duplicates: float = 0.0  # share of settlements resent under the same msgid
    malformed: float = 0.0  # extra malformed requests, as a share of settlements
    queries: float = 0.0  # share of settlements a 5206 (the person's year so far) precedes, from the cashier
    mix: tuple[CareKind, ...] = MIX

    def __post_init__(self) -> None:
        if not self.msg_tag.isalnum() or len(self.msg_tag) > 16:
            raise ValueError("tag is 1-16 letters or digits (it goes into every msgid)")

    @property
    def msg_tag(self) -> str:
        return self.tag or f"D{self.seed}"


def _weighted(facilities: list[tuple[str, int, list[str]]]) -> tuple[list[str], list[int]]:
    """The codes of ``facilities`` and their cumulative weights by level (``FACILITY_WEIGHT``)."""
    return [code for code, _, _ in facilities], list(accumulate(FACILITY_WEIGHT[level] for _, level, _ in facilities))


def hour_counts(total: int, profile: tuple[float, ...] = HOURLY_PROFILE) -> list[int]:
    """``total`` split over the hours by ``profile`` (largest remainder, so the counts add up)."""
    weight = sum(profile)
    exact = [total * w / weight for w in profile]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))[: total - sum(counts)]:
        counts[i] += 1
    return counts


def peak_hour_rate(total: int, profile: tuple[float, ...] = HOURLY_PROFILE) -> float:
    """Settlements per second in the busiest hour of a ``total``-settlement day (650,000: 21.6/s)."""
    return round(max(hour_counts(total, profile)) / 3600, 1)


class DayGenerator:
    def __init__(self, world: World, options: DayOptions) -> None:
        self.world = world
        self.o = options
        # Seeded by the seed alone: the tag and run id only name the requests, so two runs of one
        # command replay the same day (make bench draws a fresh run id each time).
        self.rng = random.Random(f"day:{options.seed}")
        self.bills = BillMaker(self.rng)
        self._queries = random.Random(f"queries:{options.seed}")
        self._queried = 0
        self.seq = 0
        self._later: list[tuple[float, int, dict[str, Any]]] = []  # duplicates and cancellations to come
        self._kinds = [k for k in options.mix]
        self._weights = [k.share for k in options.mix]
        self._hospitals = {r: _weighted([f for f in fs if f[0].startswith("H")]) for r, fs in world.facilities.items()}
        self._pharmacies = {r: _weighted([f for f in fs if f[0].startswith("P")]) for r, fs in world.facilities.items()}

    def lines(self) -> Iterator[dict[str, Any]]:
        for hour, count in enumerate(hour_counts(self.o.settlements)):
            for t in sorted(hour * 3600 + self.rng.random() * 3600 for _ in range(count)):
                yield from self._due(t)
                yield from self._settlement(round(t, 3))
        yield from self._due(float("inf"))

    def _due(self, t: float) -> Iterator[dict[str, Any]]:
        while self._later and self._later[0][0] <= t:
            yield heapq.heappop(self._later)[2]

    def _later_at(self, t: float, line: dict[str, Any]) -> None:
        t = round(min(t, DAY_SECONDS - 0.001), 3)
        line["t"] = t
        heapq.heappush(self._later, (t, self._next(), line))

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _msgid(self, facility: str, moment: datetime) -> str:
        return f"{facility}{moment:%Y%m%d%H%M%S}{self.o.msg_tag}{self._next():07d}"

    def _settlement(self, t: float) -> Iterator[dict[str, Any]]:
        rng, world = self.rng, self.world
        kind = rng.choices(self._kinds, weights=self._weights)[0]
        person = rng.choice(world.chronic_persons) if kind.med_type == "14" and world.chronic_persons else rng.choice(world.persons)
        if kind.med_type == "14" and not person.chronic:
            kind = self._kinds[1]  # a world without chronic patients: general outpatient instead
        codes, cum_weights = (self._pharmacies if kind.med_type == "41" else self._hospitals)[person.treating]
        facility = rng.choices(codes, cum_weights=cum_weights)[0]
        moment = datetime.combine(world.day, datetime.min.time()) + timedelta(seconds=t)
        request = self._bill_request(kind, person, facility, moment)
        if self.o.queries and self._queries.random() < self.o.queries:
            # Drawn and numbered apart from the day's: with queries or without, the same bills.
            self._queried += 1
            msgid = f"{facility}{moment:%Y%m%d%H%M%S}{self.o.msg_tag}Q{self._queried:06d}"
            query = {**self._envelope(Infno.PERSON_CUMULATIVE.value, person, facility, moment, msgid),
                     "input": {"data": {"psn_no": person.psn_no, "insutype": person.insutype}}}
            yield self._line(t, "send", YEAR_SO_FAR, query)
        if rng.random() < self.o.pre_settlements:
            pre = orjson.loads(orjson.dumps(request))
            pre["infno"], pre["msgid"] = kind.pre_infno, self._msgid(facility, moment)
            yield self._line(t, "send", "pre-settlement", pre)
        yield self._line(t, "send", kind.name, request)
        if rng.random() < self.o.duplicates:
            self._later_at(t + rng.uniform(0.2, 8.0), self._line(t, "send", "duplicate", request))
        if rng.random() < self.o.cancellations:
            data = request["input"]["data"]
            when = t + rng.uniform(60.0, 1800.0)
            cancel = {**self._envelope(kind.cancel_infno, person, facility, moment + timedelta(seconds=when - t)),
                      "input": {"data": {"psn_no": person.psn_no, "mdtrt_id": data["mdtrt_id"], "setl_id": ""}}}
            line = self._line(when, "cancel", "cancellation", cancel)
            line["target"] = request["msgid"]
            self._later_at(when, line)
        if rng.random() < self.o.malformed:
            yield self._malformed(t, kind, person, facility, moment)

    def _malformed(self, t: float, kind: CareKind, person: Person, facility: str, moment: datetime) -> dict[str, Any]:
        bad = self._bill_request(kind, person, facility, moment)
        if self.rng.random() < 0.5:
            raw = orjson.dumps(bad).decode()
            cut = raw.index('"input"') + self.rng.randrange(10, 60)  # after the msgid: it can be recovered
            line = self._line(t, "raw", MALFORMED_JSON, None)
            line["raw"] = raw[:cut]
            line["msgid"], line["key"] = bad["msgid"], person.psn_no
            return line
        data = bad["input"]["data"]
        data["medfee_sumamt"] = yuan(int(data["medfee_sumamt"].replace(".", "")) + 100)
        return self._line(t, "send", INVALID_SUM, bad)

    def _envelope(self, infno: str, person: Person, facility: str, moment: datetime, msgid: str = "") -> dict[str, Any]:
        return {
            "infno": infno, "msgid": msgid or self._msgid(facility, moment), "mdtrtarea_admvs": person.treating,
            "insuplc_admdvs": person.insured, "infver": "V1.0", "opter_type": "1", "opter": "0001",
            "opter_name": "cashier", "inf_time": f"{moment:%Y-%m-%d %H:%M:%S}", "fixmedins_code": facility,
        }

    def _bill_request(self, kind: CareKind, person: Person, facility: str, moment: datetime) -> dict[str, Any]:
        rng = self.rng
        details, days = self.bills.details(kind, draw_total(rng, kind), person.chronic)
        if kind.med_type == "14":
            dise_codg, dise_name = CHRONIC_DIAGNOSIS[person.chronic]
        elif kind.med_type == "21":
            dise_codg, dise_name = rng.choice(INPATIENT_DISEASES)
        elif kind.med_type == "11":
            dise_codg, dise_name = rng.choice(OUTPATIENT_DISEASES)
        else:
            dise_codg, dise_name = "", ""
        cert = rng.choices(("01", "02", "03"), weights=(6, 2.5, 1.5))[0]
        data: dict[str, Any] = {
            "psn_no": person.psn_no, "mdtrt_cert_type": cert,
            "mdtrt_cert_no": ("EV" if cert == "01" else "C") + person.psn_no[-12:],
            "insutype": person.insutype, "med_type": kind.med_type,
            "mdtrt_id": f"{self.o.msg_tag}V{self._next():07d}",
            "begntime": f"{moment - timedelta(days=days):%Y-%m-%d %H:%M:%S}",
            "dise_codg": dise_codg, "dise_name": dise_name,
            "acct_used_flag": "1" if person.acct_fen and rng.random() < 0.4 else "0",
            "medfee_sumamt": yuan(total_of(details)), "feedetail": details,
        }
        if kind.med_type == "21":
            data["endtime"] = f"{moment:%Y-%m-%d %H:%M:%S}"
        return {**self._envelope(kind.infno, person, facility, moment), "input": {"data": data}}

    @staticmethod
    def _line(t: float, op: str, kind: str, request: dict[str, Any] | None) -> dict[str, Any]:
        line: dict[str, Any] = {"t": t, "op": op, "kind": kind}
        if request is not None:
            line["msgid"] = request["msgid"]
            line["key"] = request["input"]["data"]["psn_no"]
            line["request"] = request
        return line


def day_lines(world: World, options: DayOptions) -> Iterator[dict[str, Any]]:
    """The day's lines in time order (see the module docstring)."""
    return DayGenerator(world, options).lines()


def write_day(world: World, options: DayOptions, path: Path) -> dict[str, int]:
    """Write the day as JSON lines; return how many lines of each kind."""
    counts: dict[str, int] = {}
    with path.open("wb") as out:
        for line in day_lines(world, options):
            out.write(orjson.dumps(line) + b"\n")
            counts[line["kind"]] = counts.get(line["kind"], 0) + 1
    return counts


def write_refdata(world: World, path: Path) -> dict[str, int]:
    data = world.refdata()
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return {section: len(records) for section, records in data.items()}


def default_persons(settlements: int) -> int:
    return max(40, settlements // 4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.generator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settlements", type=_at_least(1), default=650_000)
    parser.add_argument("--persons", type=_at_least(1), help="default: a quarter of the settlements (at least 40)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--run-id", default="", help=(
        "goes into every psn_no (default LT<seed>, the same for every day of that seed). Replaying a day again "
        "against the same database gets the platform's stored answers to its msgids: give each replay its own "
        "--run-id and --tag, or a fresh namespace and database (the replay counts answers made before it began)"))
    parser.add_argument("--tag", default="", help="goes into every msgid (default D<seed>); see --run-id")
    parser.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY)
    parser.add_argument("--pre", type=_share, default=0.0, help="share of settlements pre-settled first")
    parser.add_argument("--cancel", type=_share, default=0.0, help="share of settlements cancelled later")
    parser.add_argument("--dup", type=_share, default=0.0, help="share of settlements resent (same msgid)")
    parser.add_argument("--malformed", type=_share, default=0.0, help="extra malformed requests (share)")
    parser.add_argument("--queries", type=_share, default=0.0,
                        help="share of settlements a 5206 (the person's year so far) precedes")
    parser.add_argument("--home-usage", type=_share, default=0.0,
                        help="share of persons whose record states what their insurance paid at home this year")
    parser.add_argument("--out", type=Path, required=True, help="folder for refdata.json and day.jsonl")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:  # the names are checked before any file is opened (an existing day.jsonl is not emptied)
        world = World(persons=args.persons or default_persons(args.settlements), seed=args.seed,
                      run_id=args.run_id, day=args.day, home_usage_share=args.home_usage)
        options = DayOptions(settlements=args.settlements, seed=args.seed, tag=args.tag, pre_settlements=args.pre,
                             cancellations=args.cancel, duplicates=args.dup, malformed=args.malformed,
                             queries=args.queries)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    sections = write_refdata(world, args.out / "refdata.json")
    kinds = write_day(world, options, args.out / "day.jsonl")
    print(f"refdata.json: {sections}\nday.jsonl: {kinds}\nin {time.monotonic() - started:.1f}s", file=sys.stderr)


def _at_least(low: int):  # noqa: ANN202 (an argparse type)
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"at least {low}, not {text}")
        return value

    parse.__name__ = "int"
    return parse


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, not {text}")
    return value


if __name__ == "__main__":
    main()
