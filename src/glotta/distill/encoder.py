"""Encoder distillation: a BERT/RoBERTa student learns the teacher's hidden states and attention.

    [train] objective = "mlm"          # blocks [CLS] ... [SEP], masked as for pretraining
    [distill] teacher = "bert-base-multilingual-cased"
              student_layers = [0, 1, 2, 3, 4, 5]    # the student starts as the bottom 6 layers
              alpha_hidden = 1.0  alpha_attention = 1.0

This is LightMBERT (Jiao et al. 2021, arXiv:2103.06418): the student is the teacher's bottom k
layers with its embeddings, and is trained, task-agnostically, to reproduce the teacher's
representations with TinyBERT's layer-wise losses (Jiao et al. 2020):

    loss per position = alpha_hidden    * sum over l of MSE(W h_student[l], h_teacher[g(l)])
                      + alpha_attention * sum over l of MSE(A_student[l], A_teacher[g(l)])

over the embedding output (l = 0 with g(0) = 0) and every student layer; ``A`` are the attention
scores before the softmax, per head (so the head counts must agree); ``W`` is a learned
projection, present only when the widths differ (TinyBERT's W_h). The layer map ``g`` is
``distill.layer_map`` or TinyBERT's uniform map g(m) = m * N / M (student layer m of M, teacher
N; 1-based), e.g. [1, 3, 5, 7, 9, 11] for 6 of 12 layers, 0-based. Neither loss needs the
teacher's masked-LM head, so any encoder works as a teacher, a sentence encoder included.

The student is the teacher's architecture with ``len(student_layers)`` layers and [model]'s
dropout ([model] gives the shape only of a student started at random, ``student_layers = []``). Its masked-LM head (when the
teacher has one) is copied and frozen: the losses do not reach it, and the exported student stays
a fill-mask model through the tied word embeddings. ``freeze_embeddings`` also freezes the word
embeddings, as LightMBERT does (the Swedish card's model did not).

Teacher and student read the same blocks, masked as for masked-LM training (both see the same
[MASK] tokens), and the loop divides each step's summed loss by the number of positions.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch

from glotta.config import ModelConfig
from glotta.distill.causal import DistillObjective
from glotta.distill.losses import attention_mse_sum, hidden_mse_sum
from glotta.distill.student import attach_projection, student_parameters
from glotta.distill.teacher import check_vocabulary, teacher_dtype
from glotta.distill.trim_vocab import read_kept_ids, slice_vocabulary
from glotta.errors import GlottaError
from glotta.models import build_model, context_length, has_masked_lm_head
from glotta.rundir import write_json_atomic
from glotta.train.distributed import Dist

LAYER_KEY = re.compile(r"(^|\.)encoder\.layer\.(\d+)\.")


def load_encoder_teacher(source: str, dtype: torch.dtype = torch.float32):
    """The teacher encoder on the CPU, frozen, in eval mode: with its masked-LM head if it has one."""
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    try:
        config = AutoConfig.from_pretrained(source)
        loader = AutoModelForMaskedLM if has_masked_lm_head(config) else AutoModel
        teacher = loader.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise GlottaError(
            f"distill.teacher: cannot load an encoder from {source!r}: {exc}"
        ) from None
    encoder_layers(teacher, f"the teacher {source}")
    if getattr(teacher.config, "position_embedding_type", "absolute") != "absolute":
        raise GlottaError(
            f"distill.teacher {source}: relative position embeddings change the attention scores "
            "this distillation compares; only absolute positions are supported"
        )
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def load_run_teacher(source: str, tokenizer_dir: Path):
    """The teacher, its vocabulary trimmed as the run's tokenizer was (tokenizer.trim_vocab)."""
    teacher = load_encoder_teacher(source)
    kept_ids = read_kept_ids(tokenizer_dir)
    if kept_ids is not None:
        if max(kept_ids) >= teacher.get_input_embeddings().num_embeddings:
            raise GlottaError(
                f"the run's tokenizer was trimmed from a vocabulary larger than the teacher "
                f"{source}'s; use the teacher's tokenizer as tokenizer.pretrained"
            )
        slice_vocabulary(teacher, kept_ids)
    return teacher


