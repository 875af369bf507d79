"""Rank training recipes by the model they make: held-out bits per byte for the same compute.

    python -m benchmarks.recipe_quality                       # every variant, 2 seeds, same steps
    python -m benchmarks.recipe_quality --budget time         # same training seconds as baseline
    python -m benchmarks.recipe_quality --variants baseline,demo --seeds 1,2,3
    python -m benchmarks.recipe_quality --smoke               # tiny models (the test suite)

Every variant trains on the demo corpus (the same corpus, tokenizer and packed shards, prepared
once; a variant that changes the tokenizer gets its own) and is scored on the test split.
``baseline`` is the demo as it shipped before Muon and warmup-stable-decay (GPT-2 4 x 192,
AdamW, cosine decay, 500 steps of 32 x 128 tokens); each other variant changes one thing of it,
and ``demo`` is the shipped demo recipe, the combination. ``demo-...`` variants change one thing
of the demo: its architecture, weight decay (0.03, 0.3 instead of 0.1), or half the steps
(about two passes over the train split instead of four), for the data-limited guidance in
docs/training.md.

``--budget tokens`` (default) trains every variant for its recipe's steps, so variants that keep
the steps see the same tokens. ``--budget time`` gives every variant the baseline's training
seconds on this machine, in this run: the baseline trains first, each other variant is timed
for a few steps and then trains for as many steps as fit in the baseline's seconds (its
decay follows the new length; warmup stays in steps). Training seconds are the loop's own
(validation and checkpoints included), so the two budgets answer "better per token" and
"better per second".

Prints a table (mean and spread of the seeds per variant), writes
``benchmarks/results/recipe_quality-<budget>-demo[-<variants, when not all>]-<hardware>-<date>.json``
and ends with one
JSON line (keys: ``variants.<name>.{bits_per_byte, bpb_mean, bpb_spread, train_seconds,
steps}``, ``unigram_bits_per_byte``, ``budget``, ``hardware``, ``settings``, ``notes``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE_DIR,
    CpuWatch,
    contention_note,
    format_table,
    hardware_info,
    hardware_slug,
    log,
    publish,
    results_path,
)

# The demo's settings before this benchmark chose new ones: pinned, so the baseline stays the
# baseline when demo.toml changes.
BASELINE = [
    "model.arch=gpt2",
    "model.n_layer=4",
    "model.n_embd=192",
    "model.n_head=4",
    "model.n_kv_head=0",
    "model.n_inner=0",
    "model.tie_embeddings=true",
    "model.zero_init_projections=false",
    "tokenizer.vocab_size=4096",
    "train.optimizer=adamw",
    "train.decay=cosine",
    "train.learning_rate=2e-3",
    "train.muon_learning_rate=0",
    "train.min_lr_ratio=0.1",
    "train.warmup_steps=50",
    "train.weight_decay=0.1",
    "train.max_steps=500",
    "train.micro_batch_size=32",
    "train.block_size=128",
]
# Each variant: the changes to the baseline; variants named "demo..." change the shipped demo
# recipe instead (the combination; "demo" itself is the recipe unchanged).
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "muon": ["train.optimizer=muon"],
    "wsd": ["train.decay=wsd", "train.cooldown_fraction=0.4", "train.min_lr_ratio=0"],
    "llama": ["model.arch=llama"],
    "zero-init": ["model.zero_init_projections=true"],
    "llama+muon": ["model.arch=llama", "train.optimizer=muon"],
    "llama+muon+wsd": [
        "model.arch=llama",
        "train.optimizer=muon",
        "train.decay=wsd",
        "train.cooldown_fraction=0.4",
        "train.min_lr_ratio=0",
    ],
    "llama+muon+zero-init": [
        "model.arch=llama",
        "train.optimizer=muon",
        "model.zero_init_projections=true",
    ],
    "vocab-2k": ["tokenizer.vocab_size=2048"],
    "vocab-8k": ["tokenizer.vocab_size=8192"],
    "demo": [],
    "demo-llama": ["model.arch=llama"],
    "demo-wd0.3": ["train.weight_decay=0.3"],
    "demo-wd0.03": ["train.weight_decay=0.03"],
    "demo-2-passes": ["train.max_steps=250"],
}
STAGES_BY_TOKENIZER = ("corpus", "tokenizer", "shards")
SMOKE = [
    'corpus.inputs=["pkg://rl_wsd_labeled/verbs/RuTenTen/*.txt"]',
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "train.max_steps=6",
    "train.warmup_steps=2",
    "train.micro_batch_size=4",
    "train.block_size=32",
    "train.eval_interval=0",
    "train.checkpoint_interval=6",
    "eval.batch_size=4",
    "tokenizer.vocab_size=512",
]
PROBE_STEPS = 20  # --budget time: steps timed per variant before its real run


def variant_overrides(name: str, smoke: bool) -> list[str]:
    changes = VARIANTS[name]
    pinned = [*changes] if name.startswith("demo") else [*BASELINE, *changes]
    if smoke:  # tiny shapes and steps; a variant's own vocabulary stays its own
        pinned = [o for o in pinned if not o.startswith(("model.n_", "train.max_steps"))]
        sizes = ("model.n_", "train.max_steps")  # smoke sizes win over the variant's own
        pinned += [o for o in SMOKE if o.startswith(sizes) or o.split("=")[0] not in _keys(changes)]
    return pinned


def _keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0] for o in overrides}


def _vocab(overrides: list[str]) -> str:
    return next((o for o in reversed(overrides) if o.startswith("tokenizer.vocab_size=")), "")


def train_and_score(run_dir: Path, overrides: list[str], prepared: dict[str, Path]) -> dict:
    """``glotta run demo`` in a fresh process; shared stages come from an earlier run with the
    same tokenizer settings (identical settings: the pipeline keeps them)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    source = prepared.get(_vocab(overrides))
    if source is not None:
        for stage in STAGES_BY_TOKENIZER:
            shutil.copytree(source / stage, run_dir / stage)
    command = [sys.executable, "-m", "glotta", "run", "demo", "--run-dir", str(run_dir)]
    for override in overrides:
        command += ["--set", override]
    with CpuWatch() as watch:
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"glotta run failed in {run_dir}:\n{done.stderr[-3000:]}")
    prepared.setdefault(_vocab(overrides), run_dir)
    rows = json.loads((run_dir / "eval" / "results.json").read_text())["rows"]
    model = next(row for row in rows if row["kind"] == "model")
    baseline = next(row for row in rows if row["kind"] == "baseline")
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    return {
        "bits_per_byte": model["bits_per_byte"],
        "unigram_bits_per_byte": baseline["bits_per_byte"],
        "train_seconds": round(summary["elapsed_seconds"], 1),
        "steps": summary["step"],
        "tokens_seen": summary["tokens_seen"],
        "parameters": summary["parameters"],
        "cpu": watch.result(),
    }


