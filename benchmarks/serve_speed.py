"""Serving speed: ``glotta serve`` (continuous batching) against the same model answering one
request at a time with transformers ``generate`` behind HTTP (what a hand-written Flask wrapper
does), at 1, 8 and 32 concurrent clients.

    python -m benchmarks.serve_speed --model-dir runs/demo/export     # the demo model
    python -m benchmarks.serve_speed --smoke                          # a tiny model, seconds

Both servers run as their own process on this machine, one after the other (never at the same
time), and get the same requests: prompt i of a fixed list of Russian prompts, end-of-text then
the prompt's tokens, sampling with temperature 0.8 / top-k 50 / top-p 0.95, exactly
--max-new-tokens new tokens (end-of-text does not stop either side: ``ignore_eos`` for glotta,
``min_new_tokens`` for generate). Every client sends --requests-per-client requests in a row.
Reported per side and client count: total generated tokens/s (all tokens / wall time), p50/p95
request latency and p50 time to first token (glotta streams; the baseline answers at the end,
so its first token arrives with the last). ``glotta generate``'s batch-1 latency for the same
request, measured in-process, is the reference for glotta serve's 1-client latency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CpuWatch,
    contention_note,
    emit_json_line,
    format_table,
    hardware_info,
    hardware_slug,
    log,
    ratio,
    results_path,
    slug,
    usable_cpus,
    write_results,
)

GOAL_SPEEDUP_32 = 5.0
PROMPTS = [
    "Он долго бродил по",
    "Когда он вернулся домой, было уже",
    "В этом городе",
    "Она сказала, что",
    "Утром мы",
    "На столе лежала старая книга, и",
    "Никто не знал,",
    "После долгой зимы",
]


@dataclass
class Settings:
    model_dir: str = ""
    clients: list[int] = field(default_factory=lambda: [1, 8, 32])
    max_new_tokens: int = 64
    requests_per_client: int = 2
    max_batch: int = 32
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    generate_repeats: int = 3
    smoke: bool = False
    results_dir: str = ""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not become healthy")


def _request(port: int, body: dict[str, Any], stream: bool) -> dict[str, float]:
    """One completion request; latency, time to first token and generated tokens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps({**body, "stream": stream}),
                 {"Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    first = None
    tokens = 0
    if stream:
        for line in response:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c.get("text") for c in chunk["choices"]):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    else:
        tokens = json.loads(response.read())["usage"]["completion_tokens"]
    end = time.perf_counter()
    conn.close()
    return {"latency": end - start, "ttft": (first or end) - start, "tokens": tokens}


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phase(port: int, s: Settings, clients: int, stream: bool, server_pid: int) -> dict[str, Any]:
    """``clients`` threads, each sending requests_per_client requests one after the other."""
    records: list[dict[str, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for k in range(s.requests_per_client):
            i = c * s.requests_per_client + k
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": s.max_new_tokens,
                    "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                    "seed": i, "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
            try:
                record = _request(port, body, stream)
            except Exception as exc:  # noqa: BLE001 - reported in the results
                with lock:
                    errors.append(str(exc))
                continue
            with lock:
                records.append(record)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    server_cpu = _process_cpu_seconds(server_pid)
    with CpuWatch() as watch:
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    cpu = watch.result()
    # The server is our child but not waited for: its CPU time is ours, not "other" load.
    server_cpu = _process_cpu_seconds(server_pid) - server_cpu
    cpu["server_cpu_seconds"] = round(server_cpu, 2)
    if cpu["other_cpu_seconds"] is not None:
        cpu["other_cpu_seconds"] = round(max(0.0, cpu["other_cpu_seconds"] - server_cpu), 2)
        cpu["other_cpu_share"] = round(cpu["other_cpu_seconds"] / (watch.wall * usable_cpus()), 4)
    latencies = sorted(r["latency"] for r in records)
    tokens = sum(r["tokens"] for r in records)
    return {
        "clients": clients,
        "requests": len(records),
        "errors": errors[:5],
        "generated_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2) if wall else None,
        "latency_p50_s": round(_percentile(latencies, 50), 4) if latencies else None,
        "latency_p95_s": round(_percentile(latencies, 95), 4) if latencies else None,
        "ttft_p50_s": round(statistics.median(r["ttft"] for r in records), 4) if records else None,
        # Tokens per CPU second of the server process: less disturbed than tokens/s when other
        # processes load the machine (it does not credit using both cores at once).
        "tokens_per_server_cpu_s": round(tokens / server_cpu, 2) if server_cpu > 0 else None,
        "cpu": cpu,
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    k = (len(sorted_values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _run_server(cmd: list[str], port: int, s: Settings, stream: bool, label: str) -> list[dict]:
    import tempfile

    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    server_log = tempfile.TemporaryFile()  # a pipe nobody reads would fill up and block it
    proc = subprocess.Popen(cmd, stdout=server_log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(port, proc)
        warm = {"prompt": PROMPTS[0], "max_tokens": 8, "ignore_eos": True, "temperature": 0.8,
                "top_k": 50, "top_p": 0.95}  # fmt: skip
        _request(port, warm, stream)  # first-call allocations stay out of the numbers
        rows = []
        for clients in s.clients:
            log(f"{label}: {clients} client(s)")
            rows.append(_phase(port, s, clients, stream, proc.pid))
        return rows
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        server_log.seek(0)
        tail = server_log.read()[-2000:].decode(errors="replace")
        server_log.close()
        if proc.returncode not in (0, -15, None):
            log(f"{label} server exited with {proc.returncode}: {tail}")


def _glotta_generate_latency(s: Settings) -> float:
    """Median seconds for ``glotta generate``'s loop to produce max_new_tokens for prompt 0."""
    from glotta.config import GenerateConfig
    from glotta.generate import generate_ids
    from glotta.models import eos_id_of, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(s.model_dir)
    model = load_causal_lm(s.model_dir)
    eos = eos_id_of(tokenizer, model)
    ids = [eos, *tokenizer.encode(PROMPTS[0], add_special_tokens=False).ids]
    cfg = GenerateConfig(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                         top_k=s.top_k, top_p=s.top_p, repetition_penalty=1.0)  # fmt: skip
    list(generate_ids(model, ids, cfg, None))  # warm-up
    times = []
    for _ in range(s.generate_repeats):
        start = time.perf_counter()
        list(generate_ids(model, ids, cfg, None))  # no end-of-text id: all tokens, as above
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_server(model_dir: str, port: int) -> None:
    """One request at a time through ``model.generate`` (a lock around it), stdlib HTTP."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import torch
    from transformers import AutoModelForCausalLM

    from glotta.models import eos_id_of, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    eos = eos_id_of(tokenizer, model)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(200, {"status": "ok"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            ids = [eos, *tokenizer.encode(body["prompt"], add_special_tokens=False).ids]
            n = body["max_tokens"]
            with lock, torch.inference_mode():
                torch.manual_seed(body.get("seed", 0))
                out = model.generate(
                    torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    do_sample=True, temperature=body["temperature"], top_k=body["top_k"],
                    top_p=body["top_p"], max_new_tokens=n, min_new_tokens=n, pad_token_id=eos,
                )  # fmt: skip
            new = out[0, len(ids) :].tolist()
            text = tokenizer.decode(new, skip_special_tokens=True)
            self._reply(200, {"choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                              "usage": {"completion_tokens": len(new)}})  # fmt: skip

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # 32 clients connect at once; the default backlog of 5 resets

    Server(("127.0.0.1", port), Handler).serve_forever()


def _smoke_model(folder: Path) -> str:
    """A 2-layer, 64-wide GPT-2 with random weights and a byte-level BPE trained on the prompts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(PROMPTS * 20, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=tokenizer.get_vocab_size(),
                        n_positions=128, bos_token_id=0, eos_token_id=0)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


def run_serve_speed(s: Settings) -> dict[str, Any]:
    if s.smoke:
        import tempfile

        s.clients, s.max_new_tokens, s.requests_per_client, s.generate_repeats = [1, 4], 8, 1, 1
        s.model_dir = s.model_dir or _smoke_model(Path(tempfile.mkdtemp()) / "smoke-gpt2")
    if not s.model_dir or not (Path(s.model_dir) / "config.json").is_file():
        raise SystemExit("give --model-dir: an exported causal LM folder (e.g. runs/demo/export)")
    hardware = hardware_info()
    log("glotta generate, batch 1")
    generate_s = _glotta_generate_latency(s)
    port = _free_port()
    glotta_cmd = [sys.executable, "-m", "glotta", "serve", s.model_dir, "--port", str(port),
                  "--max-batch", str(s.max_batch), "--max-queue", "1024",
                  "--max-tokens", str(s.max_new_tokens)]  # fmt: skip
    glotta_rows = _run_server(glotta_cmd, port, s, True, "glotta serve")
    port = _free_port()
    base_cmd = [sys.executable, "-m", "benchmarks.serve_speed", "--baseline-server", str(port),
                "--model-dir", s.model_dir]  # fmt: skip
    base_rows = _run_server(base_cmd, port, s, False, "one at a time")
    rows = []
    for ours, theirs in zip(glotta_rows, base_rows, strict=True):
        rows.append({"clients": ours["clients"], "glotta": ours, "baseline": theirs,
                     "speedup": ratio(ours["tokens_per_s"], theirs["tokens_per_s"])})  # fmt: skip
    by_clients = {r["clients"]: r for r in rows}
    top = by_clients.get(32)
    one = by_clients.get(1)
    record = {
        "bench": "serve_speed",
        "model_dir": s.model_dir,
        "model": _describe(s.model_dir),
        "settings": asdict(s),
        "hardware": hardware,
        "glotta_generate_latency_s": round(generate_s, 4),
        "rows": rows,
        "speedup_at_32": top["speedup"] if top else None,
        "cpu_normalised_speedup_at_32": ratio(
            top["glotta"]["tokens_per_server_cpu_s"], top["baseline"]["tokens_per_server_cpu_s"]
        )
        if top
        else None,
        "goal_speedup_at_32": GOAL_SPEEDUP_32,
        "goal_met_speedup": (top["speedup"] or 0) >= GOAL_SPEEDUP_32 if top else None,
        "batch1_latency_vs_generate": ratio(one["glotta"]["latency_p50_s"], generate_s)
        if one
        else None,
        "goal_met_batch1_latency": (one["glotta"]["latency_p50_s"] <= generate_s) if one else None,
    }
    notes = [contention_note(f"{side} {r['clients']} clients", r[side]["cpu"])
             for r in rows for side in ("glotta", "baseline")]  # fmt: skip
    record["notes"] = [n for n in notes if n]
    table = format_table(
        [
            {
                "clients": r["clients"],
                "glotta_tps": r["glotta"]["tokens_per_s"],
                "base_tps": r["baseline"]["tokens_per_s"],
                "speedup": r["speedup"],
                "g_p50": r["glotta"]["latency_p50_s"],
                "g_p95": r["glotta"]["latency_p95_s"],
                "g_ttft": r["glotta"]["ttft_p50_s"],
                "b_p50": r["baseline"]["latency_p50_s"],
                "b_p95": r["baseline"]["latency_p95_s"],
            }
            for r in rows
        ],  # fmt: skip
        [
            ("clients", "clients"),
            ("glotta_tps", "glotta tok/s"),
            ("base_tps", "1-at-a-time tok/s"),
            ("speedup", "ratio"),
            ("g_p50", "glotta p50 s"),
            ("g_p95", "p95 s"),
            ("g_ttft", "TTFT s"),
            ("b_p50", "baseline p50 s"),
            ("b_p95", "p95 s"),
        ],  # fmt: skip
    )
    print(table, file=sys.stderr)
    log(f"glotta generate batch 1: {generate_s:.3f} s for {s.max_new_tokens} tokens")
    for note in record["notes"]:
        log(note)
    if not s.smoke or s.results_dir:
        folder = Path(s.results_dir) if s.results_dir else None
        name = "smoke" if s.smoke else slug(record["model"])
        path = write_results(
            results_path("serve_speed", name, hardware_slug(hardware), folder), record
        )
        log(f"results: {path}")
    emit_json_line(record)
    return record


def _describe(model_dir: str) -> str:
    """e.g. gpt2-4l192-v4096-ctx128, from config.json."""
    from glotta.models import card_shape

    config = json.loads((Path(model_dir) / "config.json").read_text())
    shape = card_shape(config)
    return (
        f"{config.get('model_type')}-{shape['layers']}l{shape['width']}"
        f"-v{config.get('vocab_size')}-ctx{shape['context']}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    d = Settings()
    p.add_argument(
        "--model-dir", default="", help="Exported causal LM folder (the demo: runs/demo/export)."
    )
    p.add_argument("--clients", default="1,8,32", help="Concurrent client counts (default 1,8,32).")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=d.max_new_tokens,
        help="Tokens per request (default 64).",
    )
    p.add_argument(
        "--requests-per-client",
        type=int,
        default=d.requests_per_client,
        help="Requests each client sends in a row (default 2).",
    )
    p.add_argument(
        "--max-batch", type=int, default=d.max_batch, help="glotta serve --max-batch (default 32)."
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="A random tiny GPT-2 (unless --model-dir), 1 and 4 clients, 8 tokens: seconds.",
    )
    p.add_argument(
        "--results-dir",
        default="",
        help="Write the results file here (default benchmarks/results).",
    )
    p.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.baseline_server:
        baseline_server(args.model_dir, args.baseline_server)
        return
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    settings = Settings(model_dir=args.model_dir, clients=clients, max_new_tokens=args.max_new_tokens,
                        requests_per_client=args.requests_per_client, max_batch=args.max_batch,
                        smoke=args.smoke, results_dir=args.results_dir)  # fmt: skip
    run_serve_speed(settings)


if __name__ == "__main__":
    main()
