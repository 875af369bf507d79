"""Decoding speed of an exported model in llama.cpp (GGUF f32 / f16 / q8_0, through xllamacpp)
against ``glotta generate``'s decoder on the same weights, batch 1, greedy, same threads.

    python -m benchmarks.gguf_speed                              # random benchmark GPT-2
    python -m benchmarks.gguf_speed --model-dir runs/demo/export # a trained export folder

The model is generate_speed's benchmark GPT-2 (random weights, the 32k tokenizer that
train_speed prepares) or --model-dir. Its HF folder is copied to a scratch folder and converted
there by glotta's own GGUF export (the folder given is not written to). Both sides get the same
prompt ids (end-of-text + prompt) and produce exactly --max-new-tokens tokens (end-of-text stops
neither); the clock runs around the whole call, prompt included. Runs alternate glotta, f32,
f16, q8_0, glotta, ... after a short warm-up each; the median tokens/s counts. The greedy tokens
of the f32 file are compared with glotta's: the leading tokens that agree are reported (near-ties
may diverge after rounding differences, see tests/export/test_gguf.py for the tolerances).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE_DIR,
    SMOKE_DATA_DIR,
    SMOKE_RESULTS_DIR,
    SMOKE_VOCAB,
    CpuWatch,
    contention_note,
    format_table,
    hardware_info,
    hardware_slug,
    log,
    parse_with_smoke,
    prepare_packed_data,
    publish,
    ratio,
    results_path,
    today,
    usable_cpus,
)

# --smoke: a 2-layer random GPT-2 on the smoke tokenizer, 8 new tokens, one repeat; seconds.
SMOKE = {
    "max_new_tokens": 8,
    "repeats": 1,
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 2,
    "block_size": 64,
    "vocab_size": SMOKE_VOCAB,
    "data_dir": str(SMOKE_DATA_DIR),
    "results_dir": str(SMOKE_RESULTS_DIR),
}
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass
class Settings:
    max_new_tokens: int = 128
    repeats: int = 3
    types: str = "f32,f16,q8_0"
    threads: int = 0
    prompt: str = "Он долго бродил по"
    seed: int = 0
    n_layer: int = 6
    n_embd: int = 384
    n_head: int = 6
    block_size: int = 256
    vocab_size: int = 32000
    model_dir: str = ""
    data_dir: str = str(CACHE_DIR / "train-data")
    results_dir: str = ""


def _hf_folder(s: Settings, folder: Path) -> str:
    """The model under test as an HF folder in ``folder``; returns a description of its weights."""
    from benchmarks.generate_speed import Settings as GenerateSettings
    from benchmarks.generate_speed import load_model

    if s.model_dir:
        for name in HF_FILES:
            shutil.copy2(Path(s.model_dir) / name, folder / name)
        return f"trained: {s.model_dir}"
    meta = prepare_packed_data(Path(s.data_dir), s.vocab_size)
    shape = {k: getattr(s, k) for k in ("n_layer", "n_embd", "n_head", "block_size", "seed")}
    model, weights = load_model(GenerateSettings(**shape), meta["vocab_size"], meta["eos_id"])
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(Path(s.data_dir) / "tokenizer" / name, folder / name)
    return weights


def run_gguf_speed(s: Settings) -> dict[str, Any]:
    import torch

    from glotta.config import GenerateConfig
    from glotta.export.gguf_export import export_gguf, gguf_name
    from glotta.export.llamacpp import LlamaCpp
    from glotta.generate import generate_ids
    from glotta.models import eos_id_of, load_causal_lm, load_tokenizer

    threads = s.threads or usable_cpus()
    torch.set_num_threads(threads)
    types = [t for t in s.types.split(",") if t]
    with tempfile.TemporaryDirectory(prefix="gguf-speed-") as scratch:
        folder = Path(scratch)
        weights = _hf_folder(s, folder)
        log(f"exporting GGUF {', '.join(types)}")
        export_gguf(folder, types, "benchmark")
        model = load_causal_lm(str(folder), "cpu")
        tokenizer = load_tokenizer(str(folder))
        eos_id = eos_id_of(tokenizer, model)
        model.generation_config.eos_token_id = None
        prompt_ids = [eos_id, *tokenizer.encode(s.prompt, add_special_tokens=False).ids]
        new_tokens = min(s.max_new_tokens, model.config.max_position_embeddings - len(prompt_ids))
        cfg = GenerateConfig(prompt=s.prompt, max_new_tokens=new_tokens, temperature=0.0,
                             repetition_penalty=1.0, seed=s.seed)  # fmt: skip
        engines = {t: LlamaCpp(folder / gguf_name(t), threads=threads) for t in types}

        def glotta_side() -> list[int]:
            return list(generate_ids(model, prompt_ids, cfg, None))

        def llama_tokens(gguf_type: str) -> list[int]:
            """The greedy ids (untimed: asking for them makes the server sort the vocabulary's
            probabilities at every step)."""
            result = engines[gguf_type].complete(prompt_ids, new_tokens, 1, ignore_eos=True)
            return [t["id"] for t in result["choices"][0]["logprobs"]["content"]]

        def llama_side(gguf_type: str):
            def run() -> list[int]:
                result = engines[gguf_type].complete(prompt_ids, new_tokens, ignore_eos=True)
                return [0] * result["usage"]["completion_tokens"]  # a count; ids: llama_tokens

            return run

        sides = {"glotta": glotta_side, **{f"llama.cpp {t}": llama_side(t) for t in types}}
        log("warm-up")
        for fn in sides.values():
            fn()
        timings: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        outputs: dict[str, list[int]] = {}
        for repeat in range(s.repeats):
            for name, fn in sides.items():
                with CpuWatch() as watch:
                    start = time.perf_counter()
                    outputs[name] = fn()
                    seconds = time.perf_counter() - start
                timings[name].append({"seconds": round(seconds, 4), "tokens": len(outputs[name]),
                                      "other_cpu_share": watch.result()["other_cpu_share"]})  # fmt: skip
                log(f"{name} repeat {repeat + 1}: {len(outputs[name])} tokens in {seconds:.2f}s")
        agree = 0
        if "f32" in engines:
            for ours, theirs in zip(outputs["glotta"], llama_tokens("f32"), strict=False):
                if ours != theirs:
                    break
                agree += 1
        engines.clear()  # stop the llama.cpp servers

    results = {}
    for name, runs in timings.items():
        rates = [r["tokens"] / r["seconds"] for r in runs]
        shares = [r["other_cpu_share"] for r in runs if r["other_cpu_share"] is not None]
        results[name] = {
            "tokens_per_second": round(statistics.median(rates), 1),
            "tokens_per_second_all": [round(x, 1) for x in rates],
            "new_tokens": runs[-1]["tokens"],
            "other_cpu_share_max": max(shares) if shares else None,
        }
    glotta_rate = results["glotta"]["tokens_per_second"]
    notes = [
        note
        for name, side in results.items()
        if (note := contention_note(name, {"other_cpu_share": side["other_cpu_share_max"]}))
    ]
    hardware = hardware_info()
    c = model.config
    record = {
        "bench": "gguf_speed",
        "date": today(),
        "hardware": hardware,
        "model": {
            "arch": c.model_type,
            "n_layer": c.num_hidden_layers,
            "n_embd": c.hidden_size,
            "vocab_size": c.vocab_size,
            "weights": weights,
        },  # fmt: skip
        "settings": {
            **dataclasses.asdict(s),
            "threads": threads,
            "max_new_tokens": new_tokens,
            "prompt_tokens": len(prompt_ids),
            "batch": 1,
            "decoding": "greedy",
        },  # fmt: skip
        "results": results,
        "ratio_to_glotta": {
            name: ratio(side["tokens_per_second"], glotta_rate)
            for name, side in results.items()
            if name != "glotta"
        },
        "f32_leading_tokens_equal": agree if "f32" in types else None,
        "notes": notes,
    }
    print(
        f"{c.model_type} {c.num_hidden_layers}x{c.hidden_size} ({weights}), vocab "
        f"{c.vocab_size:,}; {len(prompt_ids)} prompt + {new_tokens} new tokens, greedy, batch 1, "
        f"{threads} threads; median of {s.repeats}"
    )
    rows = [
        {"side": name, "tok_s": f"{r['tokens_per_second']:,.1f}",
         "x": f"{record['ratio_to_glotta'].get(name) or 1.0:.2f}",
         "all": ", ".join(f"{x:.1f}" for x in r["tokens_per_second_all"])}
        for name, r in results.items()
    ]  # fmt: skip
    columns = [("side", "side"), ("tok_s", "tokens/s"), ("x", "x glotta"), ("all", "each repeat")]
    print(format_table(rows, columns))
    if record["f32_leading_tokens_equal"] is not None:
        print(f"greedy tokens equal to glotta's (f32): first {agree} of {new_tokens}")
    for note in notes:
        print(f"note: {note}")
    slug = f"{c.model_type}-{c.num_hidden_layers}l{c.hidden_size}-v{c.vocab_size}"
    path = results_path("gguf_speed", slug, hardware_slug(hardware),
                        Path(s.results_dir) if s.results_dir else None)  # fmt: skip
    publish(path, record, {"timings": timings})
    return record


def parse_args(argv: list[str] | None = None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gguf_speed",
        description="Tokens/s of llama.cpp on glotta's GGUF export (f32, f16, q8_0) vs glotta's "
        "own decoder, batch 1, greedy; ends with one JSON line.",
    )
    help_texts = {
        "max_new_tokens": "New tokens per generation (clamped to the context).",
        "repeats": "Timed generations per side; the median counts.",
        "types": "GGUF types to time, comma-separated.",
        "threads": "CPU threads for both sides (0 = every usable core).",
        "prompt": "Prompt text.",
        "seed": "Seed of the random model.",
        "n_layer": "Transformer blocks of the random model.",
        "n_embd": "Width of the random model.",
        "n_head": "Heads of the random model.",
        "block_size": "Positions of the random model.",
        "vocab_size": "BPE vocabulary of the prepared tokenizer.",
        "model_dir": "A trained export folder (GPT-2 or Llama) instead of random weights.",
        "data_dir": "Prepared run directory with the tokenizer, for the random model.",
        "results_dir": "Where the results file goes ('' = benchmarks/results).",
    }
    for f in dataclasses.fields(Settings):
        default = getattr(d, f.name)
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(default),
            default=default,
            help=f"{help_texts[f.name]} (default: {default!r})",
        )
    a = parse_with_smoke(p, argv, SMOKE)
    return Settings(**{f.name: getattr(a, f.name) for f in dataclasses.fields(Settings)})


def main(argv: list[str] | None = None) -> None:
    run_gguf_speed(parse_args(argv))


if __name__ == "__main__":
    main()
