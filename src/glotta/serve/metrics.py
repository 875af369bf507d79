"""Server counters and gauges, rendered in the Prometheus text exposition format (version 0.0.4).

Written by two threads (the event loop counts requests, the decode thread counts tokens and sets
the batch gauges); each update is a single assignment or ``+=`` on an int under the GIL, and the
token-rate window has its own lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

RATE_WINDOW_S = 10.0  # tokens/s is averaged over this many recent seconds


class Metrics:
    def __init__(self, model: str, max_batch: int, max_queue: int) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status) -> count
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.queue_depth = 0  # sequences waiting for a slot
        self.batch_size = 0  # sequences in the running batch (busy slots)
        self.in_flight = 0  # requests being handled (any endpoint)
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def count_request(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] += 1

    def add_generated(self, n: int) -> None:
        self.generated_tokens += n
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, n))
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / RATE_WINDOW_S

    def render(self) -> str:
        model = _label(self.model)
        lines = [
            "# HELP glotta_requests_total HTTP requests answered, by endpoint and status code.",
            "# TYPE glotta_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(
                f'glotta_requests_total{{endpoint="{_label(endpoint)}",status="{status}"}} {count}'
            )
        gauges = [
            ("prompt_tokens_total", "counter", "Prompt tokens processed.", self.prompt_tokens),
            ("generation_tokens_total", "counter", "Tokens generated.", self.generated_tokens),
            (
                "generation_tokens_per_second",
                "gauge",
                f"Tokens generated per second over the last {RATE_WINDOW_S:.0f} s.",
                round(self.tokens_per_second(), 3),
            ),
            ("queue_depth", "gauge", "Sequences waiting for a decode slot.", self.queue_depth),
            (
                "queue_capacity",
                "gauge",
                "Most sequences that may wait (--max-queue).",
                self.max_queue,
            ),
            ("batch_size", "gauge", "Sequences in the running decode batch.", self.batch_size),
            ("busy_slots", "gauge", "Decode slots in use (same as batch_size).", self.batch_size),
            ("max_batch", "gauge", "Decode slots (--max-batch).", self.max_batch),
            ("requests_in_flight", "gauge", "Requests being handled now.", self.in_flight),
        ]
        for name, kind, help_text, value in gauges:
            lines += [
                f"# HELP glotta_{name} {help_text}",
                f"# TYPE glotta_{name} {kind}",
                f'glotta_{name}{{model="{model}"}} {value}',
            ]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
