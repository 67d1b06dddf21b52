"""The client service config names real methods, and gRPC applies it as documented.

A real server on port 0 answers with scripted status codes; a channel loaded with
protos/livecommerce/v1/service_config.json must retry UNAVAILABLE (three attempts in
all), never retry anything else, and apply its default deadline.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc

CONFIG_PATH = (
    Path(__file__).resolve().parents[2] / "protos" / "livecommerce" / "v1" / "service_config.json"
)
DEADLINE_S = 10.0


def load_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(CONFIG_PATH.read_text())
    return config


def test_config_names_only_real_methods_and_retries_only_unavailable() -> None:
    service = pb.DESCRIPTOR.services_by_name["LiveRecommender"]
    configured = set()
    for method_config in load_config()["methodConfig"]:
        for name in method_config["name"]:
            assert name["service"] == service.full_name
            assert name["method"] in service.methods_by_name
            configured.add(name["method"])
        retry = method_config["retryPolicy"]
        assert retry["retryableStatusCodes"] == ["UNAVAILABLE"]
        assert retry["maxAttempts"] == 3
        assert method_config["timeout"].endswith("s")
    # The client stream is never replayed by the channel: the client resends unacked events.
    assert configured == set(service.methods_by_name) - {"IngestEvents"}


class ScriptedServicer(pb_grpc.LiveRecommenderServicer):
    """Fails each call with the next scripted status code, then answers OK."""

    def __init__(self) -> None:
        self.script: list[grpc.StatusCode] = []
        self.attempts = 0
        self.release = threading.Event()

    def _attempt(self, context: grpc.ServicerContext) -> None:
        self.attempts += 1
        if self.script:
            context.abort(self.script.pop(0), "scripted failure")

    def PublishEvents(
        self, request: pb.EventBatch, context: grpc.ServicerContext
    ) -> pb.IngestSummary:
        self._attempt(context)
        return pb.IngestSummary(accepted=len(request.events))

    def ScoreConversion(
        self, request: pb.ScoreConversionRequest, context: grpc.ServicerContext
    ) -> pb.ScoreConversionResponse:
        self._attempt(context)
        return pb.ScoreConversionResponse()

    def GetViewerProfile(
        self, request: pb.GetViewerProfileRequest, context: grpc.ServicerContext
    ) -> pb.ViewerProfile:
        self._attempt(context)
        self.release.wait(timeout=DEADLINE_S)  # longer than the config's default deadline
        return pb.ViewerProfile(viewer_id=request.viewer_id)


@pytest.fixture
def servicer() -> ScriptedServicer:
    return ScriptedServicer()


@pytest.fixture
def stub(servicer: ScriptedServicer) -> Iterator[pb_grpc.LiveRecommenderStub]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
    )
    pb_grpc.add_LiveRecommenderServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    options = [("grpc.service_config", CONFIG_PATH.read_text()), ("grpc.enable_retries", 1)]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    try:
        yield pb_grpc.LiveRecommenderStub(channel)
    finally:
        servicer.release.set()
        channel.close()
        server.stop(grace=None)


def test_unavailable_is_retried(stub: pb_grpc.LiveRecommenderStub, servicer: Any) -> None:
    servicer.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]

    summary = stub.PublishEvents(pb.EventBatch(events=[pb.LiveEvent()]), timeout=DEADLINE_S)

    assert summary.accepted == 1
    assert servicer.attempts == 3


def test_retries_stop_after_three_attempts(
    stub: pb_grpc.LiveRecommenderStub, servicer: Any
) -> None:
    servicer.script = [grpc.StatusCode.UNAVAILABLE] * 4

    with pytest.raises(grpc.RpcError) as raised:
        stub.ScoreConversion(pb.ScoreConversionRequest(room_id="r1"), timeout=DEADLINE_S)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.attempts == 3


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT]
)
def test_other_codes_are_not_retried(
    stub: pb_grpc.LiveRecommenderStub, servicer: Any, code: grpc.StatusCode
) -> None:
    servicer.script = [code]

    with pytest.raises(grpc.RpcError) as raised:
        stub.ScoreConversion(pb.ScoreConversionRequest(room_id="r1"), timeout=DEADLINE_S)

    assert raised.value.code() == code
    assert servicer.attempts == 1


def test_default_deadline_applies_when_the_caller_sets_none(
    stub: pb_grpc.LiveRecommenderStub, servicer: Any
) -> None:
    # Deliberately no timeout=: the service config's default must end the call (the
    # handler itself would block for DEADLINE_S). Only the code is asserted, not when:
    # grpcio applies a service-config timeout 1-2 s early (grpc/grpc#34547).
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetViewerProfile(pb.GetViewerProfileRequest(viewer_id="v1"))

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.attempts == 1
