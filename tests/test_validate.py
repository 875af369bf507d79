"""The recipe check: no false alarms on the shipped recipes, every range rule on a broken one."""

from __future__ import annotations

import pytest

from glotta.recipe import load_recipe, shipped_recipes
from glotta.validate import recipe_problems


@pytest.mark.parametrize("name", shipped_recipes())
def test_shipped_recipes_have_no_problems(name):
    # Files are not checked here: the seed recipes name corpora a user downloads first.
    assert recipe_problems(load_recipe(name), stages=[]) == []


def test_every_broken_value_is_reported_once():
    broken = {
        "train.max_steps": "-1",
        "train.micro_batch_size": "0",
        "train.learning_rate": "-1e-3",
        "train.keep_checkpoints": "0",
        "train.adam_beta2": "1.0",
        "train.device": '"gpu"',
        "model.dropout": "1.5",
        "tokenizer.vocab_size": "-5",
        "corpus.valid_fraction": "-0.1",
        "corpus.max_chars": "10",
        "corpus.near_dedup_threshold": "0",
        "corpus.max_not_text_fraction": "2.0",
        "corpus.boilerplate_patterns": '["(unclosed"]',
        "eval.batch_size": "0",
        "generate.top_p": "0",
        "generate.temperature": "-1",
    }
    recipe = load_recipe("demo", [f"{key}={value}" for key, value in broken.items()])
    problems = recipe_problems(recipe, stages=[])
    for key in broken:
        short = key.split(".")[1]
        assert sum(short in line for line in problems) >= 1, (key, problems)
    assert len(problems) == len(broken), problems


def test_cross_field_rules():
    recipe = load_recipe(
        "demo",
        ["train.micro_batch_size=8", "train.global_batch_size=30", "corpus.valid_fraction=0.6",
         "corpus.test_fraction=0.5"],
    )  # fmt: skip
    problems = recipe_problems(recipe, stages=[])
    assert any("train.global_batch_size = 30: must be a multiple" in p for p in problems)
    assert any("leaves nothing to train on" in p for p in problems)
