"""Stream raw documents from files (txt, jsonl, parquet, tsv, Wikipedia dumps) or the HF hub.

Everything here is a generator that holds one line, one paragraph or one Parquet batch at a time,
so memory does not depend on corpus size. Records the reader cannot turn into a document (a broken
JSON line, a short TSV row) are yielded too, with ``skip`` set to the reason, so the stage counts
every input record and the user can see why their corpus shrank (datatrove's drop counters).

    >>> for doc in iter_documents(CorpusConfig(inputs=["pkg://rl_wsd_labeled/**/*.txt"],
    ...                                         format="tsv", tsv_columns=[0, 1, 2])):
    ...     print(doc.text)
"""

from __future__ import annotations

import contextlib
import json
import logging
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from glotta.config import CorpusConfig
from glotta.corpus.clean import BINARY_FILE_SHARE, binary_share
from glotta.corpus.encoding import HEAD_BYTES, Encoding, FileDecoder, choose_encoding
from glotta.corpus.inputs import Source, open_binary, resolve_inputs
from glotta.corpus.records import RawDocument, warn_skip
from glotta.errors import GlottaError

log = logging.getLogger(__name__)

# Records a reader counts instead of yielding text, with what to do when they are all there is.
READER_SKIP_REASONS = {
    "invalid_json": "check that the files are JSON Lines (one object per line)",
    "missing_field": "set corpus.text_fields to the field that holds the text",
    "bad_tsv_row": "check corpus.tsv_columns against the files' columns",
    # Wikipedia dumps: a page outside namespace 0 (talk, user, category...)
    "not_article": "the dump holds no articles in namespace 0; use a *-pages-articles* dump",
    "redirect": "the dump holds only redirect pages; use a *-pages-articles* dump",
    "disambiguation": "the dump holds only disambiguation pages; use a *-pages-articles* dump",
}


def iter_documents(cfg: CorpusConfig) -> Iterator[RawDocument]:
    """Resolve the inputs now (errors surface at once) and return a lazy stream of records."""
    return _generate(cfg, resolve_inputs(cfg))


def _generate(cfg: CorpusConfig, sources: list[Source]) -> Iterator[RawDocument]:
    warned: Counter[str] = Counter()
    for source in sources:
        if source.format == "hf":
            yield from _read_hf(cfg, source.hf_split)
        elif source.format == "parquet":
            yield from _read_parquet(cfg, source.path)
        else:
            yield from _read_text_file(cfg, source, warned)


def _peek_head(fh: BinaryIO) -> bytes:
    """The first 64 KB (after decompression), peeked at so nothing is consumed."""
    try:
        return fh.peek(HEAD_BYTES)[:HEAD_BYTES] if hasattr(fh, "peek") else b""
    except Exception:  # a damaged archive: the guarded reading loop reports it
        return b""


def _refuse_binary(path, head: bytes) -> None:
    """A file that is mostly binary is a mistake in corpus.inputs, not a source of documents."""
    share = binary_share(head)
    if share > BINARY_FILE_SHARE:
        raise GlottaError(
            f"{path} is not UTF-8 text: {share:.0%} of its first {len(head):,} bytes are NUL, "
            "control characters or invalid UTF-8 (binary data, or another encoding such as "
            "UTF-16); remove it from corpus.inputs or convert it to UTF-8"
        )


def _read_text_file(cfg: CorpusConfig, source: Source, warned: Counter) -> Iterator[RawDocument]:
    path = source.path
    reader = {
        "txt": _txt_records,
        "jsonl": _jsonl_records,
        "tsv": _tsv_records,
        "wikipedia": _wikipedia_records,
        "cirrus": _cirrus_records,
    }[source.format]
    try:
        fh = open_binary(path)
    except OSError as exc:
        raise GlottaError(f"{path} cannot be read ({exc.strerror or exc})") from None
    # Decompression errors only show up while reading, so the whole loop is guarded; exceptions
    # raised by the consumer of this generator do not pass through here.
    with fh:
        head = _peek_head(fh)
        dump = source.format in ("wikipedia", "cirrus")  # UTF-8 by definition
        encoding = Encoding("utf-8") if dump else choose_encoding(head, cfg.encoding)
        if encoding.name == "utf-8":
            _refuse_binary(path, head)
        if encoding.detected:
            log.warning("corpus: %s: read as %s (corpus.encoding = 'auto')", path, encoding.name)
        decoder = FileDecoder(path, encoding, cfg.max_undecodable_fraction, head)
        try:
            for doc in reader(cfg, str(path), fh if dump else decoder.lines(fh), warned):
                doc.encoding = encoding.name
                yield doc
        except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:
            raise GlottaError(
                f"{path} is truncated or corrupt ({exc}); re-download it or remove it from "
                "corpus.inputs"
            ) from None


