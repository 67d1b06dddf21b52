"""Session fixtures: one tiny world in a Feast store, one real grpc.aio server on port 0."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from features.build import build_features
from features.simulator import simulate
from features.store import apply, materialize, open_store
from service.feast_reader import FeastReader, OnlineReader
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.interceptors import SERVICE
from service.server import App
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL, ServiceSettings
from tests.service.fakes import FakeSource, LinearModel, write_artifact

#: Deadline of every RPC in these tests, in seconds.
RPC_S = 10.0


@dataclass
class World:
    data_dir: Path
    reader: FeastReader
    room: str  # a room with viewers present
    present: list[str]  # its viewers present, those with a profile (history) first
    products: list[str]
    viewers: list[str]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    data = tmp_path_factory.mktemp("world") / "data"
    now = datetime.now(UTC)
    # The world ends 10 minutes from now and its last stream is on air: materializing up to
    # now leaves that room with viewers present, as a live room would.
    simulate(data, "tiny", seed=11, end_at=now + timedelta(minutes=10), progress=False)
    build_features(data, progress=False)
    settings = ServiceSettings(data_dir=data)
    apply(settings)
    materialize(settings, end=now)
    reader = FeastReader(open_store(settings))
    rooms = reader.present_viewers()
    assert rooms, "the tiny world ending now should have a live room"
    room = max(rooms, key=lambda r: len(rooms[r]))
    products = sorted(
        set(
            pq.read_table(data / "features" / "product_stats.parquet")
            .column("product_id")
            .to_pylist()
        )
    )
    viewers = sorted(
        set(
            pq.read_table(data / "features" / "viewer_profile.parquet")
            .column("viewer_id")
            .to_pylist()
        )
    )
    present = sorted(rooms[room])
    profiles = reader.read("viewer_profile", [(v,) for v in present])
    # Viewers whose first session is today have no profile row yet (cold start): last.
    cold = {v for v, row in zip(present, profiles, strict=True) if row is None}
    present.sort(key=lambda v: v in cold)
    assert len(cold) < len(present) - 5, "need a few present viewers with history"
    return World(data, reader, room, present, products, viewers)


def make_settings(world: World, tmp: Path, **kw: Any) -> ServiceSettings:
    base: dict[str, Any] = {
        "data_dir": world.data_dir,
        "grpc_port": 0,
        "metrics_port": 0,
        "models_dir": tmp / "models",
        "model_poll_s": 3600.0,  # tests call poll() themselves
        "default_deadline_ms": 5000,
        # Many servers start in one test process: keep its collector as Python set it
        # (test_settle_heap_freezes_the_start_up_heap covers the switch).
        "gc_freeze": False,
    }
    base.update(kw)
    return ServiceSettings(**base)


def fake_source(tmp: Path) -> FakeSource:
    source = FakeSource()
    for name in (CONVERSION_MODEL, NEXT_PRODUCT_MODEL):
        source.add(name, "1", write_artifact(tmp / "artifacts" / name / "1", name))
    return source


class ServerThread:
    """An App on its own event loop in a thread, so tests use plain blocking stubs."""

    def __init__(self, make_app: Callable[[], App]) -> None:
        self._make_app = make_app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app: App = self.run(self._create())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.app.port}")
        self.stub = pb_grpc.LiveRecommenderStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def _create(self) -> App:
        app = self._make_app()
        await app.start()
        return app

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_serving(self) -> None:
        """Block on the health service's Watch stream until it says SERVING."""
        request = health_pb2.HealthCheckRequest(service=SERVICE)
        for reply in self.health.Watch(request, timeout=60):
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        raise AssertionError("health never became SERVING")

    def close(self) -> None:
        self.channel.close()
        self.run(self.app.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start_server(
    world: World,
    tmp: Path,
    reader: OnlineReader | None = None,
    source: FakeSource | None = None,
    **settings: Any,
) -> ServerThread:
    s = make_settings(world, tmp, **settings)
    src = source or fake_source(tmp)
    server = ServerThread(lambda: App(s, reader or world.reader, LinearModel.load, src))
    server.wait_serving()
    return server


@pytest.fixture(scope="session")
def server(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = start_server(world, tmp_path_factory.mktemp("server"))
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def stub(server: ServerThread) -> pb_grpc.LiveRecommenderStub:
    return server.stub
