"""NER data and metrics: CoNLL column files, tag schemes, entity spans, entity-level scores.

Files are CoNLL-style: one token per line, columns separated by whitespace (or tabs), a blank line
between sentences, ``-DOCSTART-`` lines ignored. Which column holds the token and which the tag is
configurable; negative indices count from the end (``-1`` = last column), so files whose lines
have different numbers of columns (MeCab output with and without readings) still work.

Entities are read from tags with *strict* semantics, the same as ``seqeval``'s
``mode="strict"`` with the matching scheme class: an entity is a start tag followed by a maximal
run of tags that may continue it, and it counts only if the scheme allows it to end there. Broken
sequences are not repaired (in IOB2 an ``I-`` after ``O`` is no entity; in BIOES a ``B-`` not closed
by an ``E-`` is none). Scores are entity-level: a predicted entity is correct only if its type,
start and end all match a gold entity.

Schemes: ``IOB1`` (``I-`` starts an entity, ``B-`` only separates two adjacent entities of one
type), ``IOB2`` (every entity starts with ``B-``), ``BIOES`` (also known as IOBES: ``S-`` single-
token entities, ``E-`` last token) and ``BILOU`` (BIOES with ``U-`` for ``S-`` and ``L-`` for ``E-``).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glotta.config import NerConfig
from glotta.errors import GlottaError

SCHEMES = ("IOB1", "IOB2", "BIOES", "BILOU")

# Prefixes a scheme allows, and how BILOU's map onto BIOES's (the two behave identically).
_ALLOWED = {
    "IOB1": frozenset("BIO"),
    "IOB2": frozenset("BIO"),
    "BIOES": frozenset("BIOES"),
    "BILOU": frozenset("BILOU"),
}
_CANONICAL = {"L": "E", "U": "S"}

Tag = tuple[str, str]  # (prefix letter, entity type); "O" has type ""
Span = tuple[str, int, int]  # (entity type, first token, one past the last token)


@dataclass(frozen=True)
class Sentence:
    """One sentence of a column file: words, their gold tags, and where it starts (for errors)."""

    words: list[str]
    tags: list[str]
    source: str = ""  # file name
    line: int = 0  # 1-based line of the first token; token k is on line + k


# ---------------------------------------------------------------------------------------------
# Reading column files


def resolve_data_path(spec: str) -> Path:
    """A file path, or ``pkg://PACKAGE/sub/path`` for a file inside an installed Python package."""
    if not spec.startswith("pkg://"):
        return Path(spec).expanduser()
    package, _, rest = spec[len("pkg://") :].partition("/")
    try:
        found = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise GlottaError(
            f"{spec!r} needs the Python package '{package}', which is not installed "
            f"(pip install {package.replace('_', '-')})"
        )
    return Path(list(found.submodule_search_locations)[0]) / rest


