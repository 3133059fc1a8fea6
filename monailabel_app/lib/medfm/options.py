"""One declarative base for every set of options this server reads: a request's, a config file's, `--conf`'s.

Each field is a pydantic field with its type, its bounds (`ge`/`gt`/`le`/`lt`) and a description; the help text,
the words of an error and MONAI Label's `/info/` options are generated from them, so a bound is written once.
A request's strings ("8", "true", "lung,brain", '{"tumour": 1}') are converted by pydantic's lax rules; an option
built in code is checked strictly (no "8" for 8), unless the class says otherwise. A bad value is an `InputError`
whose message starts with the class's `what` ("bad training parameter: ...").
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from .errors import InputError

EMPTY = (None, "", "None", "null")  # what a request sends for "not set": the field keeps its default


class Options(BaseModel):
    """Subclasses declare `what` (the start of their error messages) and their fields."""

    model_config = ConfigDict(strict=True, extra="forbid")
    what: ClassVar[str] = "bad option"

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise InputError(f"{self.what}: {self._words(err, values)}") from None

    # ---- building -----------------------------------------------------------------------------------------------
    @classmethod
    def request_values(cls, request: Mapping[str, Any]) -> dict[str, Any]:
        """This class's fields out of a request (which may carry other keys), converted from strings by pydantic's
        lax rules: a sequence may come as names separated by commas, a mapping as JSON text. Empty = default."""
        values = {}
        for name, info in cls.model_fields.items():
            value = request.get(name)
            if value is None or (isinstance(value, str) and value in EMPTY):
                continue
            kind = info.annotation
            try:
                values[name] = _lax(kind).validate_python(_from_text(value, kind))
            except (ValidationError, ValueError):
                raise InputError(f"{cls.what}: {name} must be {cls.rule(name)}, got {value!r}") from None
        return values

    @classmethod
    def from_request(cls, request: Mapping[str, Any]):
        return cls(**cls.request_values(request))

    def replace(self, **changes: Any):
        """A copy with `changes`, checked as a new instance is."""
        return type(self)(**{**self.model_dump(), **changes})

    def to_json(self) -> dict:
        return self.model_dump(mode="json")

    # ---- describing ---------------------------------------------------------------------------------------------
    @classmethod
    def rule(cls, name: str) -> str:
        """What a field accepts, in words: its type, its bounds, whether it may be empty."""
        info = cls.model_fields[name]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        kind, optional = _strip_none(info.annotation)
        words = str(extra.get("kind") or _type_words(kind))
        if extra.get("unit"):
            words += f" of {extra['unit']}"
        bounds = _bounds(info.metadata, whole=kind is int)
        return words + (f" {bounds}" if bounds else "") + (" or empty" if optional else "")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> what it is for and what it accepts (for the docs, `/info/` readers and errors alike)."""
        return {name: f"{info.description}; {cls.rule(name)}" for name, info in cls.model_fields.items()}

    @classmethod
    def info_options(cls, names: Iterable[str] | None = None, empty: Any = None) -> dict[str, Any]:
        """The defaults as MONAI Label's `/info/` lists a task's options: a choice is a list with the default first
        (MONAI Label's Slicer plugin preselects a list's first entry), an unset value shows as `empty`."""
        out = {}
        for name in names or cls.model_fields:
            info = cls.model_fields[name]
            default = info.get_default(call_default_factory=True)
            choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal else ()
            if choices:
                default = [default, *(c for c in choices if c != default)]
            out[name] = empty if default is None else default
        return out

    @classmethod
    def _words(cls, err: ValidationError, values: Mapping[str, Any]) -> str:
        first = err.errors()[0]
        name = first["loc"][0] if first["loc"] else None
        if first["type"] == "value_error":  # a check of our own (a validator): its words as written
            return str(first["ctx"]["error"])
        if first["type"] == "extra_forbidden":
            return f"{name} is not one of {', '.join(cls.model_fields)}"
        if name in cls.model_fields:
            return f"{name} must be {cls.rule(name)}, got {values.get(name, first['input'])!r}"
        return first["msg"]


@cache
def _lax(kind) -> TypeAdapter:
    return TypeAdapter(kind)


def _strip_none(kind) -> tuple[Any, bool]:
    """`X | None` -> (X, True); any other type -> (it, False). Options use no other unions."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return kind, False


def _from_text(value: Any, kind) -> Any:
    """A request's text for a sequence (names separated by commas) or a mapping (JSON); a bool only for a bool
    (pydantic's lax mode would read true as 1); a sequence of names' items as text, as a request's names are."""
    kind, _ = _strip_none(kind)
    origin = typing.get_origin(kind)
    if isinstance(value, bool) and kind is not bool:
        raise ValueError(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if typing.get_args(kind)[0] is str and isinstance(value, list | tuple):
            value = [str(v) for v in value]
    if origin is dict and isinstance(value, str):
        value = json.loads(value)
    return value


def _type_words(kind) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(kind))
    if origin in (list, tuple):
        return "a list of names (or names separated by commas)"
    if origin is dict:
        args = typing.get_args(kind)
        value, bounds = _annotated(args[1]) if args else (None, "")
        each = f"{_type_words(value)} {bounds}".strip() if bounds else ""
        return "a JSON object" + (f", each value {each}" if each else "")
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text", Path: "a folder"}.get(
        kind, str(kind))


def _annotated(kind) -> tuple[Any, str]:
    """`Annotated[int, Field(ge=1, le=255)]` (a dict's values) -> (int, "from 1 to 255"); a bare type -> (it, "")."""
    if typing.get_origin(kind) is not typing.Annotated:
        return kind, ""
    inner, *extras = typing.get_args(kind)
    metadata = [m for extra in extras for m in (extra.metadata if isinstance(extra, FieldInfo) else [extra])]
    return inner, _bounds(metadata, whole=inner is int)


def _bounds(metadata: list, whole: bool) -> str:
    """`ge`/`gt`/`le`/`lt` in words: "from 1 to 256" for whole numbers, "in (0, 1]" for numbers."""
    low = high = None
    for m in metadata:
        for attr, side in (("ge", "["), ("gt", "("), ("le", "]"), ("lt", ")")):
            value = getattr(m, attr, None)
            if value is not None:
                if attr in ("ge", "gt"):
                    low = (value, side)
                else:
                    high = (value, side)
    if low and high:
        if whole and low[1] == "[" and high[1] == "]":
            return f"from {low[0]} to {high[0]}"
        return f"in {low[1]}{low[0]}, {high[0]}{high[1]}"
    if low:
        return f"{'at least' if low[1] == '[' else 'above'} {low[0]}"
    if high:
        return f"{'at most' if high[1] == ']' else 'below'} {high[0]}"
    return ""
