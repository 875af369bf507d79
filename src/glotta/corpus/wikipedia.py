"""Wikipedia dumps as corpus inputs, and wikitext -> plain text.

Two readers, both streaming (one page in memory at a time, nothing unpacked to disk):

- ``iter_wikipedia_xml``: MediaWiki XML exports such as ``*-pages-articles.xml.bz2`` and the
  multistream variant (concatenated bz2 streams, which Python's bz2 reads as one stream).
- ``iter_cirrus``: CirrusSearch content dumps (``*-cirrussearch-content.json.gz``): Elasticsearch
  bulk format, an action line ``{"index": ...}`` before each document line.

Only articles come out: other namespaces, redirects and disambiguation pages are yielded as skips
so that the stage counts them. The readers hand over raw wikitext with ``markup='mediawiki'``;
``mediawiki_to_text`` runs later, in the cleaning workers, because converting a page costs far
more than parsing its XML and the reader is a single process.
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

from glotta.corpus.records import RawDocument, decoded_lines, warn_skip
from glotta.errors import GlottaError

_CHUNK = 1 << 20  # bytes fed to the XML parser at a time

# Redirect keywords of some large wikis; the XML export also marks redirects with <redirect>, so
# this list only matters for dumps without that element (and for pasted-in redirect pages).
_REDIRECT = re.compile(
    r"\s*#\s*(?:redirect|omdirigering|weiterleitung|redirection|redirección|rinvia"
    r"|doorverwijzing|patrz|перенаправление|перенапр|転送|リダイレクト|重定向|넘겨주기)",
    re.IGNORECASE,
)
# Disambiguation templates (en, sv, ru, ja, de, fr). A name must end at '|' or '}}': an inline
# {{disambiguation needed}} tag in an article is not a disambiguation page.
_DISAMBIG_NAMES = (
    "disambiguation|disambig|disamb|dab|hndis|geodis|förgrening|gaffel|неоднозначность"
    "|многозначность|aimai|曖昧さ回避|begriffsklärung|homonymie"
)
_DISAMBIG = re.compile(
    rf"\{{\{{\s*(?:(?:template|mall|шаблон|テンプレート)\s*:\s*)?(?:{_DISAMBIG_NAMES})\s*(?:\||\}}\}})"
    r"|__DISAMBIG__",
    re.IGNORECASE,
)
_DISAMBIG_TEMPLATE = re.compile(rf"(?:{_DISAMBIG_NAMES})", re.IGNORECASE)  # CirrusSearch lists


def iter_wikipedia_xml(fh: BinaryIO, source: str) -> Iterator[RawDocument]:
    """Yield one document (or skip) per <page> of a MediaWiki XML export read from ``fh``.

    The text is the raw wikitext of the page's last revision. Elements are cleared once read, so
    memory stays at one page however large the dump. Decompression errors (a truncated .bz2)
    pass through as EOFError/OSError; the caller names the file.
    """
    parser = ET.XMLPullParser(events=("start", "end"))
    root = None
    replaced = False  # whether any invalid UTF-8 has been replaced so far in this file
    latest_text = ""
    try:
        for chunk, bad in _utf8_chunks(fh):
            replaced |= bad
            parser.feed(chunk)
            for event, elem in parser.read_events():
                name = elem.tag.rpartition("}")[2]  # export-0.10, 0.11, ...: ignore the URI
                if event == "start":
                    if root is None:
                        root = elem
                        if name != "mediawiki":
                            raise GlottaError(
                                f"{source} is XML but not a MediaWiki export (its root is "
                                f"<{name}>, not <mediawiki>); check corpus.format"
                            )
                elif name == "revision":
                    # History dumps hold many revisions per page: keep only the text of the
                    # latest (they are in chronological order) and free the rest at once.
                    latest_text = _child_text(elem, "text")
                    elem.clear()
                elif name == "page":
                    yield _page_document(elem, latest_text, source, replaced)
                    latest_text = ""
                    root.clear()  # drop the finished page (and siteinfo) from the tree
        parser.close()
    except ET.ParseError as exc:
        raise GlottaError(
            f"{source} is not well-formed XML ({exc}); re-download it (a cut-off download "
            "ends like this) or remove it from corpus.inputs"
        ) from None


def _utf8_chunks(fh: BinaryIO) -> Iterator[tuple[str, bool]]:
    """Decode ``fh`` in 1 MB pieces: (text, had invalid UTF-8 replaced by U+FFFD).

    The XML parser would stop at the first invalid byte; decoding here turns one bad byte into
    one replaced character instead. Pieces end on a character boundary, so a multi-byte
    character split between two reads is never mistaken for a bad one.
    """
    carry = b""
    while True:
        data = fh.read(_CHUNK)
        buf = carry + data
        cut = len(buf) if not data else _complete_utf8(buf)
        buf, carry = buf[:cut], buf[cut:]
        if buf:
            try:
                yield buf.decode("utf-8"), False
            except UnicodeDecodeError:
                yield buf.decode("utf-8", errors="replace"), True
        if not data:
            return


def _complete_utf8(buf: bytes) -> int:
    """Length of the longest prefix of ``buf`` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(buf)) + 1):
        byte = buf[-back]
        if byte < 0x80:  # ASCII: the buffer ends on a complete character
            return len(buf)
        if byte >= 0xC0:  # lead byte of a sequence this long
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(buf) if back >= need else len(buf) - back
    return len(buf)  # only continuation bytes: invalid anyway, let the decoder replace them


