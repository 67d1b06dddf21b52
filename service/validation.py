"""Requests in: protobuf messages -> validated domain queries, or InvalidArgument.

Every refusal names the field first (``viewer_ids: must not be empty``), as the
contract promises, so a client can fix the request without reading our code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from service.domain import NextProductQuery, ProfileQuery, RankProductsQuery, ScoreConversionQuery
from service.errors import InvalidArgument
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.settings import ServiceSettings


def _id(field: str, value: str, max_len: int) -> str:
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > max_len:
        raise InvalidArgument(field, f"longer than {max_len} characters")
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control characters")
    return value


def _ids(field: str, values: Sequence[str], limit: int, max_len: int) -> list[str]:
    if not values:
        raise InvalidArgument(field, "must not be empty")
    if len(values) > limit:
        raise InvalidArgument(field, f"at most {limit} ids, got {len(values)}")
    for i, value in enumerate(values):
        if not value:
            raise InvalidArgument(field, f"id at index {i} is empty")
        if len(value) > max_len:
            raise InvalidArgument(field, f"id at index {i} is longer than {max_len} characters")
        if not value.isprintable():
            raise InvalidArgument(field, f"id at index {i} contains control characters")
    return list(values)


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    # The contract: "duplicates are ranked once"; first occurrence keeps its place.
    return tuple(dict.fromkeys(values))


def _top_k(value: int, settings: ServiceSettings) -> int:
    if value == 0:
        return settings.top_k_default
    if value > settings.top_k_max:
        raise InvalidArgument("top_k", f"at most {settings.top_k_max}, got {value}")
    return value


def score_conversion(req: pb.ScoreConversionRequest, s: ServiceSettings) -> ScoreConversionQuery:
    room = _id("room_id", req.room_id, s.max_id_len)
    viewers = _ids("viewer_ids", req.viewer_ids, s.max_viewers, s.max_id_len)
    return ScoreConversionQuery(room_id=room, viewer_ids=tuple(viewers))


def rank_products(req: pb.RankProductsRequest, s: ServiceSettings) -> RankProductsQuery:
    room = _id("room_id", req.room_id, s.max_id_len)
    viewer = _id("viewer_id", req.viewer_id, s.max_id_len)
    field = "candidate_product_ids"
    candidates = _ids(field, req.candidate_product_ids, s.max_candidates, s.max_id_len)
    return RankProductsQuery(
        room_id=room,
        viewer_id=viewer,
        candidates=_distinct(candidates),
        top_k=_top_k(req.top_k, s),
    )


def next_product(req: pb.RecommendNextProductRequest, s: ServiceSettings) -> NextProductQuery:
    room = _id("room_id", req.room_id, s.max_id_len)
    field = "candidate_product_ids"
    candidates = _ids(field, req.candidate_product_ids, s.max_candidates, s.max_id_len)
    return NextProductQuery(
        room_id=room, candidates=_distinct(candidates), top_k=_top_k(req.top_k, s)
    )


def viewer_profile(req: pb.GetViewerProfileRequest, s: ServiceSettings) -> ProfileQuery:
    viewer = _id("viewer_id", req.viewer_id, s.max_id_len)
    room = _id("room_id", req.room_id, s.max_id_len) if req.HasField("room_id") else None
    return ProfileQuery(viewer_id=viewer, room_id=room)
