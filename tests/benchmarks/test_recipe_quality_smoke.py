"""The recipe-quality ranking's smoke mode trains every variant for real and writes its keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_recipe_quality_smoke_ranks_variants_by_bits_per_byte(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.recipe_quality", "--smoke", "--seeds", "1,2",
         "--variants", "baseline,muon,demo", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(record["variants"]) == {"baseline", "muon", "demo"}
    for variant in record["variants"].values():
        assert len(variant["bits_per_byte"]) == 2  # one run per seed
        assert variant["bpb_spread"] == round(
            max(variant["bits_per_byte"]) - min(variant["bits_per_byte"]), 4
        )
        assert 0 < variant["bpb_mean"] < record["unigram_bits_per_byte"] + 1
    # Same steps for every variant (the token budget); the seeds really differ.
    assert {s for v in record["variants"].values() for s in v["steps"]} == {6}
    assert len(set(record["variants"]["baseline"]["bits_per_byte"])) == 2
    (written,) = tmp_path.glob("recipe_quality-tokens-demo-smoke-baseline-muon-demo-*.json")
    assert json.loads(written.read_text())["runs"]["muon"][0]["steps"] == 6
