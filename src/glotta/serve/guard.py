"""The checks every request passes before a handler runs, as one pure ASGI middleware (a
``BaseHTTPMiddleware`` would buffer streamed responses): API key, body size, and the request
counter by endpoint and status; plus turning any error into an OpenAI-style JSON body."""

from __future__ import annotations

import hmac
import json
import logging

from starlette.requests import Request

from glotta.serve.schemas import ApiError

log = logging.getLogger("glotta.serve")
OPEN_PATHS = ("/", "/health", "/metrics")  # no key needed: the page, probes, scrapers
KNOWN = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
         "/v1/embeddings", "/v1/fill-mask")  # fmt: skip


class Guard:
    def __init__(self, app, state) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in KNOWN else "other"  # bounded label values
        status = {"code": 500}

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        metrics = self.state.metrics
        metrics.in_flight += 1
        try:
            self._check(scope, path)
            await self.app(scope, receive, counting_send)
        except ApiError as exc:
            await _send_error(exc, counting_send)
        except Exception:  # a bug: answer 500 and keep serving
            log.exception("error handling %s", path)
            await _send_error(ApiError(500, "internal server error (see the server log)"),
                              counting_send)  # fmt: skip
        finally:
            metrics.in_flight -= 1
            metrics.count_request(endpoint, status["code"])

    def _check(self, scope, path: str) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.state.cfg.api_key
        if key and path not in OPEN_PATHS:
            given = headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                message = "invalid API key" if token else "missing API key"
                raise ApiError(
                    401,
                    f"{message}: send the header 'Authorization: Bearer KEY' with the key given "
                    "to glotta serve --api-key",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        length = headers.get("content-length")
        limit = self.state.cfg.limits.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"the request body has {length} bytes; the limit is {limit} "
                           "(--max-body-bytes)", code="body_too_large")  # fmt: skip


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes even without a Content-Length."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over {limit} bytes (--max-body-bytes)",
                           code="body_too_large")  # fmt: skip
        chunks.append(chunk)
    return b"".join(chunks)


async def _send_error(exc: ApiError, send) -> None:
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    try:
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except Exception:  # the response had already started, or the client is gone
        pass
