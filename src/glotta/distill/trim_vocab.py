"""Vocabulary trimming: shrink a multilingual encoder to the tokens a target-language corpus uses.

    glotta trim-vocab --model bert-base-multilingual-cased --input sv/*.txt --out mbert-sv

mBERT's 119,547-token embedding matrix is ~92M of its 178M parameters, and a Swedish corpus
uses a small fraction of those rows (Abdaoui et al. 2020, "Load What You Need", report the
same). Trimming keeps the rows of the tokens the corpus produces, every special token and, by
default, every single-character token (with its ``##`` continuation form) so that words unseen
in the corpus still split into known pieces instead of ``[UNK]``. The kept tokens stay in their
original order; the embedding rows (and an MLM head's output rows and bias) are sliced to match,
so the trimmed model computes exactly what the original computes on any text whose tokens
survived (tested).

WordPiece tokenizers (BERT, mBERT, MiniLM, ...) only: byte-level BPE merges refer to each other
and cannot lose tokens this simply.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from glotta.errors import GlottaError

CONTINUATION = "##"
ENCODE_BATCH = 1000


def count_token_ids(tokenizer, texts: Iterable[str]) -> Counter[int]:
    """How often each token id occurs when ``tokenizer`` (a tokenizers.Tokenizer) encodes texts."""
    counts: Counter[int] = Counter()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == ENCODE_BATCH:
            for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
                counts.update(encoding.ids)
            batch = []
    if batch:
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            counts.update(encoding.ids)
    return counts


def kept_token_ids(
    vocab: dict[str, int], counts: Counter[int], special: set[int], min_count: int, keep_chars: bool
) -> list[int]:
    """Old ids to keep, ascending: special tokens, tokens used >= min_count, single characters."""
    keep = set(special) | {i for i, n in counts.items() if n >= min_count}
    if keep_chars:
        for token, i in vocab.items():
            piece = token[len(CONTINUATION) :] if token.startswith(CONTINUATION) else token
            if len(piece) == 1:
                keep.add(i)
    return sorted(keep)


def trim_vocabulary(
    model_dir: str | Path,
    texts: Iterable[str],
    out_dir: str | Path,
    min_count: int = 1,
    keep_chars: bool = True,
) -> dict[str, Any]:
    """Write a copy of the encoder in ``model_dir`` with the trimmed vocabulary to ``out_dir``.

    Returns a report: vocabulary and parameter counts before and after, and the share of the
    corpus's tokens that were ``[UNK]`` (trimming never adds any for the corpus itself).
    """
    from tokenizers import Tokenizer
    from transformers import AutoConfig

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise GlottaError(f"{model_dir} has no tokenizer.json (a fast tokenizer is needed)")
    spec = json.loads(tokenizer_file.read_text("utf-8"))
    if spec["model"]["type"] != "WordPiece":
        raise GlottaError(
            f"{tokenizer_file}: vocabulary trimming supports WordPiece tokenizers (BERT, mBERT), "
            f"not {spec['model']['type']}"
        )
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    vocab: dict[str, int] = spec["model"]["vocab"]
    special = {token["id"] for token in spec["added_tokens"]}
    counts = count_token_ids(tokenizer, texts)
    if not counts:
        raise GlottaError("the corpus for vocabulary trimming is empty: give --input files")
    keep = kept_token_ids(vocab, counts, special, min_count, keep_chars)
    new_id = {old: new for new, old in enumerate(keep)}

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _write_tokenizer(model_dir, spec, new_id, partial)
    config = AutoConfig.from_pretrained(model_dir)
    params_before, params_after = _write_model(model_dir, keep, new_id, config, partial)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)  # last: a folder named out_dir is always complete

    unk_id = vocab.get(spec["model"].get("unk_token", "[UNK]"))
    total = sum(counts.values())
    return {
        "model": str(model_dir),
        "out": str(out_dir),
        "vocab_before": len(vocab),
        "vocab_after": len(keep),
        "corpus_tokens": total,
        "corpus_distinct_tokens": len(counts),
        "corpus_unk_share": round(counts.get(unk_id, 0) / total, 6) if unk_id is not None else None,
        "parameters_before": params_before,
        "parameters_after": params_after,
    }


def _write_tokenizer(model_dir: Path, spec: dict, new_id: dict[int, int], out: Path) -> None:
    """tokenizer.json (and vocab.txt, configs) with the kept tokens renumbered in order."""
    old_vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = {t: new_id[i] for t, i in old_vocab.items() if i in new_id}
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    _renumber_post_processor(spec.get("post_processor"), spec["model"]["vocab"])
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), "utf-8")
    ordered = sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])
    (out / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in ordered), "utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, out / name)


def _renumber_post_processor(processor: dict | None, vocab: dict[str, int]) -> None:
    """Template post-processors carry the ids of [CLS]/[SEP]; point them at the new ids."""
    if not processor:
        return
    for child in processor.get("processors", []):  # a Sequence of processors
        _renumber_post_processor(child, vocab)
    for special in processor.get("special_tokens", {}).values():
        special["ids"] = [vocab[t] for t in special["tokens"]]
    for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
        if key in processor:
            processor[key] = [processor[key][0], vocab[processor[key][0]]]


def _write_model(
    model_dir: Path, keep: list[int], new_id: dict[int, int], config, out: Path
) -> tuple[int, int]:
    """Slice the embedding rows (and a tied MLM head) to the kept ids; save as safetensors."""
    from transformers import AutoModel, AutoModelForMaskedLM

    has_mlm_head = any(
        "ForMaskedLM" in a or "ForPreTraining" in a for a in config.architectures or []
    )
    loader = AutoModelForMaskedLM if has_mlm_head else AutoModel
    model = loader.from_pretrained(model_dir)
    before = sum(p.numel() for p in model.parameters())
    index = torch.tensor(keep)
    old_input = model.get_input_embeddings()
    new_input = torch.nn.Embedding(len(keep), old_input.embedding_dim, padding_idx=None)
    new_input.weight.data = old_input.weight.data[index].clone()
    model.set_input_embeddings(new_input)
    output = model.get_output_embeddings() if has_mlm_head else None
    if output is not None:
        new_output = torch.nn.Linear(output.in_features, len(keep), bias=output.bias is not None)
        new_output.weight.data = output.weight.data[index].clone()
        if output.bias is not None:
            new_output.bias.data = output.bias.data[index].clone()
        model.set_output_embeddings(new_output)
    # Other per-token vectors (BERT's MLM head keeps its output bias as a parameter of its own).
    old_size = old_input.num_embeddings
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() == 1 and param.shape[0] == old_size:
                setattr(module, name, torch.nn.Parameter(param.data[index].clone()))
    if output is not None:
        for module in model.modules():  # BERT's head shares one bias with its decoder
            bias = getattr(module, "bias", None)
            if getattr(module, "decoder", None) is new_output and isinstance(
                bias, torch.nn.Parameter
            ):
                new_output.bias = bias
    model.config.vocab_size = len(keep)
    pad = getattr(model.config, "pad_token_id", None)
    if pad is not None:
        model.config.pad_token_id = new_id.get(pad)
    if output is not None and getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    after = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out, safe_serialization=True)
    return before, after
