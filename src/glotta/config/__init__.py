"""Recipes: one frozen dataclass per stage, loaded from TOML and overridden with ``--set``.

A recipe is a TOML file with one table per stage (``[corpus]``, ``[tokenizer]``, ...). Every key is
checked against the stage's dataclass: unknown keys and wrong types are errors that name the key and
the file. Each field carries a ``help`` text; the CLI turns those into ``--help`` for every option.

Each stage receives only its own section (torchtitan dropped a global job config because it
"leaked everywhere"); the few cross-stage facts (vocabulary size, block size) travel through the
files a stage writes into the run directory.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from glotta.config.corpus import CorpusConfig, PackConfig, TokenizerConfig
from glotta.config.fields import build_section, field_types, opt
from glotta.config.training import DistillConfig, ModelConfig, TrainConfig, TrainPhase

__all__ = [
    "SECTIONS",
    "CorpusConfig",
    "DistillConfig",
    "EvalConfig",
    "ExportConfig",
    "GGUF_TYPES",
    "GenerateConfig",
    "ModelConfig",
    "NerConfig",
    "PackConfig",
    "Recipe",
    "RecipeInfo",
    "TokenizerConfig",
    "TrainConfig",
    "TrainPhase",
    "build_section",
    "field_types",
    "opt",
    "recipe_to_dict",
]


@dataclass(frozen=True)
class RecipeInfo:
    """What the recipe is about; used by the model card and as the default run directory name."""

    name: str = opt("unnamed", "Short name of the recipe; default run directory is runs/NAME.")
    description: str = opt("", "One sentence describing the model, used in the model card.")
    language: list[str] = opt([], "ISO 639-1 language codes of the corpus (model card metadata).")
    license: str = opt("other", "License of the trained model (model card metadata).")
    datasets: list[str] = opt([], "Dataset names for the model card metadata.")
    widget_text: str = opt("", "Example prompt for the model card widget and default generation.")
    citation: str = opt(
        "", "Where the recipe's hyperparameters come from (cited in the model card)."
    )


@dataclass(frozen=True)
class EvalConfig:
    """Stage 5: held-out perplexity and bits per byte."""

    split: str = opt("test", "Corpus split evaluated by 'glotta run'.", ("test", "valid"))
    stride: int = opt(0, "Sliding-window stride in tokens (0 = half the context).")
    batch_size: int = opt(8, "Windows per forward pass.")
    unigram_baseline: bool = opt(True, "Also report a unigram model fitted on the train shard.")


@dataclass(frozen=True)
class GenerateConfig:
    """Sampling settings for 'glotta generate' and the demo sample."""

    prompt: str = opt("", "Prompt ('' = recipe.widget_text).")
    max_new_tokens: int = opt(60, "Tokens to generate.")
    temperature: float = opt(0.8, "Softmax temperature (0 = greedy).")
    top_k: int = opt(50, "Keep the k most likely tokens (0 = off).")
    top_p: float = opt(
        0.95, "Keep the smallest set of tokens with this much probability (1 = off)."
    )
    repetition_penalty: float = opt(
        1.1, "Divide logits of already generated tokens by this (1 = off)."
    )
    seed: int = opt(0, "Sampling seed.")


GGUF_TYPES = ("f32", "f16", "q8_0")  # the tensor types export.gguf writes


@dataclass(frozen=True)
class ExportConfig:
    """Stage 6: Hugging Face folder with model card."""

    out: str = opt("", "Output folder ('' = RUN_DIR/export).")
    tags: list[str] = opt(["glotta", "text-generation"], "Extra model card tags.")
    gguf: list[str] = opt(
        [],
        "Also write llama.cpp GGUF files model-TYPE.gguf into the folder, one per type: f32, "
        "f16 or q8_0 (8-bit blocks); causal LMs (gpt2, llama) with a bpe or unigram tokenizer.",
    )


@dataclass(frozen=True)
class NerConfig:
    """'glotta eval ner': fine-tune an encoder for named entities on CoNLL column files."""

    train_file: str = opt(
        "",
        "CoNLL-style column file to fine-tune on (blank line between sentences); "
        "'pkg://PACKAGE/sub/path' reads a file inside an installed Python package.",
    )
    test_file: str = opt(
        "", "Column file to evaluate on ('' = hold out the last test_sentences of train_file)."
    )
    test_sentences: int = opt(
        0,
        "With test_file = '': the last N sentences of train_file are the test set and are not "
        "trained on (hironsancorpus: 50, the package's own 450/50 split).",
    )
    token_column: int = opt(0, "Column holding the token (0-based; negative counts from the end).")
    tag_column: int = opt(-1, "Column holding the gold tag (-1 = the last column).")
    separator: str = opt(
        "whitespace",
        "What separates columns: any run of whitespace, or one tab.",
        ("whitespace", "tab"),
    )
    scheme: str = opt(
        "IOB2",
        "Tag scheme; entities are read strictly (as seqeval's strict mode). 'auto' = BIOES/BILOU by "
        "their prefixes, IOB1 if more gold entities start with I- than with B-, else IOB2.",
        ("auto", "IOB1", "IOB2", "BIOES", "BILOU"),
    )
    model: str = opt(
        "",
        "Folder of the encoder to fine-tune: any AutoModelForTokenClassification checkpoint, e.g. "
        "a BertModel without head (a new head is added). '' = the run's export, else its latest "
        "checkpoint.",
    )
    tokenizer: str = opt(
        "", "Tokenizer folder (a fast tokenizer) if the model folder has none ('' = the model's)."
    )
    epochs: int = opt(3, "Passes over the training sentences.")
    learning_rate: float = opt(5e-5, "Peak AdamW learning rate.")
    batch_size: int = opt(16, "Sentences per optimizer step (and per prediction batch).")
    max_length: int = opt(
        256,
        "Subword tokens per sentence, special tokens included; longer sentences are truncated "
        "(counted and reported) and their cut-off words predicted as 'O'.",
    )
    seeds: list[int] = opt([0, 1, 2], "One fine-tuning per seed; results are mean ± std.")
    warmup_fraction: float = opt(0.1, "Share of the steps with linear warmup (then linear decay).")
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases and LayerNorm weights).")
    grad_clip: float = opt(1.0, "Clip the global gradient norm to this value (0 = off).")
    device: str = opt("auto", "'auto' (cuda if available), 'cpu' or 'cuda'.")


@dataclass(frozen=True)
class Recipe:
    recipe: RecipeInfo = field(default_factory=RecipeInfo)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    ner: NerConfig = field(default_factory=NerConfig)


SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Recipe)}  # type: ignore[misc]
SECTIONS = {name: typing.get_type_hints(Recipe)[name] for name in SECTIONS}


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)
