"""The guard wraps the servicer's methods at registration: counts, limits, maps errors."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest

from service.errors import InvalidArgument
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.interceptors import Guard
from service.metrics import Metrics

SERVICE = pb.DESCRIPTOR.services_by_name["LiveRecommender"]


class _Context:
    """The two things the guard asks of a servicer context."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise grpc.aio.AbortError()

    def code(self) -> grpc.StatusCode | None:
        return None if self.aborted is None else self.aborted[0]


class _Servicer:
    def __init__(self) -> None:
        self.seen_open = -1
        self.guard: Guard | None = None

    async def RankProducts(self, request: Any, context: Any) -> str:
        assert self.guard is not None
        self.seen_open = self.guard.open_calls
        return "ranked"

    async def GetViewerProfile(self, request: Any, context: Any) -> str:
        raise InvalidArgument("viewer_id", "must not be empty")

    async def IngestEvents(self, requests: Any, context: Any) -> str:
        return "ingested"


def _scrape(m: Metrics) -> list[str]:
    return generate_latest(m.registry).decode().splitlines()


def test_every_method_of_the_service_is_guarded_and_counted() -> None:
    m = Metrics()
    guard = Guard(max_concurrency=1, metrics=m)
    inner = _Servicer()
    inner.guard = guard
    missing = [x.name for x in SERVICE.methods if not hasattr(inner, x.name)]
    for name in missing:  # methods this test does not call still need a target
        setattr(inner, name, inner.RankProducts)
    guarded = guard.servicer(inner, SERVICE)
    assert {x.name for x in SERVICE.methods} <= set(vars(guarded))

    assert asyncio.run(guarded.RankProducts(None, _Context())) == "ranked"
    assert inner.seen_open == 1 and guard.open_calls == 0 and guard.in_flight == 0
    assert 'liverec_requests_total{code="OK",method="RankProducts"} 1.0' in _scrape(m)
    assert "liverec_in_flight 0.0" in _scrape(m)

    ctx = _Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(guarded.GetViewerProfile(None, ctx))
    assert ctx.aborted == (grpc.StatusCode.INVALID_ARGUMENT, "viewer_id: must not be empty")
    assert (
        'liverec_requests_total{code="INVALID_ARGUMENT",method="GetViewerProfile"} 1.0'
        in _scrape(m)
    )

    # Over the limit: refused at once. A client stream is never counted against it.
    guard.in_flight = 1
    ctx = _Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(guarded.RankProducts(None, ctx))
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert asyncio.run(guarded.IngestEvents(iter(()), _Context())) == "ingested"
