"""Loading trained models and tokenizers from a folder (a checkpoint or an exported model)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from glotta.errors import GlottaError
from glotta.tokenizer.files import read_tokenizer_file

if TYPE_CHECKING:  # imported where used: glotta.models must not import torch (family.py)
    import torch
    from tokenizers import Tokenizer

# transformers model types of encoders that glotta treats as masked LMs.
ENCODER_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra")


def is_masked_lm_config(config) -> bool:
    """Whether a transformers config describes a masked LM (BERT-style encoder) for glotta."""
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return True
    return not any(
        a.endswith("LMHeadModel") or a.endswith("ForCausalLM") for a in architectures
    ) and (config.model_type in ENCODER_MODEL_TYPES)


def has_masked_lm_head(config) -> bool:
    """Whether the checkpoint's weights include a masked-LM head (not only the encoder)."""
    return any("ForMaskedLM" in a or "ForPreTraining" in a for a in config.architectures or [])


def is_masked_lm(model_dir: Path | str) -> bool:
    """Whether the checkpoint or exported folder holds a masked LM (by its config.json).

    False when there is no readable config: the loader then says what is wrong.
    """
    from transformers import AutoConfig

    try:
        return is_masked_lm_config(AutoConfig.from_pretrained(str(model_dir)))
    except (OSError, ValueError):
        return False


def load_causal_lm(model_dir: Path | str, device: torch.device | str = "cpu"):
    if is_masked_lm(model_dir):
        raise GlottaError(
            f"{model_dir} holds a masked LM (BERT/RoBERTa): it fills in masks and does not "
            "generate or score text left to right; use transformers' fill-mask pipeline"
        )
    from transformers import AutoModelForCausalLM

    return _from_folder(AutoModelForCausalLM, model_dir, "causal LM").to(device).eval()


def load_masked_lm(model_dir: Path | str, device: torch.device | str = "cpu"):
    from transformers import AutoModelForMaskedLM

    return _from_folder(AutoModelForMaskedLM, model_dir, "masked LM").to(device).eval()


_RESTORE = "restore it from the checkpoint the model came from, or re-export the model"


def _from_folder(loader, model_dir: Path | str, kind: str):
    """``loader.from_pretrained`` in float32; a damaged config or weights file of a local folder
    is named in one line (transformers' own messages span lines, safetensors' name no file)."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoConfig

    folder = Path(model_dir)
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        where = folder / "config.json" if folder.is_dir() else folder
        raise GlottaError(
            f"{where} is not a readable model config ({_first_line(exc)}); {_RESTORE}"
        ) from None
    try:
        return loader.from_pretrained(str(folder), config=config, dtype=torch.float32)
    except SafetensorError as exc:
        weights = sorted(folder.glob("*.safetensors")) or [folder]
        raise GlottaError(
            f"{weights[0]} is not readable weights ({_first_line(exc)}); {_RESTORE}"
        ) from None
    except (OSError, ValueError) as exc:
        raise GlottaError(f"cannot load a {kind} from {folder}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_tokenizer(folder: Path | str) -> Tokenizer:
    # Scoring and generation see whole texts: the file's own truncation and padding (kept in the
    # exported tokenizer for its users) would cut documents and score pad tokens.
    return read_tokenizer_file(Path(folder) / "tokenizer.json", "pass --tokenizer DIR")


def eos_id_of(tokenizer: Tokenizer, model) -> int:
    """The end-of-text id that separated documents in training (prefixes every scored text)."""
    eos = getattr(model.config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None:
        raise GlottaError("the model config has no eos_token_id; cannot prefix documents")
    return int(eos)
