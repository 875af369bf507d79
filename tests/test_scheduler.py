"""The one decode scheduler and text streamer behind ``generate_batch`` and ``glotta serve``:
rows admitted between steps, finished or cancelled mid-batch, still give each row the tokens it
gives alone; text pieces never split a character or leak the start of a stop string."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from glotta.config import GenerateConfig
from glotta.generate import generate_ids
from glotta.scheduler import DecodeScheduler, Row, TextStreamer
from tests.test_decode import PROMPTS, tiny_gpt2, tiny_llama


class BytesTokenizer:
    """Token id = one UTF-8 byte; decoding replaces an incomplete character with U+FFFD, as
    a byte-fallback tokenizer does."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def pieces(text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], bool]:
    streamer = TextStreamer(BytesTokenizer(), stop)
    out, stopped = [], False
    for byte in text.encode():
        piece, stopped = streamer.push(byte)
        if piece:
            out.append(piece)
        if stopped:
            break
    last = streamer.flush()
    return out + ([last] if last else []), stopped


def test_pieces_hold_back_partial_characters_and_join_to_the_text():
    out, stopped = pieces("Он бродил, 日本")
    assert "".join(out) == "Он бродил, 日本" and not stopped
    assert all("\ufffd" not in piece for piece in out)
    assert out[:2] == ["О", "н"]  # each character as soon as its last byte arrives


def test_a_stop_string_cuts_the_text_and_its_start_is_never_sent():
    out, stopped = pieces("say goodbye now", stop=("bye", "zz"))
    assert stopped and "".join(out) == "say good"
    assert not any(piece.endswith(("b", "by")) for piece in out[:-1])  # held back, not sent
    out, stopped = pieces("no match here", stop=("xyz",))
    assert not stopped and "".join(out) == "no match here"


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    return tiny_gpt2() if request.param == "gpt2" else tiny_llama()


CFG = GenerateConfig(temperature=0.9, top_k=20, repetition_penalty=1.1, max_new_tokens=10)


def alone(model, prompt, seed):
    return list(generate_ids(model, prompt, dataclasses.replace(CFG, seed=seed), None))


def test_rows_admitted_between_steps_and_cancelled_ones_leave_the_others_unchanged(model):
    scheduler = DecodeScheduler(model, max_rows=4)
    rows = [Row(p, CFG, seed=10 + i) for i, p in enumerate(PROMPTS)]
    produced: dict[int, list[int]] = {i: [] for i in range(len(rows))}
    index = {row: i for i, row in enumerate(rows)}

    def record(results):
        for row, token in results:
            if token is not None:
                produced[index[row]].append(token)

    record(scheduler.admit(rows[:2]))
    record(scheduler.step())
    record(scheduler.admit(rows[2:]))  # joins a running batch, at other positions
    record(scheduler.step())
    scheduler.cancel(rows[1])
    record(scheduler.step())
    assert rows[1] not in scheduler.running and len(scheduler.running) == 3
    while scheduler.running:
        record(scheduler.step())
        scheduler.drop_finished()
    for i in (0, 2, 3):
        assert produced[i] == alone(model, PROMPTS[i], 10 + i)
        assert rows[i].finish_reason == "length" and rows[i].new_ids == produced[i]
    assert produced[1] == alone(model, PROMPTS[1], 11)[:3]  # two steps after its prefill
    assert rows[1].finish_reason == "cancelled"
    assert rows[0].batch_peak == 4 and rows[2].batch_peak == 4


def test_a_prompt_that_leaves_no_room_finishes_at_once(model):
    scheduler = DecodeScheduler(model)
    full, empty = Row(list(range(48)), CFG), Row([], CFG)
    assert scheduler.admit([full, empty]) == [(full, None), (empty, None)]
    assert full.finish_reason == empty.finish_reason == "length" and scheduler.decoder is None
    assert scheduler.step() == []


def test_end_of_text_ends_a_row_without_a_token(model):
    expected = alone(model, PROMPTS[0], 3)
    row = Row(PROMPTS[0], CFG, seed=3, eos_id=expected[2])
    scheduler = DecodeScheduler(model)
    results = scheduler.admit([row])
    while scheduler.running:
        results += scheduler.step()
    assert [token for _, token in results] == [*expected[:2], None]
    assert row.finish_reason == "stop" and row.new_ids == expected[:2]
    assert torch.equal(row.history[: row.length], torch.tensor(PROMPTS[0] + expected[:2]))