def read_conll(
    path: Path | str, token_column: int = 0, tag_column: int = -1, separator: str = "whitespace"
) -> list[Sentence]:
    """Sentences of a CoNLL-style column file (``separator``: 'whitespace' or 'tab')."""
    if separator not in ("whitespace", "tab"):
        raise GlottaError(f"separator must be 'whitespace' or 'tab', not {separator!r}")
    path = resolve_data_path(str(path))
    if not path.is_file():
        raise GlottaError(f"NER file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GlottaError(f"{path} is not UTF-8 ({exc}); convert it first") from None
    needed = max(_columns_needed(token_column), _columns_needed(tag_column))
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0

    def flush() -> None:
        if words:
            sentences.append(Sentence(list(words), list(tags), str(path), first_line))
        words.clear()
        tags.clear()

    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            flush()
            continue
        columns = raw.split("\t") if separator == "tab" else raw.split()
        if columns[0].strip() == "-DOCSTART-":
            flush()
            continue
        if len(columns) < needed:
            raise GlottaError(
                f"{path}:{number}: {len(columns)} column(s) but the token column is "
                f"{token_column} and the tag column {tag_column}; fix the line, or set "
                "ner.token_column / ner.tag_column (-1 = last column) / ner.separator"
            )
        word, tag = columns[token_column].strip(), columns[tag_column].strip()
        if not word or not tag:
            raise GlottaError(
                f"{path}:{number}: empty {'token' if not word else 'tag'} column; with "
                "ner.separator = 'tab', check for stray tabs"
            )
        if not words:
            first_line = number
        words.append(word)
        tags.append(tag)
    flush()
    if not sentences:
        raise GlottaError(f"{path} holds no sentences (expected one token and tag per line)")
    return sentences


def _columns_needed(index: int) -> int:
    return index + 1 if index >= 0 else -index


# ---------------------------------------------------------------------------------------------
# Tags and schemes


def split_tag(tag: str) -> Tag:
    """``'B-PER'`` -> ``('B', 'PER')``; ``'O'`` -> ``('O', '')``; anything else is a ValueError."""
    if tag == "O":
        return "O", ""
    if len(tag) < 3 or tag[1] != "-" or tag[0] not in "BIOESLU":
        raise ValueError(f"tag {tag!r} is neither 'O' nor PREFIX-TYPE (e.g. B-PER)")
    return tag[0], tag[2:]


def check_tags(sentences: Sequence[Sentence], scheme: str) -> None:
    """Raise GlottaError (file:line) at the first tag that ``scheme`` does not allow."""
    allowed = _ALLOWED[scheme]
    for sentence in sentences:
        for k, tag in enumerate(sentence.tags):
            try:
                prefix = split_tag(tag)[0]
            except ValueError as exc:
                problem = str(exc)
            else:
                if prefix in allowed:
                    continue
                problem = f"tag {tag!r} has a prefix that {scheme} does not use"
            raise GlottaError(
                f"{sentence.source}:{sentence.line + k}: {problem} (allowed prefixes in {scheme}: "
                f"{', '.join(sorted(allowed))}); set ner.scheme ({', '.join(SCHEMES)}) or "
                "ner.tag_column (-1 = last column)"
            )


def detect_scheme(tag_sequences: Sequence[Sequence[str]]) -> str:
    """Guess the scheme of gold tags: BIOES/BILOU by their prefixes; among B/I/O tags IOB1 if more
    entities begin with ``I-`` (after ``O`` or another type) than with ``B-``, else IOB2 (so a few
    annotation slips in IOB2 data, as in hironsancorpus, do not make it IOB1)."""
    prefixes: set[str] = set()
    begins_with_i = begins_with_b = 0
    for tags in tag_sequences:
        prev: Tag = ("O", "")
        for tag in tags:
            try:
                current = split_tag(tag)
            except ValueError as exc:
                raise GlottaError(f"cannot detect the tag scheme: {exc}") from None
            prefixes.add(current[0])
            if current[0] == "I" and (prev[0] == "O" or prev[1] != current[1]):
                begins_with_i += 1
            elif current[0] == "B":
                begins_with_b += 1
            prev = current
    if prefixes & set("LU"):
        if prefixes & set("ES"):
            raise GlottaError("tags mix BIOES (E-, S-) and BILOU (L-, U-) prefixes")
        return "BILOU"
    if prefixes & set("ES"):
        return "BIOES"
    return "IOB1" if begins_with_i > begins_with_b else "IOB2"


def _same(a: Tag, b: Tag) -> bool:
    return a[1] == b[1]


# Per scheme, three rules over (previous tag, current tag):
#   begins:    does ``cur`` start an entity, given the tag before it?
#   continues: does ``cur`` extend the entity whose last tag so far is ``prev``?
#   closes:    may an entity whose last tag is ``prev`` end where ``cur`` follows it?


def _iob1_begins(prev: Tag, cur: Tag) -> bool:
    if cur[0] == "I":  # after O, after a B, or after an I of another type
        return prev[0] in "OB" or (prev[0] == "I" and not _same(prev, cur))
    if cur[0] == "B":  # B separates two adjacent entities of one type
        return prev[0] in "IB" and _same(prev, cur)
    return False


def _iob1_closes(prev: Tag, cur: Tag) -> bool:
    if prev[0] not in "IB":
        return False
    if cur[0] == "O":
        return True
    if cur[0] == "I":
        return not _same(prev, cur)
    if cur[0] == "B":
        return prev[0] == "I" or _same(prev, cur)
    return False


def _iob_continues(prev: Tag, cur: Tag) -> bool:
    return prev[0] in "BI" and cur[0] == "I" and _same(prev, cur)


def _iob2_begins(prev: Tag, cur: Tag) -> bool:
    return cur[0] == "B"


def _iob2_closes(prev: Tag, cur: Tag) -> bool:
    if prev[0] not in "BI":
        return False
    return cur[0] in "OB" or (cur[0] == "I" and not _same(prev, cur))


def _bioes_begins(prev: Tag, cur: Tag) -> bool:
    return cur[0] in "BS"


def _bioes_continues(prev: Tag, cur: Tag) -> bool:
    return prev[0] in "BI" and cur[0] in "IE" and _same(prev, cur)


def _bioes_closes(prev: Tag, cur: Tag) -> bool:
    return prev[0] in "ES"


_RULES = {
    "IOB1": (_iob1_begins, _iob_continues, _iob1_closes),
    "IOB2": (_iob2_begins, _iob_continues, _iob2_closes),
    "BIOES": (_bioes_begins, _bioes_continues, _bioes_closes),
    "BILOU": (_bioes_begins, _bioes_continues, _bioes_closes),
}


def entity_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    """Entities of one tag sequence as (type, start, end) spans, end exclusive (strict mode).

    Raises ValueError for a tag the scheme does not allow.
    """
    if scheme not in _RULES:
        raise ValueError(f"unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    begins, continues, closes = _RULES[scheme]
    allowed = _ALLOWED[scheme]
    parsed: list[Tag] = []
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix not in allowed:
            raise ValueError(f"tag {tag!r} is not allowed in {scheme}")
        parsed.append((_CANONICAL.get(prefix, prefix), kind))
    parsed.append(("O", ""))  # a sentinel after the last token closes the last entity
    spans: list[Span] = []
    prev: Tag = ("O", "")
    i = 0
    while i < len(tags):
        current = parsed[i]
        if not begins(prev, current):
            prev = current
            i += 1
            continue
        end, last = i + 1, current
        while continues(last, parsed[end]):  # never true for the sentinel
            last = parsed[end]
            end += 1
        if closes(last, parsed[end]):
            spans.append((current[1], i, end))
        # A run that may not end where it stops is no entity; its tags start nothing either.
        prev, i = last, end
    return spans


# ---------------------------------------------------------------------------------------------
# Entity-level scores


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def ner_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str
) -> dict:
    """Entity-level precision, recall and F1 per type, micro-, macro- and support-weighted averages.

    Per type: precision = correct / predicted, recall = correct / gold (0 when the denominator is
    0), F1 their harmonic mean. Micro pools the counts of all types; macro is the unweighted mean
    over every type seen in the gold or predicted tags (NaN if there is none); weighted weighs the
    types by their gold support.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    gold_entities: set[tuple[int, str, int, int]] = set()
    pred_entities: set[tuple[int, str, int, int]] = set()
    for number, (gold_tags, pred_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(
                f"sentence {number}: {len(gold_tags)} gold tags but {len(pred_tags)} predicted"
            )
        gold_entities.update((number, *span) for span in entity_spans(gold_tags, scheme))
        pred_entities.update((number, *span) for span in entity_spans(pred_tags, scheme))
    correct_entities = gold_entities & pred_entities
    types = sorted({e[1] for e in gold_entities} | {e[1] for e in pred_entities})

    def count(entities: set, kind: str) -> int:
        return sum(1 for e in entities if e[1] == kind)

    per_type = {}
    for kind in types:
        counts = {
            "correct": count(correct_entities, kind),
            "predicted": count(pred_entities, kind),
            "support": count(gold_entities, kind),
        }
        per_type[kind] = {
            **_prf(counts["correct"], counts["predicted"], counts["support"]),
            **counts,
        }
    support = len(gold_entities)
    micro = {
        **_prf(len(correct_entities), len(pred_entities), support),
        "correct": len(correct_entities),
        "predicted": len(pred_entities),
        "support": support,
    }
    metrics = ("precision", "recall", "f1")
    macro: dict = {
        m: (sum(row[m] for row in per_type.values()) / len(types) if types else math.nan)
        for m in metrics
    }
    macro["support"] = support
    if support:
        weighted: dict = {
            m: sum(row[m] * row["support"] for row in per_type.values()) / support for m in metrics
        }
    else:
        weighted = dict.fromkeys(metrics, 0.0)
    weighted["support"] = support
    return {
        "scheme": scheme,
        "per_type": per_type,
        "micro": micro,
        "macro": macro,
        "weighted": weighted,
    }


# ---------------------------------------------------------------------------------------------
# Train and test sets from the [ner] settings


def split_last(sentences: list[Sentence], count: int, path: str) -> tuple[list, list]:
    """(all but the last ``count`` sentences, the last ``count``): a fixed held-out tail."""
    if count <= 0 or count >= len(sentences):
        raise GlottaError(
            f"ner.test_sentences = {count}, but {path} holds {len(sentences)} sentences; "
            f"choose 1..{len(sentences) - 1} or give ner.test_file"
        )
    return sentences[:-count], sentences[-count:]


def load_ner_data(cfg: NerConfig) -> tuple[list[Sentence], list[Sentence], str]:
    """(train sentences, test sentences, scheme) as the [ner] settings describe them."""
    if not cfg.train_file:
        raise GlottaError(
            "no NER training file: give --train FILE or set train_file in the recipe's [ner] table"
        )
    columns = (cfg.token_column, cfg.tag_column, cfg.separator)
    train = read_conll(cfg.train_file, *columns)
    if cfg.test_file:
        if cfg.test_sentences:
            raise GlottaError("set ner.test_file or ner.test_sentences, not both")
        test = read_conll(cfg.test_file, *columns)
    elif cfg.test_sentences:
        train, test = split_last(train, cfg.test_sentences, cfg.train_file)
    else:
        raise GlottaError(
            "no NER test set: give --test FILE, or ner.test_sentences = N to hold out the last N "
            "sentences of the training file"
        )
    scheme = cfg.scheme
    if scheme == "auto":
        scheme = detect_scheme([s.tags for s in train + test])
    check_tags(train, scheme)
    check_tags(test, scheme)
    return train, test, scheme
