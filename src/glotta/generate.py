"""Text generation with streaming output: ``glotta generate --model DIR "prompt"``.

Our own sampling loop over the model's key/value cache: one forward pass per new token, the
logits processors applied in the same order as transformers (repetition penalty, temperature,
top-k, top-p), and text streamed to stdout as soon as it decodes to complete characters.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer

from glotta.config import GenerateConfig
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
    """Yield new token ids one at a time (stops at EOS or max_new_tokens)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    context = context_length(model)
    prompt = prompt_ids[-context:]
    # The token history lives in one preallocated buffer (no concatenation per token).
    history = torch.empty(context, dtype=torch.long, device=device)
    history[: len(prompt)] = torch.tensor(prompt, device=device)
    length = len(prompt)
    ids = history[:length].unsqueeze(0)
    # A cache of fixed size, written in place: transformers' default cache concatenates keys and
    # values at every token (a copy of the whole cache per layer per token). Sized for this
    # call only, so a 2,048-token model does not reserve 2,048 positions for 60 new tokens.
    past = _static_cache(model, min(context, length + cfg.max_new_tokens))
    for _ in range(cfg.max_new_tokens):
        if length >= context:
            break  # learned position embeddings end here
        start = length - ids.shape[1]
        out = model(
            input_ids=ids,
            past_key_values=past,
            use_cache=True,
            cache_position=torch.arange(start, length, device=device),
            logits_to_keep=1,  # the prompt's other positions need no logits
        )
        past = out.past_key_values
        token = sample_next(out.logits[0, -1], history[:length], cfg, generator)
        if eos_id is not None and token == eos_id:
            return
        yield token
        history[length] = token
        ids = history[length : length + 1].unsqueeze(0)
        length += 1


def _static_cache(model, max_len: int):
    """A transformers StaticCache for ``model``, or None (the default cache) if it has none."""
    try:
        from transformers.cache_utils import StaticCache

        return StaticCache(config=model.config, max_cache_len=max_len)
    except (ImportError, TypeError, ValueError):  # older transformers or an unusual config
        return None


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
    model = load_causal_lm(model_dir, "cuda" if torch.cuda.is_available() else "cpu")
    eos_id = eos_id_of(tokenizer, model)
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
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
    model = load_masked_lm(model_dir, "cuda" if torch.cuda.is_available() else "cpu")
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