def encoder_layers(model, what: str = "the model") -> torch.nn.ModuleList:
    """The transformer layers of a BERT-family encoder (BERT, RoBERTa, XLM-R, ELECTRA)."""
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0].attention, "self"):
        raise GlottaError(
            f"{what} is a {model.config.model_type!r} model; encoder distillation needs a "
            "BERT-family encoder (bert, roberta, xlm-roberta, electra)"
        )
    return layers


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's g(m) = m * N / M, as 0-based teacher layers for student layers 0..M-1."""
    return [(m + 1) * teacher_layers // student_layers - 1 for m in range(student_layers)]


def resolve_layer_map(layer_map: list[int], student_layers: int, teacher_layers: int) -> list[int]:
    if not layer_map:
        return uniform_layer_map(student_layers, teacher_layers)
    if len(layer_map) != student_layers:
        raise GlottaError(
            f"distill.layer_map names {len(layer_map)} teacher layers but the student has "
            f"{student_layers} layers; give one teacher layer per student layer, or [] (uniform)"
        )
    outside = [i for i in layer_map if not 0 <= i < teacher_layers]
    if outside:
        raise GlottaError(
            f"distill.layer_map {outside} are not layers of the teacher (0..{teacher_layers - 1})"
        )
    return list(layer_map)


def cut_student(teacher, layers: list[int], dropout: float | None = None):
    """The teacher's architecture with only ``layers`` (in order): weights copied exactly, the
    embeddings, pooler and masked-LM head included; ``dropout`` replaces the teacher's."""
    blocks = len(encoder_layers(teacher))
    outside = [i for i in layers if not 0 <= i < blocks]
    if outside:
        raise GlottaError(
            f"distill.student_layers {outside} are not layers of the teacher (0..{blocks - 1})"
        )
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    student = type(teacher)(config).float()
    source = teacher.state_dict()

    def teacher_key(key: str) -> str:
        return LAYER_KEY.sub(lambda m: f"{m.group(1)}encoder.layer.{layers[int(m.group(2))]}.", key)

    student.load_state_dict(
        {key: source[teacher_key(key)].float() for key in student.state_dict()}, strict=True
    )
    return student


class LayerCapture:
    """Forward hooks that keep what chosen layers computed: the embedding output and each layer's
    output (hidden states), and the layers' query and key projections (attention scores).

    Nothing runs outside the model's own forward, so the same code works on a plain model and
    under DDP and FSDP (where ``output_hidden_states`` of a sharded BERT comes back empty).
    """

    def __init__(self, model, layers: list[int], hidden: bool = True, attention: bool = True):
        blocks = encoder_layers(model)
        self.outputs: dict[tuple[str, int], torch.Tensor] = {}
        self.heads = [blocks[i].attention.self.num_attention_heads for i in layers]
        self.handles = []
        if hidden:
            self._hook(model.base_model.embeddings, ("hidden", 0))
        for k, i in enumerate(layers):
            if hidden:
                self._hook(blocks[i], ("hidden", k + 1))
            if attention:
                self._hook(blocks[i].attention.self.query, ("query", k))
                self._hook(blocks[i].attention.self.key, ("key", k))

    def _hook(self, module: torch.nn.Module, key: tuple[str, int]) -> None:
        def keep(module, args, output):
            self.outputs[key] = output[0] if isinstance(output, tuple) else output

        self.handles.append(module.register_forward_hook(keep))

    def hidden(self, index: int) -> torch.Tensor:
        """The embedding output (0) or the output of the ``index``-th chosen layer (1-based)."""
        return self.outputs[("hidden", index)]

    def scores(self, index: int) -> torch.Tensor:
        """(batch, heads, queries, keys) attention scores of chosen layer ``index`` (0-based),
        before the softmax."""
        query, key = self.outputs[("query", index)], self.outputs[("key", index)]
        batch, length, width = query.shape
        heads = self.heads[index]
        query = query.view(batch, length, heads, width // heads).transpose(1, 2)
        key = key.view(batch, length, heads, width // heads).transpose(1, 2)
        return query @ key.transpose(-1, -2) * (width // heads) ** -0.5

    def clear(self) -> None:
        self.outputs.clear()


class EncoderDistillObjective(DistillObjective):
    """alpha_hidden * hidden-state MSE + alpha_attention * attention-score MSE, per position."""

    def build_student(
        self, model_cfg: ModelConfig, objective: str, vocab_size: int, block_size: int, special_ids
    ) -> torch.nn.Module:
        """The teacher's bottom layers (``student_layers``), or ``[model]`` at random."""
        cfg = self.cfg
        teacher = load_run_teacher(cfg.teacher, self.tokenizer_dir)
        self.vocab_size = check_vocabulary(
            teacher,
            cfg.teacher_tokenizer or cfg.teacher,
            self.tokenizer_dir,
            read_kept_ids(self.tokenizer_dir),
        )
        positions = context_length(teacher)
        if positions < block_size:
            raise GlottaError(
                f"the teacher {cfg.teacher} reads at most {positions} tokens but train.block_size "
                f"is {block_size}; lower train.block_size"
            )
        if cfg.student_layers:
            student = cut_student(teacher, list(cfg.student_layers), model_cfg.dropout)
        else:
            student = build_model(model_cfg, objective, vocab_size, block_size, special_ids)
        self.teacher = teacher
        return student

    def prepare(self, model: torch.nn.Module, ctx: Dist) -> None:
        cfg, teacher = self.cfg, self.teacher
        student_layers = encoder_layers(model, "the student")
        teacher_layers = encoder_layers(teacher)
        self.layer_map = resolve_layer_map(
            list(cfg.layer_map), len(student_layers), len(teacher_layers)
        )
        if cfg.alpha_attention:
            self._check_heads(model)
        # Only the embeddings and the layers feed the losses. Everything else (pooler, masked-LM
        # head) would get no gradient, which DDP refuses, and is kept as the teacher had it.
        model.requires_grad_(False)
        model.base_model.embeddings.requires_grad_(True)
        model.base_model.encoder.requires_grad_(True)
        if cfg.freeze_embeddings:
            model.base_model.embeddings.word_embeddings.requires_grad_(False)
        if cfg.alpha_hidden:
            self.projection = attach_projection(model, teacher.config.hidden_size)
        dtype = teacher_dtype(cfg.teacher_dtype, ctx.device, log=ctx.is_main)
        self.teacher = teacher.to(device=ctx.device, dtype=dtype)
        terms = {"hidden": bool(cfg.alpha_hidden), "attention": bool(cfg.alpha_attention)}
        self.student_capture = LayerCapture(model, list(range(len(student_layers))), **terms)
        self.teacher_capture = LayerCapture(self.teacher, self.layer_map, **terms)
        self.student_parameters = student_parameters(model)
        self.is_main = ctx.is_main
        if not ctx.is_main:
            return
        info = self.describe(model, dtype)
        if self.info_path is not None:
            self.info_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.info_path, info)
        start = f"teacher layers {list(cfg.student_layers)}" if cfg.student_layers else "random"
        print(
            f"glotta: distill: teacher {cfg.teacher} ({info['teacher_parameters'] / 1e6:.2f}M "
            f"parameters, {len(teacher_layers)} layers, {info['teacher_runs_in']}, frozen) -> "
            f"student {self.student_parameters / 1e6:.2f}M, {len(student_layers)} layers "
            f"({start}; trained: {info['trained_parameters'] / 1e6:.2f}M"
            + (f", projection {info['projection']}" if info["projection"] else "")
            + f"); loss {cfg.alpha_hidden} hidden MSE + {cfg.alpha_attention} attention MSE, "
            f"student layer -> teacher layer {dict(enumerate(self.layer_map))}",
            flush=True,
        )

    def _check_heads(self, model) -> None:
        student, teacher = model.config.num_attention_heads, self.teacher.config
        if student != teacher.num_attention_heads:
            raise GlottaError(
                f"distill.alpha_attention compares attention maps head by head, but the student "
                f"has {student} heads and the teacher {teacher.num_attention_heads}; set "
                f"model.n_head = {teacher.num_attention_heads} or distill.alpha_attention = 0"
            )

    def describe(self, model, dtype: torch.dtype) -> dict:
        info = super().describe(model, dtype)
        info.update(
            kind="encoder",
            losses=["hidden_mse", "attention_mse"],
            layer_map=self.layer_map,
            student_layers=model.config.num_hidden_layers,
            trained_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            teacher_has_mlm_head=has_masked_lm_head(self.teacher.config),
        )
        return info

    def loss_sum(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        student, teacher, pairs = self.student_capture, self.teacher_capture, len(self.layer_map)
        model(input_ids=inputs)  # the hooks keep what the loss compares
        with torch.inference_mode():  # no graph, no saved activations: the teacher only shows
            self.teacher.base_model(input_ids=inputs)
            if self.cfg.alpha_hidden:
                teacher_hidden = [teacher.hidden(k) for k in range(pairs + 1)]
            if self.cfg.alpha_attention:
                teacher_scores = [teacher.scores(k) for k in range(pairs)]
        teacher.clear()
        total = inputs.new_zeros((), dtype=torch.float32)
        parts = {}
        if self.cfg.alpha_hidden:  # the embedding output, then each student layer
            hidden = sum(
                hidden_mse_sum(self._project(student.hidden(k)), teacher_hidden[k])
                for k in range(pairs + 1)
            )
            total = total + self.cfg.alpha_hidden * hidden
            parts["hidden"] = hidden.detach()
        if self.cfg.alpha_attention:
            attention = sum(
                attention_mse_sum(student.scores(k), scores)
                for k, scores in enumerate(teacher_scores)
            )
            total = total + self.cfg.alpha_attention * attention
            parts["attention"] = attention.detach()
        student.clear()
        return self._record(model, total, parts, inputs.numel())

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.projection(hidden) if self.projection is not None else hidden

    def validation_loss_sum(self, model, inputs: torch.Tensor, targets: torch.Tensor):
        return self.loss_sum(model, inputs, targets)

    def predicted_tokens(self, inputs: torch.Tensor, targets: torch.Tensor) -> int:
        return inputs.numel()  # every position is compared with the teacher
