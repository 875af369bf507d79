"""Model construction: Hugging Face transformers classes, by size preset or explicit size.

glotta does not re-implement GPT-2 or BERT: every checkpoint is a `transformers` model, so any HF
checkpoint can be loaded (``init_from``) and export is ``save_pretrained``. Causal LMs are GPT-2
(``build_causal_lm``); masked LMs are BERT or RoBERTa (``build_masked_lm``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    RobertaConfig,
    RobertaForMaskedLM,
)

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
# (layers, hidden, heads) of BERT-Base/Large (Devlin et al., 2019) and of the smaller BERTs of
# Turc et al. (2019), "Well-read students learn better" (google-research/bert's 24 small models):
# heads = hidden / 64, feed-forward width = 4 x hidden. Parameters with BERT's 30,522-token
# vocabulary: tiny 4.4M, mini 11.3M, small 29.1M, medium 41.7M, base 110M, large 340M.
# RoBERTa-base/large (Liu et al., 2019) have the base/large shapes.
BERT_PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def _model_size(cfg: ModelConfig, presets: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    """(layers, width, heads) from the preset, any explicitly set dimension taking precedence."""
    if cfg.preset == "custom":
        if not (cfg.n_layer and cfg.n_embd and cfg.n_head):
            raise GlottaError("model.preset = 'custom' needs model.n_layer, n_embd and n_head set")
        return cfg.n_layer, cfg.n_embd, cfg.n_head
    if cfg.preset not in presets:
        raise GlottaError(
            f"model.preset = {cfg.preset!r} is not a size of model.arch = {cfg.arch!r} "
            f"(its presets: {', '.join(presets)}, custom)"
        )
    n_layer, n_embd, n_head = presets[cfg.preset]
    n_layer, n_embd, n_head = cfg.n_layer or n_layer, cfg.n_embd or n_embd, cfg.n_head or n_head
    if n_embd % n_head:
        raise GlottaError(f"model.n_embd ({n_embd}) must be divisible by model.n_head ({n_head})")
    return n_layer, n_embd, n_head


def gpt2_config(cfg: ModelConfig, vocab_size: int, block_size: int, eos_id: int) -> GPT2Config:
    """GPT2Config from a preset, with any explicitly set dimension taking precedence."""
    n_layer, n_embd, n_head = _model_size(cfg, GPT2_PRESETS)
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


def position_offset(config) -> int:
    """Position ids that come before the first token: RoBERTa counts from ``pad_token_id + 1``."""
    return config.pad_token_id + 1 if config.model_type == "roberta" else 0


def is_masked_lm_config(config) -> bool:
    """Whether a transformers config describes a masked LM (BERT-style encoder) for glotta."""
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return True
    return not any(
        a.endswith("LMHeadModel") or a.endswith("ForCausalLM") for a in architectures
    ) and (config.model_type in ("bert", "roberta", "xlm-roberta", "distilbert", "electra"))


def has_masked_lm_head(config) -> bool:
    """Whether the checkpoint's weights include a masked-LM head (not only the encoder)."""
    return any("ForMaskedLM" in a or "ForPreTraining" in a for a in config.architectures or [])


def is_masked_lm(model_dir: Path | str) -> bool:
    """Whether the checkpoint or exported folder holds a masked LM (by its config.json).

    False when there is no readable config: the loader then says what is wrong.
    """
    try:
        return is_masked_lm_config(AutoConfig.from_pretrained(str(model_dir)))
    except (OSError, ValueError):
        return False


def bert_config(
    cfg: ModelConfig, vocab_size: int, block_size: int, special_ids: dict[str, int]
) -> BertConfig | RobertaConfig:
    """BertConfig / RobertaConfig from a preset; ``special_ids`` holds pad (and cls, sep) ids."""
    n_layer, n_embd, n_head = _model_size(cfg, BERT_PRESETS)
    n_positions = cfg.n_positions or block_size
    if n_positions < block_size:
        raise GlottaError(
            f"model.n_positions ({n_positions}) is smaller than train.block_size ({block_size})"
        )
    common = dict(
        vocab_size=vocab_size,
        hidden_size=n_embd,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        intermediate_size=4 * n_embd,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        pad_token_id=special_ids["pad"],
        tie_word_embeddings=True,
    )
    if cfg.arch == "roberta":
        # RoBERTa's positions start after the padding id (fairseq's convention), and its
        # single segment needs one token type.
        return RobertaConfig(
            **common,
            max_position_embeddings=n_positions + special_ids["pad"] + 1,
            type_vocab_size=1,
            bos_token_id=special_ids.get("cls"),
            eos_token_id=special_ids.get("sep"),
        )
    return BertConfig(**common, max_position_embeddings=n_positions, type_vocab_size=2)


