"""Tokenizers as data, not as settings: a tokenizer.json's truncation and padding never reach
the shards, the scores or the vocabulary counts (sentence-transformers files set both to 128)."""

from __future__ import annotations

import json
import shutil

from tokenizers import Tokenizer

from glotta.distill.trim_vocab import trim_vocabulary
from glotta.models import load_tokenizer
from glotta.rundir import RunDir
from glotta.tokenizer.pack import run_pack
from tests.corpus.real_text import swedish_answers
from tests.distill.test_trim_vocab import minilm_dir


def test_pack_and_scoring_ignore_the_files_truncation_and_padding(tiny_run, tmp_path):
    recipe, source = tiny_run
    run_dir = RunDir(tmp_path / "run")
    shutil.copytree(source.corpus, run_dir.corpus)
    shutil.copytree(source.tokenizer, run_dir.tokenizer)
    path = run_dir.tokenizer / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))  # the run's real trained BPE, made to truncate
    eos_id = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.enable_truncation(16)
    tokenizer.enable_padding(length=64, pad_id=eos_id, pad_token="<|endoftext|>")
    tokenizer.save(str(path))

    run_pack(recipe.pack, run_dir)

    # Every token of every document, no padding: the very shards of the untouched tokenizer.
    for split in ("train", "valid", "test"):
        packed = (run_dir.shards / f"{split}.bin").read_bytes()
        assert packed == (source.shards / f"{split}.bin").read_bytes(), split
    # Scoring encodes whole texts too; the file itself keeps its settings for its users.
    text = (source.corpus / "test.jsonl").read_text().splitlines()[0]
    assert len(load_tokenizer(run_dir.tokenizer).encode(json.loads(text)["text"]).ids) > 16
    saved = json.loads(path.read_text())
    assert saved["truncation"]["max_length"] == 16 and saved["padding"] is not None


def test_vocabulary_trimming_counts_every_token_of_long_documents(tmp_path):
    """MiniLM's own tokenizer.json truncates at 128 tokens: the tail of a document was not counted,
    so the trimmed tokenizer split it differently from the original."""
    long_document = " ".join(swedish_answers()[:40])
    original = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    assert original.truncation is not None and original.truncation["max_length"] == 128
    original.no_truncation()
    original.no_padding()
    assert len(original.encode(long_document).ids) > 1000

    out = tmp_path / "trimmed"
    trim_vocabulary(minilm_dir(), [long_document], out)

    trimmed = Tokenizer.from_file(str(out / "tokenizer.json"))
    trimmed.no_truncation()
    trimmed.no_padding()
    tokens = [original.id_to_token(i) for i in original.encode(long_document).ids]
    assert [trimmed.id_to_token(i) for i in trimmed.encode(long_document).ids] == tokens
