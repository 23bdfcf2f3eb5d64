"""``value``: a frozen, slotted dataclass built at half the cost, for the types made per bill line.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__(self, name, v)``
(it must get past the class's own ``__setattr__``, which refuses). A slotted class's fields are
member descriptors, and calling a descriptor's ``__set__`` directly sets the slot in one step:
about 0.15 µs a field instead of 0.3 here. Pricing makes several of these per bill line and a
dozen per settlement (docs/BENCHMARKS.md, 2026-12-05 "Today's machine, and pricing's per-record CPU").

A ``value`` class is exactly ``@dataclass(frozen=True, slots=True)`` (equality, hash, repr,
``replace``, ``FrozenInstanceError`` on assignment) apart from its ``__init__``. It takes what
the domain's value types need: positional fields with or without a default or a
``default_factory``. Anything else (``__post_init__``, keyword-only or non-init fields,
``InitVar``) is refused when the class is defined, so it cannot be half supported.
tests/unit/test_values.py holds a ``value`` class to the dataclass it stands for.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    """The default of a field that has a ``default_factory``, in ``__init__``'s signature (as dataclasses shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def value(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True, slots=True)`` whose ``__init__`` sets the slots directly."""
    cls = dataclass(frozen=True, slots=True)(cls)
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: a value class has no __post_init__")
    declared = fields(cls)  # type: ignore[arg-type]
    if (list(inspect.signature(cls.__init__).parameters)[1:] != [f.name for f in declared]
            or any(f.kw_only for f in declared)):
        # an InitVar, a field left out of __init__ or one taken by keyword only
        raise TypeError(f"{cls.__name__}: a value class takes its fields, and only they, positionally in __init__")
    # The setters and defaults reach __init__ as a closure, as dataclasses does it, so that it keeps
    # the module's globals (typing.get_type_hints and inspect resolve its annotations there).
    closure: dict[str, Any] = {"_FACTORY": _FACTORY}
    params, lines = [], []
    for f in declared:
        closure[f"_set_{f.name}"] = getattr(cls, f.name).__set__
        if f.default is not MISSING:
            closure[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
            lines.append(f"        _set_{f.name}(self, {f.name})")
        elif f.default_factory is not MISSING:
            closure[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            lines.append(f"        _set_{f.name}(self, _factory_{f.name}() if {f.name} is _FACTORY else {f.name})")
        else:
            params.append(f.name)
            lines.append(f"        _set_{f.name}(self, {f.name})")
    source = (f"def _make({', '.join(closure)}):\n"
              f"    def __init__(self, {', '.join(params)}):\n" + "\n".join(lines or ["        pass"]) + "\n"
              "    return __init__\n")
    made: dict[str, Any] = {}
    exec(source, sys.modules[cls.__module__].__dict__, made)  # noqa: S102 - built above from the field names
    init = made["_make"](**closure)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(cls.__init__.__annotations__)
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[misc]
    return cls
