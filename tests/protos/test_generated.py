"""The committed generated code imports from its package path and exposes the service."""

from __future__ import annotations

import sys

import grpc

from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc

# name -> (request, response, client streaming, server streaming)
RPCS = {
    "ScoreConversion": ("ScoreConversionRequest", "ScoreConversionResponse", False, False),
    "RankProducts": ("RankProductsRequest", "RankProductsResponse", False, False),
    "RecommendNextProduct": (
        "RecommendNextProductRequest",
        "RecommendNextProductResponse",
        False,
        False,
    ),
    "IngestEvents": ("LiveEvent", "IngestSummary", True, False),
    "PublishEvents": ("EventBatch", "IngestSummary", False, False),
    "GetViewerProfile": ("GetViewerProfileRequest", "ViewerProfile", False, False),
}


def test_generated_code_needs_no_proto_root_on_sys_path() -> None:
    # protoc writes `from livecommerce.v1 import ...`; make protos rewrites it.
    assert "livecommerce" not in sys.modules
    assert pb_grpc.livecommerce_dot_v1_dot_live__recommender__pb2 is pb


def test_service_has_the_six_rpcs_with_their_streaming_kinds() -> None:
    service = pb.DESCRIPTOR.services_by_name["LiveRecommender"]
    assert service.full_name == "livecommerce.v1.LiveRecommender"

    found = {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
        for m in service.methods
    }

    assert found == RPCS


def test_stub_and_servicer_cover_every_rpc() -> None:
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        stub = pb_grpc.LiveRecommenderStub(channel)
        for name in RPCS:
            assert callable(getattr(stub, name))
            assert callable(getattr(pb_grpc.LiveRecommenderServicer, name))
    assert callable(pb_grpc.add_LiveRecommenderServicer_to_server)


def test_messages_round_trip() -> None:
    event = pb.LiveEvent(
        event_id="e1",
        event_type=pb.EVENT_TYPE_PURCHASE,
        room_id="r1",
        viewer_id="v1",
        product_id="p1",
        amount=pb.Money(amount_minor=1999, currency="JPY"),
        payment_method=pb.PAYMENT_METHOD_COD,
    )
    event.event_time.FromSeconds(1_700_000_000)

    decoded = pb.EventBatch.FromString(pb.EventBatch(events=[event]).SerializeToString())

    assert decoded.events[0] == event
    assert not pb.GetViewerProfileRequest(viewer_id="v1").HasField("room_id")
