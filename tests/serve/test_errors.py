"""Bad input and load over raw HTTP: OpenAI-style error bodies naming the field, 401/404/413/503,
and no leaked decode slot after 200 mixed requests from 32 concurrent clients."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import glotta
from tests.serve.conftest import call, metric

GOOD = {"prompt": "Он долго", "max_tokens": 8}


def assert_error(result, status: int, param: str | None, *words: str):
    got, _, body = result
    assert got == status, body
    error = body["error"]
    assert error["param"] == param, error
    assert error["type"] and error["message"], error
    for word in words:
        assert word in error["message"], error


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({**GOOD, "max_tokens": "ten"}, "max_tokens", ["integer"]),
        ({**GOOD, "max_tokens": 49}, "max_tokens", ["at most 48", "--max-tokens"]),
        ({**GOOD, "max_tokens": 0}, "max_tokens", ["at least 1"]),
        ({**GOOD, "temperature": -0.5}, "temperature", ["at least 0"]),
        ({**GOOD, "temperature": "hot"}, "temperature", ["number"]),
        ({**GOOD, "top_p": 1.5}, "top_p", ["at most 1"]),
        ({**GOOD, "top_k": 2.5}, "top_k", ["integer"]),
        ({**GOOD, "n": True}, "n", ["integer"]),
        ({**GOOD, "stop": [1, 2]}, "stop", ["string"]),
        ({**GOOD, "stream": "yes"}, "stream", ["true or false"]),
        ({"max_tokens": 4}, "prompt", ["string"]),
        ({"prompt": 42}, "prompt", ["string"]),
        ({"prompt": "слово " * 200}, "prompt", ["tokens", "limit is 40"]),
    ],
)
def test_bad_fields_get_400_naming_the_field(gpt2_server, body, param, words):
    assert_error(call(gpt2_server, "/v1/completions", body), 400, param, *words)


def test_malformed_json_and_non_objects(gpt2_server):
    assert_error(call(gpt2_server, "/v1/completions", raw=b'{"prompt": "x",'), 400, None, "JSON")
    assert_error(call(gpt2_server, "/v1/completions", raw=b"[1, 2]"), 400, None, "object")
    assert_error(call(gpt2_server, "/v1/completions", raw=b"\xff\xfe"), 400, None, "JSON")


def test_unknown_model_is_404_naming_the_served_one(gpt2_server):
    result = call(gpt2_server, "/v1/completions", {**GOOD, "model": "gpt-4o"})
    assert_error(result, 404, "model", "gpt-4o", gpt2_server.model)


def test_api_key_is_required_on_v1_but_not_on_probes(gpt2_server):
    assert_error(call(gpt2_server, "/v1/completions", GOOD, key=None), 401, None, "missing")
    assert_error(call(gpt2_server, "/v1/models", key="wrong"), 401, None, "invalid")
    assert call(gpt2_server, "/health", key=None)[0] == 200
    assert call(gpt2_server, "/metrics", key=None)[0] == 200
    assert call(gpt2_server, "/", key=None)[0] == 200


def test_body_over_the_limit_is_413(gpt2_server):
    result = call(gpt2_server, "/v1/completions", {**GOOD, "padding": "x" * 30000})
    assert_error(result, 413, None, "--max-body-bytes")


def test_encoder_endpoints_on_a_causal_lm_say_so(gpt2_server):
    result = call(gpt2_server, "/v1/embeddings", {"input": "Он"})
    assert_error(result, 400, None, "causal LM", "/v1/completions")
    assert_error(call(gpt2_server, "/v1/fill-mask", {"input": "Он"}), 400, None, "encoder")


def _mixed_request(i: int, server):
    """One of 200 requests: mostly good (plain, streamed, n > 1), some bad in every way."""
    rng = random.Random(i)
    kind = rng.choice(["good", "good", "good", "stream", "n", "bad_field", "bad_json",
                       "bad_key", "too_big", "long_prompt", "unknown_model"])  # fmt: skip
    body = {"prompt": rng.choice(["", "Он", "Когда он вернулся домой"]), "max_tokens": 24,
            "temperature": rng.choice([0, 0.7, 1.0]), "seed": i}  # fmt: skip
    if kind == "stream":
        body["stream"] = True
    elif kind == "n":
        body["n"] = 3
    elif kind == "bad_field":
        body["temperature"] = -1
    elif kind == "bad_json":
        return kind, call(server, "/v1/completions", raw=b"{not json")
    elif kind == "bad_key":
        return kind, call(server, "/v1/completions", body, key="nope")
    elif kind == "too_big":
        body["prompt"] = "x" * 25000
    elif kind == "long_prompt":
        body["prompt"] = "слово " * 100
    elif kind == "unknown_model":
        body["model"] = "nope"
    return kind, call(server, "/v1/completions", body)


def test_200_mixed_requests_from_32_clients_leave_no_busy_slot(gpt2_server):
    expected = {"good": {200, 503}, "stream": {200, 503}, "n": {200, 503}, "bad_field": {400},
                "bad_json": {400}, "bad_key": {401}, "too_big": {413}, "long_prompt": {400},
                "unknown_model": {404}}  # fmt: skip
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: _mixed_request(i, gpt2_server), range(200)))
    statuses = Counter()
    for kind, (status, headers, body) in results:
        statuses[status] += 1
        assert status in expected[kind], (kind, status, body)
        if status == 503:
            assert int(headers["Retry-After"]) >= 1 and body["error"]["code"] == "queue_full"
        elif status == 200 and kind != "stream":
            assert len(body["choices"]) == (3 if kind == "n" else 1)
        elif status == 200:
            assert body.rstrip().endswith("data: [DONE]")
    assert statuses[200] > 0 and statuses[503] > 0, statuses  # 32 clients > 4 slots + 8 waiting
    assert metric(gpt2_server, "busy_slots") == 0
    assert metric(gpt2_server, "queue_depth") == 0
    assert call(gpt2_server, "/health", key=None)[0] == 200
    good = call(gpt2_server, "/v1/completions", GOOD)
    assert good[0] == 200


def test_cli_refuses_a_folder_that_is_no_model(tmp_path):
    result = glotta("serve", str(tmp_path), "--port", "0")
    assert result.returncode == 2 and "no config.json" in result.stderr, result.stderr
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')  # no weights, no tokenizer
    result = glotta("serve", str(tmp_path), "--port", "0")
    assert result.returncode == 2, result.stderr
    assert "cannot serve" in result.stderr and "tokenizer.json" in result.stderr, result.stderr
