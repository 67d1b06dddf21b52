"""PublishEvents / IngestEvents over real gRPC into a server that owns live state."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from tests.service.conftest import RPC_S, ServerThread, World
from tests.service.ingest.conftest import ev, profile_when_applied

E = pb.EventType


def _room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def test_a_mixed_batch_accepts_the_good_and_rejects_the_bad_with_reasons(
    live: ServerThread,
) -> None:
    room, now = _room(), time.time()
    bad_currency = ev(E.EVENT_TYPE_PURCHASE, "vm", room, now, product="p00001")
    bad_currency.amount.amount_minor, bad_currency.amount.currency = 500, "XXX"
    bad_currency.payment_method = pb.PAYMENT_METHOD_CARD
    batch = [
        ev(E.EVENT_TYPE_JOIN, "vm", room, now, event_id=f"{room}-0"),
        ev(E.EVENT_TYPE_UNSPECIFIED, "vm", room, now, event_id=f"{room}-1"),
        bad_currency,
        ev(E.EVENT_TYPE_CHAT, "vm", room, now, event_id=f"{room}-3"),  # no topic
        ev(E.EVENT_TYPE_LIKE, "vm", room, now + 3600, event_id=f"{room}-4"),
        ev(E.EVENT_TYPE_LIKE, "", room, now, event_id=f"{room}-5"),  # no viewer
        ev(
            E.EVENT_TYPE_CHAT,
            "vm",
            room,
            now,
            event_id=f"{room}-6",
            chat_topic=pb.CHAT_TOPIC_SIZE_FIT,
        ),
    ]
    summary = live.stub.PublishEvents(pb.EventBatch(events=batch), timeout=RPC_S)
    assert (summary.accepted, summary.duplicates) == (2, 0)
    got = {r.index: r for r in summary.rejected}
    assert sorted(got) == [1, 2, 3, 4, 5]
    assert [got[i].field for i in (1, 2, 3, 4, 5)] == [
        "event_type",
        "currency",
        "chat_topic",
        "event_time",
        "viewer_id",
    ]
    assert got[1].event_id == f"{room}-1" and got[2].event_id == bad_currency.event_id
    assert "future" in got[4].reason and "XXX" in got[2].reason
    profile = profile_when_applied(live.stub, "vm", room, now)
    assert dict(profile.live.chat_counts) == {"size_fit": 1}
    assert profile.live.present


def test_a_stream_resent_whole_counts_each_event_once(live: ServerThread) -> None:
    room, t0 = _room(), time.time() - 60
    events = [ev(E.EVENT_TYPE_JOIN, "vd", room, t0, event_id=f"{room}-join")]
    events += [
        ev(E.EVENT_TYPE_LIKE, "vd", room, t0 + i, event_id=f"{room}-like-{i}") for i in range(1, 20)
    ]
    stream = [*events, events[3]]  # a duplicate inside the stream too
    first = live.stub.IngestEvents(iter(stream), timeout=RPC_S)
    assert (first.accepted, first.duplicates, len(first.rejected)) == (20, 1, 0)
    again = live.stub.IngestEvents(iter(stream), timeout=RPC_S)
    assert (again.accepted, again.duplicates) == (0, 21)
    profile = profile_when_applied(live.stub, "vd", room, t0 + 19)
    assert profile.live.likes == 19


def test_a_long_stream_is_ingested_in_chunks_with_stream_wide_indices(live: ServerThread) -> None:
    room, t0 = _room(), time.time() - 120
    events = [ev(E.EVENT_TYPE_JOIN, "vs", room, t0, event_id=f"{room}-join")]
    events += [
        ev(E.EVENT_TYPE_LIKE, "vs", room, t0 + i / 100, event_id=f"{room}-{i}")
        for i in range(1, 1200)
    ]
    events[1100] = ev(E.EVENT_TYPE_PRODUCT_CLICK, "vs", room, t0 + 11, event_id="no-product")
    summary = live.stub.IngestEvents(iter(events), timeout=RPC_S)
    assert summary.accepted == 1199
    assert [(r.index, r.event_id, r.field) for r in summary.rejected] == [
        (1100, "no-product", "product_id")
    ]


def test_an_add_to_cart_raises_the_viewers_next_conversion_score(
    live: ServerThread, world: World
) -> None:
    room, t = _room(), time.time() - 30
    viewer = world.viewers[0]
    product = world.products[0]
    live.stub.PublishEvents(
        pb.EventBatch(
            events=[
                ev(E.EVENT_TYPE_JOIN, viewer, room, t),
                ev(E.EVENT_TYPE_PRODUCT_CLICK, viewer, room, t + 1, product=product),
            ]
        ),
        timeout=RPC_S,
    )
    profile_when_applied(live.stub, viewer, room, t + 1)
    request = pb.ScoreConversionRequest(room_id=room, viewer_ids=[viewer])
    before = live.stub.ScoreConversion(request, timeout=RPC_S).scores[0]
    live.stub.PublishEvents(
        pb.EventBatch(events=[ev(E.EVENT_TYPE_ADD_TO_CART, viewer, room, t + 2, product=product)]),
        timeout=RPC_S,
    )
    profile = profile_when_applied(live.stub, viewer, room, t + 2)
    assert (profile.live.carts, profile.live.funnel_step) == (1, pb.FUNNEL_STEP_ADD_TO_CART)
    after = live.stub.ScoreConversion(request, timeout=RPC_S).scores[0]
    assert not after.flags.fallback
    assert after.probability > before.probability


def test_leave_removes_the_viewer_from_the_rooms_present_viewers(
    live: ServerThread, world: World
) -> None:
    room, t = _room(), time.time() - 10
    a, b = world.viewers[1], world.viewers[2]
    live.stub.PublishEvents(
        pb.EventBatch(
            events=[ev(E.EVENT_TYPE_JOIN, a, room, t), ev(E.EVENT_TYPE_JOIN, b, room, t)]
        ),
        timeout=RPC_S,
    )
    request = pb.RecommendNextProductRequest(room_id=room, candidate_product_ids=world.products[:5])
    rooms = live.app.servicer.rooms
    assert rooms is not None
    reads = rooms.store_reads
    first = live.stub.RecommendNextProduct(request, timeout=RPC_S)
    assert first.viewers_present == 2 and not first.meta.flags.fallback
    assert first.products[0].expected_conversions > 0
    live.stub.PublishEvents(
        pb.EventBatch(events=[ev(E.EVENT_TYPE_LEAVE, a, room, t + 5)]), timeout=RPC_S
    )
    # From the aggregator's memory: no wait for an online write.
    second = live.stub.RecommendNextProduct(request, timeout=RPC_S)
    assert second.viewers_present == 1
    for _ in range(3):
        live.stub.RecommendNextProduct(request, timeout=RPC_S)
    # Batch rows are read once per viewer (on join), not once per call.
    assert rooms.store_reads - reads <= 2


def test_ingestion_without_a_live_owner_is_unimplemented(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        server.stub.PublishEvents(pb.EventBatch(), timeout=RPC_S)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_replay_streams_a_simulated_stream_into_the_server(
    live: ServerThread, world: World
) -> None:
    from typer.testing import CliRunner

    from service.replay import load_stream, replay_app

    data = live.app.s.data_dir
    events = load_stream(data, world.room)
    assert events
    result = CliRunner().invoke(
        replay_app,
        [
            "--stream",
            world.room,
            "--speed",
            "0",
            "--target",
            f"127.0.0.1:{live.app.port}",
            "--data-dir",
            str(data),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    # (All "late": this world's recovered log runs minutes past now, so the watermark leads.)
    assert f"accepted {len(events)}, duplicates 0," in result.output
    assert "rejected 0," in result.output


def test_full_buffers_refuse_at_once_with_resource_exhausted(live: ServerThread) -> None:
    from dataclasses import replace

    aggregator = live.app.aggregator
    assert aggregator is not None
    limits = aggregator.limits
    aggregator.limits = replace(limits, max_pending_rows=0)  # as if the store fell behind
    try:
        with pytest.raises(grpc.RpcError) as err:
            live.stub.PublishEvents(
                pb.EventBatch(events=[ev(E.EVENT_TYPE_LIKE, "vf", _room(), time.time())]),
                timeout=RPC_S,
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "buffers are full" in (err.value.details() or "")
    finally:
        aggregator.limits = limits
