"""Fertility: how many tokens a tokenizer spends per character, per word and per byte.

Lower is better compression; a tokenizer that spends many tokens per word on its own language
wastes context and compute. Words are whitespace-separated, so tokens per word means little for
scripts without spaces (Japanese, Chinese, Thai): compare those by tokens per character.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tokenizers import Tokenizer


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of up to ``size`` consecutive items (itertools.batched needs Python 3.12)."""
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def backend_of(tokenizer: Any) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` inside a transformers tokenizer (or the tokenizer itself)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def fertility(tokenizer: Any, texts: Iterable[str], batch_size: int = 1000) -> dict[str, Any]:
    """Tokens per character, per whitespace word and per UTF-8 byte over ``texts``.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or a transformers fast tokenizer. No special
    tokens are added. Ratios are ``None`` when there is nothing to divide by.
    """
    backend = backend_of(tokenizer)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # fast: no offsets
    documents = characters = utf8_bytes = words = tokens = 0
    for batch in batched(texts, batch_size):
        documents += len(batch)
        characters += sum(len(t) for t in batch)
        utf8_bytes += sum(len(t.encode("utf-8")) for t in batch)
        words += sum(len(t.split()) for t in batch)
        tokens += sum(len(e.ids) for e in encode(batch, add_special_tokens=False))

    def ratio(n: int, d: int) -> float | None:
        return round(n / d, 4) if d else None

    return {
        "documents": documents,
        "characters": characters,
        "utf8_bytes": utf8_bytes,
        "words": words,
        "tokens": tokens,
        "tokens_per_character": ratio(tokens, characters),
        "tokens_per_word": ratio(tokens, words),
        "tokens_per_byte": ratio(tokens, utf8_bytes),
        "characters_per_token": ratio(characters, tokens),
    }
