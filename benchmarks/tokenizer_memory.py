"""Peak memory of tokenizer training on one huge one-line document, before and after splitting.

    python -m benchmarks.tokenizer_memory                 # 50 MB document (took 7.4 GB whole)
    python -m benchmarks.tokenizer_memory --size-mb 5     # smoke run

HF tokenizers' trainers pre-tokenize each text whole and keep every split with its offsets; one
50 MB line took 7.4 GB. So glotta feeds the trainer pieces of at most
``glotta.tokenizer.train.TRAINING_PIECE_CHARS`` characters. Both ways run side by side here, each
in its own process (peak RSS from ``getrusage`` of that process): 'whole' sets the piece size so
large that nothing is cut (the trainer's own behaviour). The document is the real Russian contexts of
the ``rl-wsd-labeled`` package joined into one line and repeated up to the size (repeated text:
only memory is measured, not quality).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    emit_json_line,
    format_table,
    hardware_info,
    hardware_slug,
    measure_command,
    results_path,
    write_results,
)


def _document(size_mb: float) -> str:
    import importlib.util

    root = Path(importlib.util.find_spec("rl_wsd_labeled").submodule_search_locations[0])
    text = " ".join(
        " ".join(p.read_text(encoding="utf-8").split()) for p in sorted(root.rglob("*.txt"))
    )
    target = int(size_mb * 1e6)
    repeats = target // len(text.encode("utf-8")) + 1
    return (" ".join([text] * repeats)).encode("utf-8")[:target].decode("utf-8", "ignore")


def _train(document_file: str, mode: str, vocab_size: int) -> None:
    """Child process: train a BPE tokenizer on the one document."""
    from glotta.config import TokenizerConfig
    from glotta.tokenizer import train as train_module

    if mode == "whole":
        train_module.TRAINING_PIECE_CHARS = 10**12  # nothing is cut: the behaviour before
    text = Path(document_file).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as out:
        cfg = TokenizerConfig(vocab_size=vocab_size)
        stats = train_module.train_tokenizer(cfg, [text], Path(out))
    print(json.dumps({"vocab_size": stats["vocab_size"]}), file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=50.0, help="Document size (UTF-8 MB).")
    parser.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary size.")
    parser.add_argument("--child", nargs=2, metavar=("FILE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _train(args.child[0], args.child[1], args.vocab_size)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        document = Path(tmp) / "document.txt"
        text = _document(args.size_mb)
        document.write_text(text, encoding="utf-8")
        size = document.stat().st_size
        for mode in ("whole", "pieces"):
            command = [sys.executable, "-m", "benchmarks.tokenizer_memory", "--vocab-size",
                       str(args.vocab_size), "--child", str(document), mode]  # fmt: skip
            result = measure_command(command, Path(tmp) / f"{mode}.json")
            rows.append({"mode": mode, "peak_rss_mib": result["peak_rss_mib"],
                         "wall_seconds": result["wall_seconds"]})  # fmt: skip
    hardware = hardware_info()
    record = {
        "bench": "tokenizer_memory",
        "document_bytes": size,
        "document_lines": 1,
        "text": "rl-wsd-labeled Russian contexts joined into one line and repeated",
        "vocab_size": args.vocab_size,
        "rows": rows,
        "memory_ratio_whole_over_pieces": round(
            rows[0]["peak_rss_mib"] / rows[1]["peak_rss_mib"], 2
        ),
        "hardware": hardware,
    }
    path = results_path("tokenizer-memory", f"{args.size_mb:g}mb-bpe-v{args.vocab_size}",
                        hardware_slug(hardware))  # fmt: skip
    write_results(path, record)
    print(format_table(rows, [("mode", "mode"), ("peak_rss_mib", "peak RSS (MiB)"),
                              ("wall_seconds", "seconds")]), file=sys.stderr)  # fmt: skip
    print(f"results: {path}", file=sys.stderr)
    emit_json_line(record)


if __name__ == "__main__":
    main()
