"""TinyBERT's layer losses and the per-layer agreement table against plain tensor code.

The references below are written from the definitions (Jiao et al. 2020, eq. 7-9), not from
glotta's functions: a sum of squared errors divided by the width (hidden states) or by heads x keys
(attention scores), and a cosine as a dot product over norms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from glotta.distill.encoder import cut_student, load_encoder_teacher
from glotta.distill.losses import attention_mse_sum, hidden_mse_sum
from glotta.evaluate.agreement import hidden_state_agreement
from glotta.masking import MaskedBlockDataset, MaskingSpec
from tests.corpus.real_text import swedish_answers
from tests.distill.test_trim_vocab import minilm_dir


def test_hidden_mse_sum_is_squared_error_over_width_summed_over_positions():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 7, 12), torch.randn(3, 7, 12)
    expected = 0.0
    for b in range(3):
        for t in range(7):
            expected += (
                sum((student[b, t, d] - teacher[b, t, d]).item() ** 2 for d in range(12)) / 12
            )
    assert hidden_mse_sum(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_attention_mse_sum_is_squared_error_over_heads_and_keys_summed_over_queries():
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)  # batch, heads, q, k
    per_query = ((student - teacher) ** 2).permute(0, 2, 1, 3).reshape(2, 5, 15)
    expected = float(per_query.sum() / 15)
    assert attention_mse_sum(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    # not the mean over queries, nor over the batch: doubling the queries doubles the sum
    doubled = attention_mse_sum(torch.cat([student, student], 2), torch.cat([teacher, teacher], 2))
    assert doubled.item() == pytest.approx(2 * expected, rel=1e-5)


def _real_blocks(tmp_path) -> MaskedBlockDataset:
    """Real Swedish text tokenized by MiniLM's own tokenizer, as a token stream of 4 blocks."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    ids = []
    for text in swedish_answers()[:40]:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = np.asarray(ids[: 4 * 30], dtype=np.uint16)
    assert len(stream) == 120
    return MaskedBlockDataset(stream, 32, MaskingSpec.from_folder(minilm_dir()))


def test_agreement_table_matches_a_plain_cosine_and_mse(tmp_path):
    """A student cut from teacher layers 0 and 1, compared with teacher layers 2 and 5 (a map it
    was not cut with, so the numbers are far from 1 and 0)."""
    teacher = load_encoder_teacher(str(minilm_dir())).eval()
    student = cut_student(teacher, [0, 1]).eval()
    data = _real_blocks(tmp_path)
    table = hidden_state_agreement(student, teacher, data, [2, 5], batch_size=3)

    inputs = data.blocks(range(4))
    reference = AutoModel.from_pretrained(minilm_dir()).eval()
    with torch.no_grad():
        theirs = reference(input_ids=inputs, output_hidden_states=True).hidden_states
        mine = student.base_model(input_ids=inputs, output_hidden_states=True).hidden_states
    assert table["positions"] == inputs.numel() == 128
    for row, (s, t) in zip(table["layers"], [(0, 0), (1, 3), (2, 6)], strict=True):
        a, b = mine[s].reshape(-1, 384).double(), theirs[t].reshape(-1, 384).double()
        cosine = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean().item()
        mse = ((a - b) ** 2).mean().item()
        assert (row["student_layer"], row["teacher_layer"]) == (s, t)
        assert row["cosine"] == pytest.approx(cosine, rel=1e-5)
        assert row["mse"] == pytest.approx(mse, rel=1e-5)
    assert table["layers"][0]["cosine"] == pytest.approx(1.0)  # the same embeddings
    assert table["last_layer_cosine"] < 0.9  # layer 2 of 6 is not layer 6


def test_cosine_term_without_both_hidden_states_is_refused():
    from glotta.distill.losses import LossWeights, distillation_loss_sum

    logits, targets, hidden = (
        torch.zeros(1, 2, 5),
        torch.zeros(1, 2, dtype=torch.long),
        torch.ones(1, 2, 3),
    )
    message = "alpha_cos > 0 needs the student's and the teacher's hidden states"
    for student, teacher in ((hidden, None), (None, hidden), (None, None)):
        with pytest.raises(ValueError, match=message):
            distillation_loss_sum(logits, logits, targets, LossWeights(), student, teacher)


def test_term_means_are_per_position_since_the_last_report():
    from glotta.distill.losses import TermMeans

    means = TermMeans()
    means.add({"hidden": torch.tensor(6.0), "attention": torch.tensor(3.0)}, positions=2)
    means.add({"hidden": torch.tensor(4.0)}, positions=3)
    assert means.pop() == {"loss_hidden": 2.0, "loss_attention": 0.6}
    assert means.pop() == {}  # reset after a report
    means.add({"kl": torch.tensor(1.5)}, positions=0)
    assert means.pop() == {"loss_kl": 1.5}  # no positions: the sum, not a division by zero
