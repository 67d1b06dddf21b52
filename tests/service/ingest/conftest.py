"""Live ingestion over real gRPC: a private copy of the tiny world, real models in MLflow.

Every server here owns live state: it rebuilds from the world's event log and
writes the online store, WAL and event log of its data dir. So each gets its
own copy of the session world (8 MB), never the shared one.

The conversion model is one whose behaviour is guaranteed: trained only on
``carts`` (every other column is missing), with the label ``carts >= 1`` and the
spec's monotone constraints, so an add-to-cart (0 -> 1 cart) raises the score.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from features.vector import CONVERSION, NEXT_PRODUCT, ModelSpec
from service.cli import build_app
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.interceptors import SERVICE
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL
from tests.service.conftest import RPC_S, ServerThread, World, make_settings
from tests.service.registry_helpers import register_served, train_served

ROOT = Path(__file__).resolve().parents[3]

#: Longest wait for `liverec serve` to write its ready file.
START_S = 200


def copy_world(world: World, dest: Path) -> Path:
    """The world's data dir, with a consistent copy of the SQLite online store."""
    shutil.copytree(
        world.data_dir, dest, ignore=shutil.ignore_patterns("online.db*", "wal", "*.sock")
    )
    src = sqlite3.connect(world.data_dir / "feast" / "online.db")
    dst = sqlite3.connect(dest / "feast" / "online.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return dest


def _served_dir(directory: Path, spec: ModelSpec, seed: int, only: str | None) -> Path:
    rng = np.random.default_rng(seed)
    n = 2000
    X = np.full((n, len(spec.columns)), np.nan, dtype=np.float32)
    carts = rng.integers(0, 4, n).astype(np.float32)
    j = spec.columns.index("carts")
    if only is None:
        X = rng.uniform(0, 3, size=X.shape).astype(np.float32)
    X[:, j] = carts
    y = carts >= 1
    return train_served(
        directory,
        spec,
        X,
        y,
        seed,
        rounds=10,
        monotone_constraints=spec.monotone_constraints(),
    )


def _register(uri: str, tmp: Path, name: str, spec: ModelSpec, only: str | None) -> None:
    served = _served_dir(tmp / name, spec, seed=3, only=only)
    register_served(uri, served, name)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An MLflow registry whose champions are the guaranteed-behaviour models."""
    tmp = tmp_path_factory.mktemp("ingest-registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    _register(uri, tmp, CONVERSION_MODEL, CONVERSION, only="carts")
    _register(uri, tmp, NEXT_PRODUCT_MODEL, NEXT_PRODUCT, only=None)
    return uri


@pytest.fixture(scope="module")
def live(
    world: World, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """One in-process server owning live state (``--workers 1``), on a private world."""
    tmp = tmp_path_factory.mktemp("live")
    data = copy_world(world, tmp / "data")
    settings = make_settings(
        world, tmp, data_dir=data, mlflow_tracking_uri=registry, ingest_flush_interval_s=0.05
    )
    server = ServerThread(lambda: build_app(settings))
    server.wait_serving()
    yield server
    server.close()


# -- helpers for the tests ---------------------------------------------------------------


def ev(
    etype: int,
    viewer: str,
    room: str,
    t: float,
    event_id: str | None = None,
    product: str = "",
    **kw: Any,
) -> pb.LiveEvent:
    e = pb.LiveEvent(
        event_id=event_id or uuid.uuid4().hex,
        event_type=etype,  # type: ignore[arg-type]
        room_id=room,
        viewer_id=viewer,
        product_id=product,
        **kw,
    )
    e.event_time.FromNanoseconds(int(t * 1e9))
    return e


def profile_when_applied(
    stub: pb_grpc.LiveRecommenderStub, viewer: str, room: str, t: float, within_s: float = 10.0
) -> pb.ViewerProfile:
    """The viewer's profile once the event at time ``t`` is visible online."""
    want = int(t * 1e9) - 2000  # the log keeps microseconds; floats near 1.8e9 s, ~0.24 us
    give_up = time.monotonic() + within_s
    while True:
        p = stub.GetViewerProfile(
            pb.GetViewerProfileRequest(viewer_id=viewer, room_id=room), timeout=RPC_S
        )
        if p.HasField("last_event_applied") and p.last_event_applied.ToNanoseconds() >= want:
            return p
        assert time.monotonic() < give_up, f"event at {t} not visible online within {within_s} s"
        time.sleep(0.02)  # polling a condition: the online write is asynchronous by design


@dataclass
class Proc:
    """A `liverec serve` subprocess and what its ready file says."""

    proc: subprocess.Popen[str]
    info: dict[str, Any]
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.info['grpc_port']}"

    def metrics(self, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=RPC_S) as r:
            text: str = r.read().decode()
            return text


def start_serve(data: Path, registry: str, tmp: Path, *args: str) -> Proc:
    """``liverec serve --port 0 ARGS`` in its own process; returns once it is SERVING."""
    ready = tmp / f"ready-{uuid.uuid4().hex[:6]}.json"
    log = ready.with_suffix(".log")
    env = {
        **os.environ,
        "LIVEREC_DATA_DIR": str(data),
        "LIVEREC_MLFLOW_TRACKING_URI": registry,
        "LIVEREC_MODELS_DIR": str(tmp / "models"),
        "LIVEREC_METRICS_PORT": "0",
        "LIVEREC_INGEST_FLUSH_INTERVAL_S": "0.05",
        "LIVEREC_SHUTDOWN_GRACE_S": "2",
        "LIVEREC_LOG_LEVEL": "INFO",
    }
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "liverec.py"),
                "serve",
                "--port",
                "0",
                "--ready-file",
                str(ready),
                *args,
            ],
            env=env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    # The ready file is the readiness signal of a process we cannot call into. The wait
    # only guards against a hang: --workers 2 starts three processes (model loads, the
    # aggregator's replay) on a shared 2-core machine.
    give_up = time.monotonic() + START_S
    while not ready.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < give_up, (
            f"no ready file after {START_S} s\n" + log.read_text()[-3000:]
        )
        time.sleep(0.05)
    p = Proc(proc, json.loads(ready.read_text()), log)
    with grpc.insecure_channel(p.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=RPC_S
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return p


def stop(p: Proc, sig: int) -> int:
    if p.proc.poll() is None:
        p.proc.send_signal(sig)
    try:
        return p.proc.wait(timeout=60)
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
