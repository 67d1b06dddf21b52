"""Prometheus metrics of the service, served on their own port.

Each :class:`Metrics` has its own registry, so tests can run several servers in
one process. With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes),
``serve(..., multiprocess=True)`` aggregates every worker's files through
``MultiProcessCollector``; that path is unused and untested: ``--workers N`` gives
each process its own /metrics port instead (listed in the ready file, see
:mod:`service.workers`). The switch is explicit, not the environment variable, because
importing ``feast.metrics`` sets ``PROMETHEUS_MULTIPROC_DIR`` for its own use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from service.domain import Flags

_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "liverec_requests",
            "RPCs answered, by method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "liverec_request_seconds",
            "Server-side latency of answered RPCs.",
            ["method"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "liverec_in_flight", "Scoring RPCs in flight.", registry=r, multiprocess_mode="livesum"
        )
        self.degraded = Counter(
            "liverec_degraded_answers",
            "Answers carrying a degradation flag, by flag.",
            ["method", "flag"],
            registry=r,
        )
        self.model_version = Gauge(
            "liverec_model_info",
            "1 for the model version being served.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.model_swaps = Counter(
            "liverec_model_swaps", "Model versions swapped in, by model.", ["model"], registry=r
        )
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._http: WSGIServer | None = None
        # Children of the per-call metrics, by metric and label values: ``labels()`` (a
        # lock and a key built from its arguments) cost more than the update itself.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[metric, labels] = metric.labels(*labels)
        return child

    def watch_rows(
        self,
        counts: Callable[[], Iterable[tuple[str, str, str, int]]],
        pairs: Callable[[], Iterable[tuple[str, str, int]]] | None = None,
    ) -> None:
        """Export ``counts()`` (``(model, kept_by, how, rows)``: rows whose score was
        looked up or scored) as ``liverec_model_rows_total`` and ``pairs()`` (``(model,
        how, pairs)``: a room grid's (row, group of trees) pairs) as
        ``liverec_model_row_groups_total``, read at each scrape: the scoring path keeps
        plain counts and pays nothing per call for the metrics."""
        self.registry.register(_RowsCollector(counts, pairs))

    def answered(self, method: str, code: str, seconds: float | None = None) -> None:
        """Count one answered call of ``method`` with status ``code``; time it if given."""
        self._child(self.requests, method, code).inc()
        if seconds is not None:
            self._child(self.latency, method).observe(seconds)

    def flags(self, method: str, f: Flags) -> None:
        for name in ("cold_start", "stale_features", "missing_features", "fallback"):
            if getattr(f, name):
                self._child(self.degraded, method, name).inc()

    def served(self, model: str, version: str) -> None:
        with self._lock:
            old = self._versions.get(model)
            if old is not None:
                # Set to 0, not removed: removal is unsupported in multiprocess mode, which
                # feast.metrics switches prometheus_client into when it is imported first.
                self.model_version.labels(model, old).set(0)
            self._versions[model] = version
            self.model_version.labels(model, version).set(1)
            self.model_swaps.labels(model).inc()

    def serve(self, host: str, port: int, multiprocess: bool = False) -> int:
        """Start the /metrics endpoint; the bound port (``port`` 0 picks a free one)."""
        registry: CollectorRegistry = self.registry
        if multiprocess:
            from prometheus_client import multiprocess as mp

            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
        self._http, _ = start_http_server(port, addr=host, registry=registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _RowsCollector(Collector):
    def __init__(
        self,
        counts: Callable[[], Iterable[tuple[str, str, str, int]]],
        pairs: Callable[[], Iterable[tuple[str, str, int]]] | None,
    ) -> None:
        self._counts = counts
        self._pairs = pairs

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "liverec_model_rows",
            "Rows a model was asked to score, by how their score was found: looked_up "
            "(kept from an earlier call, exact) or scored (run through the model); kept_by "
            "rows (branch keys: RankProducts, ScoreConversion) or room (a room's last grid: "
            "RecommendNextProduct; a row is scored if any group of trees walks it).",
            labels=["model", "kept_by", "how"],
        )
        for model, kept_by, how, rows in self._counts():
            family.add_metric([model, kept_by, how], rows)
        yield family
        if self._pairs is None:
            return
        pairs = CounterMetricFamily(
            "liverec_model_row_groups",
            "(Row, group of trees) pairs of the rooms' grids (RecommendNextProduct), by how "
            "their margin was found: looked_up (kept from the room's last grid, exact) or "
            "scored (walked through the group's trees).",
            labels=["model", "how"],
        )
        for model, how, n in self._pairs():
            pairs.add_metric([model, how], n)
        yield pairs
