"""Near-duplicate removal quality: precision and recall on planted near-duplicates of real text.

    python -m benchmarks.near_dedup_quality            # Swedish + Japanese, threshold 0.8

Real documents (Swedish FAQ answers from zaragoza-construction-faq, joined three at a time so a
document has ~100 words; Japanese news sentences from hironsancorpus, joined four at a time) are
each followed, for a random half of them, by an edited copy: words (Swedish) or characters
(Japanese) replaced, deleted or inserted, and sometimes a sentence appended. The true Jaccard
similarity of the copy's shingle set to its original decides the ground truth: a copy at or
above the threshold is a near-duplicate that should go, one below should stay. The documents are
run through glotta's corpus processor (the same MinHash/LSH code as ``glotta corpus``) and the
Bloom-filter index, and we count (over --rounds plantings):

    precision = dropped documents that are true near-duplicates / dropped documents
    recall    = true near-duplicates dropped / true near-duplicates

Ends with one JSON line; writes a results file named by benchmark, languages, hardware and date.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from benchmarks.common import (
    SMOKE_RESULTS_DIR,
    format_table,
    hardware_info,
    hardware_slug,
    parse_with_smoke,
    publish,
    results_path,
)
from glotta.config import CorpusConfig
from glotta.corpus.near_dedup import BloomLSH, is_unspaced, shingles
from glotta.corpus.process import DocumentProcessor
from glotta.corpus.readers import RawDocument


def _documents(language: str) -> list[str]:
    from tests.corpus.real_text import japanese_sentences, swedish_answers

    if language == "sv":
        texts, group = swedish_answers(), 3
    else:
        texts, group = japanese_sentences(), 4
    return [" ".join(texts[i : i + group]) for i in range(0, len(texts) - group + 1, group)]


def _edit(text: str, edits: int, rng: random.Random) -> str:
    """Apply ``edits`` random word (or, for unspaced scripts, character) edits to ``text``."""
    unspaced = is_unspaced(text)
    units = list(text) if unspaced else text.split(" ")
    for _ in range(edits):
        i = rng.randrange(len(units))
        op = rng.choice(("replace", "delete", "insert"))
        filler = rng.choice(units)
        if op == "replace":
            units[i] = filler
        elif op == "delete" and len(units) > 1:
            del units[i]
        else:
            units.insert(i, filler)
    return ("" if unspaced else " ").join(units)


def jaccard(a: str, b: str, ngram: int) -> float:
    sa, sb = set(shingles(a, ngram)), set(shingles(b, ngram))
    return len(sa & sb) / max(1, len(sa | sb))


def measure(
    languages: list[str], threshold: float = 0.8, max_edits: int = 12, rounds: int = 5
) -> dict[str, Any]:
    """Plant edited copies among real documents, deduplicate, return precision and recall.

    Each round plants new copies (seed = round) into a fresh index; counts add up over rounds.
    Besides precision/recall at the threshold, the clear cases are reported separately:
    recall on copies with Jaccard >= threshold + 0.1, and the drop rate of copies with Jaccard
    < threshold - 0.1 (the LSH S-curve is not a step, so copies near the threshold are a coin
    toss by design).
    """
    cfg = CorpusConfig(near_dedup=True, near_dedup_threshold=threshold, min_chars=1)
    processor = DocumentProcessor(cfg)
    per_language = {}
    for language in languages:
        originals = _documents(language)
        outcomes: list[tuple[float, bool]] = []  # (Jaccard to its original, dropped) per copy
        originals_dropped = 0
        for round_ in range(rounds):
            rng = random.Random(round_)
            index = BloomLSH(16)
            for original in originals:
                doc = processor(RawDocument(original, language))
                originals_dropped += index.seen_or_add(doc.band_keys)
                if rng.random() < 0.5:
                    copy = _edit(original, rng.randint(0, max_edits), rng)
                    similarity = jaccard(original, copy, cfg.near_dedup_ngram)
                    doc = processor(RawDocument(copy, language))
                    outcomes.append((similarity, index.seen_or_add(doc.band_keys)))
        true_pos = sum(d for j, d in outcomes if j >= threshold)
        false_pos = originals_dropped + sum(d for j, d in outcomes if j < threshold)
        positives = sum(j >= threshold for j, _ in outcomes)
        clear_dups = [d for j, d in outcomes if j >= threshold + 0.1]
        clear_distinct = [d for j, d in outcomes if j < threshold - 0.1]
        per_language[language] = {
            "documents": len(originals) * rounds,
            "planted_copies": len(outcomes),
            "true_near_duplicates": positives,
            "dropped": true_pos + false_pos,
            "precision": round(true_pos / max(1, true_pos + false_pos), 4),
            "recall": round(true_pos / max(1, positives), 4),
            "recall_clear": round(sum(clear_dups) / max(1, len(clear_dups)), 4),
            "false_drop_rate_clear": round(sum(clear_distinct) / max(1, len(clear_distinct)), 4),
            "originals_dropped": originals_dropped,
        }
    return {"threshold": threshold, "rounds": rounds, "languages": per_language}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.near_dedup_quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--languages",
        nargs="+",
        default=["sv", "ja"],
        help="Languages to plant near-duplicates in: sv, ja (default: sv ja).",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.8,
        help="Jaccard similarity at which a copy counts as a near-duplicate (default: 0.8).",
    )
    parser.add_argument(
        "--max-edits", type=int, default=12, help="Edits per planted copy, 0..N (default: 12)."
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="Plantings (seeds 0..N-1) (default: 5)."
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="Where the results file goes (default: benchmarks/results).",
    )
    args = parse_with_smoke(
        parser, argv, {"rounds": 1, "max_edits": 4, "results_dir": SMOKE_RESULTS_DIR}
    )
    result = measure(args.languages, args.threshold, args.max_edits, args.rounds)
    rows = [{"language": k, **v} for k, v in result["languages"].items()]
    columns = [
        ("language", "language"),
        ("documents", "documents"),
        ("planted_copies", "planted"),
        ("true_near_duplicates", "true near-dups"),
        ("dropped", "dropped"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("recall_clear", "recall J>=t+0.1"),
        ("false_drop_rate_clear", "drops J<t-0.1"),
    ]
    print(format_table(rows, columns))
    hardware = hardware_info()
    record = {"bench": "near_dedup_quality", **result, "hardware": hardware}
    path = results_path(
        "near-dedup", "-".join(args.languages), hardware_slug(hardware), args.results_dir
    )
    publish(path, record)


if __name__ == "__main__":
    main()
