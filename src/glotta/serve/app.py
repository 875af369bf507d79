"""The ASGI app of ``glotta serve`` (Starlette on uvicorn): OpenAI-shaped endpoints, metrics, the
playground page. The model loads in a thread after the server starts (``/health`` is 503 until
then); causal LMs decode in the batched ``Engine``, encoders answer in a worker thread."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from glotta.config import GenerateConfig
from glotta.device import resolve_device
from glotta.serve.engine import Engine, Event, Sequence, request_id
from glotta.serve.guard import Guard, read_body
from glotta.serve.metrics import Metrics
from glotta.serve.models import Encoder, chat_template_of, widget_text
from glotta.serve.schemas import (
    ApiError,
    Limits,
    Sampling,
    check_model,
    decode_json,
    parse_chat,
    parse_completion,
    parse_texts,
)

log = logging.getLogger("glotta.serve")
DISCONNECTED = object()  # put on a request's event queue when its client goes away


@dataclass
class ServeConfig:
    model_dir: Path
    name: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    limits: Limits = Limits()
    aliases: tuple[str, ...] = ()  # other names a request's 'model' may use (the folder name)


class State:
    """The loaded model and everything the handlers share."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics(cfg.name, cfg.limits.max_batch, cfg.limits.max_queue)
        self.ready = False
        self.error: str | None = None
        self.kind = ""  # "causal" or "masked", known once loaded
        self.engine: Engine | None = None
        self.tokenizer = None
        self.encoder: Encoder | None = None
        self.eos_id: int | None = None
        self.context = 0
        self.chat_template = chat_template_of(cfg.model_dir)
        self.widget = widget_text(cfg.model_dir)
        self.created = int(time.time())
        self._chat_tokenizer = None

    def load(self) -> None:
        from glotta.models import eos_id_of, is_masked_lm, load_causal_lm, load_tokenizer

        device = resolve_device()
        folder = self.cfg.model_dir
        if is_masked_lm(folder):
            self.encoder = Encoder.load(folder, device)
            self.context, self.kind = self.encoder.context, "masked"
        else:
            self.tokenizer = load_tokenizer(folder)
            model = load_causal_lm(folder, device)
            self.eos_id = eos_id_of(self.tokenizer, model)
            limits = self.cfg.limits
            self.engine = Engine(
                model, self.tokenizer, self.eos_id, limits.max_batch, limits.max_queue, self.metrics
            )
            self.context, self.kind = self.engine.context, "causal"
            self.engine.start()
        self.ready = True

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        from transformers import AutoTokenizer

        if self._chat_tokenizer is None:
            self._chat_tokenizer = AutoTokenizer.from_pretrained(str(self.cfg.model_dir))
        return self._chat_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def require(self, kind: str, endpoint: str) -> None:
        if not self.ready:
            raise ApiError(503, "the model is still loading; retry shortly", code="loading",
                           headers={"Retry-After": "2"})  # fmt: skip
        if kind == self.kind:
            return
        if kind == "causal":
            raise ApiError(
                400,
                f"{self.cfg.name} is an encoder (masked LM): it does not generate text, so "
                f"{endpoint} is not available; use /v1/embeddings or /v1/fill-mask",
                code="wrong_model_kind",
            )
        raise ApiError(
            400,
            f"{self.cfg.name} is a causal LM: {endpoint} needs an encoder (BERT/RoBERTa "
            "export); use /v1/completions",
            code="wrong_model_kind",
        )

    def prompt_ids(self, prompt: str, param: str) -> list[int]:
        """The model input for ``prompt``: end-of-text then its tokens, as glotta generate does."""
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []
        limit = min(self.cfg.limits.max_prompt_tokens, self.context - 2)
        if len(ids) > limit:
            raise ApiError(
                400,
                f"'{param}' has {len(ids)} tokens; the limit is {limit} (context "
                f"{self.context} tokens, --max-prompt-tokens {self.cfg.limits.max_prompt_tokens})",
                param,
                "context_length_exceeded",
            )
        return [self.eos_id, *ids]


