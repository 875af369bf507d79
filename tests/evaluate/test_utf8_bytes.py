"""Bits per byte divide by the UTF-8 bytes of the documents, not their characters: on Cyrillic
(two bytes a letter) counting characters would nearly double the figure. Evaluated end to end
on the tiny run's exported model (mutation testing found nothing that failed when
``len(text.encode())`` became ``len(text)``)."""

from __future__ import annotations

import math

from glotta.config import EvalConfig
from glotta.evaluate.stage import evaluate_folders

PARAGRAPHS = [
    "Москва — столица России, крупнейший по численности населения город страны.",
    "Он долго бродил по улицам и наконец вернулся домой поздно вечером.",
]


def test_bits_per_byte_counts_utf8_bytes_of_cyrillic_text(tiny_run, tmp_path):
    _, run_dir = tiny_run
    text = tmp_path / "ru.txt"
    text.write_text("\n\n".join(PARAGRAPHS), encoding="utf-8")
    (row,) = evaluate_folders([str(run_dir.export)], text, EvalConfig())
    utf8 = sum(len(p.encode("utf-8")) for p in PARAGRAPHS)
    assert utf8 > 1.5 * sum(map(len, PARAGRAPHS))  # the test means something only if so
    assert row["bytes"] == utf8
    nats = row["loss"] * row["tokens"]
    assert math.isclose(row["bits_per_byte"], nats / math.log(2) / utf8, rel_tol=1e-6)
