"""A faster `__init__` for the frozen dataclasses evaluation makes per patient.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__` (its
own `__setattr__` refuses), which made an `Outcome` cost 3.7 times as much as writing the
fields straight into the instance's dict (2.8 us), and evaluation and its report make several
such objects per atom and patient. `direct_init` gives a frozen dataclass an `__init__` with
the same parameters and defaults that does the latter: the same code a hand-written one would
be (`d = self.__dict__; d["a"] = a; ...`), made from the fields once, as `dataclasses` makes
its own, so that the fields are written once, in the class body.

`cached_attribute` is `functools.cached_property` without its lock, for the values such
objects work out once when first read (a criterion's verdict, a patient's status).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

_Class = TypeVar("_Class", bound=type)
_Value = TypeVar("_Value")


def direct_init(cls: _Class) -> _Class:
    """Replace a frozen dataclass's `__init__` with one that writes its fields straight into
    the instance's `__dict__` (same parameters, order and defaults; the class keeps equality,
    hashing and its refusal of assignment). Only for plain fields: a `default_factory`,
    keyword-only or init-less field, `InitVar` or `__post_init__` is refused (TypeError).

    >>> @direct_init
    ... @dataclasses.dataclass(frozen=True)
    ... class Point:
    ...     x: int
    ...     y: int = 0
    >>> Point(1), Point(1, 2) == Point(1, 2)
    (Point(x=1, y=0), True)
    """
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: direct_init takes a dataclass without __post_init__")
    namespace: dict[str, Any] = {}
    parameters: list[str] = []
    lines: list[str] = []
    for each in dataclasses.fields(cls):
        if each.default_factory is not dataclasses.MISSING or each.kw_only or not each.init:
            raise TypeError(f"{cls.__name__}.{each.name}: direct_init takes plain fields only")
        if each.default is dataclasses.MISSING:
            parameters.append(each.name)
        else:
            namespace[f"_default_{each.name}"] = each.default
            parameters.append(f"{each.name}=_default_{each.name}")
        lines.append(f"    fields[{each.name!r}] = {each.name}\n")
    source = f"def __init__(self, {', '.join(parameters)}):\n    fields = self.__dict__\n"
    exec(source + "".join(lines), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = f"Set the fields of {cls.__name__} (`engine.dataclass_init.direct_init`)."
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


class cached_attribute(Generic[_Value]):  # (named as functools.cached_property)
    """A method's value worked out at the first read and kept in the instance's `__dict__`,
    which later reads find first (a non-data descriptor): `functools.cached_property`
    without the lock Python 3.11 takes at every first read (a re-entrant lock per
    descriptor, acquired and released around the work; Python 3.12 dropped it). For pure
    methods only: two threads reading the value first at once both work it out, and keep
    one of two equal values.

    >>> @dataclasses.dataclass(frozen=True)
    ... class Square:
    ...     side: int
    ...     @cached_attribute
    ...     def area(self) -> int:
    ...         return self.side * self.side
    >>> square = Square(3)
    >>> square.area, square.__dict__["area"], Square.area.name
    (9, 9, 'area')
    """

    def __init__(self, compute: Callable[[Any], _Value]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_attribute[_Value]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _Value: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self.compute(instance)
        instance.__dict__[self.name] = value
        return value
