"""Request validation for ``glotta serve``: OpenAI-style error bodies that name the bad field.

Each parser takes the decoded JSON body and returns a dataclass, or raises ``ApiError`` with the
HTTP status, a one-line message saying what to send instead, and the field (``param``), which
the app turns into ``{"error": {"message", "type", "param", "code"}}`` as OpenAI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large"}
        kind |= {429: "rate_limit_error", 503: "server_overloaded", 500: "server_error"}
        return {
            "error": {
                "message": self.message,
                "type": kind.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class Limits:
    """The server's limits (the ``glotta serve`` flags)."""

    max_batch: int = 8
    max_queue: int = 64
    max_tokens: int = 256
    max_prompt_tokens: int = 1024
    max_body_bytes: int = 1_000_000
    max_n: int = 8


@dataclass
class Sampling:
    """Sampling fields common to completions and chat completions (OpenAI's defaults)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # not in OpenAI's API (vLLM and llama-server have it): 0 = off
    repetition_penalty: float = 1.0
    seed: int | None = None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False  # vLLM's extension: always generate max_tokens (benchmarks)


@dataclass
class CompletionRequest:
    prompts: list[str]
    sampling: Sampling


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    sampling: Sampling


def decode_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def check_model(
    body: dict[str, Any], served: str, aliases: tuple[str, ...] = (), required: bool = False
) -> None:
    """``model`` may be omitted (one model is served); if given it must name it: its id, or an
    alias (the folder name, which was the id before ids came from the model card)."""
    name = body.get("model")
    if name is None and not required:
        return
    if not isinstance(name, str):
        raise ApiError(400, "'model' must be a string", "model", "invalid_type")
    if name != served and name not in aliases:
        raise ApiError(
            404,
            f"model {name!r} is not served here; this server serves {served!r} (GET /v1/models)",
            "model",
            "model_not_found",
        )


def parse_completion(body: dict[str, Any], limits: Limits) -> CompletionRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = prompt
    else:
        raise ApiError(400, "'prompt' must be a string or a non-empty list of strings", "prompt")
    return CompletionRequest(prompts, parse_sampling(body, limits))


def parse_chat(body: dict[str, Any], limits: Limits) -> ChatRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of messages", "messages")
    for i, m in enumerate(messages):
        if not (
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
        ):
            raise ApiError(
                400, "each message must be {'role': str, 'content': str}", f"messages[{i}]"
            )
    return ChatRequest(messages, parse_sampling(body, limits))


def parse_sampling(body: dict[str, Any], limits: Limits) -> Sampling:
    s = Sampling()
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None:
        s.max_tokens = _int(max_tokens, "max_tokens", 1, limits.max_tokens, "--max-tokens")
    s.temperature = _number(body, "temperature", 1.0, 0.0, None)
    s.top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if s.top_p == 0.0:
        raise ApiError(400, "'top_p' must be greater than 0 (1 = off)", "top_p")
    top_k = body.get("top_k")
    if top_k is not None:
        s.top_k = max(0, _int(top_k, "top_k", -1, None))  # -1 (vLLM's "off") is 0 here
    s.repetition_penalty = _number(body, "repetition_penalty", 1.0, 0.0, None)
    if s.repetition_penalty == 0.0:
        raise ApiError(
            400, "'repetition_penalty' must be greater than 0 (1 = off)", "repetition_penalty"
        )
    seed = body.get("seed")
    if seed is not None:
        s.seed = _int(seed, "seed", -(2**63), 2**63 - 1)
    n = body.get("n")
    if n is not None:
        s.n = _int(n, "n", 1, limits.max_n, "the server's limit")
    stop = body.get("stop")
    if isinstance(stop, str):
        s.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(x, str) for x in stop) and len(stop) <= 4:
        s.stop = stop
    elif stop is not None:
        raise ApiError(400, "'stop' must be a string or a list of up to 4 strings", "stop")
    if any(x == "" for x in s.stop):
        raise ApiError(400, "'stop' strings must not be empty", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError(400, "'stream' must be true or false", "stream", "invalid_type")
    s.stream = bool(stream)
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise ApiError(400, "'ignore_eos' must be true or false", "ignore_eos", "invalid_type")
    s.ignore_eos = ignore_eos
    options = body.get("stream_options")
    if isinstance(options, dict):
        s.include_usage = options.get("include_usage") is True
    elif options is not None:
        raise ApiError(400, "'stream_options' must be an object", "stream_options")
    return s


def _int(value: Any, name: str, low: int | None, high: int | None, limit_name: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer, got {value!r}", name, "invalid_type")
    if low is not None and value < low:
        raise ApiError(400, f"'{name}' must be at least {low}, got {value}", name)
    if high is not None and value > high:
        where = f" ({limit_name})" if limit_name else ""
        raise ApiError(400, f"'{name}' must be at most {high}{where}, got {value}", name)
    return value


def _number(
    body: dict[str, Any], name: str, default: float, low: float | None, high: float | None
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"'{name}' must be a number, got {value!r}", name, "invalid_type")
    if value != value or value in (float("inf"), float("-inf")):
        raise ApiError(400, f"'{name}' must be a finite number", name)
    if low is not None and value < low:
        raise ApiError(400, f"'{name}' must be at least {low:g}, got {value:g}", name)
    if high is not None and value > high:
        raise ApiError(400, f"'{name}' must be at most {high:g}, got {value:g}", name)
    return float(value)


def parse_texts(body: dict[str, Any], name: str = "input") -> list[str]:
    value = body.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise ApiError(400, f"'{name}' must be a string or a non-empty list of strings", name)
