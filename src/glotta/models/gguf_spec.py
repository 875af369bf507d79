"""What a model family hands the GGUF writer: llama.cpp's architecture name, its hyperparameter
keys and the weights under llama.cpp's tensor names, already in the layout llama.cpp expects.

Each family builds one in its own module (``ModelFamily.gguf``), because the names and the
transforms (GPT-2's transposed Conv1D weights, Llama's rotary permutation) are facts about that
architecture; :mod:`glotta.export.gguf_export` only chooses tensor types and writes the file.
Nothing here imports ``gguf``: metadata keys are the ``gguf.Keys`` templates, filled with the
architecture name by the writer.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from glotta.errors import GlottaError

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclasses.dataclass
class GGUFSpec:
    arch: str  # llama.cpp's general.architecture ("gpt2", "llama")
    # gguf.Keys templates ("{arch}.context_length") -> int | float | bool | str
    metadata: dict[str, Any]
    # (llama.cpp tensor name, float32 array in PyTorch's (out, in) layout), in file order
    tensors: list[tuple[str, np.ndarray]]


def float32_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's parameters as float32 numpy arrays by their state-dict name."""
    return {
        name: tensor.detach().to("cpu").float().numpy()
        for name, tensor in model.state_dict().items()
    }


def head_is_tied(model: torch.nn.Module) -> bool:
    """Whether the output head is the input embedding itself (llama.cpp then reuses
    token_embd and the file must not hold an output.weight)."""
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def unsupported(family: str, setting: str, value: Any, why: str) -> GlottaError:
    return GlottaError(f"GGUF export of a {family} model with {setting} = {value!r}: {why}")
