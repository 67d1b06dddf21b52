"""Every RPC against a real server over a real tiny-world Feast store."""

from __future__ import annotations

import grpc
import pytest

from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL
from tests.service.conftest import RPC_S, World


def test_score_conversion_answers_in_request_order(
    stub: pb_grpc.LiveRecommenderStub, world: World
) -> None:
    viewers = [*world.present[:5], "never-seen-viewer"]
    reply = stub.ScoreConversion(
        pb.ScoreConversionRequest(room_id=world.room, viewer_ids=viewers), timeout=RPC_S
    )
    assert [s.viewer_id for s in reply.scores] == viewers
    assert reply.meta.model.name == CONVERSION_MODEL
    assert reply.meta.model.version == "1"
    for score in reply.scores:
        assert 0.0 <= score.probability <= 1.0
        assert score.segment != pb.SEGMENT_UNSPECIFIED
        assert not score.flags.fallback
    known, cold = reply.scores[0], reply.scores[-1]
    assert cold.flags.cold_start
    assert reply.meta.flags.cold_start  # union of the items' flags
    assert known.reasons, "a known, present viewer gets reasons"
    weights = [abs(r.weight) for r in known.reasons]
    assert weights == sorted(weights, reverse=True)
    assert all(r.code and r.text for r in known.reasons)


def test_rank_products_orders_by_score_and_flags_unknown_products(
    stub: pb_grpc.LiveRecommenderStub, world: World
) -> None:
    candidates = [*world.products[:20], "brand-new-product", world.products[0]]
    reply = stub.RankProducts(
        pb.RankProductsRequest(
            room_id=world.room,
            viewer_id=world.present[0],
            candidate_product_ids=candidates,
            top_k=0,
        ),
        timeout=RPC_S,
    )
    assert len(reply.products) == 10  # top_k 0 -> the default
    keys = [(-p.score, p.product_id) for p in reply.products]
    assert keys == sorted(keys)
    assert reply.meta.model.name == NEXT_PRODUCT_MODEL
    everything = stub.RankProducts(
        pb.RankProductsRequest(
            room_id=world.room,
            viewer_id=world.present[0],
            candidate_product_ids=candidates,
            top_k=500,
        ),
        timeout=RPC_S,
    )
    ids = [p.product_id for p in everything.products]
    assert sorted(ids) == sorted(set(candidates))  # duplicates ranked once
    new = next(p for p in everything.products if p.product_id == "brand-new-product")
    assert new.flags.cold_start
    assert not any(
        p.flags.cold_start for p in everything.products if p.product_id != new.product_id
    )


def test_recommend_next_product_sums_over_present_viewers(
    stub: pb_grpc.LiveRecommenderStub, world: World
) -> None:
    reply = stub.RecommendNextProduct(
        pb.RecommendNextProductRequest(
            room_id=world.room, candidate_product_ids=world.products[:8], top_k=3
        ),
        timeout=RPC_S,
    )
    assert reply.viewers_present == len(world.present)
    assert len(reply.products) == 3
    for p in reply.products:
        assert p.expected_conversions == pytest.approx(p.score * reply.viewers_present)
        assert not p.flags.fallback
    assert reply.products[0].reasons


def test_recommend_next_product_in_an_empty_room_falls_back_to_popularity(
    stub: pb_grpc.LiveRecommenderStub, world: World
) -> None:
    reply = stub.RecommendNextProduct(
        pb.RecommendNextProductRequest(
            room_id="room-nobody-is-in", candidate_product_ids=world.products[:5]
        ),
        timeout=RPC_S,
    )
    assert reply.viewers_present == 0
    assert reply.meta.flags.fallback
    assert reply.meta.model.version == ""
    assert all(p.expected_conversions == 0 for p in reply.products)


def test_viewer_profile_known_and_unknown(stub: pb_grpc.LiveRecommenderStub, world: World) -> None:
    viewer = world.present[0]
    reply = stub.GetViewerProfile(
        pb.GetViewerProfileRequest(viewer_id=viewer, room_id=world.room), timeout=RPC_S
    )
    assert reply.viewer_id == viewer
    assert reply.demographics.market
    assert reply.live.room_id == world.room
    assert reply.live.present
    assert reply.segment != pb.SEGMENT_UNSPECIFIED
    assert reply.HasField("last_event_applied")
    # No room given: the room the viewer is present in now.
    current = stub.GetViewerProfile(pb.GetViewerProfileRequest(viewer_id=viewer), timeout=RPC_S)
    assert current.live.room_id == world.room
    unknown = stub.GetViewerProfile(
        pb.GetViewerProfileRequest(viewer_id="never-seen-viewer"), timeout=RPC_S
    )
    assert unknown.meta.flags.cold_start
    assert not unknown.demographics.market
    assert unknown.segment == pb.SEGMENT_UNSPECIFIED


def test_ingestion_is_not_implemented_yet(stub: pb_grpc.LiveRecommenderStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.PublishEvents(pb.EventBatch(), timeout=RPC_S)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as err:
        stub.IngestEvents(iter([pb.LiveEvent(event_id="e1")]), timeout=RPC_S)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
