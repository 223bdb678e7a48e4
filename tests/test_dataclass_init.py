"""`direct_init`: the same constructor as the frozen dataclass's, writing the instance's dict."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from engine.dataclass_init import direct_init
from engine.evaluate.outcome import Outcome, Truth


@dataclasses.dataclass(frozen=True)
class _Generated:
    name: str
    count: int = 0
    tags: tuple[str, ...] = ()


@direct_init
@dataclasses.dataclass(frozen=True)
class _Direct:
    name: str
    count: int = 0
    tags: tuple[str, ...] = ()


def test_the_constructor_takes_what_the_dataclass_s_takes() -> None:
    generated = inspect.signature(_Generated.__init__)
    direct = inspect.signature(_Direct.__init__)
    assert [(p.name, p.kind, p.default) for p in direct.parameters.values()] == [
        (p.name, p.kind, p.default) for p in generated.parameters.values()
    ]
    for arguments, keywords in [(("a",), {}), (("a", 2), {}), (("a",), {"tags": ("x",)})]:
        made, expected = _Direct(*arguments, **keywords), _Generated(*arguments, **keywords)
        assert dataclasses.astuple(made) == dataclasses.astuple(expected)
    with pytest.raises(TypeError):
        _Direct()
    with pytest.raises(TypeError):
        _Direct("a", 1, (), 4)


def test_the_class_stays_frozen_and_compares_by_fields() -> None:
    outcome = Outcome(Truth.MET, "met", evidence=("Observation/1",))
    assert outcome == Outcome(Truth.MET, "met", "", ("Observation/1",))
    assert hash(outcome) == hash(Outcome(Truth.MET, "met", evidence=("Observation/1",)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.reason = "changed"  # type: ignore[misc]


def test_fields_it_cannot_write_plainly_are_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Factory:
        items: list[str] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class After:
        value: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class KeywordOnly:
        value: int

    for cls in (Factory, After, KeywordOnly, int):
        with pytest.raises(TypeError):
            direct_init(cls)


def test_a_cached_attribute_is_worked_out_once_per_instance_at_its_first_read() -> None:
    from engine.dataclass_init import cached_attribute

    calls: list[int] = []

    @dataclasses.dataclass(frozen=True)
    class Counted:
        side: int

        @cached_attribute
        def area(self) -> int:
            """The square's area."""
            calls.append(self.side)
            return self.side * self.side

    first, second = Counted(2), Counted(3)
    assert "area" not in first.__dict__
    assert (first.area, first.area, second.area, first.area) == (4, 4, 9, 4)
    assert calls == [2, 3]
    assert first == Counted(2) and "area" not in repr(first)  # not a field
    assert (
        isinstance(Counted.area, cached_attribute) and Counted.area.__doc__ == "The square's area."
    )
