"""Text generation with streaming output: ``glotta generate --model DIR "prompt"``.

Our own sampling loop over the model's key/value cache (``glotta.scheduler``, shared with
``glotta serve``): one forward pass per new token, the logits processors applied in the same
order as transformers (``glotta.sampling``), and text streamed to stdout as soon as it decodes
to complete characters.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer

from glotta.config import GenerateConfig
from glotta.device import resolve_device
from glotta.models import context_length
from glotta.scheduler import DecodeScheduler, Row, TextStreamer


@torch.inference_mode()
def generate_ids(
    model, prompt_ids: list[int], cfg: GenerateConfig, eos_id: int | None
) -> Iterator[int]:
    """Yield new token ids one at a time (stops at EOS, max_new_tokens or the context)."""
    for _, token in decode_steps(model, [prompt_ids], cfg, eos_id):
        yield token


@torch.inference_mode()
def generate_batch(
    model,
    prompts: list[list[int]],
    cfg: GenerateConfig,
    eos_id: int | None,
    seeds: list[int] | None = None,
    stop: Callable[[int, list[int]], bool] | None = None,
) -> list[list[int]]:
    """New token ids for each of ``prompts`` (any lengths), decoded together in one batch.

    Row ``i`` samples with its own generator seeded ``seeds[i]`` (default ``cfg.seed + i``), so
    it gives exactly the tokens of ``generate_ids`` with that seed alone. A row stops at EOS,
    ``max_new_tokens``, the context, or when ``stop(i, its new ids)`` says so (stop strings).
    """
    out: list[list[int]] = [[] for _ in prompts]
    for row, token in decode_steps(model, prompts, cfg, eos_id, seeds, stop):
        out[row].append(token)
    return out


def decode_steps(
    model,
    prompts: list[list[int]],
    cfg: GenerateConfig,
    eos_id: int | None,
    seeds: list[int] | None = None,
    stop: Callable[[int, list[int]], bool] | None = None,
) -> Iterator[tuple[int, int]]:
    """The loop behind both: yield ``(row, token)`` as tokens are accepted.

    All prompts are admitted to one :class:`~glotta.scheduler.DecodeScheduler` (one prefill),
    then each step decodes one token for every row still running.
    """
    seeds = seeds if seeds is not None else [cfg.seed + i for i in range(len(prompts))]
    rows = [Row(p, cfg, seed, eos_id) for p, seed in zip(prompts, seeds, strict=True)]
    index = {row: i for i, row in enumerate(rows)}
    scheduler = DecodeScheduler(model, max_rows=len(rows))
    accepted = scheduler.admit(rows)
    while accepted:
        for row, token in accepted:
            if token is None:
                continue
            yield index[row], token
            if stop is not None and stop(index[row], row.new_ids):
                scheduler.finish(row)
        accepted = scheduler.step()


def stream_text(
    model, tokenizer: Tokenizer, prompt: str, cfg: GenerateConfig, eos_id: int
) -> Iterator[str]:
    """Yield pieces of generated text; a piece is held back while it ends in a partial character."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []
    prompt_ids = [eos_id, *prompt_ids]  # documents were packed after an EOS; start the same way
    streamer = TextStreamer(tokenizer)
    for token in generate_ids(model, prompt_ids, cfg, eos_id):
        piece, _ = streamer.push(token)
        if piece:
            yield piece
    piece = streamer.flush()
    if piece:
        yield piece


def generate_to_stdout(
    model_dir: Path, prompt: str, cfg: GenerateConfig, tokenizer_dir=None
) -> str:
    """Print the prompt, then the generated continuation as it comes; return the continuation.

    A masked LM (BERT/RoBERTa) does not generate: its top guesses for the masks are printed.
    """
    from glotta.models import eos_id_of, is_masked_lm, load_causal_lm, load_tokenizer

    if is_masked_lm(model_dir):
        return fill_masks_to_stdout(model_dir, prompt, tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir or model_dir)
    model = load_causal_lm(model_dir, resolve_device())
    eos_id = eos_id_of(tokenizer, model)
    context = context_length(model)
    if cfg.max_new_tokens >= context:  # learned positions end there: say so instead of cutting
        print(
            f"glotta: notice: max_new_tokens {cfg.max_new_tokens} is beyond the model's context "
            f"of {context} tokens; generating at most {context} minus the prompt's tokens",
            file=sys.stderr,
            flush=True,
        )
    sys.stdout.write(prompt)
    sys.stdout.flush()
    pieces = []
    for piece in stream_text(model, tokenizer, prompt, cfg, eos_id):
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(pieces)


@torch.no_grad()
def fill_masks_to_stdout(model_dir: Path, prompt: str, tokenizer_dir=None, top_k: int = 5) -> str:
    """Print a masked LM's ``top_k`` guesses for each mask token of the prompt (one is appended
    when the prompt has none); return the prompt with every mask replaced by the best guess."""
    from transformers import AutoTokenizer

    from glotta.models import load_masked_lm

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
    model = load_masked_lm(model_dir, resolve_device())
    mask = tokenizer.mask_token
    if mask not in prompt:
        prompt = f"{prompt} {mask}".strip()
    encoded = tokenizer(prompt, return_tensors="pt").to(model.device)
    probs = model(**encoded).logits[0].float().softmax(-1)
    ids = encoded["input_ids"][0].clone()
    print(prompt)
    for position in (ids == tokenizer.mask_token_id).nonzero().flatten().tolist():
        best = probs[position].topk(top_k)
        guesses = [
            f"{tokenizer.decode([int(i)]).strip()} ({p:.3f})"
            for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)
        ]
        print(f"  {mask} at token {position}: " + ", ".join(guesses))
        ids[position] = best.indices[0]
    return tokenizer.decode(ids, skip_special_tokens=True)
