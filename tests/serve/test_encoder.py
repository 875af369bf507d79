"""glotta serve with an encoder (a real tiny BERT trained by glotta): embeddings through the OpenAI
client, fill-mask, and causal-only endpoints refused with a 400 that says why."""

from __future__ import annotations

import math

import openai
import pytest

from tests.serve.conftest import call


@pytest.fixture(scope="module")
def client(bert_server):
    return openai.OpenAI(base_url=bert_server.url + "/v1", api_key="unused", max_retries=0)


def test_embeddings_are_unit_vectors_one_per_input(client, bert_server):
    texts = ["Он долго бродил по лесу.", "Она читала книгу.", "Он долго бродил по лесу."]
    result = client.embeddings.create(model=bert_server.model, input=texts)  # base64 on the wire
    assert bert_server.model == result.model == "demo-bert"  # the recipe's name, not "export"
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) == 128  # BERT-tiny's width
    for v in vectors:
        assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-6)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    assert result.usage.prompt_tokens > 0
    floats = client.embeddings.create(
        model=bert_server.model, input=texts[1], encoding_format="float"
    )
    assert floats.data[0].embedding == pytest.approx(vectors[1], abs=1e-6)


def test_fill_mask_gives_top_predictions_with_probabilities(bert_server):
    status, _, body = call(bert_server, "/v1/fill-mask", {"input": "Он долго [MASK] по лесу.",
                                                           "top_k": 4})  # fmt: skip
    assert status == 200, body
    (mask,) = body["masks"]
    probabilities = [p["probability"] for p in mask["predictions"]]
    assert len(probabilities) == 4 and probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.0 + 1e-6
    for p in mask["predictions"]:
        assert "[MASK]" not in p["sequence"] and p["sequence"].lower().startswith("он долго")
        assert p["token"].removeprefix("##") in p["sequence"] and p["token_id"] >= 0
    status, _, body = call(bert_server, "/v1/fill-mask", {"input": "Он долго бродил"})
    assert status == 200 and body["input"].endswith("[MASK]") and len(body["masks"]) == 1


def test_causal_endpoints_on_an_encoder_are_400_saying_so(client, bert_server):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=bert_server.model, prompt="Он")
    assert "encoder" in str(error.value) and "/v1/embeddings" in str(error.value)
    status, _, body = call(bert_server, "/v1/chat/completions",
                           {"messages": [{"role": "user", "content": "Он"}]})  # fmt: skip
    assert status == 400 and "does not generate" in body["error"]["message"]
    status, _, body = call(bert_server, "/v1/fill-mask", {"input": "Он", "top_k": 0})
    assert status == 400 and body["error"]["param"] == "top_k"
