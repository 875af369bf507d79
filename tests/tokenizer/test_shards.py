"""Token shard files: header, token width, count patching, eos between documents, bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from glotta.errors import GlottaError
from glotta.tokenizer.shards import (
    HEADER_BYTES,
    MAGIC,
    ShardWriter,
    open_shard,
    shard_header,
    token_dtype,
)


def test_token_width_follows_vocab_size():
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 still fit
    assert token_dtype(65537) == np.uint32
    with pytest.raises(ValueError):
        token_dtype(0)


@pytest.mark.parametrize("vocab_size, dtype", [(65536, np.uint16), (65537, np.uint32)])
def test_header_counts_and_eos_between_documents(tmp_path, vocab_size, dtype):
    path = tmp_path / "train.bin"
    eos = 7
    documents = [[1, 2, 3], [], [vocab_size - 1, 0], np.array([4, 5])]
    with ShardWriter(path, vocab_size, eos_id=eos) as writer:
        writer.write_documents(documents[:2])
        assert not path.exists()  # written as train.bin.partial until closed
        writer.write_document(documents[2])
        writer.write_document(documents[3])
    header = shard_header(path)
    assert header == {
        "version": 1,
        "token_bytes": np.dtype(dtype).itemsize,
        "dtype": np.dtype(dtype).name,
        "tokens": 11,
        "documents": 4,
        "vocab_size": vocab_size,
        "eos_id": eos,
        "header_bytes": HEADER_BYTES,
    }
    tokens = open_shard(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == dtype
    assert tokens.tolist() == [1, 2, 3, eos, eos, vocab_size - 1, 0, eos, 4, 5, eos]
    raw = path.read_bytes()
    assert raw[:8] == MAGIC and len(raw) == HEADER_BYTES + 11 * np.dtype(dtype).itemsize
    assert struct.unpack_from("<QQ", raw, 16) == (11, 4)  # patched on close
    assert not (tmp_path / "train.bin.partial").exists()


def test_ids_outside_the_vocabulary_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        with ShardWriter(tmp_path / "x.bin", 100, eos_id=0) as writer:
            writer.write_document([5, 100])
    assert list(tmp_path.iterdir()) == []  # aborted: no partial, no final file


def test_exception_aborts_and_keeps_the_old_shard(tmp_path):
    path = tmp_path / "valid.bin"
    with ShardWriter(path, 1000, eos_id=0) as writer:
        writer.write_document([1, 2])
    with pytest.raises(RuntimeError):
        with ShardWriter(path, 1000, eos_id=0) as writer:
            writer.write_document([3, 4, 5])
            raise RuntimeError("interrupted")
    assert open_shard(path).tolist() == [1, 2, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["valid.bin"]


def test_empty_shard(tmp_path):
    path = tmp_path / "test.bin"
    with ShardWriter(path, 1000, eos_id=0):
        pass
    assert shard_header(path)["tokens"] == 0
    assert len(open_shard(path)) == 0


def test_corrupt_files_give_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.bin"
    with ShardWriter(good, 1000, eos_id=0) as writer:
        writer.write_document(list(range(10)))
    data = good.read_bytes()

    bad_magic = tmp_path / "bad_magic.bin"
    bad_magic.write_bytes(b"NOTTOKS\0" + data[8:])
    with pytest.raises(GlottaError, match=r"bad_magic\.bin is not a glotta token shard"):
        open_shard(bad_magic)

    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[:-2])
    with pytest.raises(GlottaError, match=r"truncated\.bin is truncated or corrupt"):
        open_shard(truncated)

    short = tmp_path / "short.bin"
    short.write_bytes(data[:20])
    with pytest.raises(GlottaError, match=r"short\.bin is not a glotta token shard"):
        open_shard(short)

    future = tmp_path / "future.bin"
    future.write_bytes(data[:8] + struct.pack("<I", 99) + data[12:])
    with pytest.raises(GlottaError, match="version 99"):
        open_shard(future)

    with pytest.raises(GlottaError, match=r"missing\.bin does not exist"):
        open_shard(tmp_path / "missing.bin")
