"""The Llama-vs-GPT-2 comparison's smoke mode runs end to end and writes its documented keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_architectures_smoke_writes_its_results(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.architectures", "--smoke", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(record["runs"]) == {"demo", "demo-llama"}
    for run in record["runs"].values():
        assert {"parameters", "tokens_seen", "bits_per_byte", "perplexity", "train_seconds"} <= set(
            run
        )
    assert record["runs"]["demo-llama"]["arch"] == "llama"
    # Equal training tokens, nearly equal parameters (no position table, no biases in Llama).
    assert record["runs"]["demo"]["tokens_seen"] == record["runs"]["demo-llama"]["tokens_seen"]
    assert 0.9 < record["parameter_ratio_llama_over_gpt2"] < 1.1
    (written,) = tmp_path.glob("architectures-demo-smoke-*.json")
    assert (
        json.loads(written.read_text())["bpb_difference_llama_minus_gpt2"]
        == (record["bpb_difference_llama_minus_gpt2"])
    )
