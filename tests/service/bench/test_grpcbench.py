"""The room suite's helpers."""

from __future__ import annotations

from service.bench import grpcbench
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb


def test_reordered_candidates_are_each_a_new_order_never_the_original() -> None:
    req = pb.RecommendNextProductRequest(
        room_id="r", candidate_product_ids=["a", "b", "c", "d"], top_k=2
    )
    got = [list(r.candidate_product_ids) for r in grpcbench._reordered(req, 3)]
    assert got == [["b", "c", "d", "a"], ["c", "d", "a", "b"], ["d", "a", "b", "c"]]
    assert all(r.room_id == "r" and r.top_k == 2 for r in grpcbench._reordered(req, 3))
    assert list(req.candidate_product_ids) == ["a", "b", "c", "d"]  # the request untouched
    # Never the original order: at most one fewer reorderings than candidates.
    assert len(grpcbench._reordered(req, 30)) == 3
