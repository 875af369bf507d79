"""Real ``glotta serve`` processes on free loopback ports, started once per session per model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from glotta.recipe import load_recipe
from glotta.rundir import RunDir
from tests.conftest import TINY_OVERRIDES

API_KEY = "test-key-0123"
# Small limits so that the error and load tests reach them: 4 decode slots, 8 waiting sequences.
GPT2_FLAGS = [
    "--api-key", API_KEY, "--max-batch", "4", "--max-queue", "8", "--max-tokens", "48",
    "--max-prompt-tokens", "40", "--max-body-bytes", "20000",
]  # fmt: skip


@dataclass
class Server:
    url: str
    model: str
    model_dir: Path
    proc: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model_dir: Path, log_dir: Path, *flags: str, timeout: float = 300):
    """``python -m glotta serve MODEL_DIR`` until /health says ok; stopped (and waited for) after."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "glotta", "serve", str(model_dir), "--port", str(port), *flags],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    # ``model`` is the folder's name until /health names the served id.
    server = Server(
        f"http://127.0.0.1:{port}", Path(model_dir).resolve().name, Path(model_dir), proc, log
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"glotta serve exited with {proc.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"glotta serve was not healthy after {timeout} s:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        server.model = json.loads(r.read())["model"]  # the id it serves
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def call(
    server: Server,
    path: str,
    body=None,
    key: str | None = API_KEY,
    raw: bytes | None = None,
    headers: dict | None = None,
    method: str | None = None,
    timeout: float = 120,
):
    """One HTTP request with urllib: (status, headers, decoded JSON or text)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, hdrs, payload = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, payload = e.code, e.headers, e.read()
    text = payload.decode("utf-8", errors="replace")
    try:
        return status, hdrs, json.loads(text)
    except json.JSONDecodeError:
        return status, hdrs, text


def metric(server: Server, name: str) -> float:
    """The value of one unlabelled-by-endpoint gauge or counter from /metrics."""
    _, _, text = call(server, "/metrics", key=None)
    for line in text.splitlines():
        if line.startswith(f"glotta_{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"glotta_{name} not in /metrics:\n{text}")


@pytest.fixture(scope="session")
def gpt2_server(tiny_run, tmp_path_factory):
    """The tiny run's exported GPT-2, served with small limits and an API key."""
    _, run_dir = tiny_run
    with running_server(run_dir.export, tmp_path_factory.mktemp("serve-gpt2"), *GPT2_FLAGS) as s:
        yield s


# The demo-bert recipe at the tiny run's size, 40 real masked-LM steps: enough for a real
# fill-mask head; the widget text "Он долго [MASK] по лесу." comes from the recipe.
BERT_SERVE = [
    *TINY_OVERRIDES,
    "train.max_steps=40",
    "train.learning_rate=2e-3",
    "train.warmup_steps=5",
    "train.eval_interval=0",
    "train.checkpoint_interval=40",
]


@pytest.fixture(scope="session")
def bert_export(tmp_path_factory):
    from glotta.pipeline import run_recipe

    run_dir = RunDir(tmp_path_factory.mktemp("serve-bert"))
    run_recipe(load_recipe("demo-bert", BERT_SERVE), run_dir)
    return run_dir.export


@pytest.fixture(scope="session")
def bert_server(bert_export, tmp_path_factory):
    with running_server(bert_export, tmp_path_factory.mktemp("serve-bert-log")) as server:
        yield server
