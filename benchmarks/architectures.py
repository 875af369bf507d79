"""Llama-style vs GPT-2 on the demo corpus, at equal parameters and equal training tokens.

    python -m benchmarks.architectures            # the demo and demo-llama recipes, ~2 x 10 min
    python -m benchmarks.architectures --smoke    # tiny models, a few steps (the test suite runs it)

Both recipes share everything but ``[model]``: the same corpus, the same 4,096-token BPE and the
same packed shards (the second run reuses the first one's folders, so both read identical
tokens in identical order), the same schedule and 500 steps of 32 x 128 tokens. GPT-2 is 4 x 192
with 4 heads and learned positions; the Llama-style model is 4 x 192 with 4 heads, RMSNorm,
SwiGLU of width 512 (8/3 x 192: the same feed-forward parameters as GPT-2's 4 x 192 GELU MLP)
and rotary positions. The figure is held-out bits per byte on the test split (lower is better),
next to the unigram baseline. Wall time is reported but is not the comparison: the runs see
equal tokens, not equal time.

Prints a table, writes ``benchmarks/results/architectures-demo-<hardware>-<date>.json`` and ends
with one JSON line (keys: ``runs.<recipe>.{parameters, tokens_seen, bits_per_byte, perplexity,
train_seconds}``, ``unigram_bits_per_byte``, ``bpb_difference_llama_minus_gpt2``, ``hardware``,
``settings``, ``notes``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE_DIR,
    CpuWatch,
    contention_note,
    emit_json_line,
    format_table,
    hardware_info,
    hardware_slug,
    log,
    results_path,
    write_results,
)

RECIPES = ("demo", "demo-llama")
SHARED_STAGES = ("corpus", "tokenizer", "shards")  # identical settings: run once, reuse
# Seconds, not minutes: ten files of the demo corpus, 2-layer models, a few steps.
SMOKE = [
    'corpus.inputs=["pkg://rl_wsd_labeled/verbs/RuTenTen/*.txt"]',
    "tokenizer.vocab_size=512",
    "model.n_layer=2",
    "model.n_embd=64",
    "model.n_head=2",
    "train.max_steps=8",
    "train.micro_batch_size=8",
    "train.block_size=64",
    "train.eval_interval=0",
    "train.checkpoint_interval=8",
    "eval.batch_size=8",
    "generate.max_new_tokens=5",
]


def run_one(recipe_name: str, run_dir: Path, overrides: list[str], reuse: Path | None) -> dict:
    """Run every stage of one recipe; the shared stages are copied from ``reuse`` if given."""
    from glotta.pipeline import run_recipe
    from glotta.recipe import load_recipe
    from glotta.rundir import RunDir

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if reuse is not None:
        for stage in SHARED_STAGES:
            shutil.copytree(reuse / stage, run_dir / stage)
    recipe = load_recipe(recipe_name, overrides)
    with CpuWatch() as watch:
        timings = run_recipe(recipe, RunDir(run_dir))
    rows = json.loads((run_dir / "eval" / "results.json").read_text())["rows"]
    model = next(row for row in rows if row["kind"] == "model")
    baseline = next(row for row in rows if row["kind"] == "baseline")
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    return {
        "recipe": recipe_name,
        "arch": recipe.model.arch,
        "parameters": summary["parameters"],
        "tokens_seen": summary["tokens_seen"],
        "steps": summary["step"],
        "bits_per_byte": model["bits_per_byte"],
        "perplexity": model["perplexity"],
        "unigram_bits_per_byte": baseline["bits_per_byte"],
        "train_seconds": round(timings.get("train", 0.0), 1),
        "cpu": watch.result(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="Tiny models and a few steps, in a temporary folder."
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="Extra recipe overrides for both runs (e.g. train.max_steps=100).",
    )
    parser.add_argument(
        "--out", type=Path, default=CACHE_DIR / "architectures", help="Where the runs go."
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="Results folder (default: benchmarks/results).",
    )
    args = parser.parse_args(argv)
    overrides = [*(SMOKE if args.smoke else []), *args.overrides]
    out = Path(tempfile.mkdtemp(prefix="glotta-arch-")) if args.smoke else args.out

    runs: dict[str, dict] = {}
    first: Path | None = None
    for name in RECIPES:
        log(f"{name}: every stage" + (" (corpus, tokenizer, shards reused)" if first else ""))
        runs[name] = run_one(name, out / name, overrides, first)
        first = first or out / name
    gpt2, llama = runs["demo"], runs["demo-llama"]
    notes = [n for r in runs.values() if (n := contention_note(r["recipe"], r["cpu"]))]
    if gpt2["tokens_seen"] != llama["tokens_seen"]:
        notes.append("the two runs saw different numbers of tokens: not a fair comparison")
    hardware = hardware_info()
    record = {
        "bench": "architectures",
        "runs": runs,
        "unigram_bits_per_byte": gpt2["unigram_bits_per_byte"],
        "bpb_difference_llama_minus_gpt2": round(llama["bits_per_byte"] - gpt2["bits_per_byte"], 4),
        "parameter_ratio_llama_over_gpt2": round(llama["parameters"] / gpt2["parameters"], 4),
        "hardware": hardware,
        "settings": {"smoke": args.smoke, "overrides": overrides},
        "notes": notes,
    }
    rows = [
        {
            "recipe": r["recipe"],
            "arch": r["arch"],
            "params": f"{r['parameters'] / 1e6:.3f}M",
            "tokens": f"{r['tokens_seen']:,}",
            "bpb": f"{r['bits_per_byte']:.4f}",
            "ppl": f"{r['perplexity']:.2f}",
            "train s": f"{r['train_seconds']:.0f}",
        }
        for r in runs.values()
    ]
    columns = [(k, k) for k in ("recipe", "arch", "params", "tokens", "bpb", "ppl", "train s")]
    print(format_table(rows, columns))
    print(f"unigram baseline: {record['unigram_bits_per_byte']:.4f} bits per byte")
    for note in notes:
        print(f"note: {note}")
    if not args.smoke or args.results_dir:
        model = "demo-smoke" if args.smoke else "demo"
        path = results_path("architectures", model, hardware_slug(hardware), args.results_dir)
        write_results(path, record)
        log(f"results: {path}")
    if args.smoke:
        shutil.rmtree(out, ignore_errors=True)
    emit_json_line(record)
    return record


if __name__ == "__main__":
    main()
