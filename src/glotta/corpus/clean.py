"""Per-document cleaning: Unicode normalization, control characters, whitespace, length bounds.

Deliberately conservative: it only removes what no language model should learn (control
characters, layout whitespace) and never touches letters, punctuation or zero-width joiners,
which some scripts need. Filters by quality or language belong in a later, optional step.
"""

from __future__ import annotations

import re
import unicodedata

# A file whose first 64 KB are more than this share NUL, control or invalid bytes is not text.
BINARY_FILE_SHARE = 0.3

# Line and paragraph separators other than \n: fold them into \n so paragraph structure survives.
# (\x0b vertical tab, \x0c form feed, \x85 next line, U+2028 line / U+2029 paragraph separator.)
_LINE_BREAKS = str.maketrans(
    {"\r": "\n", "\x0b": "\n", "\x0c": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n\n"}
)
# Remaining Unicode category Cc (C0 and C1 controls) except tab and newline: NULs and escape
# sequences from broken conversions, never text.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
_LINE_BREAK_CHARS = re.compile("[\r\x0b\x0c\x85\u2028\u2029]")
# Runs of spaces/tabs/non-breaking spaces that need rewriting to one plain space. A lone plain
# space is left alone: matching every word gap made this the slowest step of cleaning.
_SPACE_RUN = re.compile("[\t\u00a0][ \t\u00a0]*| [ \t\u00a0]+")
_TRAILING = re.compile(" +\n")
_BLANK_LINES = re.compile("\n{3,}")


def clean_text(text: str, normalization: str = "NFC") -> str:
    """Return ``text`` normalized (NFC/NFKC/none), without control characters, with tidy spaces.

    Spaces and tabs inside a line collapse to one space; lines lose trailing spaces; three or
    more line breaks become one blank line (the paragraph break); the ends are stripped.
    """
    if _LINE_BREAK_CHARS.search(text):  # str.translate is slow; most texts need none of it
        text = text.replace("\r\n", "\n").translate(_LINE_BREAKS)
    if normalization != "none":
        text = unicodedata.normalize(normalization, text)
    text = _CONTROL.sub("", text)
    # Substring tests (memchr-fast) skip regular expressions that would find nothing: most
    # documents are tidy already, and a regex scan of every space costs ~10 ns per character.
    if "  " in text or "\t" in text or "\u00a0" in text:
        text = _SPACE_RUN.sub(" ", text)
    if " \n" in text:
        text = _TRAILING.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def not_text_fraction(text: str) -> float:
    """Share of U+FFFD replacement and control characters: binary data read as text is full of
    them, real text (even with a few bad bytes) almost never."""
    if not text:
        return 0.0
    bad = text.count("\ufffd")
    if _CONTROL.search(text):  # most documents have none; skip the counting scan
        bad += len(_CONTROL.findall(text))
    return bad / len(text)


def binary_share(head: bytes) -> float:
    """Share of the first bytes of a file that are NUL, C0 controls or invalid UTF-8."""
    if not head:
        return 0.0
    text = head.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") + len(_CONTROL.findall(text))
    return bad / len(text)


def length_drop_reason(text: str, min_chars: int, max_chars: int) -> str | None:
    """'empty', 'too_short' or 'too_long' when a cleaned document is out of bounds, else None."""
    if not text:
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if max_chars > 0 and len(text) > max_chars:
        return "too_long"
    return None
