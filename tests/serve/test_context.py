"""The context a server allows is the model's own (``glotta.models.context_length``): RoBERTa-
family encoders, CamemBERT included, count positions after the padding id, so two of their
``max_position_embeddings`` are never usable."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    CamembertConfig,
    CamembertForMaskedLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

from glotta.serve.models import Encoder

VOCAB = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "a", "b", "c"]
SIZES = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=32, max_position_embeddings=34)  # fmt: skip


def save_encoder(folder, model) -> None:
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, pad_token="<pad>", mask_token="<mask>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)


@pytest.mark.parametrize(
    ("config_class", "model_class", "usable"),
    [
        (BertConfig, BertForMaskedLM, 34),  # positions from 0
        (RobertaConfig, RobertaForMaskedLM, 32),  # from pad_token_id + 1 = 2
        (XLMRobertaConfig, XLMRobertaForMaskedLM, 32),
        (CamembertConfig, CamembertForMaskedLM, 32),
    ],
)
def test_an_encoders_context_leaves_out_the_positions_before_the_first(
    tmp_path, config_class, model_class, usable
):
    save_encoder(tmp_path, model_class(config_class(**SIZES, pad_token_id=1)))
    encoder = Encoder.load(tmp_path, "cpu")
    assert encoder.context == usable
    # The whole context is usable: a text filling it runs (one more position would not exist).
    enc = encoder.tokenizer(" ".join(["a"] * usable), add_special_tokens=False)
    assert len(enc["input_ids"]) == usable
    assert encoder.embed([" ".join(["a"] * usable)])[0].shape == (16,)
