"""Text that is not text: binary files, documents of replacement characters, NULs, empty
held-out splits, and tokenizer training on one huge document."""

from __future__ import annotations

import json
import random

import pytest

from glotta.config import CorpusConfig
from glotta.corpus import run_corpus
from glotta.errors import GlottaError
from glotta.tokenizer.train import TRAINING_PIECE_CHARS, training_pieces
from tests.corpus.real_text import swedish_answers


def _corpus(tmp_path, path, **settings) -> CorpusConfig:
    return CorpusConfig(inputs=[str(path)], valid_fraction=0.1, test_fraction=0.1, **settings)


def test_a_file_of_random_bytes_is_an_error_naming_it(tmp_path):
    path = tmp_path / "photo.txt"
    path.write_bytes(random.Random(0).randbytes(200_000))
    with pytest.raises(GlottaError, match=r"photo\.txt is not UTF-8 text"):
        run_corpus(_corpus(tmp_path, path), tmp_path / "out")
    assert not (tmp_path / "out" / "COMPLETE.json").exists()


def test_garbled_documents_are_dropped_as_not_text_and_nuls_counted(tmp_path):
    answers = swedish_answers()[:200]
    garbage = random.Random(1).randbytes(600)
    nul_text = answers[0][:40] + "\x00\x00\x00" + answers[0][40:]
    raw = (
        "\n\n".join(answers[1:]).encode()
        + b"\n\n" + garbage.replace(b"\n", b" ") + b"\n\n"
        + nul_text.encode() + b"\n"
    )  # fmt: skip
    path = tmp_path / "faq.txt"
    path.write_bytes(raw)
    # Below corpus.max_undecodable_fraction the file is read, its garbled document dropped.
    stats = run_corpus(_corpus(tmp_path, path, max_undecodable_fraction=0.05), tmp_path / "out")
    assert stats["dropped"]["not_text"] == 1
    assert stats["events"]["nul_characters_removed"] == 3
    kept = "".join(
        (tmp_path / "out" / f"{s}.jsonl").read_text() for s in ("train", "valid", "test")
    )
    assert "\ufffd" not in "".join(json.loads(line)["text"] for line in kept.splitlines())
    # With the rule off the garbled document is kept.
    stats = run_corpus(
        _corpus(tmp_path, path, max_not_text_fraction=1.0, max_undecodable_fraction=0.05),
        tmp_path / "out2",
    )
    assert stats["dropped"]["not_text"] == 0


def test_an_empty_held_out_split_is_a_corpus_error_with_advice(tmp_path):
    path = tmp_path / "few.txt"
    path.write_text("\n\n".join(swedish_answers()[:30]), encoding="utf-8")
    cfg = CorpusConfig(inputs=[str(path)], valid_fraction=0.001, test_fraction=0.3)
    with pytest.raises(GlottaError, match="valid split is empty.*raise corpus.valid_fraction"):
        run_corpus(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "COMPLETE.json").exists()


def test_long_documents_reach_the_tokenizer_trainer_in_bounded_pieces():
    words = " ".join(swedish_answers())
    huge = (words + " ") * (3 * TRAINING_PIECE_CHARS // len(words) + 1)
    pieces = list(training_pieces([huge, "kort text"]))
    assert "".join(pieces[:-1]) == huge and pieces[-1] == "kort text"
    assert all(len(p) <= TRAINING_PIECE_CHARS for p in pieces)
    assert all(p.endswith(" ") for p in pieces[:-2])  # cut between words, never inside one
