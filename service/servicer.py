"""The thin gRPC servicer: validate, run the plain core off the event loop, convert.

RankProducts is the exception: its core scores on the loop (sub-millisecond) and awaits
its one store read (read in place from a local store), so a call pays no thread hop.

Errors are not handled here: they propagate to :class:`service.interceptors.Guard`,
the one place that maps them to status codes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

import grpc

from service import convert, validation
from service.domain import Deadline, Flags
from service.errors import DeadlineExceeded, Unavailable, Unimplemented, Upstream
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.ingest import convert as ingest_convert
from service.ingest.aggregator import Aggregator
from service.ingest.live import AggregatorLink
from service.ingest.rooms import RoomMemory, ViewerRows
from service.metrics import Metrics
from service.scoring import Scorer
from service.settings import ServiceSettings

Q = TypeVar("Q")
A = TypeVar("A")

log = logging.getLogger(__name__)


def deadline_of(context: grpc.aio.ServicerContext, default_s: float) -> Deadline:
    """The caller's deadline, or the server default when the call carries none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e6:  # no deadline: grpc reports None or "forever"
        remaining = default_s
    return Deadline.after(remaining)


class LiveRecommender(pb_grpc.LiveRecommenderServicer):
    """Scoring from the online store; live events and room calls to the live-state owner.

    ``aggregator`` (with ``rooms``) is set in the process that owns live state;
    ``link`` in a worker, which forwards to that process. With neither, ingestion
    and room answers from memory are off (room calls fall back to the store).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        scorer: Scorer,
        metrics: Metrics,
        threads: int,
        aggregator: Aggregator | None = None,
        rooms: RoomMemory | None = None,
        link: AggregatorLink | None = None,
    ) -> None:
        self.s = settings
        self.scorer = scorer
        self.metrics = metrics
        self.aggregator = aggregator
        self.rooms = rooms
        self.link = link
        #: Set once the aggregator has rebuilt its state from the logs.
        self.live_ready = False
        self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="score")
        self._default_s = settings.default_deadline_ms / 1000.0

    async def _run(self, fn: Callable[[Q, Deadline], A], query: Q, deadline: Deadline) -> A:
        """Run the blocking core in the pool, never past the deadline."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, fn, query, deadline)
        try:
            return await asyncio.wait_for(future, timeout=max(deadline.remaining(), 0.0))
        except TimeoutError as exc:
            raise DeadlineExceeded("deadline exceeded before an answer was ready") from exc

    def _held(self, room_id: str, viewers: Sequence[str], room: bool) -> ViewerRows | None:
        """In the process that owns live state, these viewers' live rows (and the room's)
        from the fold, as of now rather than as of its last flush to the store; ``None``
        elsewhere. Called on the loop, the fold's only writer: a consistent view."""
        if self.rooms is None or not self.live_ready:
            return None
        return self.rooms.viewer_rows(room_id, viewers, room=room)

    def _flags(self, method: str, flags: Flags) -> None:
        if flags.degraded:
            self.metrics.flags(method, flags)

    async def ScoreConversion(
        self, request: pb.ScoreConversionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreConversionResponse:
        deadline = deadline_of(context, self._default_s)
        query = validation.score_conversion(request, self.s)
        if self.link is not None:
            # A room call: the process that owns live state answers it from memory. When
            # that process is down, this worker still answers from the online store.
            try:
                forwarded: pb.ScoreConversionResponse = await self.link.call(
                    "ScoreConversion", request, deadline
                )  # type: ignore[assignment]
                return forwarded
            except Upstream as exc:
                if exc.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                log.warning("live owner unavailable; ScoreConversion from the online store")
        fn = self.scorer.score_conversion
        live = self._held(query.room_id, query.viewer_ids, room=True)
        if live is not None:
            fn = functools.partial(fn, live=live)
        answer = await self._run(fn, query, deadline)
        self._flags("ScoreConversion", answer.meta.flags)
        return convert.conversion(answer)

    async def RankProducts(
        self, request: pb.RankProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankProductsResponse:
        query = validation.rank_products(request, self.s)
        # The room's row (it counts 2,000 viewers) comes from the store's short-lived cache.
        live = self._held(query.room_id, (query.viewer_id,), room=False)
        # No hop to the scoring pool: the scoring itself is sub-millisecond.
        answer = await self.scorer.rank_products_async(
            query, deadline_of(context, self._default_s), live
        )
        self._flags("RankProducts", answer.meta.flags)
        return convert.ranked(answer)

    async def RecommendNextProduct(
        self, request: pb.RecommendNextProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecommendNextProductResponse:
        deadline = deadline_of(context, self._default_s)
        if self.link is not None:
            forwarded: pb.RecommendNextProductResponse = await self.link.call(
                "RecommendNextProduct", request, deadline
            )  # type: ignore[assignment]
            return forwarded
        query = validation.next_product(request, self.s)
        fn = self.scorer.recommend_next_product
        if self.aggregator is not None and self.rooms is not None:
            self._live()
            # On the loop, the fold's only writer: a consistent view of the room.
            snap = self.rooms.snapshot(query.room_id, query.candidates, self.s.max_present_viewers)
            fn = functools.partial(fn, room=snap, rooms=self.rooms)
        answer = await self._run(fn, query, deadline)
        self._flags("RecommendNextProduct", answer.meta.flags)
        return convert.next_products(answer)

    async def GetViewerProfile(
        self, request: pb.GetViewerProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ViewerProfile:
        query = validation.viewer_profile(request, self.s)
        answer = await self._run(
            self.scorer.viewer_profile, query, deadline_of(context, self._default_s)
        )
        self._flags("GetViewerProfile", answer.meta.flags)
        return convert.profile(answer)

    # -- live events ------------------------------------------------------------------

    def _live(self) -> Aggregator:
        if self.aggregator is None:
            raise Unimplemented("live ingestion is not enabled in this server")
        if not self.live_ready:
            raise Unavailable("live state is being rebuilt from the log; retry shortly")
        return self.aggregator

    async def _publish(self, events: list[pb.LiveEvent], deadline: Deadline) -> pb.IngestSummary:
        """One batch: durable (or refused whole) before this returns."""
        if self.link is not None:
            batch = pb.EventBatch(events=events)
            forwarded: pb.IngestSummary = await self.link.call("PublishEvents", batch, deadline)  # type: ignore[assignment]
            return forwarded
        aggregator = self._live()
        dicts = ingest_convert.events(events)
        result = await aggregator.ingest(dicts)
        if self.rooms is not None:
            joined = [d["viewer_id"] for d in dicts if d.get("event_type") == "join"]
            if joined and not result.rejected:
                self.rooms.prefetch(v for v in joined if v)
            elif joined:
                bad = {r.index for r in result.rejected}
                self.rooms.prefetch(
                    d["viewer_id"]
                    for i, d in enumerate(dicts)
                    if i not in bad and d.get("event_type") == "join"
                )
        return ingest_convert.summary(result)

    async def PublishEvents(
        self, request: pb.EventBatch, context: grpc.aio.ServicerContext
    ) -> pb.IngestSummary:
        return await self._publish(list(request.events), deadline_of(context, self._default_s))

    async def IngestEvents(
        self, request_iterator: AsyncIterator[pb.LiveEvent], context: grpc.aio.ServicerContext
    ) -> pb.IngestSummary:
        """Read the stream in chunks (``ingest_chunk_events`` or ``ingest_chunk_ms``), each
        made durable before the next is read; the summary covers the whole stream.

        A chunk refused (RESOURCE_EXHAUSTED, UNAVAILABLE) fails the call; the chunks before
        it are accepted, so the client resends the whole stream and the duplicate window
        counts those once.
        """
        total = pb.IngestSummary()
        seen = 0
        async for chunk in _chunks(
            request_iterator, self.s.ingest_chunk_events, self.s.ingest_chunk_ms / 1000.0
        ):
            # A stream lives as long as a room: each chunk gets the default deadline.
            part = await self._publish(chunk, Deadline.after(self._default_s))
            ingest_convert.merge(total, part, seen)
            seen += len(chunk)
        return total

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.rooms is not None:
            self.rooms.close()


async def _chunks(
    source: AsyncIterator[pb.LiveEvent], max_events: int, max_wait_s: float
) -> AsyncIterator[list[pb.LiveEvent]]:
    """Chunks of at most ``max_events``, each closed ``max_wait_s`` after its first event."""
    it = source.__aiter__()
    pending: asyncio.Future[pb.LiveEvent] | None = None
    ended = False
    try:
        while not ended:
            chunk: list[pb.LiveEvent] = []
            closes_at = 0.0
            while len(chunk) < max_events:
                if pending is None:
                    pending = asyncio.ensure_future(it.__anext__())
                timeout = None if not chunk else max(0.0, closes_at - time.monotonic())
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    break  # the chunk's time is up; the pending read carries over
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    ended = True
                    break
                finally:
                    if pending.done():
                        pending = None
                if not chunk:
                    closes_at = time.monotonic() + max_wait_s
                chunk.append(event)
            if chunk:
                yield chunk
    finally:
        if pending is not None:
            pending.cancel()
