"""Real text in three languages from the packages the dev extra installs (see shared/DATA.md)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"{name} is not installed (pip install -e .[dev])"
    return Path(spec.origin).parent


@functools.cache
def swedish_answers() -> list[str]:
    """503 Swedish FAQ answers (zaragoza-construction-faq)."""
    path = _package_dir("zaragoza_construction_faq") / "data" / "faq.jsonl"
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [row["a"] for row in rows]


@functools.cache
def japanese_sentences() -> list[str]:
    """500 Japanese news sentences (hironsancorpus), surface forms joined."""
    path = _package_dir("hironsan") / "corpus" / "iob_sents.txt"
    sentences, current = [], []
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            current.append(line.split("\t")[0])
        elif current:
            sentences.append("".join(current))
            current = []
    if current:
        sentences.append("".join(current))
    return sentences


@functools.cache
def russian_contexts() -> list[str]:
    """Russian corpus contexts (rl-wsd-labeled), left + word + right, gloss lines skipped."""
    texts = []
    for path in sorted((_package_dir("rl_wsd_labeled") / "nouns" / "RNC").glob("*.txt")):
        for line in path.read_text("utf-8").splitlines():
            cells = line.split("\t")
            if len(cells) >= 3 and cells[0].strip():
                texts.append("".join(cells[:3]).strip())
    return texts
