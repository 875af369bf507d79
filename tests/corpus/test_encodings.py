"""Input encodings: strict UTF-8 by default, refusing a file in another encoding with the one it
probably is; corpus.encoding to read it; 'auto'; byte-order marks; no silent U+FFFD."""

from __future__ import annotations

import json

import pytest

from glotta.config import CorpusConfig
from glotta.corpus import run_corpus
from glotta.errors import GlottaError
from tests.corpus.real_text import swedish_answers

# Answers that Latin-1 can hold (some have dashes and quotes only cp1252 has).
SWEDISH = "\n\n".join([a for a in swedish_answers() if max(map(ord, a)) < 256][:60])


def _cfg(path, **settings) -> CorpusConfig:
    return CorpusConfig(inputs=[str(path)], valid_fraction=0.1, test_fraction=0.1, **settings)


def _kept(out) -> str:
    return "".join(
        json.loads(line)["text"]
        for split in ("train", "valid", "test")
        for line in (out / f"{split}.jsonl").read_text("utf-8").splitlines()
    )


@pytest.fixture
def latin1_file(tmp_path):
    path = tmp_path / "sv.txt"
    path.write_bytes(SWEDISH.encode("latin-1"))
    return path


def test_a_latin1_file_is_refused_with_file_offset_and_likely_encoding(tmp_path, latin1_file):
    first_bad = next(i for i, byte in enumerate(SWEDISH.encode("latin-1")) if byte > 127)
    with pytest.raises(GlottaError) as info:
        run_corpus(_cfg(latin1_file), tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message
    assert f"{latin1_file} is not utf-8 text" in message
    assert f"the first at byte {first_bad:,}" in message
    assert "it looks like cp1252: set corpus.encoding = 'cp1252'" in message
    assert not (tmp_path / "out" / "COMPLETE.json").exists()


def test_corpus_encoding_latin1_reads_the_file_correctly(tmp_path, latin1_file):
    stats = run_corpus(_cfg(latin1_file, encoding="latin-1"), tmp_path / "out")
    kept = _kept(tmp_path / "out")
    assert "å" in kept and "ä" in kept and "ö" in kept and "\ufffd" not in kept
    assert stats["encodings"] == {str(latin1_file): "iso8859-1"}
    assert stats["replaced_characters"] == {}


def test_auto_detects_the_encoding_and_records_it(tmp_path, latin1_file, caplog):
    utf8 = tmp_path / "en.txt"
    utf8.write_text(SWEDISH, encoding="utf-8")
    cfg = CorpusConfig(inputs=[str(latin1_file), str(utf8)], encoding="auto", dedup=False,
                       valid_fraction=0.1, test_fraction=0.1)  # fmt: skip
    stats = run_corpus(cfg, tmp_path / "out")
    assert stats["encodings"] == {str(latin1_file): "cp1252", str(utf8): "utf-8"}
    assert f"{latin1_file}: read as cp1252" in caplog.text
    assert "\ufffd" not in _kept(tmp_path / "out")


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_byte_order_mark_decides_the_encoding(tmp_path, codec):
    path = tmp_path / "bom.txt"
    path.write_bytes(SWEDISH.replace("\n", "\r\n").encode(codec))  # Windows line ends too
    run_corpus(_cfg(path), tmp_path / "out")
    kept = _kept(tmp_path / "out")
    assert "å" in kept and "\ufffd" not in kept and "\ufeff" not in kept and "\r" not in kept


def test_a_few_undecodable_bytes_are_counted_not_silent(tmp_path):
    path = tmp_path / "cp.txt"
    # 0x81 is undefined in cp1252: one replacement character in a long file is tolerated...
    path.write_bytes(SWEDISH.encode("cp1252") + b"\n\nEtt tecken \x81 saknas i cp1252 h\xe4r.\n")
    stats = run_corpus(_cfg(path, encoding="cp1252"), tmp_path / "out")
    assert stats["replaced_characters"] == {str(path): 1}
    assert stats["invalid_utf8_replaced"] == 1
    # ...and refused when the file allows none.
    with pytest.raises(GlottaError, match=r"cp\.txt is not cp1252 text: 1 of its first"):
        run_corpus(_cfg(path, encoding="cp1252", max_undecodable_fraction=0), tmp_path / "o2")


def test_an_unknown_encoding_is_a_recipe_problem():
    from glotta.recipe import load_recipe
    from glotta.validate import recipe_problems

    recipe = load_recipe("demo", ['corpus.encoding="klingon"'])
    problems = recipe_problems(recipe, stages=())
    assert any(
        p.startswith("corpus.encoding = 'klingon': is not a text encoding") for p in problems
    )
