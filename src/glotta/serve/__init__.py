"""``glotta serve MODEL_DIR``: an OpenAI-compatible HTTP server with continuous batched decoding
and a web playground (see README "Serving")."""

from __future__ import annotations

import logging

from glotta.errors import GlottaError
from glotta.serve.models import check_model_dir


def run_server(cfg) -> None:
    """Serve until interrupted; a model that fails to load stops the server with its reason."""
    import uvicorn

    from glotta.serve.app import build_app

    check_model_dir(cfg.model_dir)
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
