"""Measurements over gRPC on loopback against a ``liverec serve`` subprocess.

Every latency comes from :mod:`service.bench.loadgen` (open loop, from the due
time); every window records the CPU of the generator and of the server.
"""

from __future__ import annotations

import asyncio
import itertools
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.bench import loadgen, procstat
from service.bench.serverproc import ServerProcess
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc

#: Deadline of every RankProducts and empty call (the server's own default is 1 s).
DEADLINE_S = 1.0
#: Room-level calls get longer, so a slow answer is measured rather than cut off.
ROOM_DEADLINE_S = 60.0


@dataclass
class Calls:
    """Ready-made requests of one benchmark (built once, reused by every call)."""

    rank: pb.RankProductsRequest
    score: pb.ScoreConversionRequest
    next_product: pb.RecommendNextProductRequest
    #: ``rank`` for each of a room's viewers, asked in turn (overlay traffic); may be empty.
    rank_viewers: list[pb.RankProductsRequest] = field(default_factory=list)


class Client:
    """Stubs over ``channels`` connections to one server."""

    def __init__(self, address: str, channels: int) -> None:
        self.channels = loadgen.open_channels(address, channels)
        self.stubs = [pb_grpc.LiveRecommenderStub(c) for c in self.channels]
        self.health = [health_pb2_grpc.HealthStub(c) for c in self.channels]

    def rank(self, req: pb.RankProductsRequest) -> loadgen.Call:
        return lambda i: self.stubs[i].RankProducts(req, timeout=DEADLINE_S)

    def rank_in_turn(self, reqs: list[pb.RankProductsRequest]) -> loadgen.Call:
        """Each call asks for the next request of ``reqs`` (cycling): one viewer after
        another, as a room's overlays refresh, instead of one viewer over and over."""
        turn = itertools.cycle(reqs)
        return lambda i: self.stubs[i].RankProducts(next(turn), timeout=DEADLINE_S)

    def score(self, req: pb.ScoreConversionRequest) -> loadgen.Call:
        return lambda i: self.stubs[i].ScoreConversion(req, timeout=ROOM_DEADLINE_S)

    def next_product(self, req: pb.RecommendNextProductRequest) -> loadgen.Call:
        return lambda i: self.stubs[i].RecommendNextProduct(req, timeout=ROOM_DEADLINE_S)

    def empty(self) -> loadgen.Call:
        req = health_pb2.HealthCheckRequest(service="")
        return lambda i: self.health[i].Check(req, timeout=DEADLINE_S)

    async def close(self) -> None:
        for c in self.channels:
            await c.close()


async def measured(
    server: ServerProcess, call: loadgen.Call, rate: float, duration_s: float, channels: int
) -> dict[str, Any]:
    """One open-loop run with the CPU of both sides over the same window."""
    with procstat.CpuMeter(server.pid) as meter:
        run = await loadgen.run_open_loop(call, rate, duration_s, channels)
    assert meter.window is not None
    out = run.summary()
    out["cpu"] = meter.window.as_dict()
    calls = max(1, len(run.latencies_s))
    out["server_cpu_ms_per_call"] = meter.window.server_cpu_s / calls * 1000.0
    out["server_cpu_ms_per_call_by_thread"] = {
        label: round(s / calls * 1000.0, 4) for label, s in meter.window.server_threads_s.items()
    }
    return out


async def measured_rank(
    server: ServerProcess, calls: Calls, rate: float, duration_s: float, channels: int
) -> dict[str, Any]:
    client = Client(server.address, channels)
    try:
        return await measured(server, client.rank(calls.rank), rate, duration_s, channels)
    finally:
        await client.close()


async def warm(call: loadgen.Call, n: int, channels: int) -> None:
    await loadgen.run_closed_loop(call, n, channels)


