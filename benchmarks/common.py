"""Helpers shared by the benchmarks: hardware description, matmul peak, peak RSS of a command,
the packed benchmark data, JSON-line output and results-file naming.

Also a tiny command of its own, used to measure another command's memory in a fresh process:

    python -m benchmarks.common measure --out RESULT.json -- COMMAND ARGS...

It runs COMMAND, waits for it and writes wall time, exit status and peak RSS to RESULT.json.
The wrapper is a separate process per measurement because ``getrusage(RUSAGE_CHILDREN)`` is
cumulative over everything a process has ever waited for.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
# runs/ is git-ignored: prepared corpora, tokenizers and shards are cached there between runs.
CACHE_DIR = REPO_ROOT / "runs" / "bench"
# The demo recipe reads the Russian contexts shipped by the rl-wsd-labeled package (~3 MB).
DATA_RECIPE = "demo"
# Smoke modes (--smoke): a tenth of that text (the tests' tiny run), a 512-token BPE; seconds.
SMOKE_DATA_DIR = CACHE_DIR / "smoke-data"
SMOKE_RESULTS_DIR = CACHE_DIR / "smoke-results"
SMOKE_VOCAB = 512
SMOKE_CORPUS = (
    'corpus.inputs=["pkg://rl_wsd_labeled/verbs/RuTenTen/*.txt"]',
    "corpus.valid_fraction=0.1",
    "corpus.test_fraction=0.1",
)


# ---------------------------------------------------------------------------------------------
# Hardware


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def hardware_info() -> dict[str, Any]:
    """What the numbers were measured on (goes into every JSON line and results file)."""
    import torch

    flags = _cpu_flags()
    # bf16 speed on a CPU depends on these: without avx512_bf16 or AMX, oneDNN has no bf16 matmul
    # kernel and PyTorch falls back to slow reference code.
    isa = sorted(
        f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    )
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        mkldnn_bf16 = None
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    import tokenizers
    import transformers

    return {
        "cpu": _cpu_model(),
        "cpus": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "cpu_isa": isa,
        "mkldnn_bf16": mkldnn_bf16,
        "memory_gib": memory_gib,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def hardware_slug(info: dict[str, Any]) -> str:
    """Short hardware name for file names, e.g. 'amd-epyc-2cpu'."""
    cpu = re.sub(r"\((r|tm)\)|cpu|processor|@.*$", "", info["cpu"], flags=re.IGNORECASE)
    return f"{slug(cpu)}-{info['cpus']}cpu"


# ---------------------------------------------------------------------------------------------
# Matmul peak


def matmul_peak(
    dtype_name: str = "bfloat16",
    sizes: tuple[int, ...] = (1024, 2048),
    seconds: float = 1.0,
    trials: int = 3,
    device: str = "cpu",
) -> dict[str, Any]:
    """Best sustained GFLOP/s of ``torch.matmul`` on square matrices (2 n^3 FLOPs per product).

    Best of ``trials`` windows of ``seconds`` each per size, the best size is the peak; on a
    shared machine the best window is the one least disturbed by other processes. Sizes go up
    until one product alone takes longer than a window (CPUs without native bf16 kernels run
    bf16 matmuls at ~1 GFLOP/s, where a 2048 product would take a minute).
    """
    import torch

    dtype = getattr(torch, dtype_name)

    def sync() -> None:  # GPU kernels run asynchronously: wait before reading the clock
        if device == "cuda":
            torch.cuda.synchronize()

    by_size = {}
    for n in sorted(sizes):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        start = time.perf_counter()
        torch.matmul(a, b)  # first call: allocation and kernel selection
        sync()
        if time.perf_counter() - start > seconds:
            start = time.perf_counter()
            torch.matmul(a, b)
            sync()
            by_size[str(n)] = round(2 * n**3 / (time.perf_counter() - start) / 1e9, 2)
            break
        best = 0.0
        for _ in range(trials):
            count, start = 0, time.perf_counter()
            while True:
                torch.matmul(a, b)
                count += 1
                if count % 16 == 0:
                    sync()
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            best = max(best, 2 * n**3 * count / elapsed / 1e9)
        by_size[str(n)] = round(best, 2)
    return {
        "dtype": dtype_name,
        "gflops": max(by_size.values()),
        "by_size": by_size,
        "threads": torch.get_num_threads(),
        "device": device,
        "method": f"torch.matmul of n x n {dtype_name} matrices, best of {trials} x {seconds}s",
    }


# ---------------------------------------------------------------------------------------------
# Contention: did other processes use the CPUs while we measured?


def _system_cpu_seconds() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat (Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class CpuWatch:
    """How much CPU other processes (and the hypervisor) took while a measurement ran.

    ``other_cpu_share`` = (machine busy time - our own CPU time) / (wall time x usable CPUs);
    children count once they have been waited for, so use it around ``subprocess.run``. Anything
    above a few percent means the figures of that measurement are disturbed.
    """

    def __enter__(self) -> CpuWatch:
        self._start = time.perf_counter()
        self._system = _system_cpu_seconds()
        self._own = _own_cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._start
        self.own = _own_cpu_seconds() - self._own
        end = _system_cpu_seconds()
        self.other = self.steal = None
        if self._system and end:
            self.other = max(0.0, end[0] - self._system[0] - self.own)
            self.steal = end[1] - self._system[1]

    def result(self) -> dict[str, Any]:
        capacity = self.wall * usable_cpus()
        return {
            "wall_seconds": round(self.wall, 3),
            "own_cpu_seconds": round(self.own, 2),
            "other_cpu_seconds": None if self.other is None else round(self.other, 2),
            "other_cpu_share": None if self.other is None else round(self.other / capacity, 4),
            "steal_seconds": None if self.steal is None else round(self.steal, 2),
        }


def contention_note(label: str, watch: dict[str, Any], threshold: float = 0.05) -> str | None:
    share = watch.get("other_cpu_share")
    if share is None or share < threshold:
        return None
    message = (
        f"other processes used {100 * share:.0f}% of the CPUs during the measurement; "
        "its figures are disturbed, measure again on an idle machine"
    )
    return f"{label}: {message}" if label else message


# ---------------------------------------------------------------------------------------------
# Running and measuring commands


def _tree_rss_bytes(root: int) -> int:
    """Summed RSS of ``root`` and all its descendants, read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text().split()
        except OSError:
            continue  # exited meanwhile
        # Field 4 of /proc/PID/stat is the parent id; the command name (field 2) may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = int(statm[1]) * page
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def _measure_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.common measure",
        description="Run a command; write its wall time, exit status and peak RSS as JSON.",
    )
    parser.add_argument("--out", type=Path, required=True, help="Where to write the JSON result.")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.05,
        help="Seconds between samples of the process tree's summed RSS (default: 0.05).",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")

    start = time.perf_counter()
    process = subprocess.Popen(command)
    tree_peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal tree_peak
        while not done.is_set():
            try:
                tree_peak = max(tree_peak, _tree_rss_bytes(process.pid))
            except OSError:
                pass
            done.wait(args.interval)

    sampler = threading.Thread(target=sample, daemon=True)
    if Path("/proc").is_dir():
        sampler.start()
    returncode = process.wait()
    wall = time.perf_counter() - start
    done.set()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss is in KiB on Linux (bytes on macOS); for children it is the largest single
    # descendant that was waited for, not the sum of processes that ran at the same time.
    maxrss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    result = {
        "command": command,
        "returncode": returncode,
        "wall_seconds": round(wall, 3),
        "peak_rss_mib": round(maxrss / 2**20, 1),
        "tree_peak_rss_mib": round(tree_peak / 2**20, 1) if tree_peak else None,
        "user_seconds": round(usage.ru_utime, 2),
        "system_seconds": round(usage.ru_stime, 2),
    }
    args.out.write_text(json.dumps(result))
    return returncode


