"""What a model family is: everything the rest of glotta asks about a model, in one object.

A family (GPT-2, BERT, RoBERTa, Llama ...) is a subclass of :class:`ModelFamily` registered by
name (:func:`glotta.models.register_family`). The training loop, distillation, evaluation,
export and generation ask the family — its presets, how to build a model from ``[model]``, its
transformer blocks, its context length and how to extend it, the objectives it supports — and
never branch on an architecture name or reach into
``model.transformer.h`` themselves (torchtitan's ``ModelSpec``, litgpt's ``Config``).

The defaults here suit a Hugging Face model with learned absolute position embeddings; a family
overrides what differs (RoPE families have no position table; RoBERTa counts positions after
its padding id).

Nothing here imports torch or transformers at import time: a recipe is validated by asking the
families (``problems``) before any stage runs, and the data stages (``glotta corpus``, ``pack``)
should not pay seconds and hundreds of MB for a model library they never use. The classes a
family builds are named as strings and resolved on first use (:func:`transformers_class`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, ClassVar

from glotta.config import ModelConfig
from glotta.errors import GlottaError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    from glotta.models.decoding import DecodeLayout


def transformers_class(cls_or_name: type | str) -> Any:
    """A transformers class given as itself or by its name in ``transformers``."""
    if isinstance(cls_or_name, str):
        return getattr(importlib.import_module("transformers"), cls_or_name)
    return cls_or_name


@dataclasses.dataclass(frozen=True)
class Shape:
    """The size of a preset: layers, hidden width, attention heads (and key/value heads, feed-
    forward width, where the family has them; 0 = the family's default)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int = 0
    n_inner: int = 0


class ModelFamily:
    """Base class of a model family; subclasses set the class attributes and ``hf_config``."""

    name: ClassVar[str]
    objectives: ClassVar[tuple[str, ...]]  # training objectives it supports: 'clm', 'mlm'
    model_types: ClassVar[tuple[str, ...]]  # transformers' config.model_type values it covers
    presets: ClassVar[dict[str, Shape]]
    # Built from scratch from ``hf_config``: a transformers class, or its name in transformers.
    model_class: ClassVar[type[PreTrainedModel] | str]
    # The transformers Auto class (or its name) that loads ``init_from`` checkpoints.
    auto_class: ClassVar[Any]
    rotary_positions: ClassVar[bool] = False  # RoPE (no position table; rope_theta applies)
    # How glotta.decode's static-cache decoder computes this family's blocks: a name in
    # glotta.models.decoding.LAYOUTS ("gpt2-style", "llama-style"), or None where no layout
    # fits (generation then recomputes the whole prefix per token, and says so).
    decode_layout: ClassVar[str | None] = None

    # -- building -------------------------------------------------------------------------------

    def shape(self, cfg: ModelConfig) -> Shape:
        """The preset's shape, any explicitly set dimension taking precedence."""
        if cfg.preset == "custom":
            if not (cfg.n_layer and cfg.n_embd and cfg.n_head):
                raise GlottaError(
                    "model.preset = 'custom' needs model.n_layer, n_embd and n_head set"
                )
            return Shape(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.n_inner)
        if cfg.preset not in self.presets:
            raise GlottaError(
                f"model.preset = {cfg.preset!r} is not a size of model.arch = {self.name!r} "
                f"(its presets: {', '.join(self.presets)}, custom)"
            )
        base = self.presets[cfg.preset]
        return Shape(
            cfg.n_layer or base.n_layer,
            cfg.n_embd or base.n_embd,
            cfg.n_head or base.n_head,
            cfg.n_kv_head or base.n_kv_head,
            cfg.n_inner or base.n_inner,
        )

    def hf_config(
        self, cfg: ModelConfig, vocab_size: int, block_size: int, special_ids: dict[str, int]
    ) -> PretrainedConfig:
        """The transformers config of a fresh model (``special_ids``: eos, pad, cls, sep ids)."""
        raise NotImplementedError

    def build(
        self, cfg: ModelConfig, vocab_size: int, block_size: int, special_ids: dict[str, int]
    ) -> PreTrainedModel:
        """A fresh model of the configured size, or the ``init_from`` checkpoint."""
        if cfg.init_from:
            return self.load_init_from(cfg, vocab_size, block_size)
        model_class = transformers_class(self.model_class)
        model = model_class(self.hf_config(cfg, vocab_size, block_size, special_ids))
        if cfg.zero_init_projections:
            import torch

            with torch.no_grad():
                for projection in self.residual_projections(model):
                    projection.weight.zero_()
        return model

    def load_init_from(self, cfg: ModelConfig, vocab_size: int, block_size: int):
        import torch

        try:
            auto_class = transformers_class(self.auto_class)
            model = auto_class.from_pretrained(cfg.init_from, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise GlottaError(f"model.init_from: cannot load {cfg.init_from!r}: {exc}") from None
        if model.get_input_embeddings().num_embeddings < vocab_size:
            raise GlottaError(
                f"model.init_from {cfg.init_from!r} has {model.config.vocab_size} embeddings but "
                f"the tokenizer has {vocab_size} tokens; train with the model's own tokenizer "
                "(tokenizer.pretrained)"
            )
        return model

    def problems(self, cfg: ModelConfig, block_size: int) -> list[str]:
        """Settings of ``[model]`` that cannot work with this family, one message each."""
        found = []
        if cfg.preset != "custom" and cfg.preset not in self.presets:
            found.append(
                f"model.preset = {cfg.preset!r} is not a size of model.arch = {self.name!r} "
                f"(its presets: {', '.join(self.presets)}, custom)"
            )
            return found
        if cfg.preset == "custom" and not (cfg.n_layer and cfg.n_embd and cfg.n_head):
            found.append("model.preset = 'custom' needs model.n_layer, n_embd and n_head set")
            return found
        if cfg.zero_init_projections and not self.has_residual_projections:
            found.append(
                f"model.zero_init_projections: not available for model.arch = {self.name!r}"
            )
        if cfg.init_from:
            if cfg.zero_init_projections:
                found.append(
                    "model.zero_init_projections with model.init_from: the checkpoint's "
                    "weights are kept; remove one of the two"
                )
            return found  # the checkpoint's own shape counts
        shape = self.shape(cfg)
        if shape.n_embd % shape.n_head:
            found.append(
                f"model.n_embd ({shape.n_embd}) must be divisible by model.n_head ({shape.n_head})"
            )
        if cfg.n_positions and cfg.n_positions < block_size:
            found.append(
                f"model.n_positions ({cfg.n_positions}) is smaller than train.block_size "
                f"({block_size}); raise model.n_positions or set it to 0 (= block_size)"
            )
        return found

    # -- questions about a built model ------------------------------------------------------------

    def blocks(self, model: PreTrainedModel) -> torch.nn.ModuleList:
        """The transformer blocks in order (FSDP wraps each; a student is cut from them)."""
        raise NotImplementedError

    # Whether residual_projections is implemented (model.zero_init_projections).
    has_residual_projections: ClassVar[bool] = False

    def residual_projections(self, model: PreTrainedModel) -> list[torch.nn.Module]:
        """The layers whose output is added to the residual stream: each block's attention
        output and feed-forward output projections."""
        raise NotImplementedError

    def position_offset(self, config: PretrainedConfig) -> int:
        """Position ids that come before the first token (RoBERTa: ``pad_token_id + 1``)."""
        return 0

    def context_length(self, config: PretrainedConfig) -> int:
        """Tokens the model reads at once."""
        return int(config.max_position_embeddings) - self.position_offset(config)

    def position_embeddings(self, model: PreTrainedModel) -> torch.nn.Embedding | None:
        """The learned position table, or None when positions are rotary (nothing to learn)."""
        return None

    def extend_context(
        self, model: PreTrainedModel, n_positions: int, rope_theta: float = 0.0
    ) -> bool:
        """Let the model read ``n_positions`` tokens; True if anything changed.

        Learned positions are grown (:func:`grow_position_table`); rotary families raise their
        maximum and may take a new RoPE base (``rope_theta`` > 0).
        """
        table = self.position_embeddings(model)
        if table is None:
            raise GlottaError(f"{self.name}: extending the context is not supported")
        return grow_position_table(self, model, table, n_positions)

    def set_context_length(self, config: PretrainedConfig, n_positions: int) -> None:
        """Record a grown context in the config, so the exported folder says the new size."""
        config.max_position_embeddings = n_positions + self.position_offset(config)

    def gguf(self, model: PreTrainedModel) -> Any:
        """The model as llama.cpp's GGUF sees it (a :class:`glotta.models.gguf_spec.GGUFSpec`):
        the family's own mapping of names, transforms and hyperparameters."""
        raise GlottaError(f"GGUF export is not supported for model.arch = {self.name!r}")

    def make_decode_layout(self, model: PreTrainedModel, context: int) -> DecodeLayout:
        """The family's blocks as a :class:`~glotta.models.decoding.DecodeLayout`; raises
        ``NoDecodeLayout`` (saying why) where the family or this model's settings have none. A
        family whose blocks no shared layout computes overrides this with its own."""
        from glotta.models.decoding import LAYOUTS, NoDecodeLayout

        if self.decode_layout is None:
            raise NoDecodeLayout(f"model family {self.name!r} declares no decode layout")
        layout = LAYOUTS[self.decode_layout]
        problem = layout.problem(model, context)
        if problem:
            raise NoDecodeLayout(problem)
        return layout(model, context)

    def card_shape(self, config: PretrainedConfig) -> dict[str, Any]:
        """Layers, width, heads and context for the model card's table."""
        return {
            "layers": config.num_hidden_layers,
            "width": config.hidden_size,
            "heads": config.num_attention_heads,
            "context": self.context_length(config),
        }


def grow_position_table(
    family: ModelFamily, model: PreTrainedModel, table: torch.nn.Embedding, n_positions: int
) -> bool:
    """Grow learned position embeddings to ``n_positions`` tokens; True if they grew.

    The new rows repeat the trained ones (row i takes row i mod old), as suggested for fairseq's
    learned positions (fairseq #1685): every new position starts from a position embedding the
    model already knows instead of noise, and training at the longer context adapts them. Rows
    before the first position (RoBERTa's padding) are kept as they are.
    """
    import torch

    offset = family.position_offset(model.config)
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
    owner, name = _owner_of(model, table)
    setattr(owner, name, grown)
    family.set_context_length(model.config, n_positions)
    # BERT keeps position and token-type ids as buffers of the table's length.
    if hasattr(owner, "position_ids"):
        owner.position_ids = torch.arange(n_positions + offset, device=device).expand((1, -1))
        if hasattr(owner, "token_type_ids"):
            owner.token_type_ids = torch.zeros_like(owner.position_ids)
    return True


def _owner_of(model: torch.nn.Module, module: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """(parent module, attribute name) under which ``module`` sits in ``model``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is module:
                return parent, name
    raise GlottaError("internal: the position table is not part of the model")
