"""Wikipedia dumps: XML export (single and multistream bz2), CirrusSearch JSON, wikitext -> text.

Every dump here is built by the test in the real export schema; nothing is downloaded.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import time
from xml.sax.saxutils import escape, quoteattr

import pytest

from glotta.config import CorpusConfig
from glotta.corpus import iter_documents, resolve_inputs
from glotta.corpus.markup import convert_markup
from glotta.corpus.readers import READER_SKIP_REASONS
from glotta.corpus.wikipedia import (
    _utf8_chunks,
    iter_cirrus,
    iter_wikipedia_xml,
    mediawiki_to_text,
)
from glotta.errors import GlottaError

MAIN_WIKITEXT = """\
{{Short description|Fictional river in Sweden}}
{{Infobox river
| name = Glotta
| length = {{convert|42|km|mi}}
| image = [[File:Glotta.jpg|200px]]
}}
'''Glotta''' is a ''river'' in [[Sweden]]<ref name="smhi">{{cite web |url=http://example.org \
|title=Rivers}}</ref> that flows into the [[Baltic Sea|Baltic]].<ref name="smhi" /> It is \
42&nbsp;km long &ndash; see [http://example.org/glotta the official site].[http://example.org]\
<!-- hidden note -->
Its name ({{lang-sv|Glottaån}}) appears in the [[Gesta Danorum]]s.

[[File:Glotta river.jpg|thumb|The river near [[Uppsala]] in [[winter|wintertime]]]]
__TOC__
== History ==
The first bridge was built in 1350.{{citation needed|date=May 2020}}
Salmon &amp; trout live here.<br />Fishing is <small>popular</small>.

=== Bridges ===
{| class="wikitable"
|-
! Name !! Year
|-
| Old bridge || {{circa}} 1350
|}
Notable bridges:
* Old [[bridge]]
** Stone arch
# Numbered item
; Term : Definition

== Geography ==
Its source lies at <math>h = 300</math> 300&nbsp;metres.<sup>[a]</sup>

== See also ==
{{Portal|Rivers}}

== References ==
{{Reflist}}

== External links ==
* [http://example.org Official site]

[[Category:Rivers of Sweden]]
[[sv:Glotta]]
"""

MAIN_TEXT = (
    "Glotta\n\n"
    "Glotta is a river in Sweden that flows into the Baltic. It is 42\xa0km long – see the "
    "official site. Its name appears in the Gesta Danorums.\n\n"
    "History\n\n"
    "The first bridge was built in 1350. Salmon & trout live here. Fishing is popular.\n\n"
    "Bridges\n\n"
    "Notable bridges:\n\n"
    "Old bridge\nStone arch\nNumbered item\nTerm : Definition\n\n"
    "Geography\n\n"
    "Its source lies at 300\xa0metres.[a]\n\n"
    "External links\n\n"
    "Official site"
)

SV_WIKITEXT = """\
{{Infobox vattendrag|namn=Glottaån}}
'''Glottaån''' är en [[å]] i [[Uppland]].<ref>Källa</ref>
== Historia ==
Ån nämns första gången år 1350.
[[Fil:Glottaån.jpg|miniatyr|Ån vid [[Uppsala]]]]
[[Kategori:Vattendrag i Sverige]]
"""
SV_TEXT = "Glottaån\n\nGlottaån är en å i Uppland.\n\nHistoria\n\nÅn nämns första gången år 1350."

JA_WIKITEXT = """\
'''グロッタ川'''（グロッタがわ、{{lang-sv|Glottaån}}）は、[[スウェーデン]]の[[川|河川]]である。
== 歴史 ==
[[ファイル:Glotta.jpg|サムネイル|[[ウプサラ]]付近]]
1350年に最初の橋が架けられた。
{{DEFAULTSORT:ぐろつたがわ}}
[[Category:スウェーデンの河川]]
[[カテゴリ:ヨーロッパの河川]]
"""
JA_TEXT = "グロッタ川\n\nグロッタ川（グロッタがわ）は、スウェーデンの河川である。\n\n歴史\n\n1350年に最初の橋が架けられた。"

# A line emptied by the markup removal ends a paragraph, as in MediaWiki.
BROKEN_WIKITEXT = """\
Stray }} and ]] here.
|}
Start {{outer|{{inner|x}}|y}} middle {{unclosed template
The rest stays [[link|text]] and [[unclosed link to the end

== Section ==
Last paragraph.
"""
BROKEN_TEXT = (
    "Broken\n\nStray and here.\n\nStart middle unclosed template The rest stays text and "
    "unclosed link to the end\n\nSection\n\nLast paragraph."
)

# (title, ns, revision texts (oldest first), redirect target or None)
PAGES = [
    ("Glotta", 0, [MAIN_WIKITEXT], None),
    ("Glotta River", 0, ["#REDIRECT [[Glotta]]"], "Glotta"),
    ("Glottaälven", 0, ["#omdirigering [[Glottaån]]"], None),  # no <redirect> element
    (
        "Glotta (disambiguation)",
        0,
        ["'''Glotta''' may be:\n* [[Glotta]]\n{{Disambiguation}}"],
        None,
    ),
    ("Talk:Glotta", 1, ["Is the river real? ~~~~"], None),
    ("Glottaån", 0, [SV_WIKITEXT], None),
    ("Glottaån (olika betydelser)", 0, ["'''Glottaån''' kan syfta på:\n{{gaffel}}"], None),
    ("グロッタ川", 0, [JA_WIKITEXT], None),
    ("グロッタ", 0, ["'''グロッタ'''\n* [[グロッタ川]]\n{{aimai}}"], None),
    ("Broken", 0, [BROKEN_WIKITEXT], None),
    ("Revised", 0, ["Old text of the page.", "New text of the page."], None),
]
EXPECTED = [
    (None, "Glotta", MAIN_TEXT),
    ("redirect", "", ""),
    ("redirect", "", ""),
    ("disambiguation", "", ""),
    ("not_article", "", ""),
    (None, "Glottaån", SV_TEXT),
    ("disambiguation", "", ""),
    (None, "グロッタ川", JA_TEXT),
    ("disambiguation", "", ""),
    (None, "Broken", BROKEN_TEXT),
    (None, "Revised", "Revised\n\nNew text of the page."),
]


def page_xml(number: int, title: str, ns: int, revisions: list[str], redirect: str | None) -> str:
    parts = [
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{number}</id>\n"
    ]
    if redirect:
        parts.append(f"    <redirect title={quoteattr(redirect)} />\n")
    for rev, text in enumerate(revisions, 1):
        parts.append(
            f"    <revision>\n      <id>{number * 100 + rev}</id>\n"
            "      <timestamp>2024-05-01T12:00:00Z</timestamp>\n"
            "      <contributor>\n        <username>Editor</username>\n        <id>7</id>\n"
            "      </contributor>\n      <comment>edit</comment>\n"
            "      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
            f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
            "      <sha1>0000000000000000000000000000000</sha1>\n    </revision>\n"
        )
    parts.append("  </page>\n")
    return "".join(parts)


def dump_parts(version: str = "0.10") -> tuple[str, list[str], str]:
    """(header with siteinfo, one string per page, footer) of an export in the real schema."""
    ns_uri = f"http://www.mediawiki.org/xml/export-{version}/"
    header = (
        f'<mediawiki xmlns="{ns_uri}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{ns_uri} http://www.mediawiki.org/xml/export-{version}.xsd" '
        f'version="{version}" xml:lang="en">\n'
        "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>enwiki</dbname>\n"
        "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n"
        "    <generator>MediaWiki 1.43.0-wmf.4</generator>\n    <case>first-letter</case>\n"
        "    <namespaces>\n"
        '      <namespace key="-2" case="first-letter">Media</namespace>\n'
        '      <namespace key="0" case="first-letter" />\n'
        '      <namespace key="1" case="first-letter">Talk</namespace>\n'
        '      <namespace key="14" case="first-letter">Category</namespace>\n'
        "    </namespaces>\n  </siteinfo>\n"
    )
    pages = [page_xml(i, *page) for i, page in enumerate(PAGES, 1)]
    return header, pages, "</mediawiki>\n"


def dump_bytes(version: str = "0.10") -> bytes:
    header, pages, footer = dump_parts(version)
    return (header + "".join(pages) + footer).encode("utf-8")


def converted(docs) -> list[tuple[str | None, str, str]]:
    """(skip, title, converted text) per document, as the cleaning workers will see them."""
    out = []
    for d in docs:
        text = convert_markup(d.text, d.markup, d.title) if d.markup else d.text
        out.append((d.skip, d.title, text))
    return out


def read(paths, **kw):
    return list(iter_documents(CorpusConfig(inputs=[str(p) for p in paths], **kw)))


def test_main_article_converted_exactly():
    assert mediawiki_to_text(MAIN_WIKITEXT, "Glotta") == MAIN_TEXT
    assert convert_markup(MAIN_WIKITEXT, "mediawiki", "Glotta") == MAIN_TEXT
    assert convert_markup("x _NEWLINE_ y", "none") == "x _NEWLINE_ y"  # others unchanged


@pytest.mark.parametrize("version", ["0.10", "0.11"])
def test_xml_dump_articles_only(version):
    docs = list(iter_wikipedia_xml(io.BytesIO(dump_bytes(version)), "dump.xml"))
    assert converted(docs) == EXPECTED
    kept = [d for d in docs if d.skip is None]
    assert {d.markup for d in kept} == {"mediawiki"}
    assert not any(d.replaced for d in docs)
    # The reader hands over raw wikitext; conversion is left to the workers.
    assert kept[0].text == MAIN_WIKITEXT


def test_bz2_single_and_multistream_through_auto_detection(tmp_path):
    single = tmp_path / "svwiki-20240501-pages-articles.xml.bz2"
    single.write_bytes(bz2.compress(dump_bytes()))
    # Multistream: siteinfo, then pages in small groups, then the closing tag, each its own stream.
    header, pages, footer = dump_parts()
    streams = [header] + ["".join(pages[i : i + 3]) for i in range(0, len(pages), 3)] + [footer]
    multi = tmp_path / "svwiki-20240501-pages-articles-multistream.xml.bz2"
    multi.write_bytes(b"".join(bz2.compress(s.encode()) for s in streams))
    assert len(streams) > 3
    assert [s.format for s in resolve_inputs(CorpusConfig(inputs=[str(tmp_path)]))] == [
        "wikipedia",
        "wikipedia",
    ]
    for path in (single, multi):
        docs = read([path])
        assert converted(docs) == EXPECTED
        assert {d.source for d in docs} == {str(path)}


def test_skip_reasons_are_counted_reasons():
    assert {"not_article", "redirect", "disambiguation"} <= set(READER_SKIP_REASONS)


@pytest.mark.parametrize(
    "text",
    [
        "#REDIRECT [[A]]",
        "  #redirect[[A]]",
        "#OMDIRIGERING [[A]]",
        "#ПЕРЕНАПРАВЛЕНИЕ [[А]]",
        "#перенаправление [[А]]",
        "#転送 [[A]]",
    ],
)
def test_redirect_keywords(text):
    (doc,) = iter_wikipedia_xml(io.BytesIO(single_page(text)), "d.xml")
    assert doc.skip == "redirect"


@pytest.mark.parametrize(
    ("text", "skip"),
    [
        ("A may be:\n{{disambig}}", "disambiguation"),
        ("A may be:\n{{Dab|date=2020}}", "disambiguation"),
        ("A kan vara:\n{{Förgrening}}", "disambiguation"),
        ("А:\n{{неоднозначность}}", "disambiguation"),
        ("А:\n{{Многозначность|тип=реки}}", "disambiguation"),
        ("A\n{{曖昧さ回避}}", "disambiguation"),
        ("A\n__DISAMBIG__", "disambiguation"),
        ("A is a river.{{disambiguation needed|date=May 2020}} More text.", None),
    ],
)
def test_disambiguation_templates(text, skip):
    (doc,) = iter_wikipedia_xml(io.BytesIO(single_page(text)), "d.xml")
    assert doc.skip == skip


def single_page(text: str) -> bytes:
    header, _, footer = dump_parts()
    return (header + page_xml(1, "A", 0, [text], None) + footer).encode()


def test_truncated_bz2_names_the_file(tmp_path):
    path = tmp_path / "cut-pages-articles.xml.bz2"
    data = bz2.compress(dump_bytes())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GlottaError, match=r"cut-pages-articles\.xml\.bz2 is truncated or corrupt"):
        read([path])


def test_dump_cut_between_streams_is_reported(tmp_path):
    header, pages, _ = dump_parts()
    path = tmp_path / "cut-multistream.xml.bz2"  # complete bz2 streams, but no closing tag
    path.write_bytes(bz2.compress(header.encode()) + bz2.compress("".join(pages).encode()))
    with pytest.raises(GlottaError, match=r"cut-multistream\.xml\.bz2 is not well-formed XML"):
        read([path])


def test_malformed_xml_and_other_xml(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<mediawiki>\n<page><title>A</title></pag>\n</mediawiki>\n")
    with pytest.raises(
        GlottaError, match=r"bad\.xml is not well-formed XML \(mismatched tag: line 2"
    ):
        read([bad])
    rss = tmp_path / "feed.xml"
    rss.write_text("<rss><channel/></rss>")
    with pytest.raises(GlottaError, match=r"feed\.xml is XML but not a MediaWiki export.*<rss>"):
        read([rss])


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    header, _, footer = dump_parts()
    pages = page_xml(1, "Good", 0, ["Clean text here."], None) + page_xml(
        2, "Bad", 0, ["Bad XXXX byte."], None
    )
    data = (header + pages + footer).encode().replace(b"XXXX", b"\xff\xfe")
    path = tmp_path / "latin.xml"
    path.write_bytes(data)
    docs = read([path])
    assert [(d.title, d.text, d.replaced) for d in docs] == [
        ("Good", "Clean text here.", 0),
        ("Bad", "Bad \ufffd\ufffd byte.", 2),
    ]


def test_multibyte_characters_split_between_reads_are_not_replaced(monkeypatch):
    monkeypatch.setattr("glotta.corpus.wikipedia._CHUNK", 3)
    text = "åäö グロッタ 🙂 x" * 3
    chunks = list(_utf8_chunks(io.BytesIO(text.encode())))
    assert "".join(c for c, _ in chunks) == text
    assert not any(bad for _, bad in chunks)


def test_unbalanced_markup_never_hangs():
    started = time.perf_counter()
    for bad in (
        "{{" * 50_000 + "x",
        "[[" * 50_000 + "x",
        "[[a" * 20_000 + "]]" * 20_000,
        "<ref>a " * 30_000,
        "<!--" * 30_000,
        "[http://x a " * 30_000,
        "\n{|" * 30_000,
        "{{a|[[b|{{c}}]]}} <ref>[[x" * 10_000,
    ):
        mediawiki_to_text(bad, "T")
    assert time.perf_counter() - started < 5
    assert mediawiki_to_text("a {{b [[c]] d", "") == "a b c d"
    assert mediawiki_to_text("a\n{|\n| cell\n", "") == "a"  # an unclosed table still goes
    assert mediawiki_to_text("x }} y ]] z", "") == "x y z"  # stray closers go


@pytest.mark.parametrize(
    ("wikitext", "text"),
    [
        ("[[Foo (bar)|]] and [[:Category:Rivers|rivers]]", "Foo and rivers"),
        ("[[Image:A.png|thumb|Caption [[with|link]] [[File:B.png]]]]Text", "Text"),
        ("[[Файл:A.png|мини|Подпись]][[Категория:Реки]]Река", "Река"),
        ("'''''Both''''' and l''''apostrophe'''", "Both and l'apostrophe"),
        ("a<!-- unclosed comment\n\nb", "a"),
        ("x<ref group=n>note [[y]]</ref>, z<references/>", "x, z"),
        ("== Empty ==\n{{Reflist}}\n== Kept ==\n=== Sub ===\nBody", "Kept\n\nSub\n\nBody"),
        ("a &lt;ref&gt; b &#91;c&#93;", "a <ref> b [c]"),
        ("__NOTOC__Hi <gallery>\nA.jpg|x\n</gallery>there", "Hi there"),
        ("<syntaxhighlight lang=c>int x;</syntaxhighlight>Code <code>x</code>", "Code x"),
    ],
)
def test_converter_cases(wikitext, text):
    assert mediawiki_to_text(wikitext, "") == text


def test_cirrus_dump(tmp_path, caplog):
    rows = [
        {"index": {"_type": "page", "_id": "1"}},
        {
            "namespace": 0,
            "title": "Glotta",
            "source_text": "'''Glotta''' is a [[river]].\n\n== History ==\nOld.{{cn}}",
            "text": "Glotta is a river. History Old.",
            "opening_text": "Glotta is a river.",
            "heading": ["History"],
            "template": ["Template:Cn", "Template:Infobox river"],
            "redirect": [{"namespace": 0, "title": "Glotta River"}],
        },
        {"index": {"_id": "2"}},
        {"namespace": 0, "title": "Glottaån", "text": "Glottaån är en å.", "template": []},
        {"index": {"_type": "page", "_id": "3"}},
        {
            "namespace": 0,
            "title": "Glotta (disambiguation)",
            "text": "Glotta may refer to",
            "template": ["Template:Dmbox", "Template:Disambiguation"],
        },
        {"index": {"_type": "page", "_id": "4"}},
        {"namespace": 14, "title": "Category:Rivers", "text": "Rivers."},
        {"index": {"_type": "page", "_id": "5"}},
        {"namespace": 0, "title": "No text"},
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines.insert(8, "{broken")
    path = tmp_path / "svwiki-20240501-cirrussearch-content.json.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    docs = read([path], format="cirrus")
    assert converted(docs) == [
        (None, "Glotta", "Glotta\n\nGlotta is a river.\n\nHistory\n\nOld."),
        (None, "Glottaån", "Glottaån\n\nGlottaån är en å."),
        ("disambiguation", "", ""),
        ("not_article", "", ""),
        ("invalid_json", "", ""),
        ("missing_field", "", ""),
    ]
    assert [d.markup for d in docs[:2]] == ["mediawiki", None]
    assert "cirrussearch-content.json.gz:9: invalid JSON" in caplog.text
    # Read directly too, as a library function.
    with gzip.open(path) as fh:
        assert len(list(iter_cirrus(fh, str(path)))) == 6