def measure_command(
    command: list[str], result_file: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``command`` under a fresh measuring wrapper; its output goes to our stderr.

    Returns wall_seconds, returncode, peak_rss_mib (``getrusage(RUSAGE_CHILDREN).ru_maxrss``:
    the largest single process of the command's tree) and tree_peak_rss_mib (the summed RSS of
    the whole tree, sampled from /proc every 50 ms: counts worker processes running together).
    """
    wrapper = [sys.executable, "-m", "benchmarks.common", "measure", "--out", str(result_file)]
    subprocess.run(
        [*wrapper, "--", *command], stdout=sys.stderr, env=env, cwd=REPO_ROOT, check=False
    )
    result = json.loads(result_file.read_text())
    if result["returncode"] != 0:
        raise RuntimeError(f"command failed ({result['returncode']}): {' '.join(command)}")
    return result


def run_glotta(*args: str) -> None:
    """Run the real command line (``python -m glotta ARGS``); its output goes to our stderr."""
    subprocess.run(
        [sys.executable, "-m", "glotta", *args], stdout=sys.stderr, cwd=REPO_ROOT, check=True
    )


def log(message: str) -> None:
    """Progress messages go to stderr, so stdout holds only the table and the JSON line."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Benchmark data: the demo corpus with a tokenizer of the benchmark's vocabulary, packed


def prepare_packed_data(
    run_dir: Path, vocab_size: int, corpus: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """corpus -> tokenizer -> pack on the demo recipe's real text, once; returns shards/meta.json.

    The stages run through glotta's own command line into ``run_dir``; a finished preparation
    with the same vocabulary size (and ``corpus`` overrides, when given) is reused. Without
    ``corpus``, a new preparation uses the whole demo text, or its smoke subset when ``run_dir``
    is the smoke data folder.
    """
    marker = run_dir / "bench-prep.json"
    meta_path = run_dir / "shards" / "meta.json"
    if marker.is_file() and (run_dir / "shards" / "COMPLETE.json").is_file():
        done = json.loads(marker.read_text())
        same_corpus = corpus is None or done.get("corpus", []) == list(corpus)
        if done.get("vocab_size") == vocab_size and same_corpus:
            return json.loads(meta_path.read_text())
    if corpus is None:
        corpus = SMOKE_CORPUS if Path(run_dir).resolve() == SMOKE_DATA_DIR.resolve() else ()
    wanted: dict[str, Any] = {"recipe": DATA_RECIPE, "vocab_size": vocab_size}
    if corpus:
        wanted["corpus"] = list(corpus)
    log(f"preparing data in {run_dir}: glotta corpus/tokenizer/pack, vocab_size={vocab_size}")
    marker.unlink(missing_ok=True)
    run_glotta(
        "corpus",
        DATA_RECIPE,
        "--run-dir",
        str(run_dir),
        "--set",
        f"tokenizer.vocab_size={vocab_size}",
        *(arg for override in corpus for arg in ("--set", override)),
    )
    run_glotta("tokenizer", "--run-dir", str(run_dir))
    run_glotta("pack", "--run-dir", str(run_dir))
    meta = json.loads(meta_path.read_text())
    if meta["vocab_size"] != vocab_size:
        log(
            f"note: the BPE trainer stopped at {meta['vocab_size']} tokens (asked {vocab_size}); "
            "the benchmark uses the actual vocabulary"
        )
    marker.write_text(json.dumps(wanted))
    return meta


# ---------------------------------------------------------------------------------------------
# Output


def today() -> str:
    return _dt.date.today().isoformat()


def results_path(bench: str, model: str, hardware: str, results_dir: Path | None = None) -> Path:
    """results/<bench>-<model>-<hardware>-<YYYY-MM-DD>.json"""
    folder = results_dir or RESULTS_DIR
    return folder / f"{bench}-{model}-{hardware}-{today()}.json"


def write_results(path: Path, record: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def emit_json_line(record: dict[str, Any]) -> None:
    """The machine-readable result: one line of JSON, always the last line on stdout."""
    print(json.dumps(record, ensure_ascii=False, separators=(",", ":")), flush=True)


def publish(path: Path, record: dict[str, Any], details: dict[str, Any] | None = None) -> None:
    """A benchmark's ending: the results file (``record`` plus ``details``, the raw figures that
    stay out of the JSON line), its path, then the JSON line of ``record``."""
    write_results(path, {**record, **(details or {})})
    print(f"results: {path}")
    emit_json_line(record)


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain-text table; ``columns`` are (key, header) pairs, values are preformatted."""
    cells = [[str(row.get(key, "")) for key, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def parse_with_smoke(
    parser: argparse.ArgumentParser, argv: list[str] | None, smoke: dict[str, Any]
) -> argparse.Namespace:
    """Parse with a ``--smoke`` flag whose settings replace the defaults (explicit flags win).

    Smoke settings exist so that a test in the default suite runs every benchmark end to end in
    seconds (tiny model, few steps): a benchmark that no longer runs fails a test.
    """
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="Seconds-long run of every code path (tiny model and data, few steps) that checks "
        "the benchmark works; its figures mean nothing. Results go to "
        f"{SMOKE_RESULTS_DIR.relative_to(REPO_ROOT)} unless --results-dir is given; other flags "
        "given explicitly still apply.",
    )
    first, _ = parser.parse_known_args(argv)
    if first.smoke:
        parser.set_defaults(**smoke)
    return parser.parse_args(argv)


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        sys.exit(_measure_main(sys.argv[2:]))
    sys.exit("usage: python -m benchmarks.common measure --out RESULT.json -- COMMAND ARGS...")
