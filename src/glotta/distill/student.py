"""The student: initialised from chosen teacher blocks (DistilGPT2) or at random, plus the
projection that lets a narrower student's hidden states be compared with the teacher's.

DistilGPT2 kept 6 of GPT-2's 12 blocks, [0, 2, 4, 7, 9, 11], and the embeddings; the student
then has the teacher's width and heads and only fewer blocks. A student of another width starts
at random and its last hidden state goes through a learned linear map to the teacher's width for
the cosine loss (as TinyBERT maps student to teacher hidden states). The map is a submodule of
the student, so the optimizer, checkpoints, resume, DDP and FSDP treat it like any other weight;
`from_pretrained` ignores it, so eval and export see a plain GPT-2.
"""

from __future__ import annotations

import torch

from glotta.errors import GlottaError

PROJECTION = "distill_projection"  # attribute of the student that holds the projection


def _blocks(model) -> torch.nn.ModuleList | None:
    transformer = getattr(model, "transformer", None)
    return getattr(transformer, "h", None)


def copy_teacher_layers(student, teacher, layers: list[int]) -> None:
    """Copy teacher blocks ``layers`` (in order), the token and position embeddings and the final
    norm into a GPT-2 student of the teacher's width; weights are copied exactly (fp32)."""
    teacher_blocks, student_blocks = _blocks(teacher), _blocks(student)
    if teacher_blocks is None:
        raise GlottaError(
            f"distill.student_layers copies GPT-2 blocks, but the teacher is a "
            f"{teacher.config.model_type!r} model; use distill.student_layers = [] (a student "
            "initialised at random learns from any causal LM with the same tokenizer)"
        )
    s, t = student.config, teacher.config
    if len(layers) != len(student_blocks):
        raise GlottaError(
            f"distill.student_layers names {len(layers)} teacher blocks but the student has "
            f"model.n_layer = {len(student_blocks)}; make them equal"
        )
    if (s.n_embd, s.n_head) != (t.n_embd, t.n_head):
        raise GlottaError(
            f"distill.student_layers needs the teacher's width and heads: set model.n_embd = "
            f"{t.n_embd} and model.n_head = {t.n_head} (the student has {s.n_embd} and "
            f"{s.n_head}), or use distill.student_layers = [] for a narrower student"
        )
    outside = [i for i in layers if not 0 <= i < len(teacher_blocks)]
    if outside:
        raise GlottaError(
            f"distill.student_layers {outside} are not blocks of the teacher (it has "
            f"{len(teacher_blocks)}: 0..{len(teacher_blocks) - 1})"
        )
    vocab = student.transformer.wte.num_embeddings
    positions = min(student.transformer.wpe.num_embeddings, teacher.transformer.wpe.num_embeddings)
    try:
        with torch.no_grad():
            student.transformer.wte.weight.copy_(teacher.transformer.wte.weight[:vocab])
            student.transformer.wpe.weight[:positions].copy_(
                teacher.transformer.wpe.weight[:positions]
            )
            student.transformer.ln_f.load_state_dict(teacher.transformer.ln_f.state_dict())
            for target, source in enumerate(layers):
                student_blocks[target].load_state_dict(teacher_blocks[source].state_dict())
    except RuntimeError as exc:  # e.g. another feed-forward width (n_inner)
        raise GlottaError(f"teacher blocks do not fit the student's blocks: {exc}") from None


def attach_projection(student, teacher_width: int) -> torch.nn.Linear | None:
    """A trained linear map from the student's width to the teacher's, if they differ."""
    width = student.config.hidden_size
    if width == teacher_width:
        return None
    projection = torch.nn.Linear(width, teacher_width)
    student.add_module(PROJECTION, projection)
    return projection


def freeze_position_embeddings(student) -> None:
    """DistilGPT2's --freeze_pos_embs: the optimizer skips weights that need no gradient."""
    student.transformer.wpe.weight.requires_grad_(False)


def student_parameters(student) -> int:
    """Unique parameters of the student as exported (the projection is not)."""
    params = {id(p): p for p in student.parameters()}
    extra = getattr(student, PROJECTION, None)
    for p in extra.parameters() if extra is not None else ():
        params.pop(id(p), None)
    return sum(p.numel() for p in params.values())
