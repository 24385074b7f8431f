"""Options dataclasses: one way to read and check the options of a PEFT method or a distiller.

An options class is a dataclass deriving from :class:`Options`. Each field's type says how a raw value is read
(``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` choices, ``tuple[T, ...]``, ``T | None``, ``Any``) and
its bounds are declared once, on the field::

    @dataclass
    class LoraConfig(Options):
        rank: int = field(default=4, metadata=bounds(1, 1024))
        alpha: float = field(default=4.0, metadata=bounds(0.0, 1e4))

:meth:`Options.parse` builds one from a mapping of raw values -- text from the CLI's ``KEY=VALUE``, JSON values
from adapter files and experiment plans -- and refuses an unknown key (listing the valid ones). Every instance,
however built, is checked when it is made (``__post_init__``): each value is coerced to its field's type
(numbers finite, integers whole), checked against its bounds (or the field's own ``check``), then the class's
:meth:`Options.validate` applies the rules that join several fields. Every refusal is one
:class:`OptionError`: a ValueError whose message is one line naming the option.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T", bound="Options")

_BOUNDS_KEY = "bounds"
_CHECK_KEY = "check"
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class OptionError(ValueError):
    """An option that cannot be used. ``option``: its name (None for a wrong set of keys); the message is one
    line, prefixed by ``owner`` (e.g. ``distiller 'vid'``) when the option's owner is known."""

    def __init__(self, option: str | None, message: str, owner: str = "") -> None:
        self.option, self.detail, self.owner = option, message, owner
        text = message if option is None else f"option {option} {message}"
        super().__init__((f"{owner}: {text}" if owner else text).replace("\n", " "))

    def within(self, owner: str) -> OptionError:
        """The same error, its message prefixed by ``owner`` (kept when it has one already)."""
        return self if self.owner else OptionError(self.option, self.detail, owner)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """``low <= value <= high`` (``low < value`` when ``low_open``); None: no bound on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        opening = "(" if self.low_open or self.low is None else "["
        return f"{opening}{low}, {high}{']' if self.high is not None else ')'}"


def bounds(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> dict[str, Bounds]:
    """Field metadata: the inclusive range of a number (``low_open``: ``low`` itself excluded, e.g. a temperature
    ``> 0``); ``field(default=4, metadata=bounds(1, 1024))``. A tuple field's bounds apply to each element."""
    return {_BOUNDS_KEY: Bounds(low, high, low_open)}


def check(function: Callable[[Any], Any]) -> dict[str, Callable[[Any], Any]]:
    """Field metadata for a value no type describes (e.g. a distiller's ``blocks``): ``function(value)`` returns
    the value to keep or raises ValueError with what is wrong (the message then names the option)."""
    return {_CHECK_KEY: function}


class Options:
    """Base of every options dataclass (see the module docstring). Subclasses are ``@dataclass`` classes; they
    override :meth:`validate` for rules between fields (calling ``super().validate()`` is not needed)."""

    __dataclass_fields__: typing.ClassVar[dict[str, Any]]  # every subclass is a dataclass (for type checkers)

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in dataclasses.fields(self):
            value = coerce_field(f, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Rules that join several fields; raise :class:`OptionError` naming an option. Nothing by default."""

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls: type[T], raw: Mapping[str, Any], owner: str = "") -> T:
        """An instance from raw values (see the module docstring); :class:`OptionError` naming the option (and
        ``owner``, e.g. ``PEFT method 'lora'``, in its message) otherwise."""
        names = cls.option_names()
        unknown = sorted(set(raw) - set(names))
        if unknown:
            valid = ", ".join(names) or "none (this one has no options)"
            raise OptionError(None, f"unknown option(s) {', '.join(map(str, unknown))}; valid: {valid}", owner)
        try:
            return cls(**raw)
        except OptionError as exc:
            raise exc.within(owner) from None


_HINTS: dict[type, dict[str, Any]] = {}  # an options class -> its resolved field types


def _type_hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def coerce_field(f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """``value`` for field ``f`` of type ``hint``: coerced, checked against the field's bounds or ``check``."""
    if _CHECK_KEY in f.metadata:
        try:
            return f.metadata[_CHECK_KEY](value)
        except ValueError as exc:
            detail = str(exc).splitlines()[0] if str(exc) else f"is not valid, got {value!r:.40}"
            raise OptionError(f.name, detail) from None
    value = coerce(f.name, hint, value)
    limits = f.metadata.get(_BOUNDS_KEY)
    if limits is not None:
        for item in value if isinstance(value, tuple) else (value,):
            if item is not None and not limits.contains(item):
                raise OptionError(f.name, f"must be in {limits}, got {item!r:.40}")
    return value


def coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` as type ``hint`` (see the module docstring); :class:`OptionError` naming option ``name``."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin is Union or origin is types.UnionType:
        members = typing.get_args(hint)
        if value is None and type(None) in members:
            return None
        if isinstance(value, str) and value.strip().lower() in ("none", "null") and type(None) in members:
            return None
        rest = [m for m in members if m is not type(None)]
        if len(rest) == 1:
            return coerce(name, rest[0], value)
        raise TypeError(f"option {name}: a union of {hint} is not supported by infosam_core.options")
    if origin is Literal:
        choices = typing.get_args(hint)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return choice
            if isinstance(value, str) and not isinstance(choice, str) and value.strip() == str(choice).lower():
                return choice
        raise OptionError(name, f"must be one of {', '.join(map(str, choices))}, got {value!r:.40}")
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        if not isinstance(value, (list, tuple)):
            raise OptionError(name, f"must be a list, got {value!r:.40}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(name, args[0], v) for v in value)
        if len(args) != len(value):
            raise OptionError(name, f"must be a list of {len(args)} values, got {value!r:.40}")
        return tuple(coerce(name, a, v) for a, v in zip(args, value, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise OptionError(name, f"must be true or false, got {value!r:.40}")
    if hint is int:
        number = _number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise OptionError(name, f"must be an integer, got {value!r:.40}")
        return int(number)
    if hint is float:
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise OptionError(name, f"must be a finite number, got {value!r:.40}")
        return float(number)
    if hint is str:
        if not isinstance(value, str):
            raise OptionError(name, f"must be text, got {value!r:.40}")
        return value
    raise TypeError(f"option {name}: type {hint} is not supported by infosam_core.options")


def _number(value: Any) -> float | int | None:
    """``value`` as a number (text is parsed), None when it is not one; bools are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return None
    return None
