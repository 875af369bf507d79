"""benchmarks/serve_speed.py --smoke: both servers really answer, every figure is reported (the
figures themselves are measurements, not checked here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_serve_speed_smoke_reports_every_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_speed", "--smoke", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("model", "hardware", "glotta_generate_latency_s", "rows", "speedup_at_32",
                "goal_speedup_at_32", "batch1_latency_vs_generate", "notes"):  # fmt: skip
        assert key in record, key
    assert [row["clients"] for row in record["rows"]] == [1, 4]
    for row in record["rows"]:
        assert row["speedup"] > 0
        for side in ("glotta", "baseline"):
            figures = row[side]
            assert figures["errors"] == [] and figures["requests"] == row["clients"]
            assert figures["generated_tokens"] == 8 * row["clients"]  # ignore_eos / min tokens
            for key in (
                "tokens_per_s",
                "latency_p50_s",
                "latency_p95_s",
                "ttft_p50_s",
                "tokens_per_server_cpu_s",
            ):
                assert figures[key] > 0, (side, key)
    assert [p.name.startswith("serve_speed-smoke-") for p in tmp_path.iterdir()] == [True]
