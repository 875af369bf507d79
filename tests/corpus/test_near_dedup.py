"""MinHash LSH near-duplicate removal: parameters, determinism, bounded memory, quality."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.near_dedup_quality import measure

from glotta.config import CorpusConfig
from glotta.corpus.near_dedup import BloomLSH, MinHasher, is_unspaced, lsh_parameters, shingles
from glotta.corpus.stage import run_corpus
from tests.corpus.real_text import japanese_sentences, swedish_answers


def test_lsh_parameters_put_the_s_curve_at_the_threshold():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = lsh_parameters(128, threshold)
        assert bands * rows <= 128
        # Probability that a pair at the threshold becomes a candidate: near the middle.
        at_threshold = 1 - (1 - threshold**rows) ** bands
        assert 0.2 < at_threshold < 0.9, (threshold, bands, rows, at_threshold)


def test_shingles_by_script():
    assert is_unspaced(japanese_sentences()[0]) and not is_unspaced(swedish_answers()[0])
    assert shingles("東京は日本の首都", 3)[:2] == ["東京は", "京は日"]
    assert shingles("Ett Två tre fyra fem sex", 5) == [
        "ett två tre fyra fem",
        "två tre fyra fem sex",
    ]


def test_band_keys_are_the_same_in_another_process():
    """Workers and re-runs must agree: no per-process hash seeds anywhere."""
    text = swedish_answers()[10]
    here = MinHasher(128, 0.8, 5).band_keys(text)
    code = (
        "import json,sys; from glotta.corpus.near_dedup import MinHasher; "
        "print(json.dumps(MinHasher(128, 0.8, 5).band_keys(sys.stdin.read())))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], input=text, capture_output=True, text=True, check=True
    )
    assert json.loads(there.stdout) == here


def test_bloom_filter_memory_is_fixed_and_false_positives_reported():
    index = BloomLSH(0.01)  # ~84k bits
    size = index._array.nbytes
    hasher = MinHasher(128, 0.8, 5)
    texts = swedish_answers()
    dropped = sum(index.seen_or_add(hasher.band_keys(t)) for t in texts)
    assert index._array.nbytes == size  # does not grow with the corpus
    assert dropped <= 5  # distinct answers; a few false positives at most in a small filter
    assert 0 < index.false_positive_rate() < 0.01


def test_precision_and_recall_on_planted_near_duplicates():
    result = measure(["sv", "ja"], threshold=0.8, rounds=1)
    for language, figures in result["languages"].items():
        assert figures["true_near_duplicates"] >= 15, language
        assert figures["recall_clear"] >= 0.9, (language, figures)
        assert figures["false_drop_rate_clear"] <= 0.1, (language, figures)
        assert figures["originals_dropped"] == 0, (language, figures)
        assert figures["precision"] >= 0.75 and figures["recall"] >= 0.7, (language, figures)


def test_stage_drops_near_duplicates_and_keeps_samples(tmp_path):
    texts = swedish_answers()[:60]
    copy = texts[5].replace(".", "!", 1) + " Välkommen!"  # a light edit: a near-duplicate
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in [*texts, copy]),
        "utf-8",
    )
    cfg = CorpusConfig(inputs=[str(path)], near_dedup=True, valid_fraction=0.1, test_fraction=0.1)
    stats = run_corpus(cfg, tmp_path / "out")
    assert stats["dropped"]["near_duplicate"] == 1
    assert stats["near_dedup"]["bands"] * stats["near_dedup"]["rows"] <= 128
    assert stats["near_dedup"]["estimated_false_drop_rate"] < 1e-6
    samples = [json.loads(x) for x in (tmp_path / "out/dropped_samples.jsonl").open()]
    assert samples == [{"reason": "near_duplicate", "source": str(path), "text": copy}]
