"""The thin gRPC servicer: validate, run the plain core off the event loop, convert.

Errors are not handled here: they propagate to :class:`service.interceptors.Guard`,
the one place that maps them to status codes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from service import convert, validation
from service.domain import Deadline, Flags
from service.errors import DeadlineExceeded, Unimplemented
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.metrics import Metrics
from service.scoring import Scorer
from service.settings import ServiceSettings

Q = TypeVar("Q")
A = TypeVar("A")


def deadline_of(context: grpc.aio.ServicerContext, default_s: float) -> Deadline:
    """The caller's deadline, or the server default when the call carries none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e6:  # no deadline: grpc reports None or "forever"
        remaining = default_s
    return Deadline.after(remaining)


class LiveRecommender(pb_grpc.LiveRecommenderServicer):
    def __init__(
        self, settings: ServiceSettings, scorer: Scorer, metrics: Metrics, threads: int
    ) -> None:
        self.s = settings
        self.scorer = scorer
        self.metrics = metrics
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

    def _flags(self, method: str, flags: Flags) -> None:
        if flags.degraded:
            self.metrics.flags(method, flags)

    async def ScoreConversion(
        self, request: pb.ScoreConversionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreConversionResponse:
        query = validation.score_conversion(request, self.s)
        answer = await self._run(
            self.scorer.score_conversion, query, deadline_of(context, self._default_s)
        )
        self._flags("ScoreConversion", answer.meta.flags)
        return convert.conversion(answer)

    async def RankProducts(
        self, request: pb.RankProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankProductsResponse:
        query = validation.rank_products(request, self.s)
        answer = await self._run(
            self.scorer.rank_products, query, deadline_of(context, self._default_s)
        )
        self._flags("RankProducts", answer.meta.flags)
        return convert.ranked(answer)

    async def RecommendNextProduct(
        self, request: pb.RecommendNextProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecommendNextProductResponse:
        query = validation.next_product(request, self.s)
        answer = await self._run(
            self.scorer.recommend_next_product, query, deadline_of(context, self._default_s)
        )
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

    async def IngestEvents(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> pb.IngestSummary:
        raise Unimplemented("IngestEvents: live ingestion is not implemented in this build yet")

    async def PublishEvents(
        self, request: pb.EventBatch, context: grpc.aio.ServicerContext
    ) -> pb.IngestSummary:
        raise Unimplemented("PublishEvents: live ingestion is not implemented in this build yet")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
