"""Bad input on every field: INVALID_ARGUMENT naming the field, never UNKNOWN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from tests.service.conftest import RPC_S

LONG = "x" * 129
MANY = [f"id{i}" for i in range(501)]

CASES: list[tuple[str, str, Any, str]] = [
    # (rpc, case, request, field named first in the message)
    ("ScoreConversion", "no room", pb.ScoreConversionRequest(viewer_ids=["v"]), "room_id"),
    (
        "ScoreConversion",
        "long room",
        pb.ScoreConversionRequest(room_id=LONG, viewer_ids=["v"]),
        "room_id",
    ),
    (
        "ScoreConversion",
        "control char",
        pb.ScoreConversionRequest(room_id="r\n", viewer_ids=["v"]),
        "room_id",
    ),
    ("ScoreConversion", "no viewers", pb.ScoreConversionRequest(room_id="r"), "viewer_ids"),
    (
        "ScoreConversion",
        "empty viewer",
        pb.ScoreConversionRequest(room_id="r", viewer_ids=["v", ""]),
        "viewer_ids",
    ),
    (
        "ScoreConversion",
        "long viewer",
        pb.ScoreConversionRequest(room_id="r", viewer_ids=[LONG]),
        "viewer_ids",
    ),
    (
        "ScoreConversion",
        "too many",
        pb.ScoreConversionRequest(room_id="r", viewer_ids=MANY),
        "viewer_ids",
    ),
    (
        "RankProducts",
        "no room",
        pb.RankProductsRequest(viewer_id="v", candidate_product_ids=["p"]),
        "room_id",
    ),
    (
        "RankProducts",
        "no viewer",
        pb.RankProductsRequest(room_id="r", candidate_product_ids=["p"]),
        "viewer_id",
    ),
    (
        "RankProducts",
        "long viewer",
        pb.RankProductsRequest(room_id="r", viewer_id=LONG, candidate_product_ids=["p"]),
        "viewer_id",
    ),
    (
        "RankProducts",
        "no candidates",
        pb.RankProductsRequest(room_id="r", viewer_id="v"),
        "candidate_product_ids",
    ),
    (
        "RankProducts",
        "empty candidate",
        pb.RankProductsRequest(room_id="r", viewer_id="v", candidate_product_ids=[""]),
        "candidate_product_ids",
    ),
    (
        "RankProducts",
        "too many",
        pb.RankProductsRequest(room_id="r", viewer_id="v", candidate_product_ids=MANY),
        "candidate_product_ids",
    ),
    (
        "RankProducts",
        "top_k",
        pb.RankProductsRequest(room_id="r", viewer_id="v", candidate_product_ids=["p"], top_k=501),
        "top_k",
    ),
    (
        "RecommendNextProduct",
        "no room",
        pb.RecommendNextProductRequest(candidate_product_ids=["p"]),
        "room_id",
    ),
    (
        "RecommendNextProduct",
        "no candidates",
        pb.RecommendNextProductRequest(room_id="r"),
        "candidate_product_ids",
    ),
    (
        "RecommendNextProduct",
        "long candidate",
        pb.RecommendNextProductRequest(room_id="r", candidate_product_ids=[LONG]),
        "candidate_product_ids",
    ),
    (
        "RecommendNextProduct",
        "too many",
        pb.RecommendNextProductRequest(room_id="r", candidate_product_ids=MANY),
        "candidate_product_ids",
    ),
    (
        "RecommendNextProduct",
        "top_k",
        pb.RecommendNextProductRequest(room_id="r", candidate_product_ids=["p"], top_k=10_000),
        "top_k",
    ),
    ("GetViewerProfile", "no viewer", pb.GetViewerProfileRequest(), "viewer_id"),
    ("GetViewerProfile", "long viewer", pb.GetViewerProfileRequest(viewer_id=LONG), "viewer_id"),
    (
        "GetViewerProfile",
        "empty room set",
        pb.GetViewerProfileRequest(viewer_id="v", room_id=""),
        "room_id",
    ),
]


@pytest.mark.parametrize(
    ("rpc", "request_", "field"),
    [(rpc, req, field) for rpc, _, req, field in CASES],
    ids=[f"{rpc}-{case}" for rpc, case, _, _ in CASES],
)
def test_invalid_argument_names_the_field(
    stub: pb_grpc.LiveRecommenderStub, rpc: str, request_: Any, field: str
) -> None:
    call: Callable[..., Any] = getattr(stub, rpc)
    with pytest.raises(grpc.RpcError) as err:
        call(request_, timeout=RPC_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: ")


def test_limits_are_inclusive(stub: pb_grpc.LiveRecommenderStub) -> None:
    """Exactly 500 ids and top_k 500 are accepted (unknown ids: cold start, not an error)."""
    ids = [f"id{i}" for i in range(500)]
    reply = stub.RankProducts(
        pb.RankProductsRequest(room_id="r", viewer_id="v", candidate_product_ids=ids, top_k=500),
        timeout=RPC_S,
    )
    assert len(reply.products) == 500
    scores = stub.ScoreConversion(
        pb.ScoreConversionRequest(room_id="r", viewer_ids=ids), timeout=RPC_S
    )
    assert len(scores.scores) == 500
    assert all(s.flags.cold_start for s in scores.scores)
