"""Overload, slow stores, unexpected errors, hot swap, broken models, health, shutdown."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from service.errors import INTERNAL_MESSAGE
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.interceptors import SERVICE
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL
from tests.service.conftest import RPC_S, ServerThread, World, fake_source, start_server
from tests.service.fakes import GatedReader, write_artifact


def _score(stub: pb_grpc.LiveRecommenderStub, world: World, timeout: float = RPC_S) -> grpc.Future:
    request = pb.ScoreConversionRequest(room_id=world.room, viewer_ids=world.present[:3])
    return stub.ScoreConversion.future(request, timeout=timeout)


@pytest.fixture
def gated(world: World, tmp_path: Path) -> Iterator[tuple[ServerThread, GatedReader]]:
    reader = GatedReader(world.reader)
    server = start_server(world, tmp_path, reader=reader, max_concurrency=2)
    yield server, reader
    reader.gate.set()
    server.close()


def test_past_the_concurrency_limit_calls_are_refused_at_once(
    gated: tuple[ServerThread, GatedReader], world: World
) -> None:
    server, reader = gated
    reader.gate.clear()
    blocked = [_score(server.stub, world, timeout=30) for _ in range(2)]
    for _ in blocked:
        assert reader.waiting.acquire(timeout=10), "calls should reach the store"
    with pytest.raises(grpc.RpcError) as err:
        _score(server.stub, world).result()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reader.gate.set()
    for call in blocked:
        assert call.result().scores  # the calls in flight still succeed


def test_a_slow_store_degrades_the_answer_instead_of_missing_the_deadline(
    gated: tuple[ServerThread, GatedReader], world: World
) -> None:
    server, reader = gated
    reader.gate.clear()
    reply = _score(server.stub, world, timeout=0.5).result()
    assert reply.meta.flags.fallback and reply.meta.flags.missing_features
    assert reply.meta.model.version == ""
    assert all(s.probability == pytest.approx(0.03) for s in reply.scores)
    ranked = server.stub.RankProducts(
        pb.RankProductsRequest(
            room_id=world.room, viewer_id=world.present[0], candidate_product_ids=world.products[:5]
        ),
        timeout=0.5,
    )
    assert ranked.meta.flags.fallback  # popularity from the product cache
    assert [p.product_id for p in ranked.products] != []


def test_a_call_without_deadline_gets_the_server_default(world: World, tmp_path: Path) -> None:
    reader = GatedReader(world.reader)
    server = start_server(world, tmp_path, reader=reader, default_deadline_ms=300)
    try:
        reader.gate.clear()
        request = pb.ScoreConversionRequest(room_id=world.room, viewer_ids=world.present[:2])
        call = server.stub.ScoreConversion.future(request)  # deliberately no deadline
        reply = call.result(timeout=RPC_S)  # waits on the client side only
        assert reply.meta.flags.fallback and reply.meta.flags.missing_features
    finally:
        reader.gate.set()
        server.close()


def test_unexpected_errors_become_internal_without_details(
    server: ServerThread, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr(server.app.scorer, "score_conversion", boom)
    with pytest.raises(grpc.RpcError) as err:
        _score(server.stub, world).result()
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == INTERNAL_MESSAGE


def test_health_reflection_and_metrics(server: ServerThread) -> None:
    for name in ("", SERVICE):
        reply = server.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=RPC_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(server.channel).get_services()
    assert SERVICE in services and "grpc.health.v1.Health" in services
    server.stub.ScoreConversion(
        pb.ScoreConversionRequest(room_id="r", viewer_ids=["v"]), timeout=RPC_S
    )
    url = f"http://127.0.0.1:{server.app.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=RPC_S) as page:
        text = page.read().decode()
    assert 'liverec_requests_total{code="OK",method="ScoreConversion"}' in text
    assert f'liverec_model_info{{model="{CONVERSION_MODEL}",version="1"}} 1.0' in text
    assert 'liverec_degraded_answers_total{flag="cold_start",method="ScoreConversion"}' in text
    assert "liverec_request_seconds_bucket" in text


def test_hot_swap_under_load_drops_nothing_and_broken_versions_are_refused(
    world: World, tmp_path: Path
) -> None:
    source = fake_source(tmp_path)
    server = start_server(world, tmp_path, source=source)
    models = server.app.models
    try:
        stop = threading.Event()
        seen: dict[str, set[str]] = {}
        errors: list[BaseException] = []

        def load(n: int) -> None:
            versions = seen.setdefault(f"t{n}", set())
            request = pb.RankProductsRequest(
                room_id=world.room,
                viewer_id=world.present[n],
                candidate_product_ids=world.products[:20],
            )
            while not stop.is_set():
                try:
                    versions.add(
                        server.stub.RankProducts(request, timeout=RPC_S).meta.model.version
                    )
                except grpc.RpcError as exc:
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for name in (CONVERSION_MODEL, NEXT_PRODUCT_MODEL):
            source.add(name, "2", write_artifact(tmp_path / "v2" / name, name, bias=-2.0))
        assert models.poll() == {CONVERSION_MODEL: "swapped", NEXT_PRODUCT_MODEL: "swapped"}
        # Keep the load on until every thread has been answered by version 2.
        reply = server.stub.RankProducts(
            pb.RankProductsRequest(
                room_id=world.room,
                viewer_id=world.present[0],
                candidate_product_ids=world.products[:3],
            ),
            timeout=RPC_S,
        )
        assert reply.meta.model.version == "2"
        stop.set()
        for t in threads:
            t.join(30)
        assert errors == []
        assert set().union(*seen.values()) <= {"1", "2"}

        # A version failing its parity sample, then one failing to load: both refused.
        source.add(
            NEXT_PRODUCT_MODEL,
            "3",
            write_artifact(tmp_path / "v3", NEXT_PRODUCT_MODEL, broken="parity"),
        )
        assert models.poll()[NEXT_PRODUCT_MODEL] == "refused"
        assert models.poll()[NEXT_PRODUCT_MODEL] == "refused earlier"
        source.add(
            NEXT_PRODUCT_MODEL,
            "4",
            write_artifact(tmp_path / "v4", NEXT_PRODUCT_MODEL, broken="load"),
        )
        assert models.poll()[NEXT_PRODUCT_MODEL] == "refused"
        reply = server.stub.RankProducts(
            pb.RankProductsRequest(
                room_id=world.room,
                viewer_id=world.present[0],
                candidate_product_ids=world.products[:3],
            ),
            timeout=RPC_S,
        )
        assert reply.meta.model.version == "2"
        assert not reply.meta.flags.fallback
        kept = server.app.s.models_dir / NEXT_PRODUCT_MODEL / "current"
        assert kept.read_text().strip() == "2"
    finally:
        server.close()


def test_shutdown_goes_not_serving_and_lets_calls_in_flight_finish(
    world: World, tmp_path: Path
) -> None:
    reader = GatedReader(world.reader)
    server = start_server(world, tmp_path, reader=reader)
    watch = server.health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    reader.gate.clear()
    in_flight = _score(server.stub, world, timeout=30)
    assert reader.waiting.acquire(timeout=10)
    stopping = asyncio.run_coroutine_threadsafe(server.app.stop(grace=20), server.loop)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()  # an open Watch stream would hold the server for the whole grace period
    reader.gate.set()
    assert in_flight.result().scores
    stopping.result(timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        _score(server.stub, world, timeout=2).result()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    server.channel.close()
    server.loop.call_soon_threadsafe(server.loop.stop)
    server.thread.join(10)


def test_a_worker_whose_live_owner_is_down_scores_conversion_from_the_store(
    world: World, tmp_path: Path
) -> None:
    """ScoreConversion is forwarded to the process that owns live state; with that process
    unreachable the worker still answers it (from the online store), while the room call
    that only the owner can answer says UNAVAILABLE."""
    from service.ingest.live import AggregatorLink
    from service.server import App
    from tests.service.conftest import make_settings
    from tests.service.fakes import LinearModel

    settings = make_settings(world, tmp_path)
    link = AggregatorLink("127.0.0.1:1")  # nothing listens there
    src = fake_source(tmp_path)
    srv = ServerThread(lambda: App(settings, world.reader, LinearModel.load, src, link=link))
    try:
        srv.wait_serving()
        request = pb.ScoreConversionRequest(room_id=world.room, viewer_ids=world.present[:3])
        answer = srv.stub.ScoreConversion(request, timeout=RPC_S)
        assert len(answer.scores) == 3 and not answer.meta.flags.fallback
        with pytest.raises(grpc.RpcError) as err:
            srv.stub.RecommendNextProduct(
                pb.RecommendNextProductRequest(
                    room_id=world.room, candidate_product_ids=world.products[:3]
                ),
                timeout=RPC_S,
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.close()