def build_app(cfg: ServeConfig, on_load_error=None) -> Starlette:
    state = State(cfg)

    def load() -> None:
        try:
            state.load()
            log.info("model %s loaded (%s)", cfg.name, state.kind)
        except Exception as exc:  # reported on /health and by the CLI
            state.error = str(exc) or type(exc).__name__
            log.error("cannot load %s: %s", cfg.model_dir, state.error)
            if on_load_error:
                on_load_error(state.error)

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=load, name="glotta-load", daemon=True).start()
        yield
        if state.engine:
            state.engine.stop()

    def route(path: str, handler, method: str) -> Route:
        return Route(path, partial(handler, state=state), methods=[method])

    routes = [
        route("/", page, "GET"),
        route("/health", health, "GET"),
        route("/metrics", metrics, "GET"),
        route("/v1/models", models, "GET"),
        route("/v1/completions", completions, "POST"),
        route("/v1/chat/completions", chat, "POST"),
        route("/v1/embeddings", embeddings, "POST"),
        route("/v1/fill-mask", fill_mask, "POST"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(Guard, state=state)
    app.state.glotta = state
    return app


async def _json_body(request: Request, state: State) -> dict:
    return decode_json(await read_body(request, state.cfg.limits.max_body_bytes))


async def page(request: Request, state: State) -> HTMLResponse:
    html = resources.files("glotta.serve").joinpath("page.html").read_text(encoding="utf-8")
    config = {
        "model": state.cfg.name,
        "kind": state.kind,
        "widget": state.widget,
        "maxTokens": state.cfg.limits.max_tokens,
        "needsKey": bool(state.cfg.api_key),
    }
    blob = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")
    return HTMLResponse(html.replace("/*GLOTTA_CONFIG*/{}", blob))


async def metrics(request: Request, state: State) -> PlainTextResponse:
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")


async def health(request: Request, state: State) -> JSONResponse:
    if state.ready:
        body = {"status": "ok", "model": state.cfg.name, "kind": state.kind}
        if state.encoder is not None:
            body["mask_token"] = state.encoder.tokenizer.mask_token
        return JSONResponse(body)
    status = "error" if state.error else "loading"
    return JSONResponse(
        {"status": status, "error": state.error}, status_code=503, headers={"Retry-After": "2"}
    )


async def models(request: Request, state: State) -> JSONResponse:
    entry = {
        "id": state.cfg.name,
        "object": "model",
        "created": state.created,
        "owned_by": "glotta",
        "kind": state.kind or "loading",
        "max_model_len": state.context,
    }
    return JSONResponse({"object": "list", "data": [entry]})


async def completions(request: Request, state: State):
    body = await _json_body(request, state)
    state.require("causal", "/v1/completions")
    check_model(body, state.cfg.name, state.cfg.aliases)
    req = parse_completion(body, state.cfg.limits)
    prompts = [state.prompt_ids(p, "prompt") for p in req.prompts]
    return await _generate(request, state, prompts, req.sampling, chat=False)


async def chat(request: Request, state: State):
    body = await _json_body(request, state)
    state.require("causal", "/v1/chat/completions")
    check_model(body, state.cfg.name, state.cfg.aliases)
    if state.chat_template is None:
        raise ApiError(
            400,
            f"{state.cfg.name} is a base model: its tokenizer has no chat template, so it cannot "
            "hold a chat; send plain text to /v1/completions instead",
            "messages",
            "no_chat_template",
        )
    req = parse_chat(body, state.cfg.limits)
    prompt = await asyncio.to_thread(state.chat_prompt, req.messages)
    return await _generate(request, state, [state.prompt_ids(prompt, "messages")], req.sampling, chat=True)  # fmt: skip


async def _generate(request, state: State, prompts: list[list[int]], s: Sampling, chat: bool):
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def emit(event: Event) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the event loop has closed (server shutting down)
            pass

    seed = s.seed if s.seed is not None else random.getrandbits(62)
    seqs = []
    for ids in prompts:
        for j in range(s.n):
            cfg = GenerateConfig(
                max_new_tokens=s.max_tokens,
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                repetition_penalty=s.repetition_penalty,
                seed=seed + j,  # the n choices of one prompt differ; each is reproducible
            )
            seqs.append(Sequence(ids, cfg, emit, len(seqs), tuple(s.stop), s.ignore_eos))
    if not state.engine.submit(seqs):
        raise ApiError(
            503,
            f"the server is busy: {state.cfg.limits.max_queue} sequences are already waiting "
            "(--max-queue); retry after the Retry-After seconds",
            code="queue_full",
            headers={"Retry-After": "1"},
        )
    prompt_tokens = sum(len(ids) - 1 for ids in prompts) * s.n
    state.metrics.prompt_tokens += prompt_tokens
    rid = request_id("chatcmpl" if chat else "cmpl")
    if s.stream:  # Starlette cancels the stream when the client disconnects
        events = _stream(state, queue, seqs, rid, chat, prompt_tokens, s.include_usage)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip
    watcher = asyncio.create_task(_watch_disconnect(request, queue))
    texts = [""] * len(seqs)
    reasons: list[str | None] = [None] * len(seqs)
    peaks = [0] * len(seqs)
    completion_tokens = 0
    try:
        while any(r is None for r in reasons):
            event = await queue.get()
            if event is DISCONNECTED:
                return PlainTextResponse("client closed the request", status_code=499)
            if event.finish_reason == "error":
                raise ApiError(500, event.text, code="decode_error")
            texts[event.index] += event.text
            if event.finish_reason:
                reasons[event.index] = event.finish_reason
                peaks[event.index] = event.batch_peak
                completion_tokens += event.completion_tokens
    finally:
        watcher.cancel()
        for seq in seqs:
            seq.cancelled = True  # no effect on finished ones; frees the slot of the rest
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    choices = []
    for i, (text, reason) in enumerate(zip(texts, reasons, strict=True)):
        if chat:
            message = {"role": "assistant", "content": text}
            choices.append({"index": i, "message": message, "finish_reason": reason})
        else:
            choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": reason})
    obj = "chat.completion" if chat else "text_completion"
    return JSONResponse(
        {
            "id": rid,
            "object": obj,
            "created": int(time.time()),
            "model": state.cfg.name,
            "choices": choices,
            "usage": usage,
            # An extension field (clients ignore it): per choice, the largest decode batch it was
            # part of, so a test or a curious user can see that requests were batched.
            "glotta": {"batch_peak": peaks},
        }  # fmt: skip
    )


async def _watch_disconnect(request: Request, queue: asyncio.Queue) -> None:
    """Wait for the client to go away (the body has been read, so the next message is the
    disconnect), then wake the handler."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            queue.put_nowait(DISCONNECTED)
            return


async def _stream(
    state: State, queue, seqs, rid, chat: bool, prompt_tokens: int, include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk shapes, ending with ``data: [DONE]``."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    created = int(time.time())

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        payload = {"id": rid, "object": obj, "created": created, "model": state.cfg.name,
                   "choices": choices}  # fmt: skip
        if usage is not None:
            payload["usage"] = usage
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def choice(index: int, text: str | None, reason: str | None) -> dict:
        if chat:
            delta = {} if text is None else {"content": text}
            return {"index": index, "delta": delta, "finish_reason": reason}
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}

    remaining = len(seqs)
    completion_tokens = 0
    try:
        if chat:
            yield chunk([{"index": s.index, "delta": {"role": "assistant", "content": ""},
                          "finish_reason": None} for s in seqs])  # fmt: skip
        while remaining:
            event = await queue.get()
            if event is DISCONNECTED:
                return
            if event.finish_reason == "error":
                error = ApiError(500, event.text, code="decode_error").body()
                yield f"data: {json.dumps(error)}\n\n"
                break
            if event.text:
                yield chunk([choice(event.index, event.text, None)])
            if event.finish_reason:
                remaining -= 1
                completion_tokens += event.completion_tokens
                yield chunk([choice(event.index, None, event.finish_reason)])
        if include_usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip
            yield chunk([], usage)
        yield "data: [DONE]\n\n"
    finally:
        for seq in seqs:
            seq.cancelled = True


async def embeddings(request: Request, state: State) -> JSONResponse:
    body = await _json_body(request, state)
    state.require("masked", "/v1/embeddings")
    check_model(body, state.cfg.name, state.cfg.aliases)
    texts = parse_texts(body, "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", "encoding_format")
    counts = [state.encoder.count_tokens(t) for t in texts]
    limit = min(state.cfg.limits.max_prompt_tokens, state.context)
    for i, n in enumerate(counts):
        if n > limit:
            raise ApiError(400, f"input {i} has {n} tokens; the limit is {limit}", "input",
                           "context_length_exceeded")  # fmt: skip
    vectors = await asyncio.to_thread(state.encoder.embed, texts)
    state.metrics.prompt_tokens += sum(counts)
    data = []
    for i, vector in enumerate(vectors):
        if fmt == "base64":  # what the openai client asks for by default: float32 bytes
            value = base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode()
        else:
            value = vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
    return JSONResponse({"object": "list", "data": data, "model": state.cfg.name, "usage": usage})


async def fill_mask(request: Request, state: State) -> JSONResponse:
    body = await _json_body(request, state)
    state.require("masked", "/v1/fill-mask")
    check_model(body, state.cfg.name, state.cfg.aliases)
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "'input' must be a non-empty string (with the mask token)", "input")
    top_k = body.get("top_k", 5)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
        raise ApiError(400, "'top_k' must be an integer from 1 to 50", "top_k")
    n = state.encoder.count_tokens(text)
    limit = min(state.cfg.limits.max_prompt_tokens, state.context)
    if n > limit:
        raise ApiError(400, f"'input' has {n} tokens; the limit is {limit}", "input",
                       "context_length_exceeded")  # fmt: skip
    text, masks = await asyncio.to_thread(state.encoder.fill_mask, text, top_k)
    state.metrics.prompt_tokens += n
    return JSONResponse(
        {
            "object": "fill_mask",
            "model": state.cfg.name,
            "input": text,
            "mask_token": state.encoder.tokenizer.mask_token,
            "masks": masks,
        }  # fmt: skip
    )
