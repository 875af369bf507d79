"""Loading a recipe: a shipped name or a TOML file, then ``--set`` overrides.

:mod:`glotta.config` holds the dataclasses and checks each key on its own (names, types,
choices); :mod:`glotta.validate` checks the recipe as a whole (ranges, every rule that spans keys
and sections, the model family's own rules, files and folders) before any stage runs.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path
from typing import Any

from glotta.config import (
    SECTIONS,
    Recipe,
    build_section,
)
from glotta.errors import GlottaError


def recipe_from_dict(data: dict[str, Any], origin: str) -> Recipe:
    """Build the recipe's sections; each key is checked on its own (name, type, choices). The
    rules between keys and sections are :func:`glotta.validate.recipe_problems`' job."""
    sections = {}
    for name, values in data.items():
        if name not in SECTIONS:
            raise GlottaError(
                f"{origin}: unknown section [{name}] (known sections: {', '.join(SECTIONS)})"
            )
        if not isinstance(values, dict):
            raise GlottaError(f"{origin}: '{name}' must be a table ([{name}]), not a value")
        sections[name] = build_section(SECTIONS[name], values, origin, name)
    return Recipe(**sections)


def shipped_recipes() -> list[str]:
    folder = importlib.resources.files("glotta.recipes")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_recipe_text(name_or_path: str) -> tuple[str, str]:
    """Return (TOML text, origin label) for a shipped recipe name or a file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except FileNotFoundError:
            raise GlottaError(f"recipe file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GlottaError(f"recipe file {path} cannot be read: {exc}") from None
    resource = importlib.resources.files("glotta.recipes") / f"{name_or_path}.toml"
    if not resource.is_file():
        raise GlottaError(
            f"no recipe named '{name_or_path}' (shipped: {', '.join(shipped_recipes())}; "
            "or give a path to a .toml file)"
        )
    return resource.read_text(encoding="utf-8"), f"recipe '{name_or_path}'"


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value``; the value is TOML (``3``, ``1e-4``, ``true``, ``["x"]``) or a bare string."""
    if "=" not in assignment:
        raise GlottaError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.max_steps=100")
    key, raw = assignment.split("=", 1)
    keys = key.strip().split(".")
    if len(keys) != 2 or not all(keys):
        raise GlottaError(f"--set {assignment!r}: KEY must be section.key, e.g. train.max_steps")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as cosine or a path
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for assignment in overrides:
        (section, key), value = parse_override(assignment)
        data.setdefault(section, {})[key] = value
    return data


def load_recipe(name_or_path: str | None, overrides: list[str] = ()) -> Recipe:
    """Load a shipped recipe by name or a TOML file, then apply ``--set`` overrides."""
    if name_or_path is None:
        data: dict[str, Any] = {}
        origin = "--set"
    else:
        text, origin = _read_recipe_text(name_or_path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise GlottaError(f"{origin} is not valid TOML: {exc}") from None
    apply_overrides(data, list(overrides))
    return recipe_from_dict(data, origin)


def dump_toml(data: dict[str, Any]) -> str:
    """Write a recipe dict back to TOML (flat tables of scalars and lists only)."""

    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            escaped = escaped.replace("\t", "\\t")
            return f'"{escaped}"'
        if isinstance(value, list):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        raise TypeError(f"cannot write {value!r} to TOML")

    def is_table_list(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)

    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(
            f"{key} = {fmt(value)}" for key, value in values.items() if not is_table_list(value)
        )
        lines.append("")
        for key, value in values.items():
            if is_table_list(value):  # arrays of tables come after the section's own keys
                for table in value:
                    lines.append(f"[[{section}.{key}]]")
                    lines.extend(f"{k} = {fmt(v)}" for k, v in table.items())
                    lines.append("")
    return "\n".join(lines)
