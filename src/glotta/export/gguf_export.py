"""GGUF files that llama.cpp (and Ollama, LM Studio, ...) run, written next to the HF folder.

    RUN_DIR/export/model-f16.gguf       ([export] gguf = ["f16"], or glotta export --gguf f16)

The model family maps its weights and hyperparameters (``ModelFamily.gguf``), the tokenizer
becomes llama.cpp's tokenizer metadata (:mod:`glotta.export.gguf_vocab`); this module picks each
tensor's type and writes the file with the ``gguf`` package's ``GGUFWriter``.

Types: ``f32`` keeps every weight; ``f16`` halves the matrices; ``q8_0`` stores matrices in
llama.cpp's 8-bit blocks of 32 (one scale each). As llama.cpp's own converter does, 1-D tensors
(norms, biases) stay f32 in every type, and a matrix whose rows are not a multiple of 32 long
cannot be q8_0 and is written f16.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from glotta.config import GGUF_TYPES
from glotta.errors import GlottaError
from glotta.export.gguf_vocab import GGUFVocab, read_vocab, unknown_character_share


def gguf_name(gguf_type: str) -> str:
    return f"model-{gguf_type}.gguf"


def check_types(types: Iterable[str], where: str = "export.gguf") -> None:
    for gguf_type in types:
        if gguf_type not in GGUF_TYPES:
            raise GlottaError(
                f"{where}: {gguf_type!r} is not a GGUF type glotta writes ({', '.join(GGUF_TYPES)})"
            )


def _tensor_type(array: np.ndarray, gguf_type: str):
    from gguf import GGMLQuantizationType as Q

    if gguf_type == "f32" or array.ndim == 1:
        return Q.F32
    if gguf_type == "q8_0" and array.shape[-1] % 32 == 0:
        return Q.Q8_0
    return Q.F16


def _file_type(gguf_type: str) -> int:
    from gguf import LlamaFileType

    return {
        "f32": LlamaFileType.ALL_F32,
        "f16": LlamaFileType.MOSTLY_F16,
        "q8_0": LlamaFileType.MOSTLY_Q8_0,
    }[gguf_type]


def _add_value(writer, key: str, value) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        raise TypeError(f"GGUF metadata {key}: unsupported value {value!r}")


def _add_vocab(writer, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
    }
    for role, token_id in vocab.special_ids.items():
        adders[role](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.model == "t5":
        writer.add_remove_extra_whitespaces(False)


def write_gguf(spec, vocab: GGUFVocab, path: Path, gguf_type: str, name: str) -> Path:
    """Write one GGUF file of ``gguf_type`` from a family's spec and a tokenizer's vocab."""
    import gguf

    check_types([gguf_type])
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), spec.arch)
    try:
        writer.add_name(name)
        writer.add_file_type(_file_type(gguf_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in spec.metadata.items():
            _add_value(writer, key.format(arch=spec.arch), value)
        _add_vocab(writer, vocab)
        for tensor_name, array in spec.tensors:
            qtype = _tensor_type(array, gguf_type)
            data = gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    partial.replace(path)
    return path


def export_gguf(
    folder: Path, types: list[str], name: str, heldout: Iterable[str] = ()
) -> tuple[list[Path], str]:
    """Write ``model-TYPE.gguf`` into the HF folder ``folder`` for each type; returns the files
    and a note for the card ('' when llama.cpp tokenizes exactly as the HF tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from glotta.models import family_of

    check_types(types)
    config = AutoConfig.from_pretrained(str(folder))
    chosen = family_of(config)
    if chosen is None:
        raise GlottaError(f"GGUF export: no model family covers {config.model_type!r} models")
    if "clm" not in chosen.objectives:
        raise GlottaError(
            f"GGUF export: {chosen.name} is an encoder; glotta writes GGUF for causal LMs only"
        )
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    spec = chosen.gguf(model)
    vocab = read_vocab(folder, model.get_input_embeddings().num_embeddings)
    note = ""
    if vocab.byte_fallback_lost:
        unknown, total = unknown_character_share(vocab, heldout)
        share = f"{100 * unknown / total:.3f}% of the {total:,} held-out characters" if total else (
            "no held-out text was available to measure how often"
        )  # fmt: skip
        note = (
            "llama.cpp's Unigram tokenizer has no byte fallback: characters outside the "
            f"vocabulary become <unk> there instead of byte tokens ({share})"
        )
        print(f"glotta: warning: GGUF: {note}", file=sys.stderr, flush=True)
    paths = [
        write_gguf(spec, vocab, folder / gguf_name(gguf_type), gguf_type, name)
        for gguf_type in dict.fromkeys(types)
    ]
    return paths, note


def card_paragraph(files: list[str], note: str, prompt: str) -> str:
    """The model card's llama.cpp / Ollama paragraph for the GGUF ``files`` written ('' if none)."""
    if not files:
        return ""
    first = files[0]
    body = json.dumps({"prompt": prompt or "Hello", "n_predict": 64}, ensure_ascii=False)
    body = body.replace("'", "'\\''")  # inside the shell's single quotes
    listing = ", ".join(f"`{name}`" for name in files)
    text = (
        f"\n### llama.cpp and Ollama\n\nThe folder also holds GGUF files for llama.cpp: {listing} "
        "(f32 = full precision, f16 = half, q8_0 = 8-bit blocks). With llama.cpp's server:\n\n"
        f"```sh\nllama-server -m {first} --port 8080\n"
        f"curl http://localhost:8080/completion -d '{body}'\n```\n\n"
        "With Ollama (plain text completion, no chat template):\n\n"
        f"```sh\nprintf 'FROM ./{first}\\nTEMPLATE \"{{{{ .Prompt }}}}\"\\n' > Modelfile\n"
        "ollama create my-model -f Modelfile\n"
        f"ollama run my-model {json.dumps(prompt or 'Hello', ensure_ascii=False)}\n```\n"
    )
    if note:
        text += f"\nNote: {note}.\n"
    return text