def _child_text(elem: ET.Element, name: str) -> str:
    for child in elem:
        if child.tag.rpartition("}")[2] == name:
            return child.text or ""
    return ""


def _page_document(page: ET.Element, text: str, source: str, replaced: bool) -> RawDocument:
    title, ns, redirect = "", "0", False  # very old exports have no <ns>: treat as articles
    for child in page:
        name = child.tag.rpartition("}")[2]
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            ns = (child.text or "").strip()
        elif name == "redirect":
            redirect = True
    # Only replacement characters on this page count as its replaced bytes.
    bad = (text.count("\ufffd") + title.count("\ufffd")) if replaced else 0
    if ns != "0":
        return RawDocument("", source, skip="not_article", replaced=bad)
    if redirect or _REDIRECT.match(text):
        return RawDocument("", source, skip="redirect", replaced=bad)
    if _DISAMBIG.search(text):
        return RawDocument("", source, skip="disambiguation", replaced=bad)
    return RawDocument(text, source, replaced=bad, markup="mediawiki", title=title)


def iter_cirrus(fh: BinaryIO, source: str, warned: Counter | None = None) -> Iterator[RawDocument]:
    """Yield one document (or skip) per page of a CirrusSearch content dump read from ``fh``.

    Prefers ``source_text`` (wikitext, converted later: it keeps paragraph breaks) over ``text``
    (plain text on one line, kept as is after the title). ``warned`` counts warnings per reason
    across files, as in the other readers.
    """
    warned = Counter() if warned is None else warned
    for number, line, bad in decoded_lines(fh, source):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            warn_skip(warned, "invalid_json", f"{source}:{number}: invalid JSON ({exc})")
            yield RawDocument("", source, skip="invalid_json", replaced=bad)
            continue
        if not isinstance(obj, dict):
            warn_skip(warned, "invalid_json", f"{source}:{number}: not a JSON object")
            yield RawDocument("", source, skip="invalid_json", replaced=bad)
            continue
        if "index" in obj and len(obj) == 1:
            continue  # the bulk-API action line before each document
        title = obj.get("title") if isinstance(obj.get("title"), str) else ""
        if obj.get("namespace", 0) != 0:
            yield RawDocument("", source, skip="not_article", replaced=bad)
        elif any(_is_disambig_template(t) for t in obj.get("template") or ()):
            yield RawDocument("", source, skip="disambiguation", replaced=bad)
        elif isinstance(obj.get("source_text"), str) and obj["source_text"].strip():
            doc = obj["source_text"]
            yield RawDocument(doc, source, replaced=bad, markup="mediawiki", title=title)
        elif isinstance(obj.get("text"), str):
            text = f"{title}\n\n{obj['text']}" if title else obj["text"]
            yield RawDocument(text, source, replaced=bad, title=title)
        else:
            warn_skip(warned, "missing_field", f"{source}:{number}: no 'text' or 'source_text'")
            yield RawDocument("", source, skip="missing_field", replaced=bad)


def _is_disambig_template(name: object) -> bool:
    # "Template:Disambiguation", "Mall:Förgrening", "Шаблон:Неоднозначность"
    return isinstance(name, str) and bool(_DISAMBIG_TEMPLATE.fullmatch(name.rpartition(":")[2]))


