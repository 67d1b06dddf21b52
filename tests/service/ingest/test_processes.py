"""The process model for real: `liverec serve --workers 2`, and a SIGKILL after an ack."""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path

import grpc
import pytest

from features import schema
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from tests.service.conftest import RPC_S, World
from tests.service.ingest.conftest import copy_world, ev, profile_when_applied, start_serve, stop

E = pb.EventType
CHANNELS = 16


def _published(metrics: str) -> float:
    """PublishEvents calls answered OK, from one process's /metrics."""
    total = 0.0
    for line in metrics.splitlines():
        m = re.match(r"liverec_requests_total\{(.*)\} (\S+)$", line)
        if m and 'method="PublishEvents"' in m.group(1) and 'code="OK"' in m.group(1):
            total += float(m.group(2))
    return total


@pytest.mark.slow
def test_two_workers_forward_to_one_aggregator_and_count_duplicates_once(
    world: World, registry: str, tmp_path: Path
) -> None:
    data = copy_world(world, tmp_path / "data")
    server = start_serve(data, registry, tmp_path, "--workers", "2")
    try:
        assert len(server.info["metrics_ports"]) == 3  # aggregator + 2 workers
        room, viewer, t0 = f"room-{uuid.uuid4().hex[:6]}", "v-workers", time.time() - 60
        events = [ev(E.EVENT_TYPE_JOIN, viewer, room, t0, event_id=f"{room}-join")]
        events += [
            ev(E.EVENT_TYPE_LIKE, viewer, room, t0 + i, event_id=f"{room}-like-{i}")
            for i in range(1, 8)
        ]
        events += [
            ev(E.EVENT_TYPE_CHAT, viewer, room, t0 + 8, event_id=f"{room}-chat", chat_topic=2),
            ev(
                E.EVENT_TYPE_PRODUCT_CLICK, viewer, room, t0 + 9, event_id=f"{room}-c", product="p1"
            ),
        ]
        # Separate connections (no shared subchannel), so the kernel spreads them over both
        # workers; each event goes over one channel and its duplicate over another.
        channels = [
            grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CHANNELS)
        ]
        try:
            stubs = [pb_grpc.LiveRecommenderStub(c) for c in channels]
            totals = [0, 0]
            for i, e in enumerate(events):
                s = stubs[i % CHANNELS].PublishEvents(pb.EventBatch(events=[e]), timeout=RPC_S)
                totals[0] += s.accepted
                d = stubs[(i + 5) % CHANNELS].PublishEvents(
                    pb.EventBatch(events=[e]), timeout=RPC_S
                )
                totals[1] += d.duplicates
            for i in range(len(events), CHANNELS):  # every connection carries a call
                stubs[i].PublishEvents(pb.EventBatch(events=[events[0]]), timeout=RPC_S)
            assert totals == [len(events), len(events)]
            profile = profile_when_applied(stubs[3], viewer, room, t0 + 9)
        finally:
            for c in channels:
                c.close()
        assert profile.live.likes == 7
        assert dict(profile.live.chat_counts) == {"shipping": 1}
        assert (profile.live.clicks, profile.live.funnel_step) == (1, pb.FUNNEL_STEP_PRODUCT_CLICK)
        # Both workers took events; the aggregator saw every one of them.
        _, *worker_ports = server.info["metrics_ports"]
        per_worker = [_published(server.metrics(p)) for p in worker_ports]
        assert all(n > 0 for n in per_worker), per_worker
        agg = _published(server.metrics(server.info["metrics_ports"][0]))
        assert agg == sum(per_worker) == 2 * len(events) + CHANNELS - len(events)
        # The room-level call goes to the aggregator's memory through any worker.
        with grpc.insecure_channel(server.target) as channel:
            nxt = pb_grpc.LiveRecommenderStub(channel).RecommendNextProduct(
                pb.RecommendNextProductRequest(room_id=room, candidate_product_ids=["p1", "p2"]),
                timeout=RPC_S,
            )
        assert nxt.viewers_present == 1
    finally:
        code = stop(server, signal.SIGTERM)
    assert code == 0, server.log.read_text()[-3000:]
    # The aggregator compacted its log on the way out: each event once in the event log.
    logged = schema.read_events(data).column("event_id").to_pylist()
    assert sorted(e for e in logged if e.startswith(room)) == sorted(e.event_id for e in events)


@pytest.mark.slow
def test_a_sigkill_after_an_acknowledged_batch_loses_no_event(
    world: World, registry: str, tmp_path: Path
) -> None:
    data = copy_world(world, tmp_path / "data")
    room, viewer, t0 = f"room-{uuid.uuid4().hex[:6]}", "v-killed", time.time() - 30
    events = [ev(E.EVENT_TYPE_JOIN, viewer, room, t0, event_id=f"{room}-join")]
    events += [
        ev(E.EVENT_TYPE_LIKE, viewer, room, t0 + i, event_id=f"{room}-like-{i}")
        for i in range(1, 6)
    ]
    batch = pb.EventBatch(events=events)
    first = start_serve(data, registry, tmp_path)
    try:
        with grpc.insecure_channel(first.target) as channel:
            summary = pb_grpc.LiveRecommenderStub(channel).PublishEvents(batch, timeout=RPC_S)
        assert summary.accepted == len(events)
    finally:
        # Acknowledged means in the WAL: kill at once, before any flush or compaction.
        assert stop(first, signal.SIGKILL) == -signal.SIGKILL
    second = start_serve(data, registry, tmp_path)
    try:
        with grpc.insecure_channel(second.target) as channel:
            stub = pb_grpc.LiveRecommenderStub(channel)
            profile = profile_when_applied(stub, viewer, room, t0 + 5)
            assert (profile.live.likes, profile.live.present) == (5, True)
            again = stub.PublishEvents(batch, timeout=RPC_S)
            assert (again.accepted, again.duplicates) == (0, len(events))
    finally:
        assert stop(second, signal.SIGTERM) == 0, second.log.read_text()[-3000:]
    logged = schema.read_events(data).column("event_id").to_pylist()
    assert sorted(e for e in logged if e.startswith(room)) == sorted(e.event_id for e in events)
