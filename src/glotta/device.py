"""Where models run: the one answer to "which device?" that every stage and command asks."""

from __future__ import annotations

import torch

from glotta.errors import GlottaError


def resolve_device(name: str = "auto", setting: str = "device") -> torch.device:
    """The device for a ``device`` setting: 'auto' (a CUDA GPU when there is one, else the
    CPU), 'cpu', 'cuda' or 'cuda:N'. Asking for CUDA without one is an error naming
    ``setting``, rather than a later failure deep inside torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GlottaError(f"{setting} = {name!r} but no CUDA device is available")
    return torch.device(name)
