"""Recipes: every shipped recipe validates; bad keys, types and values give one clear error."""

import pytest

from glotta.config import Recipe, recipe_to_dict
from glotta.errors import GlottaError
from glotta.recipe import dump_toml, load_recipe, parse_override, recipe_from_dict, shipped_recipes

SEED_RECIPES = {"swedish-gpt2-wiki40b", "japanese-gpt2-small", "rugpt3-large"}


def test_shipped_recipes_include_demo_and_seeds():
    assert {"demo", *SEED_RECIPES} <= set(shipped_recipes())


@pytest.mark.parametrize("name", shipped_recipes())
def test_every_shipped_recipe_validates(name):
    recipe = load_recipe(name)
    assert recipe.recipe.name == name
    assert recipe.recipe.description and recipe.recipe.language
    assert recipe.corpus.inputs or recipe.corpus.hf_dataset
    assert recipe.corpus.valid_fraction + recipe.corpus.test_fraction < 1
    assert recipe.train.block_size <= (recipe.model.n_positions or recipe.train.block_size)


def test_seed_recipes_carry_the_cards_settings():
    ja = load_recipe("japanese-gpt2-small")
    assert (ja.tokenizer.kind, ja.tokenizer.vocab_size, ja.tokenizer.add_dummy_prefix) == (
        "unigram",
        32000,
        True,
    )
    assert (ja.train.learning_rate, ja.train.decay, ja.train.grad_clip) == (1e-4, "linear", 1.0)
    assert (ja.train.block_size, ja.train.micro_batch_size) == (1024, 2)
    sv = load_recipe("swedish-gpt2-wiki40b")
    assert (sv.corpus.markup, sv.train.block_size, sv.train.learning_rate) == ("wiki40b", 512, 5e-3)
    assert (sv.train.adam_beta2, sv.train.weight_decay, sv.train.warmup_steps) == (0.98, 0.01, 1000)
    ru = load_recipe("rugpt3-large")
    assert (ru.model.n_layer, ru.model.n_embd, ru.model.n_head) == (24, 1536, 16)


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[train]\nlearning_rat = 1e-3\n")
    with pytest.raises(GlottaError, match=r"r\.toml: unknown key 'train\.learning_rat'"):
        load_recipe(str(path))


def test_unknown_section(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[trian]\nmax_steps = 3\n")
    with pytest.raises(GlottaError, match=r"unknown section \[trian\]"):
        load_recipe(str(path))


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[train]\nmax_steps = "ten"', r"\[train\] max_steps: expected int, got str"),
        ("[train]\nlearning_rate = true", r"learning_rate: expected float, got bool"),
        ('[corpus]\ninputs = "a.txt"', r"inputs: expected a list"),
        ('[corpus]\ntsv_columns = [0, "1"]', r"tsv_columns\[1\]: expected int"),
        (
            '[tokenizer]\nkind = "sentencepiece"',
            r"'sentencepiece' is not one of bpe, unigram, wordpiece, roberta-bpe",
        ),
    ],
)
def test_wrong_types_and_choices(tmp_path, toml, message):
    path = tmp_path / "r.toml"
    path.write_text(toml)
    with pytest.raises(GlottaError, match=message):
        load_recipe(str(path))


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(GlottaError, match="bad.toml is not valid TOML"):
        load_recipe(str(bad))
    with pytest.raises(GlottaError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.toml"))
    with pytest.raises(GlottaError, match="no recipe named 'nope'"):
        load_recipe("nope")


def test_set_overrides_parse_toml_values():
    recipe = load_recipe(
        "demo",
        [
            "train.max_steps=7",
            "train.learning_rate=1e-4",
            "corpus.dedup=false",
            'corpus.inputs=["a.txt", "b.txt"]',
            "train.decay=linear",
        ],
    )
    assert recipe.train.max_steps == 7 and recipe.train.learning_rate == 1e-4
    assert recipe.corpus.dedup is False and recipe.corpus.inputs == ["a.txt", "b.txt"]
    assert recipe.train.decay == "linear"
    assert parse_override("generate.prompt=Hej där") == (["generate", "prompt"], "Hej där")
    with pytest.raises(GlottaError, match="KEY must be section.key"):
        load_recipe("demo", ["max_steps=3"])
    with pytest.raises(GlottaError, match="unknown key 'train.max_step'"):
        load_recipe("demo", ["train.max_step=3"])


def test_dump_toml_round_trips():
    recipe = load_recipe("japanese-gpt2-small", ['generate.prompt="a \\"quoted\\"\\tline"'])
    import tomllib

    again = recipe_from_dict(tomllib.loads(dump_toml(recipe_to_dict(recipe))), "dump")
    assert again == recipe
    assert Recipe() == recipe_from_dict({}, "empty")
