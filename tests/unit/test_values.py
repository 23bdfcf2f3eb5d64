"""A ``value`` class behaves as the ``@dataclass(frozen=True, slots=True)`` it stands for."""

import copy
import dataclasses
import pickle
from dataclasses import InitVar, dataclass, field
from decimal import Decimal

import pytest

from yidi.domain.values import value


@dataclass(frozen=True, slots=True)
class Plain:
    seq: str
    amount: Decimal
    note: str = "within scope"
    delta: dict = field(default_factory=dict)


@value
class Fast:
    seq: str
    amount: Decimal
    note: str = "within scope"
    delta: dict = field(default_factory=dict)


def _same(fast: Fast, plain: Plain) -> None:
    assert [getattr(fast, f.name) for f in dataclasses.fields(fast)] == [getattr(plain, f.name) for f in dataclasses.fields(plain)]
    assert repr(fast).replace("Fast", "Plain") == repr(plain)
    assert hash(dataclasses.replace(fast, delta=None)) == hash(dataclasses.replace(plain, delta=None))


@pytest.mark.parametrize("args, kwargs", [
    (("1", Decimal("2.50")), {}),
    (("1", Decimal("2.50"), "class C"), {}),
    (("1",), {"amount": Decimal("0.01"), "delta": {"a": 1}}),
    ((), {"seq": "2", "amount": Decimal(3), "note": "n", "delta": {}}),
])
def test_a_value_class_is_made_as_its_dataclass_is(args, kwargs):
    _same(Fast(*args, **kwargs), Plain(*args, **kwargs))


def test_each_value_gets_its_own_default_from_the_factory():
    one, two = Fast("1", Decimal(1)), Fast("2", Decimal(2))
    assert one.delta == {} and one.delta is not two.delta


def test_a_value_class_is_frozen_slotted_and_compares_by_its_fields():
    made = Fast("1", Decimal("2.50"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.amount = Decimal(0)
    assert not hasattr(made, "__dict__") and dataclasses.is_dataclass(made)
    assert Fast.__dataclass_params__.frozen
    assert made == Fast("1", Decimal("2.5")) and made != Fast("1", Decimal("2.51"))
    assert dataclasses.replace(made, note="x") == Fast("1", Decimal("2.50"), "x")
    assert pickle.loads(pickle.dumps(made)) == made and copy.deepcopy(made) == made


def test_a_value_class_refuses_what_its_init_does():
    with pytest.raises(TypeError):
        Fast("1")  # amount missing
    with pytest.raises(TypeError):
        Fast("1", Decimal(1), "n", {}, "too many")
    with pytest.raises(TypeError):
        Fast("1", Decimal(1), seq="2")


def test_what_a_value_class_cannot_take_is_refused_where_it_is_defined():
    with pytest.raises(TypeError, match="__post_init__"):
        @value
        class Checked:
            a: int

            def __post_init__(self) -> None:
                pass
    with pytest.raises(TypeError, match="positionally"):
        @value
        class KeywordOnly:
            a: int = field(kw_only=True)
    with pytest.raises(TypeError, match="positionally"):
        @value
        class WithInitVar:
            a: int
            b: InitVar[int] = 0
    with pytest.raises(TypeError, match="positionally"):
        @value
        class LeftOut:
            a: int
            b: int = field(init=False, default=0)


def _value_classes() -> list[type]:
    from yidi.contracts.settlement import BillFields
    from yidi.domain import eligibility, pricing
    from yidi.platform import kafka

    modules = (eligibility, pricing, kafka)
    found = [c for m in modules for c in vars(m).values()
             if isinstance(c, type) and c.__module__ == m.__name__ and dataclasses.is_dataclass(c)
             and c.__dataclass_params__.frozen and "__slots__" in vars(c)]
    return [*found, BillFields]


@pytest.mark.parametrize("cls", _value_classes(), ids=lambda c: c.__name__)
def test_the_value_classes_init_reads_as_their_dataclass_would(cls):
    """The signature (names, defaults, ``<factory>``) and the resolved type hints of the fields."""
    import inspect
    import typing

    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in dataclasses.fields(cls)]
    for p, f in zip(params, dataclasses.fields(cls), strict=True):
        default = (f.default if f.default is not dataclasses.MISSING
                   else "<factory>" if f.default_factory is not dataclasses.MISSING else inspect.Parameter.empty)
        assert (repr(p.default) if default == "<factory>" else p.default) == default
    hints = typing.get_type_hints(cls.__init__)
    assert hints == {**{f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}, "return": type(None)}
