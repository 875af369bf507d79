"""How a recipe key is declared (``opt``: default, help text, allowed values) and how a TOML
value is checked against the dataclass field it sets."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any

from glotta.errors import GlottaError


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with a help text (shown by ``--help``) and optional allowed values."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise GlottaError naming ``where``."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise GlottaError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(annotation):  # a table, e.g. one of [[train.phases]]
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise GlottaError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        return build_section(annotation, value, where, "")
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {annotation}")  # config fields are never unions
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    expected = getattr(annotation, "__name__", str(annotation))
    raise GlottaError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build_section(cls: type, values: dict[str, Any], origin: str, section: str) -> Any:
    """Instantiate ``cls`` from ``values``; unknown keys, wrong types and bad choices are errors."""
    hints = field_types(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        where = f"{origin}: [{section}] {key}" if section else f"{origin}.{key}"
        if key not in known:
            name = f"{section}.{key}" if section else key
            raise GlottaError(
                f"{origin}: unknown key '{name}' (known keys: {', '.join(sorted(known))})"
            )
        value = _check_value(value, hints[key], where)
        choices = known[key].metadata.get("choices")
        if choices and value not in choices:
            raise GlottaError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        kwargs[key] = value
    return cls(**kwargs)
