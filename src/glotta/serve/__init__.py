"""``glotta serve MODEL_DIR``: an OpenAI-compatible HTTP server with continuous batched decoding
and a web playground (see README "Serving")."""

from __future__ import annotations

import ipaddress
import logging
import sys

from glotta.errors import GlottaError
from glotta.serve.models import check_model_dir


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to a public address
        return False


def open_server_warning(host: str, port: int) -> str:
    return (
        f"glotta: warning: serving on {host}:{port} without an API key: anyone who can reach "
        "this machine can use the server; set a key with --api-key KEY or $GLOTTA_API_KEY "
        "(clients send 'Authorization: Bearer KEY')"
    )


def run_server(cfg) -> None:
    """Serve until interrupted; a model that fails to load stops the server with its reason."""
    import uvicorn

    from glotta.serve.app import build_app

    check_model_dir(cfg.model_dir)
    if not cfg.api_key and not is_loopback(cfg.host):
        print(open_server_warning(cfg.host, cfg.port), file=sys.stderr, flush=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_load_error(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = build_app(cfg, on_load_error)
    config = uvicorn.Config(
        app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    server.run()
    if failure:
        raise GlottaError(f"cannot serve {cfg.model_dir}: {failure[0]}")