def build_masked_lm(
    cfg: ModelConfig, vocab_size: int, block_size: int, special_ids: dict[str, int]
) -> PreTrainedModel:
    """A fresh BERT/RoBERTa masked LM (output layer tied to the input embeddings), or the
    ``init_from`` checkpoint for continued pretraining.

    A checkpoint without a masked-LM head (a ``BertModel``, e.g. a sentence encoder) gets a fresh
    head; the message lists the new weights.
    """
    if not cfg.init_from:
        config = bert_config(cfg, vocab_size, block_size, special_ids)
        model_class = RobertaForMaskedLM if cfg.arch == "roberta" else BertForMaskedLM
        return model_class(config)
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            cfg.init_from, dtype=torch.float32, output_loading_info=True
        )
    except (OSError, ValueError) as exc:
        raise GlottaError(f"model.init_from: cannot load {cfg.init_from!r}: {exc}") from None
    if model.config.model_type != cfg.arch and cfg.arch in ("bert", "roberta"):
        print(
            f"glotta: model.init_from {cfg.init_from!r} is a {model.config.model_type} model "
            f"(model.arch says {cfg.arch!r}); continuing with {type(model).__name__}",
            flush=True,
        )
    if info.get("missing_keys"):
        print(
            f"glotta: model.init_from {cfg.init_from!r} has no masked-LM head "
            f"({(model.config.architectures or ['?'])[0]}); a new head is initialised "
            f"randomly: {', '.join(sorted(info['missing_keys']))}",
            flush=True,
        )
    if model.get_input_embeddings().num_embeddings < vocab_size:
        raise GlottaError(
            f"model.init_from {cfg.init_from!r} has {model.config.vocab_size} embeddings but "
            f"the tokenizer has {vocab_size} tokens; set tokenizer.pretrained to the model's own "
            "tokenizer"
        )
    available = model.config.max_position_embeddings - position_offset(model.config)
    if available < block_size:
        raise GlottaError(
            f"train.block_size ({block_size}) is longer than the {available} positions of "
            f"model.init_from {cfg.init_from!r}"
        )
    return model


def build_model(
    cfg: ModelConfig, objective: str, vocab_size: int, block_size: int, special_ids: dict[str, int]
) -> PreTrainedModel:
    """The model of ``objective``: GPT-2 for 'clm' (``special_ids['eos']``), BERT/RoBERTa for 'mlm'."""
    if objective == "mlm":
        return build_masked_lm(cfg, vocab_size, block_size, special_ids)
    return build_causal_lm(cfg, vocab_size, block_size, special_ids["eos"])


def _position_embeddings(model: PreTrainedModel) -> tuple[torch.nn.Module, str, torch.nn.Embedding]:
    """(owner module, attribute name, embedding) of the learned position embeddings."""
    base = model.base_model
    if hasattr(base, "wpe"):  # GPT-2
        return base, "wpe", base.wpe
    embeddings = base.embeddings  # BERT, RoBERTa
    return embeddings, "position_embeddings", embeddings.position_embeddings


def extend_positions(model: PreTrainedModel, n_positions: int) -> bool:
    """Grow the learned position embeddings to ``n_positions`` tokens; True if they grew.

    The new rows repeat the trained ones (row i takes row i mod old), as suggested for
    fairseq's learned positions (fairseq #1685): every new position starts from a position
    embedding the model already knows instead of noise, and training at the longer context
    adapts them. The config (``n_positions`` / ``max_position_embeddings``) is updated so the
    exported folder says the new size. RoBERTa's rows before its first position (padding) are
    kept as they are.
    """
    owner, name, table = _position_embeddings(model)
    offset = position_offset(model.config)
    current = table.num_embeddings - offset
    if n_positions <= current:
        return False
    with torch.no_grad():
        device = table.weight.device
        rows = torch.arange(n_positions, device=device) % current + offset
        rows = torch.cat([torch.arange(offset, device=device), rows])
        grown = torch.nn.Embedding(
            n_positions + offset, table.embedding_dim, device=device, dtype=table.weight.dtype
        )
        grown.weight.copy_(table.weight[rows])
    setattr(owner, name, grown)
    if name == "wpe":
        model.config.n_positions = n_positions
        return True
    model.config.max_position_embeddings = n_positions + offset
    # BERT keeps position and token-type ids as buffers of the table's length.
    owner.position_ids = torch.arange(n_positions + offset, device=device).expand((1, -1))
    if hasattr(owner, "token_type_ids"):
        owner.token_type_ids = torch.zeros_like(owner.position_ids)
    return True


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied input/output embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def load_causal_lm(model_dir: Path | str, device: torch.device | str = "cpu"):
    if is_masked_lm(model_dir):
        raise GlottaError(
            f"{model_dir} holds a masked LM (BERT/RoBERTa): it fills in masks and does not "
            "generate or score text left to right; use transformers' fill-mask pipeline"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise GlottaError(f"cannot load a causal LM from {model_dir}: {exc}") from None
    return model.to(device).eval()


def load_masked_lm(model_dir: Path | str, device: torch.device | str = "cpu"):
    try:
        model = AutoModelForMaskedLM.from_pretrained(str(model_dir), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise GlottaError(f"cannot load a masked LM from {model_dir}: {exc}") from None
    return model.to(device).eval()


def load_tokenizer(folder: Path | str) -> Tokenizer:
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise GlottaError(f"{folder} has no tokenizer.json; pass --tokenizer DIR")
    tokenizer = Tokenizer.from_file(str(path))
    # Scoring and generation see whole texts: the file's own truncation and padding (kept in the
    # exported tokenizer for its users) would cut documents and score pad tokens.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def eos_id_of(tokenizer: Tokenizer, model) -> int:
    """The end-of-text id that separated documents in training (prefixes every scored text)."""
    eos = getattr(model.config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None:
        raise GlottaError("the model config has no eos_token_id; cannot prefix documents")
    return int(eos)
