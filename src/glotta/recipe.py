"""Loading a recipe: a shipped name or a TOML file, ``--set`` overrides, and validation of the
recipe as a whole before any stage runs.

:mod:`glotta.config` holds the dataclasses and checks each key on its own (names, types,
choices); this module checks what spans keys and sections — the model family against its preset,
widths, heads and objective (asked of :mod:`glotta.models`), the objective against the tokenizer,
the distillation weights against the objective — and reports every problem at once, so a mistake
costs seconds instead of the hours of corpus and tokenizer stages before it.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path
from typing import Any

from glotta.config import (
    SECTIONS,
    DistillConfig,
    Recipe,
    TokenizerConfig,
    TrainConfig,
    build_section,
)
from glotta.errors import GlottaError

MLM_TOKENIZERS = ("wordpiece", "roberta-bpe")


def recipe_from_dict(data: dict[str, Any], origin: str) -> Recipe:
    """Build the recipe's sections, then validate it whole (:func:`recipe_problems`)."""
    sections = {}
    for name, values in data.items():
        if name not in SECTIONS:
            raise GlottaError(
                f"{origin}: unknown section [{name}] (known sections: {', '.join(SECTIONS)})"
            )
        if not isinstance(values, dict):
            raise GlottaError(f"{origin}: '{name}' must be a table ([{name}]), not a value")
        sections[name] = build_section(SECTIONS[name], values, origin, name)
    recipe = Recipe(**sections)
    check_recipe(recipe, origin)
    return recipe


def check_recipe(recipe: Recipe, origin: str = "recipe") -> None:
    """Raise one error that lists every problem of :func:`recipe_problems`."""
    found = recipe_problems(recipe)
    if len(found) == 1:
        raise GlottaError(f"{origin}: {found[0]}")
    if found:
        raise GlottaError(
            f"{origin}: {len(found)} problems:\n" + "\n".join(f"  - {p}" for p in found)
        )


def recipe_problems(recipe: Recipe) -> list[str]:
    """Every rule that spans keys or sections, one message per broken rule, naming the keys."""
    # Imported here: the model families import transformers, which `glotta --help` should not.
    from glotta.models import model_setting_problems

    found = model_setting_problems(recipe.model, recipe.train)
    found += objective_problems(recipe.train, recipe.tokenizer)
    if recipe.distill.teacher:
        found += distill_setting_problems(recipe.distill, recipe.train)
    return found


def objective_problems(train: TrainConfig, tokenizer: TokenizerConfig) -> list[str]:
    """Masked-LM pretraining needs a mask probability in (0, 1) and a tokenizer with mask,
    classifier and separator tokens."""
    found = []
    if train.objective != "mlm":
        return found
    if not 0.0 < train.mlm_probability < 1.0:
        found.append(f"train.mlm_probability = {train.mlm_probability} must be between 0 and 1")
    if not (tokenizer.pretrained or tokenizer.kind in MLM_TOKENIZERS):
        found.append(
            "train.objective = 'mlm' needs a tokenizer with a mask token: set "
            "tokenizer.kind = 'wordpiece' (BERT) or 'roberta-bpe' (RoBERTa), or "
            f"tokenizer.pretrained (got tokenizer.kind = {tokenizer.kind!r})"
        )
    return found


def distill_setting_problems(cfg: DistillConfig, train_cfg: TrainConfig) -> list[str]:
    """The loss weights of the objective's distillation must be >= 0 and not all 0; T > 0."""
    if train_cfg.objective == "mlm":
        alphas = {"alpha_hidden": cfg.alpha_hidden, "alpha_attention": cfg.alpha_attention}
    else:
        alphas = {"alpha_ce": cfg.alpha_ce, "alpha_clm": cfg.alpha_clm, "alpha_cos": cfg.alpha_cos}
    found = []
    negative = [k for k, v in alphas.items() if v < 0]
    if negative or not sum(alphas.values()) > 0:
        found.append(
            f"distill.{', '.join(negative) or 'alpha_*'}: the weights must be >= 0 and not all "
            f"0 (got {alphas})"
        )
    if not cfg.temperature > 0:
        found.append(f"distill.temperature = {cfg.temperature} must be positive")
    return found


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
