"""Hypothesis strategies that mutate a valid message at random: a value replaced by any JSON, a
key dropped or added. What the platform reads from outside (a gateway's request, a region's
feed record, an office's filing request) is fuzzed with them: whatever arrives, a stage or a feed
refuses it as data, never raises something else (a batch retried for ever)."""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzzing(examples: int) -> settings:
    """The fuzz tests' settings: in the suite, ``examples`` fixed examples (derandomized: every run,
    CI's too, tries the same ones, and a failure is one anyone can run again); with
    ``YIDI_FUZZ_EXAMPLES=N`` (``make fuzz``), N examples drawn afresh each run, to explore further
    (Hypothesis keeps a failing one in .hypothesis/ and tries it first next time, and prints it)."""
    explore = int(os.environ.get("YIDI_FUZZ_EXAMPLES") or 0)
    return settings(max_examples=explore or examples, derandomize=not explore, deadline=None,
                    suppress_health_check=list(HealthCheck))

LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),  # control characters, any plane of unicode, empty
    st.sampled_from(["", " ", "0", "-1", "1E+30", "1e-30", "NaN", "Infinity", "0.001", "99999999999999.99",
                     "2022-07-01", "2022-07-01 10:05:00", "20220701100500", "2999-12-31 23:59:59", "\u0000",
                     "１２", "٣", "H11010500001", "13100000000000000001", "21", "2208", "2601"]),
)
JSON = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                  st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                    max_leaves=12)


def paths(value: Any, here: tuple = ()) -> list[tuple]:
    """Every place in ``value`` a mutation may touch: each key of each object, each item of each list."""
    found = [here] if here else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*here, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += paths(child, (*here, i))
    return found


def mutate(draw: st.DrawFn, message: dict, *, focus: tuple = (), changes: dict[tuple, st.SearchStrategy] | None = None,
           ) -> dict:
    """``message`` (a copy) under one to three mutations: a value replaced, a key dropped or added,
    or one of ``changes`` (a path, and the values it takes). Half the mutations fall under ``focus``
    (a path) when it holds an object, where the kinds of message differ."""
    message = copy.deepcopy(message)
    choices = ["replace", "drop", "drop", "add"] + (["change"] if changes else [])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(choices))
        if kind == "change":
            path = draw(st.sampled_from(sorted(changes, key=str)))
            _set(message, path, draw(changes[path]))
            continue
        inner = _at(message, focus)
        places = [(*focus, *p) for p in paths(inner)] if focus and isinstance(inner, dict) and inner else []
        if not places or draw(st.booleans()):
            places = paths(message)
        if not places:
            message[draw(st.text(max_size=12))] = draw(JSON)
            continue
        path = draw(st.sampled_from(places))
        parent = _at(message, path[:-1])
        if kind == "replace":
            parent[path[-1]] = draw(JSON)
        elif kind == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(JSON)
    return message


def _at(value: Any, path: tuple) -> Any:
    for step in path:
        if isinstance(value, dict) and step in value or isinstance(value, list) and isinstance(step, int) \
                and step < len(value):
            value = value[step]
        else:
            return None
    return value


def _set(message: dict, path: tuple, value: Any) -> None:
    parent = _at(message, path[:-1])
    if isinstance(parent, dict):
        parent[path[-1]] = value
