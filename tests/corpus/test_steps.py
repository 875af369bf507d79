"""A corpus step declares its keys, drop reasons and advice in one place: a new filter is its
class plus one line in STEPS, and its drops are counted, sampled and explained with no other
change."""

from __future__ import annotations

import json

import pytest

from glotta.config import CorpusConfig
from glotta.corpus import run_corpus, steps
from glotta.errors import GlottaError


class NoDigits(steps.CorpusStep):
    """A filter that lives only in this test: documents with a digit go."""

    name = "no_digits"
    drops = {"has_digit": "remove the numbers from the inputs (a test filter)"}

    def apply(self, text, events, markup, title):
        return text, ("has_digit" if any(c.isdigit() for c in text) else None)


class Undeclared(steps.CorpusStep):
    name = "undeclared"

    def apply(self, text, events, markup, title):
        return text, "surprise"


def write_texts(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), "utf-8")


def test_a_new_step_is_counted_sampled_and_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "STEPS", (*steps.STEPS, NoDigits))
    inputs = tmp_path / "in.jsonl"
    texts = [
        f"Ett dokument {'med nummer ' + str(i) if i % 3 == 0 else 'utan siffror ' * (i + 1)}"
        for i in range(60)
    ]
    write_texts(inputs, texts)
    cfg = CorpusConfig(inputs=[str(inputs)], valid_fraction=0.1, test_fraction=0.1)
    stats = run_corpus(cfg, tmp_path / "out")
    assert stats["dropped"]["has_digit"] == 20
    samples = (tmp_path / "out" / "dropped_samples.jsonl").read_text().splitlines()
    assert any(json.loads(line)["reason"] == "has_digit" for line in samples)

    write_texts(inputs, [f"Dokument nummer {i} med en siffra" for i in range(30)])
    with pytest.raises(GlottaError, match="has_digit 30.*remove the numbers from the inputs"):
        run_corpus(cfg, tmp_path / "empty")


def test_a_reason_a_step_does_not_declare_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "STEPS", (*steps.STEPS, Undeclared))
    inputs = tmp_path / "in.jsonl"
    write_texts(inputs, ["Ett dokument med lite text i sig."] * 3)
    with pytest.raises(GlottaError, match="'undeclared' dropped a document for 'surprise'"):
        run_corpus(CorpusConfig(inputs=[str(inputs)]), tmp_path / "out")


def test_every_shipped_reason_is_declared_once_with_advice():
    from glotta.corpus.stage import DROP_REASONS, drop_advice

    advice = drop_advice()
    assert len(DROP_REASONS) == len(set(DROP_REASONS)) == len(advice)
    assert all(advice[reason].strip() for reason in DROP_REASONS)
    assert {"not_text", "too_short", "language", "repeated_lines", "duplicate"} <= set(advice)
