"""Ingestion: events/s into one aggregator, rows/s into the online store, freshness.

Where events go is one small switch, :class:`Sink`: ``inproc`` drives the plain
core (:class:`service.ingest.aggregator.Aggregator`) in this process; ``grpc``
sends the same batches with ``PublishEvents`` to the server under test. While
the RPC is not wired the bench uses ``inproc`` and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np

from service.bench.loadgen import percentiles
from service.bench.world import BenchWorld, Workload, activity, make_aggregator, opening_events
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc


class Sink(Protocol):
    kind: str

    def prepare(self, events: list[dict[str, Any]]) -> Any: ...
    async def send(self, prepared: Any) -> int: ...
    async def publish(self, events: list[dict[str, Any]]) -> int: ...
    async def close(self) -> None: ...
    def rows_written(self) -> int: ...


class InProcess:
    """The aggregator core in this process (what one aggregator can take)."""

    kind = "inproc"

    def __init__(self, world: BenchWorld, work: Path, **limits: Any) -> None:
        self.agg = make_aggregator(world, work, **limits)

    async def start(self) -> InProcess:
        await self.agg.start()
        return self

    def prepare(self, events: list[dict[str, Any]]) -> Any:
        return events

    async def send(self, prepared: Any) -> int:
        return int((await self.agg.ingest(prepared)).accepted)

    async def publish(self, events: list[dict[str, Any]]) -> int:
        return await self.send(events)

    async def flush(self) -> None:
        await self.agg.flush()

    async def close(self) -> None:
        await self.agg.stop()

    def rows_written(self) -> int:
        return int(self.agg.writer.rows_written)


_TYPES: dict[str, Any] = {
    name.removeprefix("EVENT_TYPE_").lower(): v for name, v in pb.EventType.items()
}
_TOPICS: dict[str, Any] = {
    name.removeprefix("CHAT_TOPIC_").lower(): v for name, v in pb.ChatTopic.items()
}


def to_proto(e: dict[str, Any]) -> pb.LiveEvent:
    ev = pb.LiveEvent(
        event_id=e["event_id"],
        event_type=_TYPES[e["event_type"]],
        room_id=e["room_id"],
        viewer_id=e.get("viewer_id") or "",
        product_id=e.get("product_id") or "",
    )
    ev.event_time.FromNanoseconds(int(e["event_time"] * 1e9))
    if e.get("chat_topic"):
        ev.chat_topic = _TOPICS[e["chat_topic"]]
    return ev


class OverGrpc:
    """``PublishEvents`` to the server under test (rows written are the server's)."""

    kind = "grpc"

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.LiveRecommenderStub(self.channel)

    async def start(self) -> OverGrpc:
        return self

    def prepare(self, events: list[dict[str, Any]]) -> Any:
        return pb.EventBatch(events=[to_proto(e) for e in events])

    async def send(self, prepared: Any) -> int:
        reply = await self.stub.PublishEvents(prepared, timeout=30)
        return int(reply.accepted)

    async def publish(self, events: list[dict[str, Any]]) -> int:
        return await self.send(self.prepare(events))

    async def flush(self) -> None:
        return None  # the server flushes on its own interval

    async def close(self) -> None:
        await self.channel.close()

    def rows_written(self) -> int:
        return -1  # read from the server's metrics once it exports them


async def grpc_wired(address: str) -> bool:
    """Whether the server answers PublishEvents (an empty batch is enough to tell)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.LiveRecommenderStub(channel)
        try:
            await stub.PublishEvents(pb.EventBatch(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


@dataclass
class Throughput:
    events: int
    seconds: float
    rows_written: int
    flush_seconds: float
    distinct_viewers: int
    rooms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": self.seconds,
            "events_per_s": self.events / self.seconds,
            "rows_written": self.rows_written,
            "rows_per_s": self.rows_written / self.flush_seconds if self.flush_seconds else 0.0,
            "rooms": self.rooms,
            "distinct_viewers": self.distinct_viewers,
            "distinct_viewers_per_s": self.distinct_viewers / self.seconds,
        }


async def make_sink(kind: str, world: BenchWorld, work: Path, address: str = "") -> Any:
    """The switch: ``grpc`` -> PublishEvents to ``address``; ``inproc`` -> the core here."""
    if kind == "grpc":
        return await OverGrpc(address).start()
    return await InProcess(world, work).start()


async def throughput(
    sink: Any, world: BenchWorld, w: Workload, n_events: int, batch: int
) -> Throughput:
    """As fast as one aggregator takes them: ``n_events`` in batches of ``batch``
    (batches built before the clock starts, so the sender's own cost is not counted)."""
    t_open = time.time()
    opening = opening_events(w, world, t_open)
    for i in range(0, len(opening), batch):
        await sink.publish(opening[i : i + batch])
    await sink.flush()
    base_rows = sink.rows_written()
    events = list(activity(w, world, n_events, time.time(), start_id=1_000_000))
    viewers = {e.get("viewer_id") for e in events}
    batches = [sink.prepare(events[i : i + batch]) for i in range(0, len(events), batch)]
    t0 = time.perf_counter()
    accepted = 0
    for prepared in batches:
        accepted += await sink.send(prepared)
    t_acked = time.perf_counter() - t0
    await sink.flush()
    t_flushed = time.perf_counter() - t0
    rows = sink.rows_written() - base_rows if base_rows >= 0 else -1
    return Throughput(accepted, t_acked, rows, t_flushed, len(viewers - {None}), w.rooms)


async def paced(
    sink: Sink,
    world: BenchWorld,
    w: Workload,
    rate: float,
    duration_s: float,
    batch_every_s: float = 0.05,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Events at ``rate``/s in a batch every ``batch_every_s`` (as a room backend would),
    for ``duration_s`` or until ``stop`` is set."""
    per = max(1, int(rate * batch_every_s))
    start = time.perf_counter()
    k = 0
    sent = 0
    lag: list[float] = []
    start_id = 5_000_000 + int(time.time() * 1000) % 1_000_000 * 10
    while True:
        due = start + k * batch_every_s
        if due - start >= duration_s or (stop is not None and stop.is_set()):
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        events = list(activity(w, world, per, time.time(), start_id=start_id + sent))
        t0 = time.perf_counter()
        sent += await sink.publish(events)
        lag.append(time.perf_counter() - t0)
        k += 1
    wall = time.perf_counter() - start
    return {"events": sent, "events_per_s": sent / wall, "publish_ms": percentiles(lag).as_dict()}


async def freshness(
    sink: Sink,
    address: str,
    room: str,
    viewers: list[str],
    probes: int,
    background: tuple[BenchWorld, Workload, float] | None = None,
) -> dict[str, Any]:
    """Event -> visible to scoring: a probe ``like`` per viewer, read back through
    GetViewerProfile's ``last_event_applied`` (polled every 2 ms)."""
    bg: asyncio.Task[Any] | None = None
    if background is not None:
        world, w, rate = background
        bg = asyncio.create_task(paced(sink, world, w, rate, duration_s=3600))
    out: list[float] = []
    misses = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.LiveRecommenderStub(channel)
        for i in range(probes):
            viewer = viewers[i % len(viewers)]
            t_event = time.time()
            probe = {
                "event_id": f"probe-{t_event:.6f}-{i}",
                "event_type": "like",
                "event_time": t_event,
                "room_id": room,
                "viewer_id": viewer,
            }
            t0 = time.perf_counter()
            await sink.publish([probe])
            seen = None
            while time.perf_counter() - t0 < 5.0:
                reply = await stub.GetViewerProfile(
                    pb.GetViewerProfileRequest(viewer_id=viewer, room_id=room), timeout=2
                )
                if reply.HasField("last_event_applied"):
                    applied = reply.last_event_applied.ToNanoseconds() / 1e9
                    if applied >= t_event - 1e-5:
                        seen = time.perf_counter() - t0
                        break
                await asyncio.sleep(0.002)
            if seen is None:
                misses += 1
            else:
                out.append(seen)
            await asyncio.sleep(0.05)
    if bg is not None:
        bg.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bg
    return {"probes": probes, "not_seen_in_5s": misses, **percentiles(out).as_dict()}


# -- background ingestion in its own process (so it does not share the generator's GIL) ----


def _child(
    world: BenchWorld, w: Workload, rate: float, duration_s: float, q: Any, kind: str, address: str
) -> None:
    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="liverec-bench-ingest-") as tmp:
            sink = await make_sink(kind, world, Path(tmp), address)
            opening = opening_events(w, world, time.time())
            for i in range(0, len(opening), 1000):
                await sink.publish(opening[i : i + 1000])
            q.put("ready")
            t0 = time.perf_counter()
            rows0 = sink.rows_written()
            result = await paced(sink, world, w, rate, duration_s)
            await sink.flush()
            if rows0 >= 0:
                result["rows_per_s"] = (sink.rows_written() - rows0) / (time.perf_counter() - t0)
            await sink.close()
            return result

    q.put(asyncio.run(go()))


def start_background(
    world: BenchWorld, w: Workload, rate: float, duration_s: float, kind: str, address: str
) -> tuple[Any, Any]:
    """Paced ingestion in a spawned process; returns (process, queue) once it is ready."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(world, w, rate, duration_s, q, kind, address), daemon=True)
    p.start()
    assert q.get(timeout=120) == "ready"
    return p, q


def background_result(p: Any, q: Any, timeout: float) -> dict[str, Any]:
    try:
        return q.get(timeout=timeout)
    finally:
        p.join(10)


def mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")
