"""The corpus stage end to end: outputs, stats.json, marker, failures that leave no output."""

from __future__ import annotations

import gzip
import json

import pytest

from glotta.config import CorpusConfig
from glotta.corpus import DROP_REASONS, run_corpus
from glotta.corpus.settings import corpus_identity
from glotta.documents import SPLITS, read_documents
from glotta.errors import GlottaError
from glotta.rundir import MARKER, is_complete, stage_fingerprint


def write_jsonl(path, texts):
    path.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), "utf-8"
    )


@pytest.fixture
def corpus_file(tmp_path):
    texts = [f"Документ номер {i}: немного текста." for i in range(300)]
    texts += ["short", "", "Документ номер 5: немного текста.", "Документ номер 7: немного текста."]
    path = tmp_path / "in.jsonl"
    write_jsonl(path, texts)
    with open(path, "a", encoding="utf-8") as f:
        f.write("{broken\n")
    return path


def test_stage_outputs_stats_and_marker(tmp_path, corpus_file, capsys):
    cfg = CorpusConfig(inputs=[str(corpus_file)], valid_fraction=0.1, test_fraction=0.1)
    out = tmp_path / "corpus"
    stats = run_corpus(cfg, out)

    on_disk = json.loads((out / "stats.json").read_text("utf-8"))
    assert on_disk == stats
    assert set(stats) == {
        "inputs",
        "documents_in",
        "bytes_in",
        "documents_out",
        "bytes_out",
        "splits",
        "dropped",
        "invalid_utf8_replaced",
        "replaced_characters",
        "encoding",
        "encodings",
        "max_documents_reached",
        "files",
        "elapsed_seconds",
        "events",
        "near_dedup",
        "executor",
        "workers",
    }
    assert stats["documents_in"] == 305
    assert stats["dropped"] == {
        **dict.fromkeys(DROP_REASONS, 0),
        "invalid_json": 1,
        "empty": 1,
        "too_short": 1,
        "duplicate": 2,
    }
    assert stats["documents_out"] == 300
    assert stats["documents_in"] == stats["documents_out"] + sum(stats["dropped"].values())
    assert stats["files"] == {str(corpus_file): 305}

    kept = []
    for split in SPLITS:
        texts = list(read_documents(out / f"{split}.jsonl"))
        assert stats["splits"][split]["documents"] == len(texts)
        assert stats["splits"][split]["bytes"] == sum(len(t.encode()) for t in texts)
        kept += texts
    assert sorted(kept) == sorted({f"Документ номер {i}: немного текста." for i in range(300)})
    assert stats["splits"]["valid"]["documents"] > 10 and stats["splits"]["test"]["documents"] > 10

    # the marker is written last and matches this config
    assert is_complete(out, stage_fingerprint(corpus_identity(cfg)))
    marker_time = (out / MARKER).stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= marker_time for p in out.iterdir())
    assert json.loads((out / MARKER).read_text())["summary"]["train_documents"] > 200
    assert not list(out.glob("*.partial"))
    assert "dropped 5: duplicate 2" in capsys.readouterr().err

    # same input, same split
    again = run_corpus(cfg, tmp_path / "again")
    assert again["splits"] == stats["splits"]
    assert (tmp_path / "again" / "test.jsonl").read_bytes() == (out / "test.jsonl").read_bytes()


def test_empty_splits_exist_and_max_documents(tmp_path, corpus_file):
    cfg = CorpusConfig(
        inputs=[str(corpus_file)], valid_fraction=0, test_fraction=0, max_documents=50
    )
    stats = run_corpus(cfg, tmp_path / "c")
    assert stats["documents_in"] == 50 and stats["max_documents_reached"]
    assert stats["splits"]["train"]["documents"] == 50
    assert (tmp_path / "c" / "valid.jsonl").read_text() == ""
    assert (tmp_path / "c" / "test.jsonl").read_text() == ""


