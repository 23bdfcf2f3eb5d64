"""JSON on the wire: orjson, with pydantic models dumped in their wire form (amounts as strings)."""

from __future__ import annotations

from typing import Any

import hashlib

import orjson
from pydantic import BaseModel


def dumps(value: BaseModel | dict[str, Any] | list[Any]) -> bytes:
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=False).encode()
    return orjson.dumps(value)


def request_hash(model: BaseModel) -> str:
    """Hash of what a request asks (not where it is answered): a reused id with another hash is refused."""
    canonical = model.model_dump(mode="json", exclude={"reply_to"})
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


# The deepest a request may nest: the contract's deepest is a bill's line (five levels). orjson
# reads 1,024 levels but writes at most 254, and Python's recursion stops near 1,000: a request
# nesting deeper in a field the models ignore stopped the stage that hashed it. Messages between
# the services carry a request a level or two down (eligibility passes its bytes on): they may
# nest ``CARRIED`` levels more, so what eligibility took is never refused after it.
MAX_DEPTH = 64
CARRIED = 8
# The most objects and arrays a message may hold. A request's largest are a bill of 2,000 lines
# (about 2,000) and a 3202 whose details fill the 900 KB a request may have (about 15,000 of
# them). 850 KB of empty arrays in an ignored field made 280,000, and each stage's walk of them
# took 0.3 s, 20-40 times a real bill's whole path (a review, session 37).
MAX_CONTAINERS = 50_000
# A message between the services carries a request beside what the platform adds (the person, a
# refusal, an answer and its funds): it may hold ``CARRIED_CONTAINERS`` more, so that a request
# eligibility took at the limit is not refused after it (a review, session 48).
CARRIED_CONTAINERS = 1_000


def loads(data: bytes | str, max_depth: int = MAX_DEPTH + CARRIED,
          max_containers: int = MAX_CONTAINERS + CARRIED_CONTAINERS) -> Any:
    """Parse JSON; refuse a NUL character (``\\u0000``) in any string, which Postgres cannot store
    (text and json columns alike): a message carrying one is refused where it arrives, as malformed,
    instead of failing its whole batch's SQL later. Refuse nesting deeper than ``max_depth`` and
    more than ``max_containers`` objects and arrays (a gateway's request: ``MAX_DEPTH``,
    ``MAX_CONTAINERS``)."""
    value = orjson.loads(data)
    if isinstance(data, bytes):
        nul, brackets = b"\\u0000" in data, data.count(b"[") + data.count(b"{")
    else:
        nul, brackets = "\\u0000" in data, data.count("[") + data.count("{")
    # Fewer brackets than the limit cannot nest past it: the walk is for long bills (and NULs) only.
    if nul or brackets > max_depth:
        _check(value, nul, max_depth, max_containers)
    return value


def loads_request(data: bytes | str) -> Any:
    """``loads`` of a gateway's own request, where it arrives: held to a request's limits
    (``MAX_DEPTH``, ``MAX_CONTAINERS``), not a message's that carries one."""
    return loads(data, MAX_DEPTH, MAX_CONTAINERS)


def _check(value: Any, nul: bool, max_depth: int, max_containers: int) -> None:
    """Walk ``value`` without recursion: no string holds a NUL (when ``nul``), no container is
    nested deeper than ``max_depth``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    room = max_containers  # counted as they are found: a list of 280,000 was stacked whole first
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
            if nul and any("\x00" in k for k in item):
                raise ValueError("a string holds a NUL character (\\u0000)")
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise ValueError(f"the message nests deeper than {max_depth} levels")
        for child in children:
            if isinstance(child, (dict, list)):
                room -= 1
                if room < 0:
                    raise ValueError(f"the message holds more than {max_containers} objects and arrays")
                stack.append((child, depth + 1))
            elif nul and isinstance(child, str) and "\x00" in child:
                raise ValueError("a string holds a NUL character (\\u0000)")
    if nul and isinstance(value, str) and "\x00" in value:
        raise ValueError("a string holds a NUL character (\\u0000)")
