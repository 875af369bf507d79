"""Corpus stage: read raw text (txt, jsonl, parquet, tsv, HF streaming), clean, deduplicate,
split into train/valid/test document files, and count why documents were dropped.

Modules, in pipeline order: ``inputs`` (resolve and open files), ``readers`` (records -> raw
documents), ``markup`` (wiki40b), ``clean`` (normalization, whitespace, length bounds),
``dedup`` (exact dedup, hash split), ``stage`` (the entry function ``run_corpus`` and stats).
"""

from glotta.corpus.clean import clean_text, length_drop_reason
from glotta.corpus.dedup import ExactDedup, assign_split, check_fractions
from glotta.corpus.inputs import Source, open_binary, resolve_inputs
from glotta.corpus.markup import wiki40b_to_text
from glotta.corpus.readers import RawDocument, iter_documents
from glotta.corpus.stage import DROP_REASONS, format_summary, run_corpus

__all__ = [
    "DROP_REASONS",
    "ExactDedup",
    "RawDocument",
    "Source",
    "assign_split",
    "check_fractions",
    "clean_text",
    "format_summary",
    "iter_documents",
    "length_drop_reason",
    "open_binary",
    "resolve_inputs",
    "run_corpus",
    "wiki40b_to_text",
]
