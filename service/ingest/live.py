"""Composition of live ingestion: the aggregator of a process, or a link to it.

With one process (``--workers 1``) the serving process owns the aggregator.
With ``--workers N`` one aggregator process owns it and every worker holds an
:class:`AggregatorLink`: events and room-level calls go to the aggregator over
a local channel (a unix socket), so workers hold no live state (DESIGN §4).
"""

from __future__ import annotations

import logging

import grpc

from features import schema
from features.build import fx_lookup
from features.store import open_store
from service.domain import Deadline
from service.errors import DeadlineExceeded, Upstream
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.ingest.aggregator import Aggregator, IngestLimits
from service.ingest.online_writer import OnlineWriter
from service.settings import ServiceSettings

log = logging.getLogger(__name__)


def limits_of(s: ServiceSettings) -> IngestLimits:
    return IngestLimits(
        max_future_s=s.ingest_max_future_s,
        max_past_s=s.ingest_max_past_s,
        out_of_order_s=s.ingest_out_of_order_s,
        dedupe_window_s=s.ingest_dedupe_window_s,
        dedupe_max_ids=s.ingest_dedupe_max_ids,
        max_id_len=s.max_id_len,
        flush_interval_s=s.ingest_flush_interval_s,
        flush_max_rows=s.ingest_flush_max_rows,
        max_pending_rows=s.ingest_max_pending_rows,
    )


def build_aggregator(s: ServiceSettings) -> Aggregator:
    """The real aggregator: WAL under ``wal_path``, Feast online writes, the world's
    viewer regions and FX table (an unknown viewer has no region)."""
    region: dict[str, str] = {}
    try:
        viewers = schema.read_table("viewers", s.data_dir)
        region = dict(
            zip(
                viewers.column("viewer_id").to_pylist(),
                viewers.column("region").to_pylist(),
                strict=True,
            )
        )
    except schema.SchemaError:
        log.warning("no viewers table under %s: the room's market mix stays empty", s.data_dir)
    fx = fx_lookup(schema.read_table("fx", s.data_dir).to_pandas())
    return Aggregator(
        s.wal_path,
        s.data_dir / "events",
        OnlineWriter(open_store(s)),
        region_of=lambda v: region.get(v, ""),
        fx=fx,
        limits=limits_of(s),
    )


class AggregatorLink:
    """A worker's channel to the aggregator; its failures keep their status code."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.LiveRecommenderStub | None = None

    def open(self) -> None:
        """Create the channel (inside the event loop that will use it)."""
        self._channel = grpc.aio.insecure_channel(self.address)
        self._stub = pb_grpc.LiveRecommenderStub(self._channel)

    @property
    def stub(self) -> pb_grpc.LiveRecommenderStub:
        assert self._stub is not None, "AggregatorLink.open() was not called"
        return self._stub

    async def call(self, method: str, request: object, deadline: Deadline) -> object:
        timeout = deadline.remaining()
        if timeout <= 0:
            raise DeadlineExceeded("deadline exceeded before forwarding to the aggregator")
        try:
            return await getattr(self.stub, method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise Upstream(code, "live aggregator unavailable; retry shortly") from exc
            raise Upstream(code, exc.details() or code.name) from exc

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


__all__ = ["AggregatorLink", "build_aggregator", "limits_of", "pb"]