# --- wikitext -> text -----------------------------------------------------------------------

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)  # an unclosed comment hides the rest
# Elements whose content is no prose (footnotes, formulas, image galleries, code, layout data).
# Their content may not run past another opening tag of the same name, so a page of unclosed
# <ref>s costs one scan, not one scan to the end of the page per tag.
_DROPPED_TAGS = (
    "ref|references|math|chem|ce|gallery|syntaxhighlight|source|score|timeline|graph|imagemap"
    "|mapframe|maplink|templatedata|templatestyles|includeonly"
)
_DROPPED = re.compile(
    rf"<({_DROPPED_TAGS})\b[^<>]*?(?:/>|>(?:(?!<\1\b).)*?</\1\s*>)", re.DOTALL | re.IGNORECASE
)
# Formatting tags: the tag goes, its text stays. A fixed list, so "x < y" or "<3" in prose stay.
_TAG = re.compile(
    r"</?(?:small|big|sup|sub|span|div|center|font|b|i|u|s|strike|del|ins|em|strong|abbr"
    r"|code|tt|kbd|var|samp|cite|q|p|blockquote|nowiki|poem|pre|onlyinclude|noinclude|section"
    r"|bdi|mark|ruby|rb|rt|rp|hr|wbr|ol|ul|li|dl|dt|dd|table|tr|td|th|caption|time|data"
    r"|h[1-6]|references)\b[^<>]*>",
    re.IGNORECASE,
)
_BR = re.compile(r"<br\b[^<>]*>", re.IGNORECASE)
# "{{", "}}", and table delimiters, which only count at the start of a line ("{|" may be indented).
_BRACES = re.compile(r"\{\{|\}\}|^[ \t:]*\{\||^[ \t]*\|\}", re.MULTILINE)
_BRACKETS = re.compile(r"\[\[|\]\]")
_EXTERNAL = re.compile(r"\[(?:https?:|ftp:|mailto:|//)[^\s\[\]]*(?:[ \t]+([^\[\]\n]*))?\]", re.I)
_QUOTES = re.compile(r"'''''|'''|''")  # bold-italic, bold, italic (4 = apostrophe + bold)
_MAGIC = re.compile(r"__[^\W_a-z][^\Wa-z]{0,40}?__")  # __TOC__, __NOTOC__, __БЕЗ_ОГЛАВЛЕНИЯ__
# Left by removed templates: "Paris ()", "(, born 1900)", "（グロッタがわ、）".
_DANGLING = re.compile(r"([(（])[ \t,;、]+|[ \t,;、]+(?=[)）])")
_EMPTY_PARENS = re.compile(r" ?[(（][)）]")
_SPACES = re.compile(r"[ \t]+")
_HEADING = re.compile(r"(={1,6})(.+?)\1\s*$")
_HR = re.compile(r"-{4,}$")
# Link namespaces that never show as text: files and categories (en, sv, de, fr, es, ru, ja).
_HIDDEN_NAMESPACES = frozenset(
    "file image media category fil bild kategori datei kategorie fichier catégorie archivo "
    "imagen categoría файл изображение медиа категория ファイル 画像 メディア カテゴリ".split()
)
_LANGUAGE_PREFIX = re.compile(r"[a-z]{2,3}(?:-[a-z]+)*")  # [[sv:Glotta]]: an interlanguage link


def mediawiki_to_text(wikitext: str, title: str) -> str:
    """Convert one page of wikitext to ``Title\\n\\nSection\\n\\nParagraph...`` plain text.

    Templates, tables, footnotes, files, categories, formulas and formatting go; link anchors,
    section titles, paragraphs and list items (one per line) stay. Unbalanced markup never
    swallows the rest of a page: an unclosed ``{{`` or ``[[`` is dropped and its text kept.
    """
    text = _COMMENT.sub("", wikitext)
    text = _DROPPED.sub("", text)
    text = _strip_templates(text)
    text = _replace_links(text)
    text = _EXTERNAL.sub(lambda m: m.group(1) or "", text)
    text = _QUOTES.sub("", text)
    text = _BR.sub(" ", text)  # a line break inside a paragraph: a space keeps the words apart
    text = _TAG.sub("", text)
    text = _MAGIC.sub("", text)
    text = html.unescape(text)  # last: "&lt;ref&gt;" written in prose is text, not a tag
    text = _EMPTY_PARENS.sub("", _DANGLING.sub(r"\1", text))
    blocks = _blocks(text)
    title = title.strip()
    return "\n\n".join([title, *blocks] if title else blocks)


