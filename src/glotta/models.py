"""Model construction: Hugging Face transformers classes, by size preset or explicit size.

glotta does not re-implement GPT-2: every checkpoint is a `transformers` model, so any HF
checkpoint can be loaded (``init_from``) and export is ``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from glotta.config import ModelConfig
from glotta.errors import GlottaError

# (n_layer, n_embd, n_head). small..xl are OpenAI's GPT-2 sizes (Radford et al., 2019);
# tiny is for tests and laptops.
GPT2_PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "small": (12, 768, 12),
    "medium": (24, 1024, 16),
    "large": (36, 1280, 20),
    "xl": (48, 1600, 25),
}


def gpt2_config(cfg: ModelConfig, vocab_size: int, block_size: int, eos_id: int) -> GPT2Config:
    """GPT2Config from a preset, with any explicitly set dimension taking precedence."""
    if cfg.preset == "custom":
        if not (cfg.n_layer and cfg.n_embd and cfg.n_head):
            raise GlottaError("model.preset = 'custom' needs model.n_layer, n_embd and n_head set")
        n_layer, n_embd, n_head = cfg.n_layer, cfg.n_embd, cfg.n_head
    else:
        n_layer, n_embd, n_head = GPT2_PRESETS[cfg.preset]
        n_layer, n_embd, n_head = cfg.n_layer or n_layer, cfg.n_embd or n_embd, cfg.n_head or n_head
    if n_embd % n_head:
        raise GlottaError(f"model.n_embd ({n_embd}) must be divisible by model.n_head ({n_head})")
    n_positions = cfg.n_positions or block_size
    if n_positions < block_size:
        raise GlottaError(
            f"model.n_positions ({n_positions}) is smaller than train.block_size ({block_size})"
        )
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=True,
    )


def build_causal_lm(
    cfg: ModelConfig, vocab_size: int, block_size: int, eos_id: int
) -> PreTrainedModel:
    """A fresh GPT-2 of the configured size, or the ``init_from`` checkpoint for continued training."""
    if cfg.init_from:
        try:
            model = AutoModelForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32)
        except OSError as exc:
            raise GlottaError(f"model.init_from: cannot load {cfg.init_from!r}: {exc}") from None
        if model.get_input_embeddings().num_embeddings < vocab_size:
            raise GlottaError(
                f"model.init_from {cfg.init_from!r} has {model.config.vocab_size} embeddings but "
                f"the tokenizer has {vocab_size} tokens; train with the model's own tokenizer"
            )
        return model
    return GPT2LMHeadModel(gpt2_config(cfg, vocab_size, block_size, eos_id))


def extend_positions(model: PreTrainedModel, n_positions: int) -> bool:
    """Grow GPT-2's learned position embeddings to ``n_positions``; True if they grew.

    The new rows repeat the trained ones (row i takes row i mod old), as suggested for
    fairseq's learned positions (fairseq #1685): every new position starts from a position
    embedding the model already knows instead of noise, and training at the longer context
    adapts them. ``config.n_positions`` is updated so the exported folder says the new size.
    """
    wpe = model.transformer.wpe  # GPT-2 (glotta's causal LM)
    current = wpe.num_embeddings
    if n_positions <= current:
        return False
    with torch.no_grad():
        rows = torch.arange(n_positions, device=wpe.weight.device) % current
        grown = torch.nn.Embedding(
            n_positions, wpe.embedding_dim, device=wpe.weight.device, dtype=wpe.weight.dtype
        )
        grown.weight.copy_(wpe.weight[rows])
    model.transformer.wpe = grown
    model.config.n_positions = n_positions
    return True


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied input/output embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def load_causal_lm(model_dir: Path | str, device: torch.device | str = "cpu"):
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise GlottaError(f"cannot load a causal LM from {model_dir}: {exc}") from None
    return model.to(device).eval()


def load_tokenizer(folder: Path | str) -> Tokenizer:
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise GlottaError(f"{folder} has no tokenizer.json; pass --tokenizer DIR")
    return Tokenizer.from_file(str(path))


def eos_id_of(tokenizer: Tokenizer, model) -> int:
    """The end-of-text id that separated documents in training (prefixes every scored text)."""
    eos = getattr(model.config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None:
        raise GlottaError("the model config has no eos_token_id; cannot prefix documents")
    return int(eos)
