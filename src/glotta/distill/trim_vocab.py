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

import copy
import json
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glotta.errors import GlottaError

CONTINUATION = "##"
VOCAB_TRIM_FILE = "vocab_trim.json"  # in a run's tokenizer folder: the kept ids of the original
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


@dataclass
class TrimPlan:
    """Which tokens of a WordPiece tokenizer a corpus keeps, and their new ids."""

    spec: dict  # the tokenizer.json being trimmed
    keep: list[int]  # old ids, ascending; new id = position in this list
    counts: Counter[int]  # old id -> occurrences in the corpus

    @property
    def new_id(self) -> dict[int, int]:
        return {old: new for new, old in enumerate(self.keep)}

    def report(self) -> dict[str, Any]:
        vocab = self.spec["model"]["vocab"]
        unk_id = vocab.get(self.spec["model"].get("unk_token", "[UNK]"))
        total = sum(self.counts.values())
        return {
            "vocab_before": len(vocab),
            "vocab_after": len(self.keep),
            "corpus_tokens": total,
            "corpus_distinct_tokens": len(self.counts),
            "corpus_unk_share": round(self.counts.get(unk_id, 0) / total, 6)
            if unk_id is not None
            else None,
        }


def plan_trim(
    model_dir: Path, texts: Iterable[str], min_count: int = 1, keep_chars: bool = True
) -> TrimPlan:
    """Count the corpus's tokens with the tokenizer in ``model_dir`` and choose the kept ones."""
    from glotta.tokenizer.files import read_tokenizer_file

    tokenizer_file = Path(model_dir) / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise GlottaError(f"{model_dir} has no tokenizer.json (a fast tokenizer is needed)")
    spec = json.loads(tokenizer_file.read_text("utf-8"))
    if spec["model"]["type"] != "WordPiece":
        raise GlottaError(
            f"{tokenizer_file}: vocabulary trimming supports WordPiece tokenizers (BERT, mBERT), "
            f"not {spec['model']['type']}"
        )
    # Count every token of a document, not the first 128.
    counter = read_tokenizer_file(tokenizer_file, "a fast tokenizer is needed")
    counts = count_token_ids(counter, texts)
    if not counts:
        raise GlottaError("the corpus for vocabulary trimming is empty: give --input files")
    special = {token["id"] for token in spec["added_tokens"]}
    keep = kept_token_ids(spec["model"]["vocab"], counts, special, min_count, keep_chars)
    return TrimPlan(spec, keep, counts)


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
    from transformers import AutoConfig

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    plan = plan_trim(model_dir, texts, min_count, keep_chars)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write_trimmed_tokenizer(model_dir, plan, partial)
    model = load_encoder(model_dir, AutoConfig.from_pretrained(model_dir))
    params_before, params_after = slice_vocabulary(model, plan.keep)
    model.save_pretrained(partial, safe_serialization=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)  # last: a folder named out_dir is always complete
    return {
        "model": str(model_dir),
        "out": str(out_dir),
        **plan.report(),
        "parameters_before": params_before,
        "parameters_after": params_after,
    }


def trim_copied_tokenizer(
    folder: Path, texts: Iterable[str], source: str, min_count: int = 1
) -> dict[str, Any]:
    """Trim the tokenizer saved in ``folder`` (the tokenizer stage's copy of ``source``) to the
    tokens of ``texts``, in place, and record the kept ids in ``VOCAB_TRIM_FILE`` so that models
    of the original vocabulary (a distillation teacher) can be trimmed to match."""
    from glotta.rundir import write_json_atomic

    plan = plan_trim(folder, texts, min_count)
    write_trimmed_tokenizer(folder, plan, folder)
    report = plan.report()
    write_json_atomic(folder / VOCAB_TRIM_FILE, {"source": source, **report, "kept_ids": plan.keep})
    print(
        f"tokenizer: trimmed {source} from {report['vocab_before']:,} to "
        f"{report['vocab_after']:,} tokens (those of the train split, special tokens and "
        "single characters)",
        flush=True,
    )
    return {"vocab_size": report["vocab_after"], "trimmed_from": report["vocab_before"]}


def read_kept_ids(tokenizer_dir: Path) -> list[int] | None:
    """The original ids the run's trimmed tokenizer kept, or None if it was not trimmed."""
    path = Path(tokenizer_dir) / VOCAB_TRIM_FILE
    return json.loads(path.read_text())["kept_ids"] if path.is_file() else None


def write_trimmed_tokenizer(model_dir: Path, plan: TrimPlan, out: Path) -> None:
    """tokenizer.json (and vocab.txt, configs) with the kept tokens renumbered in order."""
    spec, new_id = copy.deepcopy(plan.spec), plan.new_id
    old_vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = {t: new_id[i] for t, i in old_vocab.items() if i in new_id}
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    _renumber_post_processor(spec.get("post_processor"), spec["model"]["vocab"])
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), "utf-8")
    ordered = sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])
    (out / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in ordered), "utf-8")
    config_file = Path(model_dir) / "tokenizer_config.json"
    if config_file.is_file():  # its added_tokens_decoder is keyed by id: renumber it
        config = json.loads(config_file.read_text("utf-8"))
        decoder = config.get("added_tokens_decoder")
        if decoder:
            config["added_tokens_decoder"] = {
                str(new_id[int(i)]): token for i, token in decoder.items() if int(i) in new_id
            }
        (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), "utf-8")
    special_map = Path(model_dir) / "special_tokens_map.json"
    if special_map.is_file() and special_map.resolve() != (out / special_map.name).resolve():
        shutil.copy(special_map, out / special_map.name)


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


def load_encoder(model_dir: Path, config):
    """The encoder with its masked-LM head if it has one (so the head is trimmed too)."""
    from transformers import AutoModel, AutoModelForMaskedLM

    from glotta.models import has_masked_lm_head

    loader = AutoModelForMaskedLM if has_masked_lm_head(config) else AutoModel
    return loader.from_pretrained(model_dir)


def slice_vocabulary(model, keep: list[int]) -> tuple[int, int]:
    """Keep only the embedding rows ``keep`` (and an MLM head's output rows and bias), in place;
    returns the parameter counts before and after."""
    before = sum(p.numel() for p in model.parameters())
    new_id = {old: new for new, old in enumerate(keep)}
    index = torch.tensor(keep)
    old_input = model.get_input_embeddings()
    new_input = torch.nn.Embedding(len(keep), old_input.embedding_dim, padding_idx=None)
    new_input.weight.data = old_input.weight.data[index].clone()
    model.set_input_embeddings(new_input)
    output = model.get_output_embeddings()
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
    return before, after
