"""Every benchmark still runs: each script's --smoke mode, end to end, in a subprocess.

The smoke modes use a tiny model and a tenth of the demo text, so a benchmark that no longer
matches the code it measures fails here (the published figures stay reproducible). Only that
each completes and writes its JSON line and results file with the documented keys is checked:
timings on a shared machine are not assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.common import REPO_ROOT, SMOKE_CORPUS, SMOKE_VOCAB, prepare_packed_data


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """The smoke data (corpus -> 512-token BPE -> shards), prepared once for every benchmark."""
    folder = tmp_path_factory.mktemp("smoke-data")
    prepare_packed_data(folder, SMOKE_VOCAB, SMOKE_CORPUS)
    return folder


def bench(module: str, *args: str, results: Path, expect_ok: bool = True) -> dict:
    """Run ``python -m benchmarks.MODULE --smoke ARGS``; its last stdout line, parsed."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--smoke", *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=900,
    )  # fmt: skip
    if expect_ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0, proc.stdout[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def results_file(results: Path, prefix: str) -> dict:
    files = sorted(results.glob(f"{prefix}*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_train_speed_smoke(smoke_data, tmp_path):
    line = bench("train_speed", "--data-dir", str(smoke_data), "--results-dir", str(tmp_path),
                 "--runs", "glotta-best,hf-default", "--rounds", "2", results=tmp_path)  # fmt: skip
    for run in ("glotta-best", "hf-default"):
        r = line["runs"][run]
        for key in ("tokens_per_second", "warmup_seconds", "stall_seconds", "stall_share",
                    "mfu_vs_bf16_peak", "mfu_vs_fp32_peak", "achieved_gflops"):  # fmt: skip
            assert r[key] is not None, (run, key)
    assert line["runs"]["glotta-best"]["fused_loss"] is True
    assert line["ratios"]["glotta_best_vs_hf_default"] > 0
    assert "glotta_best_vs_hf_best" in line["ratios"]
    assert "glotta_fp32_compile_vs_hf_fp32_compile" in line["ratios"]
    for key in ("glotta_mfu", "glotta_compile_warmup_seconds", "glotta_stall_seconds",
                "peaks_gflops", "goals", "hardware", "model", "settings", "notes"):  # fmt: skip
        assert key in line, key
    assert line["failed_runs"] == []
    saved = results_file(tmp_path, "train_speed-")
    # Two rounds of each run (in alternating order); the headline rate is their median.
    for run in ("glotta-best", "hf-default"):
        rounds = saved["raw_runs"][run]
        assert len(rounds) == 2 and all(len(r["step_seconds"]) == 3 for r in rounds)
        rates = line["runs"][run]["tokens_per_second_rounds"]
        assert len(rates) == 2
        assert line["runs"][run]["tokens_per_second"] == pytest.approx(sum(rates) / 2, abs=0.06)


def test_generate_speed_smoke_clamps_to_the_context(smoke_data, tmp_path):
    # 70 new tokens do not fit the smoke model's 64 positions: clamped, and said so.
    line = bench("generate_speed", "--data-dir", str(smoke_data), "--results-dir", str(tmp_path),
                 "--max-new-tokens", "70", results=tmp_path)  # fmt: skip
    assert line["glotta"]["tokens_per_second"] > 0 and line["hf"]["tokens_per_second"] > 0
    assert line["ratio"] > 0 and "speedup" in line["goals"]
    assert line["glotta"]["new_tokens"] == line["hf"]["new_tokens"] < 70
    assert any("clamped" in note for note in line["notes"])
    # The batched measurement: prompts of different lengths together vs one generate call each.
    batched = line["batched"]
    assert batched["prompts"] == 3 and len(set(batched["prompt_tokens"])) == 3
    assert (
        batched["glotta"]["new_tokens"]
        == batched["hf"]["new_tokens"]
        == 3 * (line["glotta"]["new_tokens"])
    )
    assert batched["ratio"] > 0 and line["batched_ratio"] == batched["ratio"]
    assert {"batch1_speedup", "batched_speedup"} <= set(line["goals"])
    assert results_file(tmp_path, "generate_speed-")["timings"]["glotta"]


def test_generate_speed_on_a_trained_model_uses_its_own_tokenizer(tiny_run, tmp_path):
    """The exported model of a real run (512-token vocabulary): its tokenizer, not the bench's."""
    _, run_dir = tiny_run
    line = bench("generate_speed", "--model-dir", str(run_dir.export), "--greedy",
                 "--results-dir", str(tmp_path), results=tmp_path)  # fmt: skip
    assert line["model"]["vocab_size"] == 512
    assert line["same_tokens"] is True  # greedy: glotta and HF agree token for token
    assert line["batched"]["same_tokens"] is True  # every row of the batch too


def test_gguf_speed_smoke(smoke_data, tmp_path):
    pytest.importorskip("xllamacpp")
    line = bench("gguf_speed", "--data-dir", str(smoke_data), "--results-dir", str(tmp_path),
                 results=tmp_path)  # fmt: skip
    sides = ("glotta", "llama.cpp f32", "llama.cpp f16", "llama.cpp q8_0")
    for side in sides:
        assert line["results"][side]["tokens_per_second"] > 0
        assert line["results"][side]["new_tokens"] == 8  # end-of-text stops neither side
    assert set(line["ratio_to_glotta"]) == set(sides[1:])
    assert 0 <= line["f32_leading_tokens_equal"] <= 8
    assert results_file(tmp_path, "gguf_speed-")["timings"]["llama.cpp q8_0"]


def test_pack_speed_smoke(smoke_data, tmp_path):
    line = bench("pack_speed", "--base-dir", str(smoke_data), "--work-dir", str(tmp_path / "w"),
                 "--results-dir", str(tmp_path), "--repeats", "2", results=tmp_path)  # fmt: skip
    for side in ("glotta", "hf"):
        assert line[side]["tokens_per_second"] > 0 and line[side]["peak_rss_mib"] > 0
        walls = line[side]["all_wall_seconds"]  # two repeats, the median (here: mean) counts
        assert len(walls) == 2
        assert line[side]["wall_seconds"] == pytest.approx(sum(walls) / 2, abs=1e-3)
    assert line["ratio_tokens_per_second"] > 0
    assert "tree_peak_rss_mib" in line["hf"] and "glotta_peak_rss_mib" in line["goals"]


def test_profile_step_smoke(smoke_data, tmp_path):
    line = bench("profile_step", "--data-dir", str(smoke_data), "--results-dir", str(tmp_path),
                 results=tmp_path)  # fmt: skip
    assert line["seconds_per_step"] > 0 and set(line["phases_ms"]) >= {"forward_loss", "backward"}
    assert line["top_ops"] and line["settings"]["fused_loss"] is True


def test_loss_speed_smoke(tmp_path):
    line = bench("loss_speed", "--results-dir", str(tmp_path), results=tmp_path)
    for objective in ("ce", "distill"):
        for side in ("plain", "fused", "fused-compiled"):
            result = line["results"][objective][side]
            assert result["ms"] > 0 and result["loss_rel_diff_vs_plain"] <= 1e-5, (objective, side)
    assert {"ce_fused_vs_plain", "distill_compiled_vs_fused"} <= set(line["ratios"])
    assert results_file(tmp_path, "loss_speed-")["settings"]["vocab_size"] == 512


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_memory_step_smoke(tmp_path, precision):
    line = bench("memory_step", "--results-dir", str(tmp_path), "--precision", precision,
                 results=tmp_path)  # fmt: skip
    assert line["settings"]["precision"] == precision
    for side in ("glotta-fused", "glotta-plain", "hf-trainer"):
        s = line["sides"][side]
        assert s["peak_step_rss_mib"] >= s["rss_before_step_mib"] > 0, side
    assert line["failed_runs"] == [] and "peak_below_trainer" in line["goals"]
    fused, plain = line["sides"]["glotta-fused"], line["sides"]["glotta-plain"]
    rel = 1e-5 if precision == "fp32" else 1e-2  # bf16: the heads' own rounding
    assert abs(fused["loss_1"] - plain["loss_1"]) <= rel * plain["loss_1"]


def test_corpus_speed_smoke(tmp_path):
    line = bench("corpus_speed", "--work-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path),
                 results=tmp_path)  # fmt: skip
    assert {r["label"] for r in line["runs"]} >= {"baseline", "glotta clean w2"}
    assert line["clean_w2_vs_baseline"] > 0 and line["rss_full_vs_quarter"] > 0


def test_near_dedup_quality_smoke(tmp_path):
    line = bench("near_dedup_quality", "--results-dir", str(tmp_path), results=tmp_path)
    for language in ("sv", "ja"):
        assert 0 <= line["languages"][language]["precision"] <= 1
        assert 0 <= line["languages"][language]["recall"] <= 1


def test_ner_hironsan_smoke(tmp_path):
    line = bench("ner_hironsan", "--out", str(tmp_path / "bert"), results=tmp_path)
    assert (Path(line["out"]) / "config.json").is_file()
    assert (Path(line["out"]) / "tokenizer.json").is_file()


def test_gpu_check_smoke_on_the_cpu(smoke_data, tmp_path):
    """The GPU check's Python part, every step on the CPU with a tiny model (no GPU here)."""
    line = bench("gpu_check", "--data-dir", str(smoke_data), "--results-dir", str(tmp_path),
                 results=tmp_path)  # fmt: skip
    assert line["device"] == "cpu"
    train = line["train"]
    assert train["glotta_tokens_per_second"] > 0 and train["hf_best_tokens_per_second"] > 0
    assert train["ratio"] > 0 and train["failed_runs"] == []
    assert {"mfu", "vs_trainer_best"} <= set(line["goals"])
    assert line["generate"]["ratio"] > 0
    memory = line["memory"]
    assert set(memory["peak_mib"]) == {"glotta-fused", "glotta-plain", "hf-trainer"}
    assert "fused_peak_below_trainer" in memory and "memory_below_trainer" in line["goals"]
    record = results_file(tmp_path, "gpu_check-")
    assert record["train_record"]["model"]["vocab_size"] == 600
    assert record["memory_record"]["settings"]["precision"] == "bf16"


def test_gpu_check_out_of_time_still_writes_its_results(smoke_data, tmp_path):
    """A spent budget skips the remaining parts: a results file that says so, exit non-zero
    (not a run that gpu_check.sh's timeout kills with nothing written)."""
    line = bench("gpu_check", "--data-dir", str(smoke_data), "--results-dir", str(tmp_path),
                 "--budget-seconds", "0", results=tmp_path, expect_ok=False)  # fmt: skip
    assert line["train"] is None and line["generate"] is None and line["memory"] is None
    assert results_file(tmp_path, "gpu_check-")["seconds"] >= 0


@pytest.mark.slow
def test_encoder_distillation_smoke(tmp_path):
    line = bench("encoder_distillation", "ner", "--out", str(tmp_path / "runs"),
                 "--results-dir", str(tmp_path), results=tmp_path)  # fmt: skip
    assert {row["role"] for row in line["rows"]} >= {"teacher", "distilled"}


def test_run_all_fails_when_a_measurement_fails(tmp_path):
    """A benchmark that crashes makes run_all exit non-zero (no null ratio with exit 0)."""
    line = bench("run_all", "--only", "generate", "--results-dir", str(tmp_path),
                 "--generate", f"--model-dir {tmp_path / 'missing'}", results=tmp_path,
                 expect_ok=False)  # fmt: skip
    assert line["generate"] is None


def test_memory_step_activation_checkpointing_reaches_the_model():
    """--activation-checkpointing is a like-for-like switch: the model every side trains has it."""
    from benchmarks.memory_step import SMOKE, Settings, build

    for on in (False, True):
        model, _ = build(Settings(**SMOKE, activation_checkpointing=on))
        assert model.is_gradient_checkpointing is on