def test_invalid_utf8_counted_in_stats(tmp_path):
    path = tmp_path / "a.txt.gz"
    path.write_bytes(
        gzip.compress(b"A fine paragraph of text.\n\nBroken \xff bytes in this one.\n")
    )
    stats = run_corpus(
        CorpusConfig(
            inputs=[str(path)], valid_fraction=0, test_fraction=0, max_undecodable_fraction=0.1
        ),
        tmp_path / "c",
    )
    assert stats["invalid_utf8_replaced"] == 1
    assert stats["replaced_characters"] == {str(path): 1}
    texts = list(read_documents(tmp_path / "c" / "train.jsonl"))
    texts += list(read_documents(tmp_path / "c" / "valid.jsonl"))
    assert "Broken \ufffd bytes in this one." in texts


def test_empty_after_cleaning_fails_and_leaves_nothing(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("ab\n\ncd\n\nef\n", encoding="utf-8")
    out = tmp_path / "corpus"
    # a finished earlier run must not survive next to the failed one
    (tmp_path / "ok.txt").write_text("A long enough paragraph of text for the corpus.")
    run_corpus(
        CorpusConfig(inputs=[str(tmp_path / "ok.txt")], valid_fraction=0, test_fraction=0), out
    )
    assert (out / MARKER).exists()

    with pytest.raises(GlottaError) as info:
        run_corpus(CorpusConfig(inputs=[str(path)]), out)
    message = str(info.value)
    assert "tiny.txt" in message and "too_short 3" in message and "corpus.min_chars" in message
    assert "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == []


def test_truncated_input_midway_leaves_no_output(tmp_path):
    data = "".join(f"Paragraph number {i} with words.\n\n" for i in range(20000)).encode()
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(gzip.compress(data)[:-2000])
    out = tmp_path / "corpus"
    with pytest.raises(GlottaError, match=r"cut\.txt\.gz is truncated"):
        run_corpus(CorpusConfig(inputs=[str(path)]), out)
    assert list(out.iterdir()) == []


def test_config_errors_before_any_output(tmp_path):
    out = tmp_path / "corpus"
    with pytest.raises(GlottaError, match="corpus.valid_fraction"):
        run_corpus(CorpusConfig(inputs=["x.txt"], valid_fraction=1.5), out)
    with pytest.raises(GlottaError, match="does not exist"):
        run_corpus(CorpusConfig(inputs=[str(tmp_path / "x.txt")]), out)
    with pytest.raises(GlottaError, match="corpus.max_chars"):
        run_corpus(CorpusConfig(inputs=["x.txt"], min_chars=50, max_chars=10), out)
    assert not out.exists()


def test_real_russian_corpus_from_package(tmp_path):
    cfg = CorpusConfig(
        inputs=["pkg://rl_wsd_labeled/verbs/RuTenTen/*.txt"], format="tsv", tsv_columns=[0, 1, 2]
    )
    stats = run_corpus(cfg, tmp_path / "c")
    assert stats["splits"]["train"]["documents"] > 1000
    assert len(stats["files"]) > 5
    first = next(read_documents(tmp_path / "c" / "train.jsonl"))
    assert sum("\u0400" <= ch <= "\u04ff" for ch in first) > 10


def test_wiki40b_markup_in_stage(tmp_path):
    article = "\n_START_ARTICLE_\nMalmö\n_START_PARAGRAPH_\nEn stad i Skåne._NEWLINE_Vid Öresund."
    write_jsonl(tmp_path / "w.jsonl", [article])
    cfg = CorpusConfig(
        inputs=[str(tmp_path / "w.jsonl")], markup="wiki40b", valid_fraction=0, test_fraction=0
    )
    run_corpus(cfg, tmp_path / "c")
    texts = [t for s in ("train", "valid") for t in read_documents(tmp_path / "c" / f"{s}.jsonl")]
    assert texts == ["Malmö\n\nEn stad i Skåne.\nVid Öresund."]
