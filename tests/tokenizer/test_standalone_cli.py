"""`glotta tokenizer --input FILE... --kind K --vocab-size N --out DIR`, without a run directory."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from tests.conftest import glotta


def test_standalone_unigram_on_a_japanese_text_file(tmp_path, sentences):
    text_file = tmp_path / "ja.txt"
    # one document per paragraph; one unreadable short line is a counted skip, not a crash
    paragraphs = ["\n".join(sentences["ja"][i : i + 3]) for i in range(0, 600, 3)]
    text_file.write_text("\n\n".join(["短い", *paragraphs]) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    result = glotta(
        "tokenizer", "--input", str(text_file), "--kind", "unigram", "--vocab-size", "2000",
        "--set", "corpus.min_chars=10", "--set", "corpus.valid_fraction=0.1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fertility on valid" in result.stderr
    assert "skipped 1 documents: too_short 1" in result.stderr

    stats = json.loads((out / "stats.json").read_text())
    assert stats["kind"] == "unigram" and stats["vocab_size"] == 2000
    held_out = stats["fertility"]["documents"]
    assert held_out > 0 and stats["training_texts"] + held_out <= len(paragraphs)
    assert stats["skipped_documents"] == {"too_short": 1}
    assert not (tmp_path / "tok.partial").exists()

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    sample = sentences["ja"][-1] + "\n🦜"
    assert tokenizer.decode(tokenizer.encode(sample)) == sample
    assert not (tmp_path / "runs").exists()  # standalone mode writes no run directory


def test_standalone_missing_input_fails_cleanly(tmp_path):
    out = tmp_path / "tok"
    result = glotta("tokenizer", "--input", str(tmp_path / "nope.txt"), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith("glotta: error:") and "nope.txt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "tok.partial").exists()


def test_standalone_needs_out(tmp_path):
    result = glotta("tokenizer", "--input", str(tmp_path / "a.txt"))
    assert result.returncode == 2 and "--out" in result.stderr