def _txt_records(cfg: CorpusConfig, source: str, lines, warned: Counter):
    if cfg.txt_documents == "lines":
        for _, line, bad in lines:
            if line.strip():
                yield RawDocument(line, source, replaced=bad)
        return
    # Paragraphs (split at blank lines) or the whole file. A document that grows far beyond
    # max_chars would be dropped anyway, so stop buffering it: a file without blank lines must
    # not be held in memory. (4x leaves room for cleaning, which can shrink whitespace runs.)
    limit = 4 * cfg.max_chars if cfg.max_chars > 0 else 0
    split = cfg.txt_documents == "paragraphs"
    lines_kept: list[str] = []
    size, bad_any, too_long = 0, 0, False
    for _, line, bad in lines:
        if split and not line.strip():
            if lines_kept or too_long:
                yield _paragraph(lines_kept, source, bad_any, too_long)
            lines_kept, size, bad_any, too_long = [], 0, 0, False
            continue
        bad_any += bad
        if too_long:
            continue
        lines_kept.append(line)
        size += len(line) + 1
        if limit and size > limit:
            lines_kept, too_long = [], True
    if lines_kept or too_long:
        yield _paragraph(lines_kept, source, bad_any, too_long)


def _paragraph(lines: list[str], source: str, bad: int, too_long: bool) -> RawDocument:
    if too_long:
        return RawDocument("", source, skip="too_long", replaced=bad)
    return RawDocument("\n".join(lines), source, replaced=bad)


def _jsonl_records(cfg: CorpusConfig, source: str, lines, warned: Counter):
    for number, line, bad in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            if number == 1 and line.lstrip().startswith("["):
                raise GlottaError(
                    f"{source} holds a JSON array; glotta reads JSON Lines (one object per "
                    "line): convert it with  jq -c '.[]' FILE > FILE.jsonl"
                ) from None
            warn_skip(warned, "invalid_json", f"{source}:{number}: invalid JSON ({exc})")
            yield RawDocument("", source, skip="invalid_json", replaced=bad)
            continue
        values = [obj.get(f) for f in cfg.text_fields] if isinstance(obj, dict) else [None]
        if not all(isinstance(v, str) for v in values):
            warn_skip(
                warned,
                "missing_field",
                f"{source}:{number}: no string field(s) {cfg.text_fields}",
            )
            yield RawDocument("", source, skip="missing_field", replaced=bad)
            continue
        yield RawDocument("\n".join(values), source, replaced=bad)


def _tsv_records(cfg: CorpusConfig, source: str, lines, warned: Counter):
    # Plain tab splitting, no CSV quoting: corpora such as rl_wsd_labeled put quotes in the text.
    needed = max(cfg.tsv_columns) + 1
    for number, line, bad in lines:
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < needed:
            warn_skip(
                warned,
                "bad_tsv_row",
                f"{source}:{number}: {len(cells)} columns, corpus.tsv_columns needs {needed}",
            )
            yield RawDocument("", source, skip="bad_tsv_row", replaced=bad)
            continue
        # Columns are concatenated without a separator: in left/word/right contexts the word
        # column carries its own leading space.
        yield RawDocument("".join(cells[i] for i in cfg.tsv_columns), source, replaced=bad)


def _wikipedia_records(cfg: CorpusConfig, source: str, fh: BinaryIO, warned: Counter):
    from glotta.corpus.wikipedia import iter_wikipedia_xml  # imports this module: import late

    return iter_wikipedia_xml(fh, source)


def _cirrus_records(cfg: CorpusConfig, source: str, fh: BinaryIO, warned: Counter):
    from glotta.corpus.wikipedia import iter_cirrus

    return iter_cirrus(fh, source, warned)


def _read_parquet(cfg: CorpusConfig, path: Path) -> Iterator[RawDocument]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise GlottaError(f"{path} is not a readable Parquet file ({exc})") from None
    with contextlib.closing(parquet):
        available = parquet.schema_arrow.names
        missing = [f for f in cfg.text_fields if f not in available]
        if missing:
            raise GlottaError(
                f"{path} has no column {', '.join(map(repr, missing))} (columns: "
                f"{', '.join(available)}); set corpus.text_fields"
            )
        try:
            # Row batches, not the whole table: memory stays at about one row group.
            for batch in parquet.iter_batches(batch_size=1024, columns=list(cfg.text_fields)):
                columns = [batch.column(f).to_pylist() for f in cfg.text_fields]
                for values in zip(*columns, strict=True):
                    if all(isinstance(v, str) for v in values):
                        yield RawDocument("\n".join(values), source)
                    else:
                        yield RawDocument("", source, skip="missing_field")
        except (OSError, pa.ArrowException) as exc:
            raise GlottaError(
                f"{path} is truncated or corrupt ({exc}); re-download it or remove it from "
                "corpus.inputs"
            ) from None


def _read_hf(cfg: CorpusConfig, split: str) -> Iterator[RawDocument]:
    """Stream one split of a Hugging Face dataset (needs network and the ``hf`` extra).

    Streaming mode downloads shards lazily, so a 10 GB wiki40b split never lands on disk whole.
    """
    try:
        from datasets import load_dataset
    except ImportError:
        raise GlottaError(
            f"corpus.hf_dataset = {cfg.hf_dataset!r} needs the 'datasets' package: "
            "pip install 'glotta[hf]'"
        ) from None
    label = "hf://" + "/".join(x for x in (cfg.hf_dataset, cfg.hf_config, split) if x)
    rows = load_dataset(cfg.hf_dataset, cfg.hf_config or None, split=split, streaming=True)
    for row in rows:
        values = [row.get(f) for f in cfg.text_fields]
        if all(isinstance(v, str) for v in values):
            yield RawDocument("\n".join(values), label)
        else:
            yield RawDocument("", label, skip="missing_field")
