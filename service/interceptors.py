"""The one server interceptor: concurrency limit, errors -> status codes, metrics.

Every ``livecommerce.v1.LiveRecommender`` call passes through :class:`Guard`:

* past ``max_concurrency`` unary calls in flight it is refused with
  ``RESOURCE_EXHAUSTED`` at once (no queueing: a queue would only hide overload
  until deadlines expire);
* a :class:`~service.errors.LiveRecError` becomes its status code and message,
  anything else ``INTERNAL`` with a generic message and a logged traceback
  (:func:`service.errors.status_of`);
* the call is counted and timed per method and status code.

Health and reflection calls pass untouched and are not counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import AbortError

from service.errors import Overloaded, status_of
from service.metrics import Metrics

log = logging.getLogger(__name__)

SERVICE = "livecommerce.v1.LiveRecommender"


class Guard(grpc.aio.ServerInterceptor):
    def __init__(self, max_concurrency: int, metrics: Metrics) -> None:
        self.max_concurrency = max_concurrency
        self.metrics = metrics
        self.in_flight = 0  # one event loop: no lock needed
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full: str = handler_call_details.method
        if handler is None or not full.startswith(f"/{SERVICE}/"):
            return handler
        cached = self._wrapped.get(full)
        if cached is not None and cached[0] is handler:
            return cached[1]  # the wrapper holds no per-call state: built once per method
        wrapped = self._wrap(full.rsplit("/", 1)[-1], handler)
        self._wrapped[full] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await self._guard(method, context, lambda: inner_uu(request, context))

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                # A client stream (IngestEvents) lives as long as a room: it would hold a
                # slot for hours, so it is not counted against the limit.
                return await self._guard(
                    method, context, lambda: inner_su(requests, context), limited=False
                )

            return grpc.stream_unary_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _guard(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        call: Callable[[], Any],
        limited: bool = True,
    ) -> Any:
        if limited and self.in_flight >= self.max_concurrency:
            self.metrics.requests.labels(method, "RESOURCE_EXHAUSTED").inc()
            exc = Overloaded(f"over {self.max_concurrency} calls in flight; back off and retry")
            await context.abort(exc.code, exc.message)
        self.in_flight += limited
        self.metrics.in_flight.inc()
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await call()
        except AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            code, message = status_of(exc, method)
            await context.abort(code, message)
        finally:
            self.in_flight -= limited
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(method, code.name).inc()
            self.metrics.latency.labels(method).observe(time.perf_counter() - start)
