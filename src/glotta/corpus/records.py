"""What a reader yields: one raw input record, and the helpers every reader shares (decoding
line by line, warning about the first few skipped records of each kind)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from glotta.corpus.encoding import Encoding, FileDecoder

log = logging.getLogger("glotta.corpus.readers")

_WARN_FIRST = 5  # file:line warnings shown per skip reason; the rest are only counted


@dataclass(slots=True)
class RawDocument:
    """One input record: its text as read, or ``skip`` = the reason it produced no text."""

    text: str
    source: str  # file path, or hf://DATASET/CONFIG/SPLIT
    skip: str | None = None
    replaced: int = 0  # undecodable bytes in it, each read as U+FFFD
    encoding: str = "utf-8"  # the codec its file was read with
    # Set by readers whose records carry their own markup (Wikipedia dumps: 'mediawiki'); the
    # conversion itself runs later, in the cleaning workers, not in the reading process.
    markup: str | None = None
    title: str = ""  # article title, kept as the first block by markup conversion


def decoded_lines(fh: BinaryIO, source: str = "") -> Iterator[tuple[int, str, int]]:
    """Yield (line number, line without its ending, bytes replaced by U+FFFD) from a UTF-8 stream
    (dumps that are UTF-8 by definition; the text readers choose an encoding per file).

    Decoding line by line keeps memory flat and lets one bad byte cost one replaced character
    instead of the whole file.
    """
    return FileDecoder(source, Encoding("utf-8"), max_fraction=1.0).lines(fh)


def warn_skip(warned: Counter, reason: str, message: str) -> None:
    warned[reason] += 1
    if warned[reason] <= _WARN_FIRST:
        suffix = " (further ones are only counted)" if warned[reason] == _WARN_FIRST else ""
        log.warning("%s; skipped%s", message, suffix)
