"""The command line's recipe options: one flag per field of a stage's config section (generated
from the config dataclasses, so ``--help`` documents every option), the recipe argument,
``--run-dir`` and ``--set``, and how a command resolves its recipe and run directory from them."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from glotta.config import SECTIONS, Recipe
from glotta.errors import GlottaError
from glotta.recipe import load_recipe
from glotta.rundir import RunDir
from glotta.runlock import hold_run_dir

# ---------------------------------------------------------------------------------------------
# Flags generated from config dataclasses


def add_config_flags(parser: argparse.ArgumentParser, section: str) -> None:
    cls = SECTIONS[section]
    group = parser.add_argument_group(
        f"[{section}] settings",
        "override the recipe's values (same as --set " + section + ".KEY=V)",
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # argparse formats help with %-interpolation: a literal "15%" must be written "15%%".
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        dest = f"{section}__{f.name}"
        if kind is bool:
            group.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            if dataclasses.is_dataclass(item):  # tables: recipe or --set only
                group.add_argument(
                    flag,
                    dest=dest,
                    type=_no_flag,
                    default=None,
                    metavar="(recipe)",
                    help=f"{help_text}; set in the recipe or with --set "
                    f"'{section}.{f.name}=[{{...}}]'",
                )
                continue
            group.add_argument(
                flag, dest=dest, nargs="*", type=item, default=None, metavar="VALUE", help=help_text
            )
        else:
            group.add_argument(
                flag,
                dest=dest,
                type=kind,
                default=None,
                choices=f.metadata.get("choices"),
                help=help_text,
            )


def _no_flag(value: str) -> Any:
    raise argparse.ArgumentTypeError("set this in the recipe or with --set (a list of tables)")


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if "__" in dest and value is not None:
            section, key = dest.split("__", 1)
            overrides.setdefault(section, {})[key] = value
    return overrides


def add_recipe_args(parser: argparse.ArgumentParser, recipe_positional: bool = True) -> None:
    if recipe_positional:
        parser.add_argument(
            "recipe",
            nargs="?",
            help="Shipped recipe name (see `glotta recipes`) or path to a TOML recipe. "
            "Default: RUN_DIR/recipe.toml if present, else built-in defaults.",
        )
    parser.add_argument("--run-dir", type=Path, help="Run directory (default: runs/RECIPE_NAME).")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="Override a recipe value, e.g. --set train.max_steps=100 (repeatable; "
        'values are TOML: 3, 1e-4, true, ["a", "b"]).',
    )


def resolve_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe: a file or name (else RUN_DIR/recipe.toml, else defaults) + --set + flags."""
    from glotta.config import recipe_to_dict
    from glotta.recipe import recipe_from_dict

    recipe_arg = getattr(args, "recipe", None)
    if recipe_arg is None and args.run_dir and (args.run_dir / "recipe.toml").is_file():
        recipe_arg = str(args.run_dir / "recipe.toml")
    recipe = load_recipe(recipe_arg, args.overrides)
    flags = flag_overrides(args)
    if flags:
        data = recipe_to_dict(recipe)
        for section, values in flags.items():
            data[section].update(values)
        recipe = recipe_from_dict(data, "command-line flags")
    return recipe


def resolve_run(args: argparse.Namespace) -> tuple[Recipe, RunDir]:
    """The recipe and run directory of a stage command, which writes into it: the folder is
    locked for this process (:mod:`glotta.runlock`) and a changed recipe is saved in it."""
    from glotta.pipeline import default_run_dir, save_recipe

    recipe = resolve_recipe(args)
    run_dir = RunDir(args.run_dir or default_run_dir(recipe))
    from glotta.validate import validate_recipe, writable_problem

    if args.command != "run":
        validate_recipe(recipe, run_dir.root, [args.command])
    elif problem := writable_problem(run_dir.root):  # the rest once the plan is known
        raise GlottaError(problem)
    hold_run_dir(run_dir.root, args.command)  # a recipe refused above leaves no folder behind
    changed = getattr(args, "recipe", None) is not None or args.overrides or flag_overrides(args)
    if changed and args.command != "run":  # run_recipe saves it once the whole plan is checked
        save_recipe(recipe, run_dir)
    return recipe, run_dir
