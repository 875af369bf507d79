"""Generation speed: glotta's decoding against HF ``model.generate``, same model and settings.

    python -m benchmarks.generate_speed                          # sampling, 128 new tokens
    python -m benchmarks.generate_speed --greedy --repeats 1     # greedy (outputs must match)

The model is the benchmark GPT-2 (6 layers, 384 wide, block 256) with the 32k tokenizer that
train_speed prepares: random weights by default (speed does not depend on the weights except
through early end-of-text, which both sides ignore here), or --model-dir for a trained HF folder.

Two measurements, each side by side in one process with the same threads:

- batch 1: ``glotta.generate.generate_ids`` against ``model.generate`` on one prompt;
- --batch-prompts N (default 8) prompts of different lengths: ``glotta.generate.generate_batch``
  (all N decoded together) against N batch-1 ``model.generate`` calls one after another.

Both sides get the same prompt ids (end-of-text + prompt, as ``glotta generate`` builds them),
the same temperature / top-k / top-p / repetition penalty and exactly --max-new-tokens new
tokens per prompt (end-of-text does not stop either side). Runs alternate glotta, HF, glotta,
HF ... after one short warm-up each; the median tokens/s counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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
)

# What makes glotta's own decode loop worth keeping over transformers' generate(): at batch 1
# (one user of `glotta generate`) at least 2x, aiming at 3x; with 8 prompts decoded together
# (a server's batch) at least 4x eight batch-1 generate() calls.
GOAL_SPEEDUP = 3.0
GOAL_BATCH1 = 2.0
GOAL_BATCHED = 4.0
# Prompts for the batched measurement (different lengths, as a server's requests would be).
BATCH_PROMPTS = (
    "Он долго бродил по",
    "В тот вечер",
    "Когда мы приехали в город, уже начинало темнеть, и",
    "Она сказала",
    "Утром",
    "Старый мастер показал нам, как",
    "Эта история началась много лет назад в маленькой деревне на берегу",
    "Никто не знал, почему",
)
# --smoke: a 2-layer random GPT-2 on the smoke tokenizer, 8 new tokens, one repeat; seconds.
SMOKE = {
    "max_new_tokens": 8,
    "repeats": 1,
    "batch_prompts": 3,
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 2,
    "block_size": 64,
    "vocab_size": SMOKE_VOCAB,
    "data_dir": str(SMOKE_DATA_DIR),
    "results_dir": str(SMOKE_RESULTS_DIR),
}


@dataclass
class Settings:
    max_new_tokens: int = 128
    repeats: int = 3
    batch_prompts: int = 8
    greedy: bool = False
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    prompt: str = "Он долго бродил по"
    seed: int = 0
    n_layer: int = 6
    n_embd: int = 384
    n_head: int = 6
    block_size: int = 256
    vocab_size: int = 32000
    model_dir: str = ""
    device: str = "cpu"
    data_dir: str = str(CACHE_DIR / "train-data")
    results_dir: str = ""


def load_model(s: Settings, vocab_size: int, eos_id: int):
    import torch
    from transformers import GPT2LMHeadModel

    from glotta.config import ModelConfig
    from glotta.models import gpt2_config, load_causal_lm

    if s.model_dir:
        return load_causal_lm(s.model_dir, s.device), f"trained: {s.model_dir}"
    torch.manual_seed(s.seed)
    cfg = ModelConfig(
        preset="custom",
        n_layer=s.n_layer,
        n_embd=s.n_embd,
        n_head=s.n_head,
        n_positions=s.block_size,
    )
    model = GPT2LMHeadModel(gpt2_config(cfg, vocab_size, s.block_size, eos_id)).eval()
    return model.to(s.device), "random init"


def run_generate_speed(s: Settings) -> dict[str, Any]:
    """Entry point: time both generators, print a table and the JSON line."""
    import torch

    from glotta.config import GenerateConfig
    from glotta.generate import generate_batch, generate_ids
    from glotta.models import context_length, eos_id_of, load_tokenizer

    if s.model_dir:
        # A trained model comes with its own tokenizer (the exported folder holds both).
        tokenizer = load_tokenizer(s.model_dir)
        model, weights = load_model(s, 0, 0)
        eos_id = eos_id_of(tokenizer, model)
    else:
        meta = prepare_packed_data(Path(s.data_dir), s.vocab_size)
        tokenizer = load_tokenizer(Path(s.data_dir) / "tokenizer")
        eos_id = meta["eos_id"]
        model, weights = load_model(s, meta["vocab_size"], eos_id)
    # Neither side stops at end-of-text: both produce exactly max_new_tokens tokens.
    model.generation_config.eos_token_id = None
    prompt_ids = [eos_id, *tokenizer.encode(s.prompt, add_special_tokens=False).ids]
    context = context_length(model)
    if len(prompt_ids) >= context:
        raise SystemExit(
            f"the prompt is {len(prompt_ids)} tokens but the model has {context} positions; "
            "give a shorter --prompt"
        )
    batch_prompts = [
        [eos_id, *tokenizer.encode(text, add_special_tokens=False).ids]
        for text in (BATCH_PROMPTS * (1 + s.batch_prompts // len(BATCH_PROMPTS)))[: s.batch_prompts]
    ]
    longest = max([len(prompt_ids)] + [len(p) for p in batch_prompts])
    if longest >= context:
        raise SystemExit(
            f"a batch prompt is {longest} tokens but the model has {context} positions; "
            "use --batch-prompts 0"
        )
    notes = []
    if longest + s.max_new_tokens > context:
        # Learned positions end at the context length: both sides would fail (HF) or stop
        # early (glotta) past it, so the run asks for what fits.
        fits = context - longest
        notes.append(
            f"--max-new-tokens {s.max_new_tokens} clamped to {fits}: the longest prompt's "
            f"{longest} tokens plus the new ones must fit the model's {context} positions"
        )
        log(notes[-1])
        s = dataclasses.replace(s, max_new_tokens=fits)
    temperature = 0.0 if s.greedy else s.temperature
    cfg = GenerateConfig(
        prompt=s.prompt,
        max_new_tokens=s.max_new_tokens,
        temperature=temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        repetition_penalty=s.repetition_penalty,
        seed=s.seed,
    )
    hf_kwargs: dict[str, Any] = {
        "max_new_tokens": s.max_new_tokens,
        "repetition_penalty": s.repetition_penalty,
        "pad_token_id": eos_id,
        "eos_token_id": None,
    }
    if s.greedy:
        hf_kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    else:
        hf_kwargs.update(do_sample=True, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)

    def sync() -> None:  # GPU kernels run asynchronously: wait before reading the clock
        if s.device == "cuda":
            torch.cuda.synchronize()

    def hf_generate(ids: list[int], new_tokens: int) -> list[int]:
        input_ids = torch.tensor([ids], device=s.device)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            **{**hf_kwargs, "max_new_tokens": new_tokens},
        )
        return out[0, len(ids) :].tolist()

    def timed(fn) -> Callable[[int], tuple[float, list[list[int]]]]:
        def run(new_tokens: int) -> tuple[float, list[list[int]]]:
            torch.manual_seed(s.seed)  # HF samples from the global generator
            start = time.perf_counter()
            rows = fn(new_tokens)
            sync()
            return time.perf_counter() - start, rows

        return run

    def glotta_one(n: int) -> list[list[int]]:
        return [list(generate_ids(model, prompt_ids, replace(cfg, max_new_tokens=n), None))]

    def glotta_batch(n: int) -> list[list[int]]:
        return generate_batch(model, batch_prompts, replace(cfg, max_new_tokens=n), None)

    sides = {
        "glotta": timed(glotta_one),
        "hf": timed(lambda n: [hf_generate(prompt_ids, n)]),
    }
    if batch_prompts:
        sides["glotta_batch"] = timed(glotta_batch)
        sides["hf_sequential"] = timed(lambda n: [hf_generate(p, n) for p in batch_prompts])
    log("warm-up")
    for fn in sides.values():
        fn(4)
    timings: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    outputs: dict[str, list[list[int]]] = {}
    for repeat in range(s.repeats):
        for name, fn in sides.items():  # glotta, hf, glotta_batch, hf_sequential, glotta, ...
            with CpuWatch() as watch:
                seconds, rows = fn(s.max_new_tokens)
            outputs[name] = rows
            tokens = sum(len(r) for r in rows)
            timings[name].append(
                {
                    "seconds": round(seconds, 4),
                    "tokens": tokens,
                    "other_cpu_share": watch.result()["other_cpu_share"],
                }
            )
            log(f"{name} repeat {repeat + 1}: {tokens} tokens in {seconds:.2f}s")

    def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
        rates = [r["tokens"] / r["seconds"] for r in runs]
        shares = [r["other_cpu_share"] for r in runs if r["other_cpu_share"] is not None]
        return {
            "other_cpu_share_max": max(shares) if shares else None,
            "tokens_per_second": round(statistics.median(rates), 1),
            "tokens_per_second_all": [round(x, 1) for x in rates],
            "new_tokens": runs[-1]["tokens"],
            "ms_per_token": round(1000 / statistics.median(rates), 2),
        }

    results = {name: summary(runs) for name, runs in timings.items()}
    labels = {"glotta": "glotta", "hf": "HF", "glotta_batch": "glotta batch",
              "hf_sequential": "HF sequential"}  # fmt: skip
    notes += [
        note
        for name, side in results.items()
        if (note := contention_note(labels[name], {"other_cpu_share": side["other_cpu_share_max"]}))
    ]
    glotta, hf = results["glotta"], results["hf"]
    speedup = ratio(glotta["tokens_per_second"], hf["tokens_per_second"])
    batched = None
    if batch_prompts:
        batched = {
            "prompts": len(batch_prompts),
            "prompt_tokens": [len(p) for p in batch_prompts],
            "glotta": {**results["glotta_batch"], "api": "glotta.generate.generate_batch"},
            "hf": {
                **results["hf_sequential"],
                "api": f"{len(batch_prompts)} x transformers GenerationMixin.generate, batch 1",
            },
            "ratio": ratio(
                results["glotta_batch"]["tokens_per_second"],
                results["hf_sequential"]["tokens_per_second"],
            ),
            "same_tokens": outputs["glotta_batch"] == outputs["hf_sequential"]
            if s.greedy
            else None,
        }
    batched_ratio = batched["ratio"] if batched else None
    hardware = hardware_info()
    record = {
        "bench": "generate_speed",
        "date": today(),
        "hardware": hardware,
        "model": {
            "arch": model.config.model_type,
            "n_layer": model.config.num_hidden_layers,
            "n_embd": model.config.hidden_size,
            "n_head": model.config.num_attention_heads,
            "n_positions": context,
            "vocab_size": model.config.vocab_size,
            "weights": weights,
        },
        "settings": {**dataclasses.asdict(s), "prompt_tokens": len(prompt_ids), "batch": 1},
        "glotta": {**glotta, "api": "glotta.generate.generate_ids"},
        "hf": {**hf, "api": "transformers GenerationMixin.generate"},
        "ratio": speedup,
        "same_tokens": outputs["glotta"] == outputs["hf"] if s.greedy else None,
        "batched": batched,
        "batched_ratio": batched_ratio,
        "notes": notes,
        "goals": {
            "speedup": _goal(speedup, GOAL_SPEEDUP, "batch 1 vs model.generate (aim)"),
            "batch1_speedup": _goal(speedup, GOAL_BATCH1, "batch 1 vs model.generate"),
            "batched_speedup": _goal(
                batched_ratio,
                GOAL_BATCHED,
                "8 prompts together vs 8 batch-1 model.generate calls",
                applies=len(batch_prompts) == 8,
            ),
        },
    }
    mode = "greedy" if s.greedy else (f"sampling T={s.temperature} top_k={s.top_k} top_p={s.top_p}")
    print(
        f"{model.config.model_type} {model.config.num_hidden_layers}x"
        f"{model.config.hidden_size} ({weights}), vocab "
        f"{model.config.vocab_size:,}; {len(prompt_ids)} prompt + {s.max_new_tokens} new "
        f"tokens, {mode}, repetition penalty {s.repetition_penalty}; median of {s.repeats}"
    )
    rows = [
        {
            "side": label,
            "tok_s": f"{r['tokens_per_second']:,.1f}",
            "ms": f"{r['ms_per_token']:.1f}",
            "all": ", ".join(f"{x:.1f}" for x in r["tokens_per_second_all"]),
        }
        for label, r in (
            ("glotta generate_ids, batch 1", glotta),
            ("HF generate, batch 1", hf),
            *(
                (
                    (f"glotta generate_batch, {len(batch_prompts)} prompts", batched["glotta"]),
                    (f"HF generate, {len(batch_prompts)} calls", batched["hf"]),
                )
                if batched
                else ()
            ),
        )
    ]
    print(
        format_table(
            rows,
            [("side", "side"), ("tok_s", "tokens/s"), ("ms", "ms/token"), ("all", "each repeat")],
        )
    )
    print(
        f"batch 1, glotta / HF: {speedup}x"
        + (f"; same tokens: {record['same_tokens']}" if s.greedy else "")
    )
    if batched:
        print(
            f"{len(batch_prompts)} prompts together / {len(batch_prompts)} HF calls: "
            f"{batched_ratio}x" + (f"; same tokens: {batched['same_tokens']}" if s.greedy else "")
        )
    for note in notes:
        print(f"note: {note}")
    model_slug = (
        f"{model.config.model_type}-{model.config.num_hidden_layers}l"
        f"{model.config.hidden_size}-v{model.config.vocab_size}"
    )
    path = results_path(
        "generate_speed",
        model_slug,
        hardware_slug(hardware),
        Path(s.results_dir) if s.results_dir else None,
    )
    publish(path, record, {"timings": timings})
    return record


def _goal(value: float | None, target: float, what: str, applies: bool = True) -> dict[str, Any]:
    return {
        "value": value,
        "target": target,
        "met": (value or 0) >= target if applies else None,
        "what": what,
        "applies": applies,
    }


def parse_args(argv: list[str] | None = None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.generate_speed",
        description="Tokens/s of glotta's generation vs transformers generate: batch 1, and "
        "several prompts decoded together vs one generate call each; ends with one JSON line.",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=d.max_new_tokens,
        help=f"New tokens per generation (default: {d.max_new_tokens}).",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=d.repeats,
        help=f"Timed generations per side; the median counts (default: {d.repeats}).",
    )
    p.add_argument(
        "--batch-prompts",
        type=int,
        default=d.batch_prompts,
        help="Prompts of the batched measurement: glotta decodes them together, HF generates "
        f"them one call after another (0 = batch 1 only; default: {d.batch_prompts}; the "
        "batched goal is stated for 8).",
    )
    p.add_argument(
        "--greedy",
        action="store_true",
        help="Greedy decoding for both (then the outputs must be identical, batched too).",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help=f"Sampling temperature (default: {d.temperature}).",
    )
    p.add_argument("--top-k", type=int, default=d.top_k, help=f"Top-k (default: {d.top_k}).")
    p.add_argument("--top-p", type=float, default=d.top_p, help=f"Top-p (default: {d.top_p}).")
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=d.repetition_penalty,
        help=f"Repetition penalty (default: {d.repetition_penalty}).",
    )
    p.add_argument("--prompt", default=d.prompt, help=f"Prompt text (default: {d.prompt!r}).")
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"Model init and sampling seed (default: {d.seed}).",
    )
    p.add_argument(
        "--n-layer",
        type=int,
        default=d.n_layer,
        help=f"Transformer blocks of the random model (default: {d.n_layer}).",
    )
    p.add_argument(
        "--n-embd",
        type=int,
        default=d.n_embd,
        help=f"Width of the random model (default: {d.n_embd}).",
    )
    p.add_argument(
        "--n-head",
        type=int,
        default=d.n_head,
        help=f"Heads of the random model (default: {d.n_head}).",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=d.block_size,
        help=f"Positions of the random model (default: {d.block_size}).",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=d.vocab_size,
        help=f"BPE vocabulary of the prepared tokenizer (default: {d.vocab_size}).",
    )
    p.add_argument(
        "--model-dir",
        default="",
        help="A trained HF model folder (e.g. runs/demo/export) instead of random weights; its "
        "own tokenizer.json encodes the prompt, and --max-new-tokens is clamped to its context.",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=d.device,
        help="Where the model runs (default: cpu).",
    )
    p.add_argument(
        "--data-dir",
        default=d.data_dir,
        help=f"Prepared run directory with the tokenizer, for the random model (default: {d.data_dir}).",
    )
    p.add_argument(
        "--results-dir",
        default="",
        help="Where the results file goes (default: benchmarks/results).",
    )
    a = parse_with_smoke(p, argv, SMOKE)
    return Settings(**{f.name: getattr(a, f.name) for f in dataclasses.fields(Settings)})


def main(argv: list[str] | None = None) -> None:
    run_generate_speed(parse_args(argv))


if __name__ == "__main__":
    main()