async def rank_suite(
    server: ServerProcess,
    calls: Calls,
    rates: list[float],
    duration_s: float,
    channels: int,
    ceiling_ms: float = 10.0,
    search: list[float] | None = None,
    echo: Callable[[str], None] = print,
    in_turn_rate: float | None = None,
    refine: int = 0,
) -> dict[str, Any]:
    """RankProducts at fixed rates, the empty-call floor beside it, and the highest rate
    whose p99 stays under ``ceiling_ms`` with no errors (:func:`highest_rate_under`); then,
    with ``in_turn_rate`` and ``calls.rank_viewers``, that rate over every viewer in turn."""
    client = Client(server.address, channels)
    rank = client.rank(calls.rank)
    try:
        await warm(rank, 300, channels)
        await warm(client.empty(), 300, channels)
        out: dict[str, Any] = {"rates": {}, "floor": {}}
        for rate in rates:
            echo(f"  RankProducts at {rate:.0f}/s ...")
            out["rates"][str(int(rate))] = await measured(server, rank, rate, duration_s, channels)
            echo(f"  empty call at {rate:.0f}/s ...")
            out["floor"][str(int(rate))] = await measured(
                server, client.empty(), rate, duration_s, channels
            )

        async def at(rate: float) -> dict[str, Any]:
            key = str(int(rate))
            if key not in out["rates"]:
                echo(f"  RankProducts at {rate:.0f}/s (search) ...")
                out["rates"][key] = await measured(server, rank, rate, duration_s, channels)
            result: dict[str, Any] = out["rates"][key]
            return result

        best = await highest_rate_under(at, rates, search or [], ceiling_ms, refine)
        out["max_rate_p99_under_ms"] = {"ceiling_ms": ceiling_ms, "rate": best}
        if in_turn_rate and calls.rank_viewers:
            out["viewers_in_turn"] = await _in_turn(
                server, client, calls.rank_viewers, in_turn_rate, duration_s, echo
            )
        return out
    finally:
        await client.close()


def _under(result: dict[str, Any], ceiling_ms: float) -> bool:
    return bool(result["latency"]["p99_ms"] < ceiling_ms and not result["errors"])


async def highest_rate_under(
    at: Callable[[float], Awaitable[dict[str, Any]]],
    rates: list[float],
    search: list[float],
    ceiling_ms: float,
    refine: int,
) -> float | None:
    """The highest rate whose run stays under ``ceiling_ms`` at p99 with no errors.

    ``at(rate)`` gives a rate's run (measuring it if it has not been). The fixed
    ``rates`` come first. If all of them stay under, the ``search`` rates above them are
    tried in order until one does not. If one does not, ``refine`` halvings between the
    highest rate under and the lowest rate over it (to 10/s) find where the machine of
    the day stops keeping up, rather than saying that none of the fixed rates did.
    """
    best: float | None = None
    over: float | None = None
    for rate in sorted(rates):
        if _under(await at(rate), ceiling_ms):
            best = rate
        else:
            over = rate
            break
    if over is None:
        for rate in sorted(r for r in search if best is None or r > best):
            if not _under(await at(rate), ceiling_ms):
                break
            best = rate
        return best
    low = best or 0.0
    for _ in range(refine):
        mid = round((low + over) / 2.0, -1)
        if mid <= low or mid >= over:
            break
        if _under(await at(mid), ceiling_ms):
            best = low = mid
        else:
            over = mid
    return best


