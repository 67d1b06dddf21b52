"""The ``grpc.aio`` server: composition, readiness, hot swap polling and shutdown.

Start-up order: bind and serve at once with health NOT_SERVING (so probes get
an answer, not a refused connection), load the models and warm the product
cache off the event loop, then flip health to SERVING and write the ready file.
SIGTERM flips health back to NOT_SERVING, lets in-flight calls finish (up to
``shutdown_grace_s``) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pyarrow.parquet as pq
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from features.tables import PRODUCT_STATS, ROOM_STATE
from service.feast_reader import OnlineReader
from service.features_online import Clock, OnlineFeatures
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.heap import collector_paused, settle_heap
from service.ingest.aggregator import Aggregator
from service.ingest.live import AggregatorLink
from service.ingest.rooms import RoomMemory
from service.ingest.wal import WalLocked
from service.interceptors import SERVICE, Guard
from service.metrics import Metrics
from service.models import LoadedModel, Loader, ModelRegistry, ModelSource
from service.scoring import Scorer
from service.servicer import LiveRecommender
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class App:
    """One server process: the gRPC server and everything it serves from.

    ``aggregator``: this process owns live state (``--workers 1``, or the aggregator
    process of ``--workers N``). ``link``: a worker of ``--workers N``, forwarding
    events and room calls to the aggregator. Neither: scoring only.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        reader: OnlineReader,
        loader: Loader,
        source: ModelSource | None,
        clock: Clock | None = None,
        aggregator: Aggregator | None = None,
        link: AggregatorLink | None = None,
    ) -> None:
        self.s = settings
        self.metrics = Metrics()
        kwargs = {} if clock is None else {"clock": clock}
        self.features = OnlineFeatures(
            reader,
            threads=settings.store_threads,
            margin_s=settings.store_timeout_margin_ms / 1000.0,
            margin_fraction=settings.store_timeout_fraction,
            product_refresh_s=settings.product_refresh_s,
            roster_refresh_s=settings.roster_refresh_s,
            viewer_cache_s=settings.viewer_cache_s,
            viewer_cache_size=settings.viewer_cache_size,
            live_cache_s=settings.live_cache_s,
            inline_local_reads=settings.inline_local_reads,
            **kwargs,
        )
        self.models = ModelRegistry(settings, loader, source)
        self.models.on_swap = self._swapped
        self.scorer = Scorer(settings, self.features, self.models)
        self.metrics.watch_rows(self.scorer.rows_counted, self.scorer.row_groups_counted)
        self.health = HealthServicer()
        self.guard = Guard(settings.max_concurrency, self.metrics)
        self.aggregator = aggregator
        self.link = link
        rooms = None
        if aggregator is not None:
            rooms = RoomMemory(aggregator.fold, self.features, settings.viewer_cache_size, **kwargs)
        self.servicer = LiveRecommender(
            settings,
            self.scorer,
            self.metrics,
            threads=settings.max_concurrency,
            aggregator=aggregator,
            rooms=rooms,
            link=link,
        )
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.address = ""
        self.metrics_port = 0
        self.serving = False
        self._poller: asyncio.Task[None] | None = None

    def _swapped(self, loaded: LoadedModel) -> None:
        self.metrics.served(loaded.name, loaded.version)
        # Grids the old version scored would never match again: let it go now.
        self.scorer.room_scores.forget(loaded.name)

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE):
            await self.health.set(name, status)

    async def start(self, port: int | None = None, address: str | None = None) -> int:
        """Bind, serve (NOT_SERVING), then get ready in the background; the bound port.

        ``address`` (e.g. ``unix:/path.sock``) replaces host:port: the aggregator's
        local channel. Port sharing (``grpc.so_reuseport``) is on only for the workers
        of ``--workers N``, so a stray second server never silently shares a port.
        """
        shared = self.s.workers > 1 and self.link is not None
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if shared else 0)])
        service = pb.DESCRIPTOR.services_by_name["LiveRecommender"]
        pb_grpc.add_LiveRecommenderServicer_to_server(
            self.guard.servicer(self.servicer, service), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            service.full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        if address is None:
            bind = self.s.grpc_port if port is None else port
            self.port = server.add_insecure_port(f"{self.s.grpc_host}:{bind}")
            self.address = f"{self.s.grpc_host}:{self.port}"
        else:
            self.port = server.add_insecure_port(address)
            self.address = address
        if self.link is not None:
            self.link.open()
        await self._set_health(NOT_SERVING)
        await server.start()
        self.server = server
        self.metrics_port = self.metrics.serve(self.s.grpc_host, self.s.metrics_port)
        log.info(
            "gRPC on %s:%d (NOT_SERVING until ready), metrics on :%d",
            self.s.grpc_host,
            self.port,
            self.metrics_port,
        )
        self._poller = asyncio.create_task(self._get_ready_and_poll())
        return self.port

    async def _get_ready_and_poll(self) -> None:
        """Load, warm, go SERVING; then poll the registry every ``model_poll_s``."""
        with collector_paused(self.s.gc_freeze):
            await asyncio.to_thread(self._guarded, self.models.start)
            if self.aggregator is not None:
                # Duplicate window and live aggregates rebuilt from the event log and the
                # WAL before any event is accepted.
                while True:
                    try:
                        await self.aggregator.start()
                        break
                    except WalLocked as exc:  # e.g. the previous process is still compacting
                        log.warning("%s; retrying", exc)
                        await asyncio.sleep(0.5)
                self.servicer.live_ready = True
            await asyncio.to_thread(self._guarded, self._prepare_features)
        while True:
            if not self._features_ok:
                await asyncio.to_thread(self._guarded, self._prepare_features)
            if not self.serving and self.models.ready and self._features_ok:
                if self.s.gc_freeze:
                    settle_heap(self.s.gc_young_threshold)
                self.serving = True
                await self._set_health(SERVING)
                versions = {n: m.version for n in self.models.names if (m := self.models.get(n))}
                log.info("SERVING with models %s", versions)
            await asyncio.sleep(self.s.model_poll_s)
            await asyncio.to_thread(self._guarded, self.models.poll)

    _features_ok = False

    @staticmethod
    def _guarded(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s failed; will retry at the next poll", getattr(fn, "__name__", fn))

    def _prepare_features(self) -> None:
        """Check the online store answers, warm the product cache, start its refresh."""
        self.features.reader.read(ROOM_STATE.name, [("__readiness_probe__",)])
        path = self.s.offline_dir / PRODUCT_STATS.file
        if path.exists():
            ids = pq.read_table(path, columns=["product_id"]).column(0).unique().to_pylist()
            warmed = self.features.warm_products(ids)
            log.info("product cache: %d of %d catalogue products", warmed, len(ids))
        self.features.start_refresh()
        self._features_ok = True

    async def wait_serving(self) -> None:
        """Until health is SERVING (tests and the CLI's ready file)."""
        while not self.serving:
            await asyncio.sleep(0.01)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, let in-flight calls finish (up to ``grace`` s), then stop."""
        await self.health.enter_graceful_shutdown()
        self.serving = False
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.server is not None:
            await self.server.stop(self.s.shutdown_grace_s if grace is None else grace)
        if self.aggregator is not None and self.servicer.live_ready:
            self.servicer.live_ready = False
            await self.aggregator.stop()  # flush, seal, compact into the event log
        if self.link is not None:
            await self.link.close()
        self.servicer.close()
        self.features.close()
        self.metrics.close()


def write_ready_file(path: Path, app: App) -> None:
    """Write ``{"grpc_port", "metrics_port", "pid", "address"}`` atomically (rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    info = {
        "grpc_port": app.port,
        "metrics_port": app.metrics_port,
        "pid": os.getpid(),
        "address": app.address,
    }
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(path)


async def serve(app: App, ready_file: Path | None = None, address: str | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start(address=address)
    ready = asyncio.create_task(app.wait_serving())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done() and ready_file is not None:
        write_ready_file(ready_file, app)
        log.info("ready file written to %s", ready_file)
    await stopping
    ready.cancel()
    log.info("signal received: NOT_SERVING, draining in-flight calls")
    await app.stop()
    log.info("stopped")
