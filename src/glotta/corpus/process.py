"""Per-document processing, the part of the corpus stage that runs in parallel.

One raw record goes in, one ``Processed`` comes out: the cleaned text, or the reason it was
dropped. The order of the steps puts cheap, common drops first::

    markup -> clean -> boilerplate lines -> length -> language -> quality -> PII -> MinHash keys

Everything that needs to see all documents at once (exact and near-duplicate removal, the split,
writing) stays in the single consumer in ``stage.py``. ``process_stream`` runs the processor in
worker processes while keeping the input order, so output files and the first-seen choice
of deduplication do not depend on the number of workers.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from glotta.config import CorpusConfig
from glotta.corpus.clean import clean_text, length_drop_reason, not_text_fraction
from glotta.corpus.language import LanguageFilter
from glotta.corpus.markup import convert_markup
from glotta.corpus.near_dedup import MinHasher
from glotta.corpus.pii import scrub_pii
from glotta.corpus.quality import compile_patterns, quality_drop_reason, remove_boilerplate_lines
from glotta.corpus.readers import RawDocument

# Documents handled in the reading process before worker processes are started: a small corpus
# (tests, a demo) is done before spawning workers would even have paid off.
INLINE_FIRST = 5_000
BATCH = 256  # documents per task sent to a worker


@dataclass(slots=True)
class Processed:
    """One input record after processing: ``text`` to keep, or ``drop`` = why not."""

    text: str
    source: str
    drop: str | None = None
    utf8_replaced: bool = False
    bytes_in: int = 0  # UTF-8 bytes as read (0 for records a reader could not parse)
    band_keys: list[int] | None = None  # near-duplicate LSH keys of the kept text
    events: Counter[str] = field(default_factory=Counter)  # lines removed, PII replaced


class DocumentProcessor:
    """Applies the corpus config's per-document steps; built once per worker process."""

    def __init__(self, cfg: CorpusConfig):
        self.cfg = cfg
        self.boilerplate = compile_patterns(cfg.boilerplate_patterns) if cfg.quality_filter else []
        self.language = (
            LanguageFilter(cfg.languages, cfg.language_threshold, cfg.language_mode)
            if cfg.languages
            else None
        )
        self.minhash = (
            MinHasher(cfg.near_dedup_permutations, cfg.near_dedup_threshold, cfg.near_dedup_ngram)
            if cfg.near_dedup
            else None
        )

    def __call__(self, raw: RawDocument) -> Processed:
        cfg = self.cfg
        result = Processed("", raw.source, raw.skip, raw.utf8_replaced)
        if raw.skip:
            return result
        result.bytes_in = len(raw.text.encode("utf-8"))
        if not_text_fraction(raw.text) > cfg.max_not_text_fraction:
            return self._drop(result, "not_text", raw.text)
        if "\x00" in raw.text:  # removed by cleaning below, but counted: they hint at binary
            result.events["nul_characters_removed"] += raw.text.count("\x00")
        markup = raw.markup if raw.markup is not None else cfg.markup
        text = clean_text(convert_markup(raw.text, markup, raw.title), cfg.normalization)
        text, removed = remove_boilerplate_lines(text, self.boilerplate)
        if removed:
            result.events["boilerplate_lines_removed"] += removed
            text = clean_text(text, "none")  # close the gaps the removed lines left
        reason = length_drop_reason(text, cfg.min_chars, cfg.max_chars)
        if reason is None and self.language is not None:  # after the length check: too
            kept, removed = self.language.apply(text)  # short a text misleads the identifier
            if removed:
                result.events["language_lines_removed"] += removed
            if kept is None:
                return self._drop(result, "language", text)
            if removed:
                text = clean_text(kept, "none")
                reason = length_drop_reason(text, cfg.min_chars, cfg.max_chars)
        if reason is None and cfg.quality_filter:
            reason = quality_drop_reason(text, cfg)
        if reason:
            return self._drop(result, reason, text)
        if cfg.scrub_pii:
            text, found = scrub_pii(text)
            result.events.update({f"pii_{kind}": n for kind, n in found.items()})
        result.text = text
        if self.minhash is not None:
            result.band_keys = self.minhash.band_keys(text)
        return result

    @staticmethod
    def _drop(result: Processed, reason: str, text: str) -> Processed:
        result.drop, result.text = reason, text  # the text goes to dropped_samples.jsonl
        return result


def worker_count(cfg: CorpusConfig) -> int:
    """Processes for the per-document work: corpus.workers, or (0) all cores when it pays.

    Sending a document to a worker and its result back costs about as much as cleaning it,
    so with cleaning alone the reading and writing process stays the bottleneck and workers
    only add overhead (measured: 1 GB, 2 cores, 80 s inline vs 99 s with two workers).
    They pay once a heavier step runs: wikitext conversion or any of the filters.
    """
    if cfg.workers > 0:
        return cfg.workers
    heavy = (
        cfg.languages
        or cfg.quality_filter
        or cfg.near_dedup
        or cfg.scrub_pii
        or cfg.format in ("wikipedia", "cirrus")
        or any(".xml" in name for name in cfg.inputs)
    )
    return (os.cpu_count() or 1) if heavy else 1


def process_stream(cfg: CorpusConfig, documents: Iterable[RawDocument]) -> Iterator[Processed]:
    """Process ``documents`` in input order: the first INLINE_FIRST here, the rest in workers.

    At most two batches per worker are in flight, so memory stays bounded whatever the corpus
    size (``Pool.imap`` would read the whole input ahead).
    """
    processor = DocumentProcessor(cfg)
    documents = iter(documents)
    for raw in itertools.islice(documents, INLINE_FIRST):
        yield processor(raw)
    workers = worker_count(cfg)
    if workers <= 1:
        yield from map(processor, documents)
        return
    # spawn, not fork: the parent may hold threads (tokenizers, torch) that fork would copy
    # in a locked state.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        pending: collections.deque = collections.deque()
        batches = iter(lambda: list(itertools.islice(documents, BATCH)), [])
        for batch in batches:
            pending.append(pool.apply_async(_process_batch, (batch,)))
            while len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


_worker_processor: DocumentProcessor | None = None


def _init_worker(cfg: CorpusConfig) -> None:
    global _worker_processor
    _worker_processor = DocumentProcessor(cfg)


def _process_batch(batch: list[RawDocument]) -> list[Processed]:
    assert _worker_processor is not None
    return [_worker_processor(raw) for raw in batch]
