"""Turn corpus-specific markup into plain text with paragraph breaks.

wiki40b stores an article as marker lines followed by content lines::

    \\n_START_ARTICLE_\\nTitle\\n_START_SECTION_\\nHistory\\n_START_PARAGRAPH_\\nLine one_NEWLINE_line two

We keep the structure a language model should see: the title, each section title and each
paragraph become blocks separated by a blank line, and ``_NEWLINE_`` becomes a line break. (The
Swedish wiki40b seed joined everything with spaces, which loses every paragraph boundary.)
"""

from __future__ import annotations

from glotta.corpus.wikipedia import mediawiki_to_text

WIKI40B_MARKERS = frozenset({"_START_ARTICLE_", "_START_SECTION_", "_START_PARAGRAPH_"})


def wiki40b_to_text(text: str) -> str:
    """Convert one wiki40b article to ``Title\\n\\nSection\\n\\nParagraph...`` plain text."""
    blocks = []
    for line in text.split("\n"):
        line = line.strip()
        if line and line not in WIKI40B_MARKERS:
            blocks.append("\n".join(part.strip() for part in line.split("_NEWLINE_")))
    return "\n\n".join(blocks)


def convert_markup(text: str, markup: str, title: str = "") -> str:
    """Apply a markup ('none', 'wiki40b', or 'mediawiki' from Wikipedia dumps) to one document.

    ``title`` is used by 'mediawiki' only (wiki40b keeps its title inside the text).
    """
    if markup == "wiki40b":
        return wiki40b_to_text(text)
    if markup == "mediawiki":
        return mediawiki_to_text(text, title)
    return text
