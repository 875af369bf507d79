"""Model families and the questions glotta asks about a model, answered in one place.

Every model is a Hugging Face ``transformers`` class, so any HF checkpoint loads (``init_from``,
teachers) and export is ``save_pretrained``. What differs between architectures — presets, how
to build one from ``[model]``, its blocks, its context length and how to extend it, the
objectives it trains with — lives in one :class:`ModelFamily` per
architecture (``gpt2``, ``bert``, ``roberta``, ``llama``; one module each). The rest of glotta
calls the functions below and never branches on an architecture name.

Adding a family is one module plus one line::

    from glotta.models import ModelFamily, register_family
    register_family(MyFamily())          # model.arch = MyFamily.name in a recipe

(docs/architectures.md walks through it; tests/models/ registers one from a test.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from glotta.config import ModelConfig, TrainConfig
from glotta.errors import GlottaError
from glotta.models.bert import BertFamily, RobertaFamily
from glotta.models.family import ModelFamily, Shape
from glotta.models.gpt2 import GPT2Family, gpt2_config
from glotta.models.llama import LlamaFamily
from glotta.models.loading import (
    eos_id_of,
    has_masked_lm_head,
    is_masked_lm,
    is_masked_lm_config,
    load_causal_lm,
    load_masked_lm,
    load_tokenizer,
)

if TYPE_CHECKING:  # not at run time: validating a recipe must not import torch (family.py)
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    from glotta.models.decoding import DecodeLayout

__all__ = [
    "ModelFamily",
    "Shape",
    "build_model",
    "context_length",
    "count_parameters",
    "decode_layout",
    "eos_id_of",
    "extend_positions",
    "family",
    "family_of",
    "gpt2_config",
    "has_masked_lm_head",
    "is_masked_lm",
    "is_masked_lm_config",
    "load_causal_lm",
    "load_masked_lm",
    "load_tokenizer",
    "model_setting_problems",
    "register_family",
    "transformer_blocks",
]

_FAMILIES: dict[str, ModelFamily] = {}


def register_family(model_family: ModelFamily) -> ModelFamily:
    """Make ``model.arch = model_family.name`` buildable, and its models known by model type."""
    _FAMILIES[model_family.name] = model_family
    return model_family


for _family in (GPT2Family(), BertFamily(), RobertaFamily(), LlamaFamily()):
    register_family(_family)


def family(arch: str) -> ModelFamily:
    """The family named by ``model.arch``."""
    try:
        return _FAMILIES[arch]
    except KeyError:
        raise GlottaError(
            f"model.arch = {arch!r} is not a known model family (known: {', '.join(_FAMILIES)})"
        ) from None


def family_of(model_or_config: PreTrainedModel | PretrainedConfig) -> ModelFamily | None:
    """The family a built or loaded model belongs to, by its config's model type (None for an
    architecture no family covers, e.g. a hub teacher of another kind)."""
    config = getattr(model_or_config, "config", model_or_config)
    for candidate in _FAMILIES.values():
        if config.model_type in candidate.model_types:
            return candidate
    return None


def _known_family_of(model: PreTrainedModel, what: str) -> ModelFamily:
    found = family_of(model)
    if found is None:
        raise GlottaError(
            f"{what} is not supported for a {model.config.model_type!r} model "
            f"(model families: {', '.join(_FAMILIES)})"
        )
    return found


def model_setting_problems(model_cfg: ModelConfig, train_cfg: TrainConfig) -> list[str]:
    """Every problem of ``[model]`` with the recipe's training settings, one message each
    (arch, preset, divisibility of widths and heads, objective, block size vs positions)."""
    if model_cfg.arch not in _FAMILIES:
        return [
            f"model.arch = {model_cfg.arch!r} is not a known model family "
            f"(known: {', '.join(_FAMILIES)})"
        ]
    chosen = _FAMILIES[model_cfg.arch]
    found = []
    if train_cfg.objective not in chosen.objectives:
        suited = [name for name, f in _FAMILIES.items() if train_cfg.objective in f.objectives]
        found.append(
            f"train.objective = {train_cfg.objective!r} does not train model.arch = "
            f"{model_cfg.arch!r} (it trains with {', '.join(chosen.objectives)}; for "
            f"{train_cfg.objective!r} use model.arch = {' or '.join(map(repr, suited))})"
        )
    found += chosen.problems(model_cfg, train_cfg.block_size)
    thetas = [phase.rope_theta for phase in train_cfg.phases]
    if any(thetas) and not chosen.rotary_positions:
        found.append(
            f"train.phases rope_theta: model.arch = {model_cfg.arch!r} has learned positions, "
            "not rotary ones; remove the setting"
        )
    if any(theta < 0 for theta in thetas):
        found.append("train.phases rope_theta must be positive (0 = keep the model's)")
    return found


def check_model_settings(model_cfg: ModelConfig, train_cfg: TrainConfig, origin: str) -> None:
    """Raise one error listing every problem of :func:`model_setting_problems`."""
    found = model_setting_problems(model_cfg, train_cfg)
    if found:
        raise GlottaError(f"{origin}: " + "; ".join(found))


def build_model(
    cfg: ModelConfig, objective: str, vocab_size: int, block_size: int, special_ids: dict[str, int]
) -> PreTrainedModel:
    """A fresh model of family ``cfg.arch`` (or the ``init_from`` checkpoint) for ``objective``;
    ``special_ids`` holds eos (causal LMs) or pad, cls, sep (masked LMs)."""
    chosen = family(cfg.arch)
    if objective not in chosen.objectives:
        raise GlottaError(
            f"train.objective = {objective!r} does not train model.arch = {cfg.arch!r}"
        )
    return chosen.build(cfg, vocab_size, block_size, special_ids)


def build_masked_lm(cfg: ModelConfig, vocab_size: int, block_size: int, special_ids):
    return build_model(cfg, "mlm", vocab_size, block_size, special_ids)


def transformer_blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The model's transformer blocks in order (FSDP units, student cuts)."""
    return _known_family_of(model, "finding the transformer blocks").blocks(model)