def steps_for_seconds(run_dir: Path, overrides: list[str], prepared, seconds: float) -> int:
    """How many steps of this variant fit in ``seconds`` here (timed over PROBE_STEPS steps)."""
    probe = train_and_score(run_dir, [*overrides, f"train.max_steps={PROBE_STEPS}"], prepared)
    return max(PROBE_STEPS, round(seconds / (probe["train_seconds"] / probe["steps"])))


def summarise(name: str, runs: list[dict]) -> dict[str, Any]:
    values = [r["bits_per_byte"] for r in runs]
    return {
        "bits_per_byte": values,
        "bpb_mean": round(statistics.fmean(values), 4),
        "bpb_spread": round(max(values) - min(values), 4),
        "train_seconds": [r["train_seconds"] for r in runs],
        "steps": [r["steps"] for r in runs],
        "tokens_seen": [r["tokens_seen"] for r in runs],
        "parameters": runs[0]["parameters"],
        "overrides": VARIANTS[name],
        "base": "demo recipe" if name.startswith("demo") else "baseline",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"Comma-separated variants to train (default: all: {', '.join(VARIANTS)}).",
    )
    parser.add_argument(
        "--seeds", default="1,2", help="Comma-separated train.seed values, one run each."
    )
    parser.add_argument(
        "--budget",
        choices=("tokens", "time"),
        default="tokens",
        help="'tokens': each variant's own steps; 'time': the baseline's training seconds.",
    )
    parser.add_argument("--smoke", action="store_true", help="Tiny models, a few steps, seconds.")
    parser.add_argument(
        "--out", type=Path, default=CACHE_DIR / "recipe_quality", help="Where the runs go."
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="Results folder (default: benchmarks/results).",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.budget == "time" and names[0] != "baseline":
        names = ["baseline", *[n for n in names if n != "baseline"]]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(tempfile.mkdtemp(prefix="glotta-quality-")) if args.smoke else args.out

    prepared: dict[str, Path] = {}
    results: dict[str, list[dict]] = {}
    budget_seconds: dict[int, float] = {}  # the baseline's, per seed
    for name in names:
        for seed in seeds:
            overrides = [*variant_overrides(name, args.smoke), f"train.seed={seed}"]
            run_dir = out / f"{name}-seed{seed}"
            if args.budget == "time" and name != "baseline":
                steps = steps_for_seconds(run_dir, overrides, prepared, budget_seconds[seed])
                overrides.append(f"train.max_steps={steps}")
            log(f"{name}, seed {seed}: training")
            results.setdefault(name, []).append(train_and_score(run_dir, overrides, prepared))
            if name == "baseline":
                budget_seconds[seed] = results[name][-1]["train_seconds"]
    variants = {name: summarise(name, runs) for name, runs in results.items()}
    notes = [
        note
        for name, runs in results.items()
        for i, run in enumerate(runs)
        if (note := contention_note(f"{name} seed {seeds[i]}", run["cpu"]))
    ]
    hardware = hardware_info()
    first = next(iter(results.values()))[0]
    record = {
        "bench": "recipe_quality",
        "budget": args.budget,
        "variants": variants,
        "unigram_bits_per_byte": round(first["unigram_bits_per_byte"], 4),
        "hardware": hardware,
        "settings": {"seeds": seeds, "smoke": args.smoke, "baseline": BASELINE},
        "notes": notes,
    }
    rows = [
        {
            "variant": name,
            "bpb": f"{v['bpb_mean']:.4f}",
            "spread": f"{v['bpb_spread']:.4f}",
            "vs base": (
                f"{v['bpb_mean'] - variants['baseline']['bpb_mean']:+.4f}"
                if "baseline" in variants
                else ""
            ),
            "steps": "/".join(map(str, v["steps"])),
            "train s": "/".join(f"{s:.0f}" for s in v["train_seconds"]),
        }
        for name, v in variants.items()
    ]
    print(
        format_table(
            rows, [(k, k) for k in ("variant", "bpb", "spread", "vs base", "steps", "train s")]
        )
    )
    print(f"unigram baseline: {record['unigram_bits_per_byte']:.4f} bits per byte")
    for note in notes:
        print(f"note: {note}")
    corpus = "demo-smoke" if args.smoke else "demo"
    if set(names) != set(VARIANTS):  # a subset gets its own file, not the full ranking's name
        corpus += "-" + "-".join(names)
    path = results_path(
        f"recipe_quality-{args.budget}", corpus, hardware_slug(hardware), args.results_dir
    )
    if args.smoke and not args.results_dir:
        path = Path(out) / path.name
    publish(path, record, {"runs": results})
    if args.smoke:
        shutil.rmtree(out, ignore_errors=True)
    return record


if __name__ == "__main__":
    main()
