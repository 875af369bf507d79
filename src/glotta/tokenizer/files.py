"""Reading a ``tokenizer.json`` as data: whole texts in, every token out.

A pretrained ``tokenizer.json`` may set truncation and padding (sentence-transformers checkpoints
set both to 128): settings for its users' inference, not for glotta's stages, which pack, trim,
score and generate from whole documents. The exported folder keeps the file's own settings.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from glotta.errors import GlottaError


def read_tokenizer_file(path: Path, missing_advice: str) -> Tokenizer:
    """The tokenizer in ``path``, with no truncation and no padding.

    A missing file is a GlottaError ending with ``missing_advice``; a file the tokenizers
    library cannot read (cut short, edited by hand, from an incompatible version) is one too.
    """
    if not path.is_file():
        raise GlottaError(f"{path.parent} has no tokenizer.json; {missing_advice}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for any unreadable file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GlottaError(
            f"{path} is not a readable tokenizer ({reason}); restore it from the run's "
            "tokenizer/ folder or re-export the model"
        ) from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
