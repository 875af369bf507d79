"""What a reader yields: one raw input record, and the helpers every reader shares (decoding
line by line, warning about the first few skipped records of each kind)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger("glotta.corpus.readers")

_WARN_FIRST = 5  # file:line warnings shown per skip reason; the rest are only counted


@dataclass(slots=True)
class RawDocument:
    """One input record: its text as read, or ``skip`` = the reason it produced no text."""

    text: str
    source: str  # file path, or hf://DATASET/CONFIG/SPLIT
    skip: str | None = None
    utf8_replaced: bool = False  # invalid UTF-8 bytes were replaced by U+FFFD
    # Set by readers whose records carry their own markup (Wikipedia dumps: 'mediawiki'); the
    # conversion itself runs later, in the cleaning workers, not in the reading process.
    markup: str | None = None
    title: str = ""  # article title, kept as the first block by markup conversion


def decoded_lines(fh: BinaryIO) -> Iterator[tuple[int, str, bool]]:
    """Yield (line number, line without its ending, had invalid UTF-8) from a binary stream.

    Decoding line by line keeps memory flat and lets one bad byte cost one replaced character
    instead of the whole file.
    """
    for number, raw in enumerate(fh, 1):
        raw = raw.rstrip(b"\r\n")
        try:
            text, bad = raw.decode("utf-8"), False
        except UnicodeDecodeError:
            text, bad = raw.decode("utf-8", errors="replace"), True
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]  # byte-order mark written by some Windows editors
        yield number, text, bad


def warn_skip(warned: Counter, reason: str, message: str) -> None:
    warned[reason] += 1
    if warned[reason] <= _WARN_FIRST:
        suffix = " (further ones are only counted)" if warned[reason] == _WARN_FIRST else ""
        log.warning("%s; skipped%s", message, suffix)
