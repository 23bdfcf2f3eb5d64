"""``value``: a frozen, slotted dataclass built at half the cost, for the types made per bill line.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__(self, name, v)``
(it must get past the class's own ``__setattr__``, which refuses). A slotted class's fields are
member descriptors, and calling a descriptor's ``__set__`` directly sets the slot in one step:
about 0.15 µs a field instead of 0.3 here. Pricing makes several of these per bill line and a
dozen per settlement (docs/BENCHMARKS.md, 2026-12-05 "Pricing's per-record CPU").

A ``value`` class is exactly ``@dataclass(frozen=True, slots=True)`` (equality, hash, repr,
``replace``, ``FrozenInstanceError`` on assignment) apart from its ``__init__``. It takes what
the domain's value types need: positional fields with or without a default or a
``default_factory``. Anything else (``__post_init__``, keyword-only or non-init fields,
``InitVar``) is refused when the class is defined, so it cannot be half supported.
tests/unit/test_values.py holds a ``value`` class to the dataclass it stands for.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


def value(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True, slots=True)`` whose ``__init__`` sets the slots directly."""
    cls = dataclass(frozen=True, slots=True)(cls)
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: a value class has no __post_init__")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    if list(inspect.signature(cls.__init__).parameters)[1:] != names or any(f.kw_only for f in fields(cls)):  # type: ignore[arg-type]
        # an InitVar, a field left out of __init__ or one taken by keyword only
        raise TypeError(f"{cls.__name__}: a value class takes its fields, and only they, positionally in __init__")
    scope: dict[str, Any] = {"_MISSING": MISSING}
    params, lines = [], []
    for f in fields(cls):  # type: ignore[arg-type]
        scope[f"_set_{f.name}"] = getattr(cls, f.name).__set__
        if f.default is not MISSING:
            scope[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
            lines.append(f"    _set_{f.name}(self, {f.name})")
        elif f.default_factory is not MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            lines.append(f"    _set_{f.name}(self, _factory_{f.name}() if {f.name} is _MISSING else {f.name})")
        else:
            params.append(f.name)
            lines.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines or ["    pass"]) + "\n"
    made: dict[str, Any] = {}
    exec(source, scope, made)  # noqa: S102 - the source is built above from the class's field names
    init = made["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[misc]
    return cls
