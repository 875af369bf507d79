"""What ``glotta serve`` loads: a causal LM with its batched engine, or an encoder (BERT/RoBERTa)
for embeddings and fill-mask; plus the model card's widget text for the playground."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from glotta.errors import GlottaError


def _card(model_dir: Path) -> tuple[dict, str]:
    """The model card's front matter (``{}`` when absent or unreadable) and its whole text."""
    card = model_dir / "README.md"
    if not card.is_file():
        return {}, ""
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}, text
    return (meta if isinstance(meta, dict) else {}), text


def widget_text(model_dir: Path) -> str:
    """The first ``widget:`` text of the model card's front matter ('' when there is none)."""
    widget = _card(model_dir)[0].get("widget")
    if isinstance(widget, list) and widget and isinstance(widget[0], dict):
        return str(widget[0].get("text") or "")
    return ""


# The sentence glotta's card template (glotta/export/model_card.md) always writes; it names the
# recipe even when the card has no model-index (an export made without evaluation results).
_RECIPE_LINE = re.compile(r"with \[glotta\]\([^)]*\) from the recipe\s+`([^`\n]+)`")


def model_id(model_dir: Path) -> str:
    """The id clients see and send as ``model``: the model card's name for the model (the Hub's
    ``model-index`` name, which glotta sets to the recipe name, else the recipe named in glotta's
    card text), else the folder's name (every export folder is called ``export``)."""
    meta, text = _card(model_dir)
    index = meta.get("model-index")
    if isinstance(index, list) and index and isinstance(index[0], dict):
        name = index[0].get("name")
        if isinstance(name, str) and name.strip():
            return name.strip()
    match = _RECIPE_LINE.search(text)
    if match and match.group(1).strip():
        return match.group(1).strip()
    return model_dir.resolve().name


def chat_template_of(model_dir: Path) -> str | None:
    """The tokenizer's chat template (chat_template.jinja or tokenizer_config.json), if any."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, AttributeError):
            return None
        if isinstance(template, str) and template:
            return template
    return None


def check_model_dir(model_dir: Path) -> None:
    """Fail before the server starts when the folder cannot be a model."""
    if not model_dir.is_dir():
        raise GlottaError(
            f"{model_dir} is not a folder; give an exported glotta or HF model folder"
        )
    if not (model_dir / "config.json").is_file():
        raise GlottaError(
            f"{model_dir} has no config.json; give an exported model folder (RUN_DIR/export)"
        )


@dataclass
class Encoder:
    """A masked LM answering embeddings and fill-mask requests, one forward pass at a time."""

    model: object
    tokenizer: object  # a transformers tokenizer (it knows the mask token and special tokens)
    context: int
    lock: threading.Lock

    @classmethod
    def load(cls, model_dir: Path, device: str) -> Encoder:
        from transformers import AutoTokenizer

        from glotta.models import context_length, load_masked_lm

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = load_masked_lm(model_dir, device)
        return cls(model, tokenizer, context_length(model), threading.Lock())

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> list[torch.Tensor]:
        """Mean of the last hidden layer over each text's tokens, L2-normalised."""
        with self.lock:
            enc = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.model.device)
            out = self.model(**enc, output_hidden_states=True)
            hidden = out.hidden_states[-1].float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return list(torch.nn.functional.normalize(mean, dim=-1).cpu())

    @torch.inference_mode()
    def fill_mask(self, text: str, top_k: int) -> tuple[str, list[dict]]:
        """Top ``top_k`` guesses for each mask token (one is appended when the text has none)."""
        mask = self.tokenizer.mask_token
        if mask not in text:
            text = f"{text} {mask}".strip()
        with self.lock:
            enc = self.tokenizer(text, return_tensors="pt").to(self.model.device)
            probs = self.model(**enc).logits[0].float().softmax(-1)
        ids = enc["input_ids"][0]
        results = []
        for position in (ids == self.tokenizer.mask_token_id).nonzero().flatten().tolist():
            best = probs[position].topk(min(top_k, probs.shape[-1]))
            guesses = []
            for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True):
                filled = ids.clone()
                filled[position] = i
                guesses.append(
                    {
                        "token": self.tokenizer.decode([i]).strip(),
                        "token_id": i,
                        "probability": p,
                        "sequence": self.tokenizer.decode(filled, skip_special_tokens=True),
                    }
                )
            results.append({"position": position, "predictions": guesses})
        return text, results
