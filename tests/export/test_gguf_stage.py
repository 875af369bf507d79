"""export.gguf in the export stage, the recipe checks and --help; the family mappings' choices
that the llama.cpp comparison (test_gguf.py) does not reach."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from glotta.cli import build_parser
from glotta.config import ModelConfig, TokenizerConfig
from glotta.errors import GlottaError
from glotta.export.gguf_vocab import read_vocab
from glotta.export.stage import ExportStage, run_export
from glotta.models import family
from glotta.rundir import stage_fingerprint
from glotta.tokenizer.train import train_tokenizer
from glotta.validate import recipe_problems
from tests.conftest import tiny_recipe


def test_the_export_stage_writes_gguf_files_and_says_how_to_run_them(tiny_run, tmp_path):
    gguf = pytest.importorskip("gguf")
    recipe, run_dir = tiny_run
    export = dataclasses.replace(recipe.export, out=str(tmp_path / "export"), gguf=["q8_0", "f16"])

    out = run_export(export, recipe.recipe, recipe.generate, run_dir)

    reader = gguf.GGUFReader(out / "model-q8_0.gguf")
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "gpt2"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(fields["tokenizer.ggml.tokens"]) == 512
    assert fields["tokenizer.ggml.add_bos_token"] is False
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_qkv.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in types  # tied head: llama.cpp reuses token_embd
    assert (out / "model-f16.gguf").is_file()
    card = (out / "README.md").read_text()
    assert "llama-server -m model-q8_0.gguf" in card and "- gguf" in card
    # The GGUF setting is part of what the stage's fingerprint covers.
    plain = stage_fingerprint(ExportStage(recipe.export, recipe.recipe, recipe.generate))
    with_gguf = stage_fingerprint(ExportStage(export, recipe.recipe, recipe.generate))
    assert plain != with_gguf


def test_gguf_settings_are_checked_when_the_recipe_loads():
    bad_type = recipe_problems(tiny_recipe('export.gguf=["q4_k"]'))
    assert any("export.gguf = 'q4_k'" in p and "f32, f16, q8_0" in p for p in bad_type)
    encoder = recipe_problems(
        tiny_recipe(
            'export.gguf=["f16"]',
            'model.arch="bert"',
            'train.objective="mlm"',
            'tokenizer.kind="wordpiece"',
        )  # fmt: skip
    )
    assert any("causal LMs" in p for p in encoder)
    assert any("bpe or unigram tokenizer" in p for p in encoder)
    assert not [p for p in recipe_problems(tiny_recipe('export.gguf=["f16"]')) if "gguf" in p]


def test_export_help_documents_the_gguf_types(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--gguf [VALUE ...]" in text and "f32, f16 or q8_0" in text


@pytest.mark.parametrize(("arch", "tied"), [("llama", True), ("gpt2", False)])
def test_an_output_tensor_exactly_when_the_head_is_untied(arch, tied):
    cfg = ModelConfig(arch=arch, preset="tiny", tie_embeddings=tied)
    model = family(arch).build(cfg, 300, 32, {"eos": 0})
    names = [name for name, _ in family(arch).gguf(model).tensors]
    assert ("output.weight" in names) == (not tied)
    assert len(names) == len(set(names))


def test_llama_queries_and_keys_are_reordered_for_interleaved_rope():
    cfg = ModelConfig(arch="llama", preset="tiny", rope_theta=123.0)  # 4 heads, 2 kv heads
    model = family("llama").build(cfg, 300, 32, {"eos": 0})
    spec = family("llama").gguf(model)
    tensors = dict(spec.tensors)
    k = model.model.layers[0].self_attn.k_proj.weight.detach().numpy()
    head_dim = 128 // 4
    ours = tensors["blk.0.attn_k.weight"]
    # Second kv head: its row j goes to 2j and row j + head_dim/2 to 2j + 1.
    start = head_dim
    assert (ours[start + 2] == k[start + 1]).all()
    assert (ours[start + 3] == k[start + 1 + head_dim // 2]).all()
    assert spec.metadata["{arch}.rope.freq_base"] == 123.0
    assert spec.metadata["{arch}.attention.head_count_kv"] == 2


def test_wordpiece_is_refused_with_the_reason(tmp_path):
    texts = ["Привет мир", "Hello World", "東京タワー"] * 50
    train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=200), texts, tmp_path)
    with pytest.raises(GlottaError, match="lower-cases"):
        read_vocab(tmp_path, 200)


def test_a_family_without_a_gguf_mapping_says_so():
    with pytest.raises(GlottaError, match="not supported for model.arch = 'bert'"):
        family("bert").gguf(torch.nn.Module())


def test_a_longer_context_phase_reaches_the_gguf_metadata():
    """The RoPE base and context of the last training phase, not those the model was built with."""
    chosen = family("llama")
    model = chosen.build(ModelConfig(arch="llama", preset="tiny"), 300, 32, {"eos": 0})
    chosen.extend_context(model, 128, rope_theta=77777.0)
    metadata = chosen.gguf(model).metadata
    assert metadata["{arch}.rope.freq_base"] == 77777.0
    assert metadata["{arch}.context_length"] == 128
