"""Readers: formats, compression, input resolution, invalid input, streaming."""

from __future__ import annotations

import bz2
import gzip
import inspect
import json
import sys
import tracemalloc
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from glotta.config import CorpusConfig
from glotta.corpus import iter_documents, resolve_inputs, wiki40b_to_text
from glotta.errors import GlottaError


def read(inputs, **kw):
    return list(iter_documents(CorpusConfig(inputs=[str(i) for i in inputs], **kw)))


def texts(inputs, **kw):
    return [d.text for d in read(inputs, **kw) if d.skip is None]


TXT = "First line\nsecond line\n\n\n  \nSecond paragraph\n\nThird\n"


def test_txt_paragraphs_lines_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(TXT, encoding="utf-8")
    assert texts([path]) == ["First line\nsecond line", "Second paragraph", "Third"]
    assert texts([path], txt_documents="lines") == [
        "First line",
        "second line",
        "Second paragraph",
        "Third",
    ]
    assert texts([path], txt_documents="file") == [TXT.rstrip("\n")]


def test_txt_paragraph_far_beyond_max_chars_is_skipped_not_buffered(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x" * 100 + "\n" + "y" * 10 + "\n\nshort one\n", encoding="utf-8")
    docs = read([path], max_chars=20)
    assert [(d.skip, d.text) for d in docs] == [("too_long", ""), (None, "short one")]


def test_jsonl_text_fields_and_skips(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    lines = [
        json.dumps({"q": "Fråga?", "a": "Svar."}, ensure_ascii=False),
        "",
        "{not json",
        json.dumps({"q": "only a question"}),
        json.dumps({"q": "numbers", "a": 3}),
        json.dumps(["not", "an", "object"]),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs = read([path], text_fields=["q", "a"])
    assert [(d.skip, d.text) for d in docs] == [
        (None, "Fråga?\nSvar."),
        ("invalid_json", ""),
        ("missing_field", ""),
        ("missing_field", ""),
        ("missing_field", ""),
    ]
    assert "a.jsonl:3: invalid JSON" in caplog.text
    assert "a.jsonl:4: no string field(s) ['q', 'a']" in caplog.text


def test_json_array_file_is_reported(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n{"text": "a"}\n]\n')
    with pytest.raises(GlottaError, match="JSON array"):
        read([path])


def test_parquet_batches_fields_and_missing_column(tmp_path):
    path = tmp_path / "a.parquet"
    n = 2500  # more than one 1024-row batch
    table = pa.table(
        {
            "title": [f"T{i}" for i in range(n)],
            "body": [f"body {i}" if i != 7 else None for i in range(n)],
            "id": list(range(n)),
        }
    )
    pq.write_table(table, path, row_group_size=1000)
    docs = read([path], text_fields=["title", "body"])
    assert len(docs) == n
    assert docs[0].text == "T0\nbody 0"
    assert docs[7].skip == "missing_field"
    assert docs[-1].text == f"T{n - 1}\nbody {n - 1}"
    with pytest.raises(GlottaError, match=r"a\.parquet has no column 'text'.*title, body, id"):
        read([path])


def test_tsv_columns_concatenated(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("Он\t видел\t дом.\t1\nonly one column\n\nА\t б\t в\t2\n", encoding="utf-8")
    docs = read([path], tsv_columns=[0, 1, 2])
    assert [(d.skip, d.text) for d in docs] == [
        (None, "Он видел дом."),
        ("bad_tsv_row", ""),
        (None, "А б в"),
    ]


def write_compressed(path, data: bytes):
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".bz2":
        path.write_bytes(bz2.compress(data))
    else:  # two zstd frames, as `cat a.zst b.zst` gives
        half = len(data) // 2
        c = zstandard.ZstdCompressor()
        path.write_bytes(c.compress(data[:half]) + c.compress(data[half:]))


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zst"])
def test_compressed_roundtrip(tmp_path, suffix):
    rows = [{"text": f"документ {i} " + "слово " * (i % 50)} for i in range(3000)]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path = tmp_path / f"a.jsonl{suffix}"
    write_compressed(path, data)
    assert texts([path]) == [r["text"] for r in rows]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zst"])
def test_truncated_compressed_file_names_the_file(tmp_path, suffix):
    data = "".join(f"line {i} with some text\n" for i in range(20000)).encode()
    path = tmp_path / f"broken.txt{suffix}"
    write_compressed(path, data)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(GlottaError, match=r"broken\.txt.* is truncated or corrupt.*re-download"):
        read([path], txt_documents="lines")


def test_invalid_utf8_is_replaced_and_counted_below_the_limit(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"good line\nbad \xff\xfe line\n\xef\xbb\xbfnot a bom here\n")
    docs = read([path], txt_documents="lines", max_undecodable_fraction=1.0)
    assert [d.text for d in docs] == ["good line", "bad \ufffd\ufffd line", "\ufeffnot a bom here"]
    assert [d.replaced for d in docs] == [0, 2, 0]


def test_bom_at_start_is_dropped(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfHej\n")
    assert texts([path]) == ["Hej"]


def test_wiki40b_markup_exact():
    raw = (
        "\n_START_ARTICLE_\nStockholm\n_START_SECTION_\nHistoria\n_START_PARAGRAPH_\n"
        "Staden grundades._NEWLINE_Den växte snabbt.\n_START_PARAGRAPH_\nAndra stycket."
        "\n_START_SECTION_\nGeografi\n_START_PARAGRAPH_\nVid Mälaren.\n"
    )
    assert wiki40b_to_text(raw) == (
        "Stockholm\n\nHistoria\n\nStaden grundades.\nDen växte snabbt.\n\nAndra stycket."
        "\n\nGeografi\n\nVid Mälaren."
    )


def test_unknown_extension_and_missing_inputs(tmp_path):
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(GlottaError, match=r"notes\.md.*set corpus\.format"):
        read([tmp_path / "notes.md"])
    assert texts([tmp_path / "notes.md"], format="txt") == ["hello"]
    with pytest.raises(GlottaError, match=r"missing\.txt' does not exist"):
        read([tmp_path / "missing.txt"])
    with pytest.raises(GlottaError, match="matches no files"):
        read([tmp_path / "*.jsonl"])
    with pytest.raises(GlottaError, match="corpus.inputs is empty"):
        read([])


def test_directories_globs_hidden_and_overlap(tmp_path):
    (tmp_path / "b" / ".git").mkdir(parents=True)
    (tmp_path / "b" / ".git" / "x.txt").write_text("hidden dir")
    (tmp_path / "b" / ".hidden.txt").write_text("hidden file")
    (tmp_path / "b" / "two.txt").write_text("two")
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b" / "c").mkdir()
    (tmp_path / "b" / "c" / "three.txt.gz").write_bytes(gzip.compress(b"three"))
    assert texts([tmp_path]) == ["one", "two", "three"]
    # ** recurses; a file named twice is read once
    assert texts([tmp_path / "**" / "*.txt*", tmp_path / "a.txt"]) == ["one", "three", "two"]


def test_pkg_inputs_read_real_russian_tsv():
    cfg = dict(format="tsv", tsv_columns=[0, 1, 2])
    docs = read(["pkg://rl_wsd_labeled/verbs/RuTenTen/*.txt"], **cfg)
    good = [d.text for d in docs if d.skip is None]
    assert len(good) > 1000
    assert len({d.source for d in docs}) > 5
    cyrillic = sum("\u0400" <= ch <= "\u04ff" for ch in "".join(good[:100]))
    assert cyrillic > 2000
    # left context + " word" + " right context" reads as one sentence
    assert any(" атаковал" in t for t in good)


def test_pkg_errors():
    with pytest.raises(GlottaError, match=r"pip install no-such-package-xyz"):
        read(["pkg://no_such_package_xyz/*.txt"])
    with pytest.raises(GlottaError, match="matches no files"):
        read(["pkg://rl_wsd_labeled/nowhere/*.txt"])


def test_iter_documents_streams(tmp_path):
    # A large gzip whose end is cut off: taking the first document must not read that far.
    data = "".join(f"line {i} " + "word " * 20 + "\n" for i in range(200_000)).encode()
    path = tmp_path / "big.txt.gz"
    path.write_bytes(gzip.compress(data, compresslevel=1)[:-1000])
    docs = iter_documents(CorpusConfig(inputs=[str(path)], txt_documents="lines"))
    assert inspect.isgenerator(docs)
    assert next(docs).text.startswith("line 0 word")
    docs.close()


def test_memory_does_not_grow_with_corpus_size(tmp_path):
    data = "".join(f"{i} " + "ord " * 30 + "\n\n" for i in range(60_000)).encode()  # ~8 MB
    path = tmp_path / "big.txt.zst"
    path.write_bytes(zstandard.ZstdCompressor(level=1).compress(data))
    tracemalloc.start()
    n = sum(1 for _ in iter_documents(CorpusConfig(inputs=[str(path)])))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 60_000
    assert peak < 4_000_000, f"peak {peak} bytes for {len(data)} bytes of text"


def test_hf_streaming_glue(monkeypatch):
    calls = []

    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{"text": f"{split} doc", "id": 1}, {"other": "x"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    cfg = CorpusConfig(hf_dataset="wiki40b", hf_config="sv", hf_splits=["train", "test"])
    docs = list(iter_documents(cfg))
    assert calls == [("wiki40b", "sv", "train", True), ("wiki40b", "sv", "test", True)]
    assert [(d.text, d.skip, d.source) for d in docs] == [
        ("train doc", None, "hf://wiki40b/sv/train"),
        ("", "missing_field", "hf://wiki40b/sv/train"),
        ("test doc", None, "hf://wiki40b/sv/test"),
        ("", "missing_field", "hf://wiki40b/sv/test"),
    ]


def test_hf_without_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(GlottaError, match=r"pip install 'glotta\[hf\]'"):
        list(iter_documents(CorpusConfig(hf_dataset="wiki40b")))
    with pytest.raises(GlottaError, match="not both"):
        resolve_inputs(CorpusConfig(hf_dataset="wiki40b", inputs=["a.txt"]))
    with pytest.raises(GlottaError, match="needs corpus.hf_dataset"):
        resolve_inputs(CorpusConfig(format="hf"))
