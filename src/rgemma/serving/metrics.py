"""The server's Prometheus counters and gauges (`GET /metrics`)."""

from __future__ import annotations

import threading

from rgemma.serving.scheduler import BatchEngine
from rgemma.serving.state_cache import metric_values as state_cache_metrics

# The engine's values, read at scrape: (name, type, help, read); zeros while loading.
_ENGINE = (
    ("prompt_tokens_total", "counter", "Prompt tokens prefilled.", lambda e: e.stats.prompt_tokens),
    ("generation_tokens_total", "counter", "Tokens generated.", lambda e: e.stats.completion_tokens),
    (
        "generation_tokens_per_second",
        "gauge",
        "Tokens generated per second over the last 10 s.",
        lambda e: round(e.stats.tokens_per_second(), 3),
    ),
    ("queue_depth", "gauge", "Requests waiting to start.", lambda e: e.queue_depth),
    ("active_sequences", "gauge", "Rows being prefilled or decoded.", lambda e: e.active_rows),
    ("state_bytes", "gauge", "Bytes of recurrent state held for active rows.", lambda e: e.stats.state_bytes),
)


class Metrics:
    """Prometheus counters kept by the server; gauges are read from the engine at scrape."""

    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def count(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[endpoint, status] = self.requests.get((endpoint, status), 0) + 1

    def render(self, engine: BatchEngine | None) -> str:
        lines = [
            "# HELP rgemma_requests_total HTTP requests by endpoint and status.",
            "# TYPE rgemma_requests_total counter",
        ]
        with self.lock:
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'rgemma_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
        values = [("model_loaded", "gauge", "1 once the model is loaded.", int(engine is not None))]
        values += [
            (name, kind, help_, read(engine) if engine is not None else 0)
            for name, kind, help_, read in _ENGINE
        ]
        values += state_cache_metrics(engine.cache if engine is not None else None)
        for name, kind, help_, value in values:
            lines += [
                f"# HELP rgemma_{name} {help_}",
                f"# TYPE rgemma_{name} {kind}",
                f"rgemma_{name} {value}",
            ]
        return "\n".join(lines) + "\n"
