"""The teacher: any Hugging Face causal LM, frozen, in inference mode, in bf16 where it pays.

Its identity (where it came from, and a hash of its config and of its weight files' names and
sizes) goes into every checkpoint of the student, so a resume with another teacher is refused.
Its vocabulary must be the student's: the soft targets are distributions over the same ids.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from glotta.errors import GlottaError
from glotta.tokenizer.files import read_tokenizer_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


def teacher_folder(source: str) -> Path:
    """The local folder of a teacher: the path itself, or its snapshot in the hub cache."""
    path = Path(source)
    if path.is_dir():
        return path
    from transformers.utils import cached_file

    try:
        return Path(cached_file(source, "config.json")).parent
    except (OSError, ValueError) as exc:
        raise GlottaError(f"distill.teacher: cannot find {source!r}: {exc}") from None


def teacher_identity(source: str) -> dict:
    """{"source", "sha256"}: the sha256 covers config.json and the weight files' names and sizes."""
    folder = teacher_folder(source)
    config = folder / "config.json"
    if not config.is_file():
        raise GlottaError(f"distill.teacher {source!r}: {folder} has no config.json")
    digest = hashlib.sha256(config.read_bytes())
    for path in sorted(folder.iterdir()):
        if path.name.endswith(WEIGHT_SUFFIXES) or path.name.endswith(".index.json"):
            digest.update(f"\n{path.name}:{path.stat().st_size}".encode())
    return {"source": source, "sha256": digest.hexdigest()[:16]}


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively (the loop's test for bf16 autocast)."""
    from glotta.config import TrainConfig
    from glotta.train.plan import autocast_dtype

    return autocast_dtype(TrainConfig(precision="auto"), device) is torch.bfloat16


def teacher_dtype(choice: str, device: torch.device, log: bool = True) -> torch.dtype:
    """bf16 on request where native; fp32 on request or, with a log line, on CPUs without bf16
    (there bf16 matmuls are emulated and many times slower than fp32)."""
    if choice == "fp32":
        return torch.float32
    if native_bf16(device):
        return torch.bfloat16
    if log:
        print(
            f"glotta: distill: this {device.type} has no native bf16; the teacher runs in fp32",
            flush=True,
        )
    return torch.float32


def load_teacher(source: str, dtype: torch.dtype = torch.float32):
    """The teacher on the CPU: eval mode, every parameter frozen."""
    from transformers import AutoModelForCausalLM

    try:
        teacher = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise GlottaError(
            f"distill.teacher: cannot load a causal LM from {source!r}: {exc}"
        ) from None
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def teacher_vocab_rows(teacher) -> int:
    """Rows of the teacher's output layer (may exceed its tokenizer: padded vocabularies)."""
    head = teacher.get_output_embeddings()
    return head.weight.shape[0] if head is not None else teacher.config.vocab_size


def check_vocabulary(
    teacher, tokenizer_source: str, student_tokenizer_dir: Path, kept_ids: list[int] | None = None
) -> int:
    """The teacher's tokenizer must map tokens to ids exactly as the student's; returns its size.

    ``kept_ids``: the student's tokenizer is the teacher's trimmed to these ids (in order).
    """
    path = Path(student_tokenizer_dir) / "tokenizer.json"
    student = read_tokenizer_file(path, "run `glotta tokenizer` first")
    student_vocab = student.get_vocab(with_added_tokens=True)
    from transformers import AutoTokenizer

    try:
        teacher_vocab = AutoTokenizer.from_pretrained(tokenizer_source).get_vocab()
    except (OSError, ValueError, TypeError) as exc:
        raise GlottaError(
            f"cannot load the teacher's tokenizer from {tokenizer_source!r} ({exc}); point "
            "distill.teacher_tokenizer at it"
        ) from None
    if kept_ids is not None:
        new_id = {old: new for new, old in enumerate(kept_ids)}
        teacher_vocab = {t: new_id[i] for t, i in teacher_vocab.items() if i in new_id}
    if teacher_vocab != student_vocab:
        only_teacher = sorted(set(teacher_vocab.items()) - set(student_vocab.items()))[:5]
        only_student = sorted(set(student_vocab.items()) - set(teacher_vocab.items()))[:5]
        raise GlottaError(
            f"the teacher's vocabulary ({tokenizer_source}: {len(teacher_vocab):,} tokens) is not "
            f"the student's tokenizer ({student_tokenizer_dir}: {len(student_vocab):,} tokens); "
            f"(token, id) pairs only in the teacher's: {only_teacher}, only in the student's: "
            f"{only_student}. Use the teacher's tokenizer: tokenizer.pretrained = "
            f'"{tokenizer_source}"'
        )
    rows = teacher_vocab_rows(teacher)
    if rows < len(student_vocab):
        raise GlottaError(
            f"the teacher {tokenizer_source} predicts {rows:,} tokens but its tokenizer has "
            f"{len(student_vocab):,}"
        )
    return len(student_vocab)
