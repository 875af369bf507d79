"""The tokenizer and pack stages end to end on a small run directory of real text."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from glotta.config import CorpusConfig, PackConfig, TokenizerConfig
from glotta.documents import SPLITS, DocumentWriter
from glotta.errors import GlottaError
from glotta.rundir import MARKER, RunDir, fingerprint, is_complete, mark_complete
from glotta.tokenizer.pack import pack_fingerprint, run_pack
from glotta.tokenizer.shards import open_shard, shard_header
from glotta.tokenizer.stage import run_tokenizer, tokenizer_fingerprint


def write_corpus(run_dir: RunDir, splits: dict[str, list[str]]) -> None:
    """What the corpus stage leaves behind: three JSONL files and its COMPLETE.json."""
    run_dir.corpus.mkdir(parents=True)
    for split in SPLITS:
        with DocumentWriter(run_dir.corpus / f"{split}.jsonl") as writer:
            for text in splits.get(split, []):
                writer.write(text)
    mark_complete(run_dir.corpus, "corpus", fingerprint(CorpusConfig()), {})


@pytest.fixture
def splits(corpus) -> dict[str, list[str]]:
    """Documents of all three languages per split (Japanese trimmed: fewer required characters)."""
    return {
        "train": corpus["sv"]["train"] + corpus["ru"]["train"][:150] + corpus["ja"]["train"][:40],
        "valid": corpus["sv"]["held_out"][:20] + corpus["ru"]["held_out"][:10],
        "test": corpus["ja"]["held_out"][:10] + ["", "  leading spaces\n\nand 🦜\n"],
    }


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_tokenizer_and_pack_stages(tmp_path, splits, kind):
    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    tok_cfg = TokenizerConfig(kind=kind, vocab_size=1000, character_coverage=0.999)
    stats = run_tokenizer(tok_cfg, run_dir)

    assert is_complete(run_dir.tokenizer, tokenizer_fingerprint(tok_cfg, run_dir))
    saved = json.loads((run_dir.tokenizer / "stats.json").read_text())
    assert saved == stats
    assert stats["training_texts"] == len(splits["train"])
    assert stats["fertility"]["split"] == "valid"
    assert stats["fertility"]["documents"] == len(splits["valid"])
    for name in ("tokenizer.json", "tokenizer_config.json", MARKER):
        assert (run_dir.tokenizer / name).is_file()

    pack_cfg = PackConfig(batch_documents=7, threads=1)
    meta = run_pack(pack_cfg, run_dir)
    assert is_complete(run_dir.shards, pack_fingerprint(pack_cfg, run_dir))
    assert json.loads((run_dir.shards / "meta.json").read_text()) == meta
    assert meta["vocab_size"] == 1000 and meta["dtype"] == "uint16" and meta["token_bytes"] == 2
    eos = meta["eos_id"]
    assert eos == stats["eos_id"] == 0
    assert meta["tokens_per_second"] > 0

    tokenizer = Tokenizer.from_file(str(run_dir.tokenizer / "tokenizer.json"))
    for split in SPLITS:
        texts = splits[split]
        info = meta["splits"][split]
        assert info["file"] == f"{split}.bin"
        assert info["documents"] == len(texts)
        assert info["utf8_bytes"] == sum(len(t.encode("utf-8")) for t in texts)
        assert info["characters"] == sum(len(t) for t in texts)
        path = run_dir.shards / info["file"]
        header = shard_header(path)
        assert (header["tokens"], header["documents"]) == (info["tokens"], info["documents"])
        assert (header["vocab_size"], header["eos_id"]) == (1000, eos)
        tokens = np.asarray(open_shard(path))
        # Every document is followed by eos; cutting there gives back every text exactly.
        ends = np.flatnonzero(tokens == eos)
        assert len(ends) == len(texts) and (len(tokens) == 0 or tokens[-1] == eos)
        pieces = np.split(tokens, ends + 1)[:-1]
        assert [tokenizer.decode(p[:-1].tolist()) for p in pieces] == texts
        assert [p[:-1].tolist() for p in pieces] == [tokenizer.encode(t).ids for t in texts]


def test_pack_does_not_depend_on_batch_size(tmp_path, splits):
    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    run_tokenizer(TokenizerConfig(kind="bpe", vocab_size=500), run_dir)
    run_pack(PackConfig(batch_documents=1000), run_dir)
    first = {s: (run_dir.shards / f"{s}.bin").read_bytes() for s in SPLITS}
    run_pack(PackConfig(batch_documents=3), run_dir)
    assert {s: (run_dir.shards / f"{s}.bin").read_bytes() for s in SPLITS} == first


def test_fingerprints_chain_to_upstream_stages(tmp_path, splits):
    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    cfg = TokenizerConfig(kind="bpe", vocab_size=500)
    before = tokenizer_fingerprint(cfg, run_dir)
    assert before != tokenizer_fingerprint(TokenizerConfig(kind="bpe", vocab_size=501), run_dir)
    mark_complete(run_dir.corpus, "corpus", fingerprint(CorpusConfig(min_chars=1)), {})
    assert tokenizer_fingerprint(cfg, run_dir) != before  # a new corpus invalidates the tokenizer


def test_fertility_falls_back_to_train_when_valid_is_empty(tmp_path, splits):
    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, {"train": splits["train"]})
    stats = run_tokenizer(TokenizerConfig(kind="bpe", vocab_size=500), run_dir)
    assert stats["fertility"]["split"] == "train"
    assert stats["fertility"]["documents"] == len(splits["train"])
    meta = run_pack(PackConfig(), run_dir)
    assert meta["splits"]["valid"] == {
        "file": "valid.bin",
        "documents": 0,
        "tokens": 0,
        "utf8_bytes": 0,
        "characters": 0,
    }
    assert len(open_shard(run_dir.shards / "valid.bin")) == 0


def test_pack_without_tokenizer_is_a_glotta_error(tmp_path, splits):
    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    with pytest.raises(GlottaError, match="run `glotta tokenizer` first"):
        run_pack(PackConfig(), run_dir)
    assert not run_dir.shards.exists()


def test_tokenizer_without_corpus_is_a_glotta_error(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    with pytest.raises(GlottaError, match="run `glotta corpus` first"):
        run_tokenizer(TokenizerConfig(), run_dir)
    # An interrupted corpus stage (files but no COMPLETE.json) is not a corpus either.
    run_dir.corpus.mkdir(parents=True)
    (run_dir.corpus / "train.jsonl").write_text('{"text": "hej"}\n')
    with pytest.raises(GlottaError, match="run `glotta corpus` first"):
        run_tokenizer(TokenizerConfig(), run_dir)


def test_bad_pack_settings_are_glotta_errors(tmp_path, splits):
    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    run_tokenizer(TokenizerConfig(kind="bpe", vocab_size=500), run_dir)
    with pytest.raises(GlottaError, match="batch_documents"):
        run_pack(PackConfig(batch_documents=0), run_dir)
    (run_dir.corpus / "test.jsonl").unlink()
    with pytest.raises(GlottaError, match=r"test\.jsonl does not exist"):
        run_pack(PackConfig(), run_dir)


def test_an_encoding_failure_mid_split_leaves_no_shard(tmp_path, splits):
    """Encoding runs on a worker thread: its error must reach the caller, in order, and the
    split's shard must not look written (no final file, no partial left behind)."""
    from glotta.tokenizer.pack import pack_split

    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    run_tokenizer(TokenizerConfig(kind="bpe", vocab_size=500), run_dir)
    real = Tokenizer.from_file(str(run_dir.tokenizer / "tokenizer.json"))

    class FailsOnThirdBatch:  # no encode_batch_fast: pack_split falls back to encode_batch
        calls = 0

        def encode_batch(self, texts, add_special_tokens):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("encoder broke on batch 3")
            return real.encode_batch(texts, add_special_tokens=add_special_tokens)

    target = tmp_path / "train.bin"
    source = run_dir.corpus / "train.jsonl"
    with pytest.raises(RuntimeError, match="batch 3"):
        pack_split(FailsOnThirdBatch(), source, target, 500, 0, batch_documents=5)
    assert not target.exists() and not target.with_name("train.bin.partial").exists()


