"""Which encoding a text input is read in, and counting the bytes that encoding cannot decode.

``corpus.encoding`` is UTF-8 unless the recipe says otherwise; 'auto' asks charset-normalizer
per file. A byte-order mark decides over 'utf-8' and 'auto' (it is unambiguous, and a UTF-16
file read as UTF-8 is all NULs). Bytes the encoding cannot decode become U+FFFD, are counted per
file and end the stage once they exceed ``corpus.max_undecodable_fraction`` of the file's
characters: a Latin-1 file read as UTF-8 is refused with the encoding it probably is, instead of
training on a corpus of replacement characters.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from glotta.errors import GlottaError

# UTF-32's little-endian mark begins with UTF-16's: test the longer one first.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),  # the BOM itself is dropped from the first line
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
HEAD_BYTES = 1 << 16  # what detection and the binary check look at
# Refusal is judged over at least this many characters, so a file is not refused for a few bad
# bytes at its very start, yet a wrong encoding is noticed after seconds, not a 100 GB read.
_JUDGE_AFTER_CHARS = 1 << 16


def encoding_problem(value: str) -> str | None:
    """Why ``value`` cannot be corpus.encoding, or None."""
    if value == "auto":
        return None
    try:
        info = codecs.lookup(value)
    except LookupError:
        return "is not a text encoding Python knows (e.g. 'utf-8', 'latin-1', 'cp1252', 'auto')"
    if not getattr(info, "_is_text_encoding", True):
        return "is not a text encoding (e.g. 'utf-8', 'latin-1', 'cp1252', 'auto')"
    return None


@dataclass(frozen=True)
class Encoding:
    """The codec one file is read with, and whether it was guessed (the summary says so)."""

    name: str  # Python's canonical codec name, e.g. 'utf-8', 'cp1252'
    detected: bool = False  # guessed by charset-normalizer (corpus.encoding = 'auto')


def choose_encoding(head: bytes, configured: str) -> Encoding:
    """The encoding of a file that starts with ``head`` under corpus.encoding = ``configured``."""
    if configured == "auto" or codecs.lookup(configured).name.startswith("utf"):
        for bom, name in _BOMS:
            if head.startswith(bom):
                return Encoding(name)
    if configured != "auto":
        return Encoding(codecs.lookup(configured).name)
    try:  # valid UTF-8 (ASCII included) is UTF-8: guessing could only pick a narrower codec
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return Encoding("utf-8", detected=True)
    except UnicodeDecodeError:
        return Encoding(likely_encoding(head) or "utf-8", detected=True)


def likely_encoding(head: bytes) -> str | None:
    """charset-normalizer's best guess for ``head`` (None for empty or undecidable input)."""
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    return codecs.lookup(best.encoding).name if best is not None else None


def _ascii_compatible(name: str) -> bool:
    """Whether lines can be split on b'\\n' before decoding (not so for UTF-16/32)."""
    return "\n".encode(name) == b"\n"


class FileDecoder:
    """Decodes one file line by line, counting undecodable bytes (each becomes one U+FFFD) and
    refusing the file once they are more than ``max_fraction`` of its characters."""

    def __init__(self, path, encoding: Encoding, max_fraction: float, head: bytes = b""):
        self.path, self.encoding, self.max_fraction = path, encoding, max_fraction
        self.head = head
        self.characters = self.replaced = 0
        self.first_bad: tuple[int, int | None] | None = None  # (line, byte offset if known)

    def lines(self, fh: BinaryIO) -> Iterator[tuple[int, str, int]]:
        """Yield (line number, line without its ending, replacement characters in it)."""
        if _ascii_compatible(self.encoding.name):
            lines = self._byte_lines(fh)
        else:
            lines = self._wide_lines(fh)
        for number, text, offset in lines:
            bad = text.count("\ufffd") if "\ufffd" in text else 0
            self.characters += len(text) + 1
            if bad:
                self.replaced += bad
                self.first_bad = self.first_bad or (number, offset)
                if self.replaced > self.max_fraction * max(self.characters, _JUDGE_AFTER_CHARS):
                    raise GlottaError(self._refusal())
            yield number, text, bad
        if self.replaced > self.max_fraction * self.characters:
            raise GlottaError(self._refusal())

    def _byte_lines(self, fh: BinaryIO) -> Iterator[tuple[int, str, int | None]]:
        name, offset = self.encoding.name, 0
        for number, raw in enumerate(fh, 1):
            line_start, offset = offset, offset + len(raw)
            raw = raw.rstrip(b"\r\n")
            try:
                text, bad_at = raw.decode(name), None
            except UnicodeDecodeError as exc:
                text, bad_at = raw.decode(name, errors="replace"), line_start + exc.start
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]  # byte-order mark written by some Windows editors
            yield number, text, bad_at

    def _wide_lines(self, fh: BinaryIO) -> Iterator[tuple[int, str, int | None]]:
        # UTF-16/32: the decoder splits lines; byte offsets of bad bytes are not tracked here.
        text = io.TextIOWrapper(fh, encoding=self.encoding.name, errors="replace", newline=None)
        for number, line in enumerate(text, 1):
            yield number, line.rstrip("\n"), None
        text.detach()  # the caller closes fh

    def _refusal(self) -> str:
        line, offset = self.first_bad or (0, None)
        where = f"byte {offset:,} (line {line:,})" if offset is not None else f"line {line:,}"
        name = self.encoding.name
        share = self.replaced / max(self.characters, 1)
        guess = likely_encoding(self.head) if self.head else None
        hint = (
            f"it looks like {guess}: set corpus.encoding = {guess!r} (or 'auto')"
            if guess and guess != name
            else "set corpus.encoding to the file's encoding (or 'auto')"
        )
        return (
            f"{self.path} is not {name} text: {self.replaced:,} of its first "
            f"{self.characters:,} characters ({share:.1%}) are bytes {name} cannot decode, the "
            f"first at {where}; {hint}, convert the file to UTF-8, or raise "
            "corpus.max_undecodable_fraction"
        )