def decode_layout(model: PreTrainedModel) -> DecodeLayout:
    """How the static-cache decoder computes ``model``'s blocks, asked of its family; raises
    ``NoDecodeLayout`` with the reason where none fits (another architecture, a setting the
    layout does not implement, training mode)."""
    from glotta.models.decoding import NoDecodeLayout

    found = family_of(model)
    if found is None:
        raise NoDecodeLayout(f"no model family covers {model.config.model_type!r} models")
    if model.training:  # dropout would be on: the transformers modules are the reference then
        raise NoDecodeLayout("the model is in training mode")
    return found.make_decode_layout(model, context_length(model))


def context_length(model_or_config: PreTrainedModel | PretrainedConfig) -> int:
    """Tokens the model reads at once, asked of its family (any other HF model: its config's
    ``n_positions`` or ``max_position_embeddings``)."""
    config = getattr(model_or_config, "config", model_or_config)
    found = family_of(config)
    if found is not None:
        return found.context_length(config)
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise GlottaError(
        f"cannot tell the context length of a {config.model_type!r} model: its config has no "
        "n_positions or max_position_embeddings"
    )


def extend_positions(model: PreTrainedModel, n_positions: int, rope_theta: float = 0.0) -> bool:
    """Let the model read ``n_positions`` tokens (a later training phase); True if it changed."""
    return _known_family_of(model, "extending the context").extend_context(
        model, n_positions, rope_theta
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied input/output embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_causal_lm(cfg: ModelConfig, vocab_size: int, block_size: int, eos_id: int):
    return build_model(cfg, "clm", vocab_size, block_size, {"eos": eos_id})


def card_shape(model_config: dict) -> dict:
    """Layers, width, heads, context (and family extras) of a saved ``config.json`` dict."""
    from transformers import AutoConfig

    values = {k: v for k, v in model_config.items() if k != "model_type"}
    config = AutoConfig.for_model(model_config.get("model_type", "gpt2"), **values)
    found = family_of(config)
    if found is not None:
        return found.card_shape(config)
    return {
        "layers": getattr(config, "num_hidden_layers", None),
        "width": getattr(config, "hidden_size", None),
        "heads": getattr(config, "num_attention_heads", None),
        "context": context_length(config),
    }
