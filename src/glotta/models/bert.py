"""BERT (Devlin et al., 2019) and RoBERTa (Liu et al., 2019): encoders trained as masked LMs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glotta.config import ModelConfig
from glotta.errors import GlottaError
from glotta.models.family import ModelFamily, Shape, transformers_class

if TYPE_CHECKING:
    from transformers import BertConfig, RobertaConfig

# (layers, hidden, heads) of BERT-Base/Large and of the smaller BERTs of Turc et al. (2019),
# "Well-read students learn better" (google-research/bert's 24 small models): heads = hidden / 64,
# feed-forward width = 4 x hidden. Parameters with BERT's 30,522-token vocabulary: tiny 4.4M,
# mini 11.3M, small 29.1M, medium 41.7M, base 110M, large 340M. RoBERTa-base/large have the
# base/large shapes.
BERT_PRESETS = {
    "tiny": Shape(2, 128, 2),
    "mini": Shape(4, 256, 4),
    "small": Shape(4, 512, 8),
    "medium": Shape(8, 512, 8),
    "base": Shape(12, 768, 12),
    "large": Shape(24, 1024, 16),
}


class BertFamily(ModelFamily):
    name = "bert"
    objectives = ("mlm",)
    model_types = ("bert", "electra", "distilbert")
    presets = BERT_PRESETS
    model_class = "BertForMaskedLM"
    auto_class = "AutoModelForMaskedLM"

    def hf_config(self, cfg: ModelConfig, vocab_size, block_size, special_ids) -> BertConfig:
        from transformers import BertConfig

        return BertConfig(
            **self._common(cfg, vocab_size, special_ids),
            max_position_embeddings=cfg.n_positions or block_size,
            type_vocab_size=2,
        )

    def _common(self, cfg: ModelConfig, vocab_size: int, special_ids: dict[str, int]) -> dict:
        shape = self.shape(cfg)
        return dict(
            vocab_size=vocab_size,
            hidden_size=shape.n_embd,
            num_hidden_layers=shape.n_layer,
            num_attention_heads=shape.n_head,
            intermediate_size=shape.n_inner or 4 * shape.n_embd,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            pad_token_id=special_ids["pad"],
            tie_word_embeddings=cfg.tie_embeddings,
        )

    def problems(self, cfg: ModelConfig, block_size: int) -> list[str]:
        found = super().problems(cfg, block_size)
        if cfg.n_kv_head:
            found.append(f"model.n_kv_head: {self.name} has no grouped-query attention; set 0")
        return found

    def load_init_from(self, cfg: ModelConfig, vocab_size: int, block_size: int):
        """Continued pretraining; a checkpoint without a masked-LM head (a ``BertModel``, e.g. a
        sentence encoder) gets a fresh head, and the message lists the new weights."""
        import torch

        try:
            model, info = transformers_class(self.auto_class).from_pretrained(
                cfg.init_from, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError) as exc:
            raise GlottaError(f"model.init_from: cannot load {cfg.init_from!r}: {exc}") from None
        if model.config.model_type != cfg.arch:
            print(
                f"glotta: model.init_from {cfg.init_from!r} is a {model.config.model_type} model "
                f"(model.arch says {cfg.arch!r}); continuing with {type(model).__name__}",
                flush=True,
            )
        if info.get("missing_keys"):
            print(
                f"glotta: model.init_from {cfg.init_from!r} has no masked-LM head "
                f"({(model.config.architectures or ['?'])[0]}); a new head is initialised "
                f"randomly: {', '.join(sorted(info['missing_keys']))}",
                flush=True,
            )
        if model.get_input_embeddings().num_embeddings < vocab_size:
            raise GlottaError(
                f"model.init_from {cfg.init_from!r} has {model.config.vocab_size} embeddings but "
                f"the tokenizer has {vocab_size} tokens; set tokenizer.pretrained to the model's "
                "own tokenizer"
            )
        available = self.context_length(model.config)
        if available < block_size:
            raise GlottaError(
                f"train.block_size ({block_size}) is longer than the {available} positions of "
                f"model.init_from {cfg.init_from!r}"
            )
        return model

    def blocks(self, model):
        return model.base_model.encoder.layer

    def position_embeddings(self, model):
        return model.base_model.embeddings.position_embeddings


class RobertaFamily(BertFamily):
    name = "roberta"
    model_types = ("roberta", "xlm-roberta", "camembert")
    model_class = "RobertaForMaskedLM"

    def hf_config(self, cfg: ModelConfig, vocab_size, block_size, special_ids) -> RobertaConfig:
        from transformers import RobertaConfig

        # RoBERTa's positions start after the padding id (fairseq's convention), and its single
        # segment needs one token type.
        return RobertaConfig(
            **self._common(cfg, vocab_size, special_ids),
            max_position_embeddings=(cfg.n_positions or block_size) + special_ids["pad"] + 1,
            type_vocab_size=1,
            bos_token_id=special_ids.get("cls"),
            eos_token_id=special_ids.get("sep"),
        )

    def position_offset(self, config) -> int:
        return config.pad_token_id + 1
