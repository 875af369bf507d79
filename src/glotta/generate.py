"""Text generation with streaming output: ``glotta generate --model DIR "prompt"``.

Our own sampling loop over the model's key/value cache: one forward pass per new token, the
logits processors applied in the same order as transformers (repetition penalty, temperature,
top-k, top-p), and text streamed to stdout as soon as it decodes to complete characters.
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


def _candidates(
    logits: torch.Tensor, history: torch.Tensor, cfg: GenerateConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids that may be sampled next and their scaled logits, most likely first.

    Repetition penalty, temperature, top-k, then top-p (the order of transformers' warpers).
    Top-k runs first on the whole vocabulary, so top-p sorts only k values instead of all of
    them: most of the per-token sampling cost at a 32k vocabulary.
    """
    logits = logits.float()
    if cfg.repetition_penalty != 1.0 and history.numel():
        logits = logits.clone()
        seen = logits[history]
        # CTRL's penalty (Keskar et al., 2019): push seen tokens' logits towards less likely.
        logits[history] = torch.where(
            seen > 0, seen / cfg.repetition_penalty, seen * cfg.repetition_penalty
        )
    if cfg.temperature <= 0:  # greedy: the single most likely token
        value, index = logits.max(dim=-1)
        return index.view(1), value.view(1)
    logits = logits / cfg.temperature
    if cfg.top_k > 0:
        values, ids = torch.topk(logits, min(cfg.top_k, logits.numel()))  # sorted, descending
        at_least_kth = logits >= values[-1]
        if int(at_least_kth.sum()) > len(ids):  # ties with the k-th value all stay, as in HF
            tied = at_least_kth.nonzero().flatten()
            values, order = torch.sort(logits[tied], descending=True)
            ids = tied[order]
    else:
        values, ids = torch.sort(logits, descending=True)
    if cfg.top_p < 1.0:
        probs = torch.softmax(values, dim=-1)
        # Keep a token while the tokens before it have not yet reached top_p (the first always).
        keep = (probs.cumsum(-1) - probs) < cfg.top_p
        values, ids = values[keep], ids[keep]
    return ids, values


def _filter_logits(
    logits: torch.Tensor, history: torch.Tensor, cfg: GenerateConfig
) -> torch.Tensor:
    """The full (vocab,) logit vector after filtering: -inf for every token not a candidate."""
    ids, values = _candidates(logits, history, cfg)
    if cfg.temperature <= 0:
        return logits.float()
    filtered = torch.full_like(logits, float("-inf"), dtype=torch.float32)
    filtered[ids] = values
    return filtered


def sample_next(
    logits: torch.Tensor, history: torch.Tensor, cfg: GenerateConfig, generator: torch.Generator
) -> int:
    """The next token id from one position's logits: the filters of ``_candidates``, then one
    draw from ``generator`` (none when a single candidate is left, e.g. greedy). Shared with
    ``glotta serve``, whose batched loop calls it per sequence with that sequence's generator."""
    candidates, values = _candidates(logits, history, cfg)
    if len(candidates) == 1:
        return int(candidates[0])
    probs = torch.softmax(values, dim=-1).cpu()
    return int(candidates[int(torch.multinomial(probs, 1, generator=generator))])


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

    One prefill forward for all prompts (right-padded; logits at each row's last token only),
    then one one-token forward per step for the rows still running (``glotta.decode``: a static
    key/value cache written in place). A finished row's place is taken by the last running row,
    so the batch shrinks instead of carrying finished rows.
    """
    from glotta.decode import make_decoder

    context = context_length(model)
    device = next(model.parameters()).device
    prompts = [p[-context:] for p in prompts]  # keep the end of an overlong prompt
    seeds = seeds if seeds is not None else [cfg.seed + i for i in range(len(prompts))]
    produced: list[list[int]] = [[] for _ in prompts]
    running = [i for i, p in enumerate(prompts) if p and len(p) < context]
    if not running or cfg.max_new_tokens <= 0:
        return
    longest = max(len(prompts[i]) for i in running)
    room = min(context, longest + cfg.max_new_tokens)
    decoder = make_decoder(model, len(running), room)
    # Each row's tokens (prompt + accepted), for the repetition penalty and the next input.
    history = torch.zeros(len(prompts), room + 1, dtype=torch.long, device=device)
    lengths = [len(p) for p in prompts]
    for i in running:
        history[i, : lengths[i]] = torch.tensor(prompts[i], device=device)
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    ids = history[running, :longest]
    positions = torch.arange(longest, device=device).expand(len(running), longest)
    last = torch.tensor([lengths[i] - 1 for i in running], device=device)
    logits = decoder.forward(ids, positions, last)
    while running:
        finished = []
        for slot, i in enumerate(running):
            token = sample_next(logits[slot], history[i, : lengths[i]], cfg, generators[i])
            if eos_id is not None and token == eos_id:
                finished.append(slot)
                continue
            history[i, lengths[i]] = token
            lengths[i] += 1
            produced[i].append(token)
            yield i, token
            if (
                len(produced[i]) >= cfg.max_new_tokens
                or lengths[i] >= context
                or (stop is not None and stop(i, produced[i]))
            ):
                finished.append(slot)
        for slot in reversed(finished):  # the last running row moves into the finished one's place
            end = len(running) - 1
            if slot != end:
                decoder.move_row(end, slot)
                running[slot] = running[end]
            running.pop()
        if not running:
            return
        ids = torch.stack([history[i, lengths[i] - 1] for i in running])[:, None]
        positions = torch.tensor([[lengths[i] - 1] for i in running], device=device)
        logits = decoder.forward(ids, positions, torch.zeros_like(ids[:, 0]))


def stream_text(
    model, tokenizer: Tokenizer, prompt: str, cfg: GenerateConfig, eos_id: int
) -> Iterator[str]:
    """Yield pieces of generated text; a piece is held back while it ends in a partial character."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []
    prompt_ids = [eos_id, *prompt_ids]  # documents were packed after an EOS; start the same way
    new_ids: list[int] = []
    emitted = ""
    for token in generate_ids(model, prompt_ids, cfg, eos_id):
        new_ids.append(token)
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            continue  # an incomplete UTF-8 sequence: wait for its remaining bytes
        if text.startswith(emitted):
            yield text[len(emitted) :]
            emitted = text
    final = tokenizer.decode(new_ids, skip_special_tokens=True)
    if final.startswith(emitted) and len(final) > len(emitted):
        yield final[len(emitted) :]


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