async def _in_turn(
    server: ServerProcess,
    client: Client,
    reqs: list[pb.RankProductsRequest],
    rate: float,
    duration_s: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """RankProducts for each viewer in turn, after one pass over them all: every viewer's
    rows and kept parts then stand where a room's overlay traffic keeps them (refreshed
    every few seconds), while each call touches other objects than the one before."""
    channels = len(client.stubs)
    echo(f"  RankProducts at {rate:.0f}/s, {len(reqs):,} viewers in turn ...")
    await warm(client.rank_in_turn(reqs), len(reqs), channels)
    out = await measured(server, client.rank_in_turn(reqs), rate, duration_s, channels)
    out["viewers"] = len(reqs)
    return out


async def room_suite(
    server: ServerProcess,
    calls: Calls,
    score_rate: float,
    next_calls: int,
    duration_s: float,
    channels: int,
    echo: Callable[[str], None] = print,
    events: Callable[[asyncio.Event], Coroutine[Any, Any, Any]] | None = None,
    cold_calls: int = 0,
) -> dict[str, Any]:
    """ScoreConversion open loop at ``score_rate``; RecommendNextProduct ``next_calls``
    times one after another (a 2,000-viewer room can take longer than any sane interval,
    and queued calls would keep the server busy long after the window), while
    ``events(stop)`` (if given) plays the room's viewers' events into the server until
    ``stop`` is set, as a live room does between two asks; then ``cold_calls`` more with
    the candidates in a new order each call, so that the server has no grid of theirs
    kept (every row scored)."""
    client = Client(server.address, channels)
    try:
        score = client.score(calls.score)
        nxt = client.next_product(calls.next_product)
        await warm(score, 2, channels)
        probe = await client.stubs[0].RecommendNextProduct(
            calls.next_product, timeout=ROOM_DEADLINE_S
        )
        echo(f"  ScoreConversion({len(calls.score.viewer_ids)}) at {score_rate:.0f}/s ...")
        s = await measured(server, score, score_rate, duration_s, channels)
        label = (
            f"  RecommendNextProduct({probe.viewers_present} x "
            f"{len(calls.next_product.candidate_product_ids)})"
        )
        stop = asyncio.Event()
        background: asyncio.Task[Any] | None = (
            None if events is None else asyncio.create_task(events(stop))
        )
        played: list[Any] = []
        try:
            echo(f"{label} x{next_calls}, one at a time ...")
            n = await _one_at_a_time(server, nxt, next_calls)
            if cold_calls:
                echo(f"{label} x{cold_calls}, one at a time, nothing kept ...")
                turn = itertools.cycle(_reordered(calls.next_product, cold_calls))
                cold = await _one_at_a_time(
                    server,
                    lambda i: client.stubs[i].RecommendNextProduct(
                        next(turn), timeout=ROOM_DEADLINE_S
                    ),
                    cold_calls,
                )
                n["nothing_kept"] = cold
        finally:
            stop.set()
            if background is not None:
                # A stalled server must not hang the bench here (nor hide its error).
                done, _ = await asyncio.wait([background], timeout=30.0)
                if not done:
                    background.cancel()
                played = list(await asyncio.gather(background, return_exceptions=True))
        if played:
            n["events"] = played[0] if isinstance(played[0], dict) else {"error": repr(played[0])}
        n["viewers_present"] = probe.viewers_present
        n["fallback"] = probe.meta.flags.fallback
        return {"score_conversion": s, "next_product": n}
    finally:
        await client.close()


async def _one_at_a_time(server: ServerProcess, call: loadgen.Call, n: int) -> dict[str, Any]:
    """``n`` calls one after another: latency, the server's CPU, and how the model found
    its rows' scores meanwhile (``liverec_model_rows_total``)."""
    loop = asyncio.get_running_loop()
    before = await loop.run_in_executor(None, model_rows, server)
    with procstat.CpuMeter(server.pid) as meter:
        run = await loadgen.run_closed_loop(call, n, 1)
    assert meter.window is not None
    after = await loop.run_in_executor(None, model_rows, server)
    out = run.summary()
    out["mode"] = "closed loop, one call at a time"
    out["cpu"] = meter.window.as_dict()
    if before is not None and after is not None:
        out["rows"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return out


def _reordered(req: pb.RecommendNextProductRequest, n: int) -> list[pb.RecommendNextProductRequest]:
    """``req`` with its candidates rotated by 1, 2, ... ``n`` (at most one fewer than the
    candidates): each a grid of its own, none the original order. Asked in turn, more calls
    than these repeat them, after more grids than a server keeps by default (the report
    prints the share of rows scored: a repeat kept would show there)."""
    cands = list(req.candidate_product_ids)
    out = []
    for k in range(1, min(n, len(cands) - 1) + 1):
        r = pb.RecommendNextProductRequest()
        r.CopyFrom(req)
        del r.candidate_product_ids[:]
        r.candidate_product_ids.extend(cands[k:] + cands[:k])
        out.append(r)
    return out


def model_rows(server: ServerProcess) -> dict[str, float] | None:
    """``liverec_model_rows_total`` of the server's processes, summed, by
    ``model/kept_by/how``, and ``liverec_model_row_groups_total`` by
    ``model/room_groups/how`` (empty where the server exports none; ``None`` if /metrics
    could not be read)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for port in server.metrics_ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        for family in text_string_to_metric_families(text):
            if family.name not in ("liverec_model_rows", "liverec_model_row_groups"):
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = {"kept_by": "room_groups", **sample.labels}
                    key = "/".join(labels[k] for k in ("model", "kept_by", "how"))
                    out[key] = out.get(key, 0.0) + sample.value
    return out


def precise_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose timers wake to the microsecond, for the load generator.

    asyncio's default selector (epoll) rounds every timeout *up* to a whole
    millisecond, so an open-loop generator sleeping until the next due time woke
    0.7 ms late at the median (measured at 500/s): lateness that the latencies,
    counted from the due time, charged to the server. ``select()`` takes its timeout
    in microseconds. Its limit (descriptors numbered below 1024) is far from the
    handful of sockets the benchmark process watches.
    """
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def run(coro: Any) -> Any:
    """Run one coroutine of the benchmark on a fresh :func:`precise_loop`."""
    with asyncio.Runner(loop_factory=precise_loop) as runner:
        return runner.run(coro)
