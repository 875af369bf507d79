"""glotta serve with the official OpenAI client: completions, streaming, models, and batching that
leaves every request's output as ``glotta generate`` would print it."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from tokenizers import Tokenizer

from tests.conftest import glotta
from tests.serve.conftest import API_KEY, metric

SHORT = "Он"
LONG = "Он долго бродил по лесу и думал о том, что"
# Batch mates: prompts of other lengths (so rows are left-padded differently) and other settings.
MATES = ["", "В", "Когда он вернулся домой, было уже", "Она сказала, что"]


@pytest.fixture(scope="module")
def client(gpt2_server):
    return openai.OpenAI(base_url=gpt2_server.url + "/v1", api_key=API_KEY, max_retries=0)


def generate_cli(server, prompt: str, *flags: str) -> str:
    """What ``glotta generate`` prints after the prompt (its continuation)."""
    result = glotta("generate", "--model", str(server.model_dir), *flags, prompt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(prompt) and result.stdout.endswith("\n"), result.stdout
    return result.stdout[len(prompt) : -1]


def complete(client, prompt: str, **kwargs):
    extra = {k: kwargs.pop(k) for k in ("top_k", "repetition_penalty") if k in kwargs}
    return client.completions.create(
        model=client.served, prompt=prompt, extra_body=extra or None, **kwargs
    )


@pytest.fixture(autouse=True, scope="module")
def _served_name(client, gpt2_server):
    client.served = gpt2_server.model


def test_models_lists_the_served_model(client, gpt2_server):
    models = client.models.list().data
    assert [m.id for m in models] == ["demo"]  # the recipe's name from the model card
    assert gpt2_server.model == "demo" and gpt2_server.model_dir.name == "export"
    assert models[0].to_dict()["max_model_len"] == 64  # the tiny run's block size


def test_requests_may_name_the_model_by_id_or_by_folder(client):
    for name in ("demo", "export"):  # the folder name was the id before; old clients send it
        result = client.completions.create(model=name, prompt=SHORT, max_tokens=2, seed=1)
        assert result.model == "demo" and len(result.choices) == 1


def test_completion_counts_tokens_and_says_why_it_stopped(client, gpt2_server):
    result = complete(client, LONG, max_tokens=12, temperature=0.8, seed=3)
    tokenizer = Tokenizer.from_file(str(gpt2_server.model_dir / "tokenizer.json"))
    prompt_tokens = len(tokenizer.encode(LONG, add_special_tokens=False).ids)
    (choice,) = result.choices
    assert result.usage.prompt_tokens == prompt_tokens
    assert 1 <= result.usage.completion_tokens <= 12
    assert result.usage.total_tokens == prompt_tokens + result.usage.completion_tokens
    assert choice.finish_reason == ("length" if result.usage.completion_tokens == 12 else "stop")
    assert choice.text and result.model == gpt2_server.model and result.object == "text_completion"


def test_streaming_gives_the_same_text_as_one_response(client):
    whole = complete(client, LONG, max_tokens=30, temperature=1.0, top_p=0.9, seed=11)
    stream = complete(
        client, LONG, max_tokens=30, temperature=1.0, top_p=0.9, seed=11, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(texts) > 1  # really streamed, piece by piece
    assert "".join(texts) == whole.choices[0].text
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == whole.choices[0].finish_reason and not any(reasons[:-1])
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_ends_with_done_on_the_wire(gpt2_server):
    conn = http.client.HTTPConnection("127.0.0.1", int(gpt2_server.url.rsplit(":", 1)[1]))
    body = {"prompt": SHORT, "max_tokens": 5, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("content-type").startswith("text/event-stream")
    events = [e for e in response.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_list_prompts_and_n_give_one_choice_each(client):
    result = complete(client, [SHORT, LONG], n=2, max_tokens=6, temperature=1.0, seed=5)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert result.choices[0].text != result.choices[1].text or result.choices[0].text == ""


def test_stop_strings_cut_the_text_and_finish_with_stop(client):
    full = complete(client, LONG, max_tokens=30, temperature=0, repetition_penalty=1.1).choices[0]
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    assert len(stop) == 2
    cut = complete(
        client, LONG, max_tokens=30, temperature=0, repetition_penalty=1.1, stop=[stop, "\x00"]
    ).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]


def test_greedy_in_a_batch_equals_glotta_generate(client, gpt2_server):
    """Greedy output does not depend on the batch: same text as ``glotta generate``, with batch
    mates of other prompt lengths and sampling settings decoded in the same steps."""
    flags = ["--temperature", "0", "--max-new-tokens", "20", "--repetition-penalty", "1.1"]
    expected = {p: generate_cli(gpt2_server, p, *flags) for p in (SHORT, LONG)}
    assert all(expected.values())
    for _attempt in range(5):
        with ThreadPoolExecutor(len(MATES) + 2) as pool:
            mates = [
                pool.submit(complete, client, m, max_tokens=48, temperature=1.2, top_k=20, seed=i)
                for i, m in enumerate(MATES)
            ]
            greedy = {
                p: pool.submit(
                    complete, client, p, max_tokens=20, temperature=0, repetition_penalty=1.1
                )  # fmt: skip
                for p in (SHORT, LONG)
            }
            results = {p: f.result() for p, f in greedy.items()}
            [m.result() for m in mates]
        for prompt, result in results.items():
            assert result.choices[0].text == expected[prompt], prompt
        peaks = [r.to_dict()["glotta"]["batch_peak"][0] for r in results.values()]
        if min(peaks) >= 3:
            return
    pytest.fail(f"the greedy requests never shared a batch with two others (peaks {peaks})")


def test_seeded_sampling_equals_glotta_generate_with_the_same_seed(client, gpt2_server):
    flags = ["--temperature", "0.9", "--top-k", "40", "--top-p", "0.9",
             "--repetition-penalty", "1.1", "--seed", "7", "--max-new-tokens", "16"]  # fmt: skip
    expected = generate_cli(gpt2_server, LONG, *flags)
    settings = dict(max_tokens=16, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.1)
    with ThreadPoolExecutor(4) as pool:
        mates = [
            pool.submit(complete, client, m, max_tokens=48, temperature=1.0) for m in MATES[:3]
        ]
        ours = pool.submit(complete, client, LONG, seed=7, **settings)
        [m.result() for m in mates]
    assert ours.result().choices[0].text == expected


def test_chat_on_a_base_model_says_to_use_completions(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=client.served, messages=[{"role": "user", "content": "Привет"}]
        )
    assert "base model" in str(error.value) and "/v1/completions" in str(error.value)


def test_a_client_that_disconnects_frees_its_slot(gpt2_server):
    port = int(gpt2_server.url.rsplit(":", 1)[1])
    before = metric(gpt2_server, "generation_tokens_total")
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = {"prompt": SHORT, "max_tokens": 48, "stream": True, "n": 4, "temperature": 1.0}
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    assert response.status == 200
    response.fp.readline()  # the first event: the sequences are decoding
    conn.sock.close()
    conn.close()
    for _ in range(100):
        if metric(gpt2_server, "busy_slots") == 0 and metric(gpt2_server, "queue_depth") == 0:
            break
        time.sleep(0.1)
    assert metric(gpt2_server, "busy_slots") == 0
    # Four sequences of up to 48 tokens: cancelled ones stop before all 192 are generated.
    assert metric(gpt2_server, "generation_tokens_total") - before < 4 * 48
