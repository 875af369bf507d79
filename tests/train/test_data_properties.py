"""Property-based tests (Hypothesis) of the data order and of masking.

- Resume at any step: a sampler rebuilt from the position saved after any number of steps takes
  exactly the indices the uninterrupted sampler takes next, across epoch boundaries, and every
  epoch is a permutation of all blocks.
- Masking: labels are the original tokens exactly where a token was chosen, special tokens are
  never chosen, only chosen tokens change, whole words go together, a row's masks depend on its
  seed and tokens only, and the chosen fraction, the [MASK] / random / unchanged split stay
  within binomial bounds of 15% and 80/10/10.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from glotta.masking import IGNORE_INDEX, MaskingSpec, mask_tokens, word_starts
from glotta.train.data import DataPosition, EpochSampler, rank_slice
from tests.tokenizer.conftest import russian_sentences
from tests.train.conftest import trained_tokenizer


@given(
    blocks=st.integers(1, 40),
    batch=st.integers(1, 17),
    steps_before=st.integers(0, 12),
    steps_after=st.integers(1, 8),
    seed=st.integers(0, 2**31),
)
def test_resume_at_any_step_takes_the_same_indices(blocks, batch, steps_before, steps_after, seed):
    straight = EpochSampler(blocks, seed)
    taken = [straight.take(batch) for _ in range(steps_before + steps_after)]
    interrupted = EpochSampler(blocks, seed)
    for _ in range(steps_before):
        interrupted.take(batch)
    saved = interrupted.position.state_dict()  # what a checkpoint stores
    resumed = EpochSampler(blocks, seed, DataPosition(**saved))
    for step in range(steps_before, steps_before + steps_after):
        assert resumed.take(batch).tolist() == taken[step].tolist()
    # every epoch visits every block once
    flat = np.concatenate(taken)
    for epoch in range(len(flat) // blocks):
        assert sorted(flat[epoch * blocks : (epoch + 1) * blocks].tolist()) == list(range(blocks))


@given(world=st.integers(1, 8), per_rank=st.integers(1, 6), seed=st.integers(0, 1000))
def test_ranks_take_disjoint_slices_whose_union_is_the_global_batch(world, per_rank, seed):
    indices = EpochSampler(50, seed).take(world * per_rank)
    parts = [rank_slice(indices, rank, world) for rank in range(world)]
    assert np.concatenate(parts).tolist() == indices.tolist()
    assert all(len(p) == per_rank for p in parts)


@pytest.fixture(scope="module")
def spec() -> MaskingSpec:
    """A real WordPiece trained on Russian contexts."""
    return MaskingSpec.from_folder(
        trained_tokenizer("wordpiece", 600, tuple(russian_sentences()[:800]))
    )


@st.composite
def id_rows(draw, vocab: int):
    rows, length = draw(st.integers(1, 6)), draw(st.integers(1, 40))
    ids = draw(st.lists(st.integers(0, vocab - 1), min_size=rows * length, max_size=rows * length))
    return torch.tensor(ids, dtype=torch.long).reshape(rows, length)


@given(data=st.data(), probability=st.floats(0.0, 1.0), whole_word=st.booleans())
def test_masking_invariants_for_any_tokens(spec, data, probability, whole_word):
    ids = data.draw(id_rows(spec.vocab_size))
    seeds = data.draw(st.lists(st.integers(0, 2**62), min_size=len(ids), max_size=len(ids)))
    inputs, labels = mask_tokens(ids, spec, seeds, probability, whole_word)
    chosen = labels != IGNORE_INDEX
    special = torch.from_numpy(spec.special[ids.numpy()])
    assert torch.equal(labels[chosen], ids[chosen])
    assert not (chosen & special).any()
    assert torch.equal(inputs[~chosen], ids[~chosen])
    if probability == 0.0:
        assert not chosen.any()
    if probability == 1.0:
        assert torch.equal(chosen, ~special)
    if whole_word:  # a word's tokens are all chosen or none (specials aside)
        starts = word_starts(ids.numpy(), spec, True)
        for r in range(len(ids)):
            for t in range(1, ids.shape[1]):
                if not starts[r, t] and not special[r, t] and not special[r, t - 1]:
                    assert chosen[r, t] == chosen[r, t - 1]
    # a row's masks depend on its seed and tokens alone: the first row by itself is the same
    alone_inputs, alone_labels = mask_tokens(ids[:1], spec, seeds[:1], probability, whole_word)
    assert torch.equal(alone_inputs, inputs[:1]) and torch.equal(alone_labels, labels[:1])


@given(seed=st.integers(0, 2**40), probability=st.sampled_from([0.15, 0.3, 0.5]))
def test_masking_statistics_are_binomial(spec, seed, probability):
    """Random non-special tokens, 64 x 64: the chosen fraction is within 5 standard deviations of
    the probability, and the chosen tokens split 80/10/10 within 5 standard deviations."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.from_numpy(spec.random_ids)[
        torch.randint(len(spec.random_ids), (64, 64), generator=generator)
    ]
    seeds = [seed + r for r in range(64)]
    inputs, labels = mask_tokens(ids, spec, seeds, probability, whole_word=False)
    chosen = labels != IGNORE_INDEX
    n = ids.numel()
    k = int(chosen.sum())
    assert abs(k - n * probability) <= 5 * math.sqrt(n * probability * (1 - probability))
    masked = int((inputs[chosen] == spec.mask_id).sum())
    kept = int((inputs[chosen] == ids[chosen]).sum())
    randomized = k - masked - kept
    for count, share in ((masked, 0.8), (randomized, 0.1)):
        assert abs(count - k * share) <= 5 * math.sqrt(k * share * (1 - share)) + 1, (count, k)
    # unchanged: 10%, plus the random replacements that drew the original token (1 in ~600)
    assert abs(kept - k * 0.1) <= 5 * math.sqrt(k * 0.09) + 0.01 * k + 1


def test_a_shard_without_a_complete_block_is_refused():
    with pytest.raises(ValueError, match="no complete block in the shard"):
        EpochSampler(0, seed=0)
    assert EpochSampler(1, seed=0).take(3).tolist() == [0, 0, 0]  # one block, three epochs


@given(
    documents=st.lists(st.lists(st.integers(0, 65535), max_size=30), max_size=8),
    block_size=st.integers(1, 9),
    vocab=st.sampled_from([65536, 70000]),
    data=st.data(),
)
def test_blocks_are_consecutive_slices_with_next_token_targets(
    tmp_path_factory, documents, block_size, vocab, data
):
    """Block i is tokens[i*B : i*B + B + 1]: inputs its first B, targets its last B."""
    from glotta.tokenizer.shards import ShardWriter
    from glotta.train.data import BlockDataset

    path = tmp_path_factory.mktemp("blocks") / "train.bin"
    with ShardWriter(path, vocab, eos_id=0) as writer:
        writer.write_documents(documents)
    tokens = [i for doc in documents for i in [*doc, 0]]
    dataset = BlockDataset(path, block_size)
    assert dataset.num_blocks == max(0, (len(tokens) - 1) // block_size)
    if not dataset.num_blocks:
        return
    rows = data.draw(st.lists(st.integers(0, dataset.num_blocks - 1), min_size=1, max_size=5))
    inputs, targets = dataset.batch(rows, step=7, first_row=3)
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.shape == targets.shape == (len(rows), block_size)
    for r, i in enumerate(rows):
        assert inputs[r].tolist() == tokens[i * block_size : i * block_size + block_size]
        assert targets[r].tolist() == tokens[i * block_size + 1 : i * block_size + block_size + 1]
