"""The open-loop load generator: requests go out on a fixed schedule, whatever the server does.

A closed loop (send, wait, send) slows down with the server and hides its queue
("coordinated omission"). Here request ``i`` of a run at ``rate``/s is *due* at
``start + i / rate``; its latency is counted from that due time, not from when
the generator got round to sending it, so a stall of the server (or of the
generator) shows up in the percentiles. Requests are spread round-robin over
several channels (one channel = one TCP connection: each channel gets its own
subchannel pool, so gRPC cannot quietly share one connection between them).

The schedule and the statistics are plain functions (unit-tested without any
clock); :func:`run_open_loop` is the only part that waits. The benchmark runs it on
:func:`service.bench.grpcbench.precise_loop`, whose timers wake to the microsecond
(asyncio's default rounds each sleep up to a whole millisecond: lateness of the
generator's own that would be counted as the server's).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

#: p99.9 is only reported from at least this many samples (fewer cannot support it).
P999_MIN_SAMPLES = 100_000


def schedule(rate: float, duration_s: float) -> np.ndarray:
    """Due times (seconds from the start) of an open-loop run: ``i / rate`` for every
    request that falls inside ``[0, duration_s)``."""
    if rate <= 0 or duration_s <= 0:
        return np.zeros(0)
    n = math.ceil(rate * duration_s - 1e-9)
    return np.arange(n, dtype=np.float64) / rate


def channel_of(i: int, channels: int) -> int:
    """Round-robin: request ``i`` goes out on channel ``i % channels``."""
    return i % channels


def due_now(due: np.ndarray, next_i: int, elapsed: float) -> int:
    """Index one past the last request due at ``elapsed`` seconds, starting from ``next_i``.

    Everything overdue is sent at once (never skipped): a generator that fell
    behind catches up, and the lateness is in the latencies.
    """
    return int(np.searchsorted(due, elapsed, side="right")) if next_i < len(due) else next_i


@dataclass
class Percentiles:
    n: int
    p50_ms: float
    p99_ms: float
    p999_ms: float | None  # None below P999_MIN_SAMPLES
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
        }


def percentiles(latencies_s: Sequence[float] | np.ndarray) -> Percentiles:
    """p50/p99 (and p99.9 only from ``P999_MIN_SAMPLES`` samples) in milliseconds."""
    a = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if len(a) == 0:
        nan = float("nan")
        return Percentiles(0, nan, nan, None, nan)
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return Percentiles(
        len(a),
        float(p50),
        float(p99),
        float(p999) if len(a) >= P999_MIN_SAMPLES else None,
        float(a.max()),
    )


@dataclass
class RunResult:
    """One open-loop run at a fixed rate."""

    rate: float
    duration_s: float
    channels: int
    latencies_s: np.ndarray  # of successful calls, from their due time
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count
    send_lag_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # send - due
    wall_s: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.latencies_s) + sum(self.errors.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def stats(self) -> Percentiles:
        return percentiles(self.latencies_s)

    def summary(self) -> dict[str, Any]:
        lag = percentiles(self.send_lag_s)
        return {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "channels": self.channels,
            "sent": self.sent,
            "achieved_rate": self.sent / self.wall_s if self.wall_s else 0.0,
            "errors": dict(self.errors),
            "latency": self.stats().as_dict(),
            "send_lag_p99_ms": lag.p99_ms,
        }


def open_channels(target: str, n: int) -> list[grpc.aio.Channel]:
    """``n`` channels to ``target``, each on its own connection."""
    return [
        grpc.aio.insecure_channel(
            target,
            options=[("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)],
        )
        for _ in range(n)
    ]


#: A call: (channel index) -> awaitable answer. Raises grpc.aio.AioRpcError on failure.
Call = Callable[[int], Awaitable[Any]]


async def run_open_loop(
    call: Call,
    rate: float,
    duration_s: float,
    channels: int,
    max_outstanding: int = 20_000,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RunResult:
    """Send ``call`` at ``rate``/s for ``duration_s`` s; latencies from each due time.

    ``max_outstanding`` only protects the generator's memory when the server
    stops answering; past it the remaining requests count as ``GENERATOR_OVERLOAD``.
    ``clock`` and ``sleep`` are parameters so tests can script time.
    """
    due = schedule(rate, duration_s)
    latencies: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, t_due: float) -> None:
        lags.append(clock() - t_due)
        try:
            await call(channel_of(i, channels))
        except grpc.aio.AioRpcError as exc:
            name = exc.code().name
            errors[name] = errors.get(name, 0) + 1
            return
        latencies.append(clock() - t_due)

    start = clock()
    i = 0
    while i < len(due):
        elapsed = clock() - start
        end = due_now(due, i, elapsed)
        for j in range(i, end):
            if len(pending) >= max_outstanding:
                errors["GENERATOR_OVERLOAD"] = errors.get("GENERATOR_OVERLOAD", 0) + 1
                continue
            task = asyncio.create_task(one(j, start + due[j]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        i = end
        if i < len(due):
            await sleep(max(0.0, start + due[i] - clock()))
    if pending:
        await asyncio.wait(pending)
    wall = clock() - start
    return RunResult(
        rate,
        duration_s,
        channels,
        np.asarray(latencies),
        errors,
        np.asarray(lags),
        wall,
    )


async def run_closed_loop(call: Call, n: int, channels: int) -> RunResult:
    """``n`` calls one after another (no concurrency): the floor and cost per call."""
    latencies = np.empty(n)
    errors: dict[str, int] = {}
    clock = time.perf_counter
    start = clock()
    k = 0
    for i in range(n):
        t0 = clock()
        try:
            await call(channel_of(i, channels))
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            continue
        latencies[k] = clock() - t0
        k += 1
    return RunResult(0.0, 0.0, channels, latencies[:k], errors, wall_s=clock() - start)