def _strip_templates(text: str) -> str:
    """Remove {{templates}} and {| tables |}, nested in each other to any depth, in one pass."""
    # One list of kept pieces per open level; level 0 is the page. A closed level is discarded.
    levels: list[tuple[str, list[str]]] = [("", [])]
    open_count = {"{{": 0, "{|": 0}
    pos = 0
    while m := _BRACES.search(text, pos):
        token = m.group().lstrip(" \t:")
        levels[-1][1].append(text[pos : m.start()])
        pos = m.end()
        if token in open_count:
            levels.append((token, []))
            open_count[token] += 1
            continue
        if token == "|}" and levels[-1][0] == "{{" and text.startswith("}", pos):
            pos -= 1  # "|}}" ending a template parameter: rescan from the "}}"
            continue
        opener = "{{" if token == "}}" else "{|"
        if open_count[opener]:  # else a stray closer: dropped
            # Close the innermost level of this kind, with any unclosed levels inside it.
            while True:
                kind, _ = levels.pop()
                open_count[kind] -= 1
                if kind == opener:
                    break
    levels[-1][1].append(text[pos:])
    # Unclosed at the end of the page: a template's text stays (MediaWiki shows a lone "{{" as
    # text, and a typo must not eat the article), a table's rows go, and so does everything
    # nested in them. Each level's text follows its parent's, so the kept ones simply concatenate.
    kept: list[str] = []
    for kind, pieces in levels:
        if kind == "{|":
            break
        kept.extend(pieces)
    return "".join(kept)


def _replace_links(text: str) -> str:
    """Replace [[links]] by their anchor text; drop files, categories and interlanguage links."""
    levels: list[list[str]] = [[]]  # innermost links first: a file caption may hold links
    pos = 0
    for m in _BRACKETS.finditer(text):
        levels[-1].append(text[pos : m.start()])
        pos = m.end()
        if m.group() == "[[":
            levels.append([])
        elif len(levels) > 1:
            inner = "".join(levels.pop())
            levels[-1].append(_link_text(inner))
        # else a stray "]]": dropped
    levels[-1].append(text[pos:])
    # An unclosed "[[": the bracket goes, its text stays (each level's text follows its parent's).
    return "".join(piece for pieces in levels for piece in pieces)


def _link_text(inner: str) -> str:
    target, pipe, anchor = inner.partition("|")
    target = target.strip()
    if target.startswith(":"):  # [[:Category:X]] is a visible link to a category page
        target = target[1:]
    else:
        prefix, colon, _ = target.partition(":")
        prefix = prefix.strip()
        if colon and (prefix.lower() in _HIDDEN_NAMESPACES or _LANGUAGE_PREFIX.fullmatch(prefix)):
            return ""
    if anchor.strip():
        return anchor
    if pipe:  # the pipe trick: [[Help:Foo (bar)|]] shows "Foo"
        return re.sub(r"\s*\([^()]*\)$", "", target.rpartition(":")[2]).strip()
    return target


def _blocks(text: str) -> list[str]:
    """Group lines into blocks: headings, paragraphs (lines joined), lists (one item a line).

    A heading is kept only if some text follows before the next heading of its level or higher,
    so "References" over a removed {{reflist}} disappears but "History" over "=== Early ===" stays.
    """
    blocks: list[str] = []
    pending: list[tuple[int, str]] = []  # (level, heading) not yet followed by any text
    lines: list[str] = []
    kind = ""

    def end_block() -> None:
        if lines:
            blocks.extend(heading for _, heading in pending)
            pending.clear()
            blocks.append(("\n" if kind == "list" else " ").join(lines))
            lines.clear()

    for raw in text.split("\n"):
        line = _SPACES.sub(" ", raw).strip()
        heading = _HEADING.match(line)
        if not line or _HR.match(line) or heading:
            end_block()
            if heading and heading.group(2).strip(" ="):
                level = len(heading.group(1))
                pending[:] = [h for h in pending if h[0] < level]
                pending.append((level, heading.group(2).strip()))
            continue
        line_kind = "para"
        if line[0] in "*#:;":  # list items and indented lines
            line, line_kind = line.lstrip("*#:; "), "list"
            if not line:
                continue
        if line_kind != kind:
            end_block()
            kind = line_kind
        lines.append(line)
    end_block()
    return blocks
