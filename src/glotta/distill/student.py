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
from glotta.models import family_of, transformer_blocks

PROJECTION = "distill_projection"  # attribute of the student that holds the projection


def copy_teacher_layers(student, teacher, layers: list[int]) -> None:
    """Copy teacher blocks ``layers`` (in order) and everything outside the blocks (embeddings,
    final norm, output layer) into a student of the teacher's family and width; weights are
    copied exactly (fp32). Any family works: the blocks are the ones its family names."""
    what = "distill.student_layers copies teacher blocks"
    if family_of(teacher) is None or family_of(teacher) is not family_of(student):
        raise GlottaError(
            f"{what} into a student of the same family, but the teacher is a "
            f"{teacher.config.model_type!r} model and the student a "
            f"{student.config.model_type!r} model; set model.arch to the teacher's family, or "
            "use distill.student_layers = [] (a student initialised at random learns from any "
            "causal LM with the same tokenizer)"
        )
    teacher_blocks, student_blocks = transformer_blocks(teacher), transformer_blocks(student)
    s, t = student.config, teacher.config
    if len(layers) != len(student_blocks):
        raise GlottaError(
            f"distill.student_layers names {len(layers)} teacher blocks but the student has "
            f"model.n_layer = {len(student_blocks)}; make them equal"
        )
    if (s.hidden_size, s.num_attention_heads) != (t.hidden_size, t.num_attention_heads):
        raise GlottaError(
            f"distill.student_layers needs the teacher's width and heads: set model.n_embd = "
            f"{t.hidden_size} and model.n_head = {t.num_attention_heads} (the student has "
            f"{s.hidden_size} and {s.num_attention_heads}), or use distill.student_layers = [] "
            "for a narrower student"
        )
    outside = [i for i in layers if not 0 <= i < len(teacher_blocks)]
    if outside:
        raise GlottaError(
            f"distill.student_layers {outside} are not blocks of the teacher (it has "
            f"{len(teacher_blocks)}: 0..{len(teacher_blocks) - 1})"
        )
    student_prefix = _module_path(student, student_blocks) + "."
    teacher_prefix = _module_path(teacher, teacher_blocks) + "."
    source = teacher.state_dict()
    copied = {}
    for key, value in student.state_dict().items():
        name = key
        if key.startswith(student_prefix):  # blocks.<i>.rest -> blocks.<layers[i]>.rest
            index, rest = key[len(student_prefix) :].split(".", 1)
            name = f"{teacher_prefix}{layers[int(index)]}.{rest}"
        copied[key] = _fitted(source.get(name), value, name)
    with torch.no_grad():
        student.load_state_dict(copied)


def _module_path(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _fitted(teacher_value: torch.Tensor | None, student_value: torch.Tensor, name: str):
    """The teacher's tensor for a student tensor: the same shape, or the first rows of a longer
    table (a student with fewer positions or a vocabulary cut to the tokenizer's)."""
    if teacher_value is not None and teacher_value.shape == student_value.shape:
        return teacher_value.detach().float().clone()
    rows = student_value.shape[0] if student_value.dim() else 0
    if (
        teacher_value is not None
        and teacher_value.dim() == student_value.dim() >= 1
        and teacher_value.shape[1:] == student_value.shape[1:]
    ):
        fitted = student_value.detach().clone()
        shared = min(rows, teacher_value.shape[0])
        fitted[:shared] = teacher_value[:shared]
        return fitted
    found = "missing" if teacher_value is None else tuple(teacher_value.shape)
    raise GlottaError(
        f"teacher blocks do not fit the student's blocks: {name} is {found} in the teacher and "
        f"{tuple(student_value.shape)} in the student (another feed-forward width or key/value "
        "heads?); give the student the teacher's shape"
    )


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
    table = family_of(student).position_embeddings(student) if family_of(student) else None
    if table is None:
        raise GlottaError(
            f"distill.freeze_position_embeddings: a {student.config.model_type!r} student has no "
            "learned position embeddings (rotary positions); set it to false"
        )
    table.weight.requires_grad_(False)


def student_parameters(student) -> int:
    """Unique parameters of the student as exported (the projection is not)."""
    params = {id(p): p for p in student.parameters()}
    extra = getattr(student, PROJECTION, None)
    for p in extra.parameters() if extra is not None else ():
        params.pop(id(p), None)
    return sum(p.numel() for p in params.values())