@pytest.mark.parametrize(
    "damage",
    ['{"text": "ok"}, {"text": "two on a line"}', '{"txt": "no text key"}', '{"text": 5}', "{"],
)
def test_a_damaged_corpus_line_is_named(tmp_path, splits, damage):
    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    run_tokenizer(TokenizerConfig(kind="bpe", vocab_size=500), run_dir)
    source = run_dir.corpus / "train.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines()
    lines[11] = damage
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(GlottaError, match=r"train\.jsonl:12: not a JSON object"):
        run_pack(PackConfig(batch_documents=5), run_dir)
    assert not (run_dir.shards / "train.bin").exists()
    assert not is_complete(run_dir.shards)


def test_worker_processes_write_the_same_shards(tmp_path, splits, monkeypatch):
    """Splits cut into byte ranges and encoded by two worker processes give the shards the
    in-process encoder gives, byte for byte, and the same counts in meta.json."""
    import glotta.tokenizer.pack as pack

    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    run_tokenizer(TokenizerConfig(kind="bpe", vocab_size=500), run_dir)
    here = run_pack(PackConfig(threads=1), run_dir)
    expected = {s: (run_dir.shards / f"{s}.bin").read_bytes() for s in SPLITS}

    monkeypatch.setattr(pack, "WORKERS_FROM_BYTES", 0)  # every non-empty split to the workers
    monkeypatch.setattr(pack, "RANGE_BYTES", 3000)  # many ranges, some cut mid-document
    ranges = pack.line_ranges(run_dir.corpus / "train.jsonl", pack.RANGE_BYTES)
    assert len(ranges) > 10
    encoded_by_workers = []
    encode = pack.EncoderPool.encode

    def spy(self, path, ranges, batch_documents):
        encoded_by_workers.append(path.name)
        yield from encode(self, path, ranges, batch_documents)

    monkeypatch.setattr(pack.EncoderPool, "encode", spy)
    in_workers = run_pack(PackConfig(threads=2, batch_documents=4), run_dir)
    assert encoded_by_workers == [f"{s}.jsonl" for s in SPLITS]
    assert {s: (run_dir.shards / f"{s}.bin").read_bytes() for s in SPLITS} == expected
    assert in_workers["splits"] == here["splits"]


