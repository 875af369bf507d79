"""``resolve_device``: the one answer to "which device?" for every stage and command."""

from __future__ import annotations

import pytest
import torch

from glotta.device import resolve_device
from glotta.errors import GlottaError


def test_auto_is_cuda_exactly_when_there_is_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device().type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_setting():
    with pytest.raises(GlottaError, match="ner.device = 'cuda' but no CUDA device"):
        resolve_device("cuda", "ner.device")
