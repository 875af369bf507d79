"""The document files that flow between stages: JSONL, one ``{"text": ...}`` object per line.

The corpus stage writes them; the tokenizer, pack and eval stages read them. Writing goes to
``NAME.partial`` and is renamed on ``close()``, so a crash never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from glotta.diskwrite import writing

SPLITS = ("train", "valid", "test")


def read_documents(path: Path) -> Iterator[str]:
    """Yield the texts of a document file written by :class:`DocumentWriter` (streaming)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


class DocumentWriter:
    """Append documents to ``path`` atomically: the file appears under its name only on close()."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._file = open(self._partial, "w", encoding="utf-8")
        self.documents = 0
        self.bytes = 0

    def write(self, text: str) -> None:
        with writing(self._partial):
            self._file.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        self.documents += 1
        self.bytes += len(text.encode("utf-8"))

    def close(self) -> None:
        with writing(self._partial):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> DocumentWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