def test_a_damaged_line_in_a_worker_range_is_named(tmp_path, splits, monkeypatch):
    import glotta.tokenizer.pack as pack

    run_dir = RunDir(tmp_path / "run")
    write_corpus(run_dir, splits)
    run_tokenizer(TokenizerConfig(kind="bpe", vocab_size=500), run_dir)
    source = run_dir.corpus / "train.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines()
    lines[150] = '{"text": "cut short'
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(pack, "WORKERS_FROM_BYTES", 0)
    monkeypatch.setattr(pack, "RANGE_BYTES", 5000)
    starts = [start for start, _ in pack.line_ranges(source, pack.RANGE_BYTES)]
    assert sum(len(line.encode()) + 1 for line in lines[:150]) > starts[2]  # not in range 0
    with pytest.raises(GlottaError, match=r"train\.jsonl:151: not a JSON object"):
        run_pack(PackConfig(threads=2, batch_documents=3), run_dir)
    assert not (run_dir.shards / "train.bin").exists()
    assert not is_complete(run_dir.shards)


@pytest.mark.parametrize("range_bytes", [1, 7, 64, 10_000])
@pytest.mark.parametrize("ending", ["\n", ""])
def test_line_ranges_cover_the_file_in_whole_lines(tmp_path, range_bytes, ending):
    from glotta.tokenizer.encode import line_ranges

    lines = [f'{{"text": "{"ä" * (i * 7 % 23)}"}}' for i in range(40)] + ["", "{}"]
    path = tmp_path / "c.jsonl"
    path.write_bytes(("\n".join(lines) + ending).encode("utf-8"))
    data = path.read_bytes()
    ranges = line_ranges(path, range_bytes)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(ranges))
    assert all(start < end for start, end in ranges)
    assert all(data[end - 1 : end] == b"\n" for _, end in ranges[:-1])
    assert b"".join(data[start:end] for start, end in ranges) == data
    assert line_ranges(tmp_path / "c.jsonl", len(data) + 1) == [(0, len(data))]
