"""What the benchmark runs on: a live world, champions to serve, and a synthetic live workload.

Choice (issue note): the bench **simulates its own world ending ten minutes from
now** (``liverec simulate --end-at``) into ``data/bench-<size>/`` and
materializes it up to now, so batch rows are fresh and the simulated rooms on
air have viewers present. On top of it, rooms of a chosen size (e.g. 2,000
present viewers) are **played in through the live aggregator** (join,
stage-change, impression, like and chat events stamped now): that is the same
path live events take, and it gives RecommendNextProduct a room as big as the
budget names, which no simulated stream has.

Champions come from the configured MLflow registry when both aliases exist
there; otherwise the bench trains them on its world into a registry of its own
(``data/bench-<size>/mlflow.db``), never touching the project's.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from features import schema
from features.settings import PROJECT_ROOT
from features.tables import ALL_TABLES
from service.bench.serverproc import Target
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL, ServiceSettings

log = logging.getLogger(__name__)

MODELS = (CONVERSION_MODEL, NEXT_PRODUCT_MODEL)


@dataclass
class BenchWorld:
    size: str
    root: Path
    viewers: list[str] = field(default_factory=list)
    region: dict[str, str] = field(default_factory=dict)
    products: list[str] = field(default_factory=list)
    built_s: dict[str, float] = field(default_factory=dict)
    champions_from: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    mlflow_uri: str = ""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def settings(self, **kw: Any) -> ServiceSettings:
        return ServiceSettings(
            data_dir=self.data_dir,
            mlflow_tracking_uri=self.mlflow_uri,
            models_dir=self.models_dir,
            **kw,
        )

    def target(self) -> Target:
        return Target(self.data_dir, self.mlflow_uri, self.models_dir)


def bench_root(size: str) -> Path:
    return PROJECT_ROOT / "data" / f"bench-{size}"


def _built(world: BenchWorld) -> bool:
    """A world exists and was built with today's tables: a world from before a feature was
    added would serve rows without it (and a model trained on it would be refused)."""
    s = world.settings()
    if not (
        (world.data_dir / "manifest.json").exists()
        and all((s.offline_dir / t.file).exists() for t in ALL_TABLES)
        and (s.feast_dir / "registry.db").exists()
    ):
        return False
    events = next((world.data_dir / "events").rglob("*.parquet"), None)
    if events is None or not set(schema.EVENTS.names) <= set(pq.read_schema(events).names):
        return False
    return all(
        set(t.columns) <= set(pq.read_schema(s.offline_dir / t.file).names) for t in ALL_TABLES
    )


def ensure_world(size: str, rebuild: bool = False, echo: Any = print) -> BenchWorld:
    """The bench world of ``size``: simulated (ending 10 min from now) if absent."""
    world = BenchWorld(size, bench_root(size))
    world.mlflow_uri = f"sqlite:///{world.root / 'mlflow.db'}"
    if rebuild or not _built(world):
        from features.build import build_features
        from features.simulator import simulate
        from features.store import apply, materialize

        # A new world invalidates what was built or trained on the old one.
        for stale in ("data", "models", "mlartifacts"):
            shutil.rmtree(world.root / stale, ignore_errors=True)
        (world.root / "mlflow.db").unlink(missing_ok=True)
        world.root.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        s = world.settings()
        steps = (
            (
                "simulate",
                lambda: simulate(
                    world.data_dir, size, seed=7, end_at=now + timedelta(minutes=10), progress=False
                ),
            ),
            ("build", lambda: build_features(world.data_dir, progress=False)),
            ("apply", lambda: apply(s)),
            ("materialize", lambda: materialize(s, end=now)),
        )
        for name, step in steps:
            echo(f"  world {size}: {name} ...")
            t0 = time.perf_counter()
            step()
            world.built_s[name] = time.perf_counter() - t0
    viewers = pq.read_table(world.data_dir / "viewers.parquet", columns=["viewer_id", "region"])
    world.viewers = viewers.column("viewer_id").to_pylist()
    world.region = dict(zip(world.viewers, viewers.column("region").to_pylist(), strict=True))
    world.products = sorted(
        set(pq.read_table(world.data_dir / "products.parquet").column("product_id").to_pylist())
    )
    return world


def forget_played(world: BenchWorld) -> int:
    """Remove the live events earlier runs played into ``world`` (compacted into its event
    log, or left in its write-ahead log by a run that did not stop): every run then starts
    from the world as simulated. The server rebuilds its live state from the event log, so
    without this each run of a day served more state than the one before (peak RSS grew
    1.8 -> 3.5 GiB over three runs) and runs were not comparable. Returns files removed."""
    from service.ingest.wal import compacted_files, segment_files

    s = world.settings()
    played = [*compacted_files(world.data_dir / "events"), *segment_files(s.wal_path)]
    for path in played:
        path.unlink()
    return len(played)


def _champions(uri: str) -> dict[str, str] | None:
    """name -> champion version in the registry at ``uri``, or None if one is missing."""
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        out = {}
        for name in MODELS:
            out[name] = str(client.get_model_version_by_alias(name, "champion").version)
        return out
    except Exception:
        return None


def ensure_champions(world: BenchWorld, echo: Any = print) -> dict[str, str]:
    """Use the project's champions if it has both; else train on the bench world."""
    project_uri = ServiceSettings().mlflow_tracking_uri
    project_db = project_uri.removeprefix("sqlite:///")
    if not project_uri.startswith("sqlite:///") or Path(project_db).exists():
        found = _champions(project_uri)
        if found:
            world.mlflow_uri = project_uri
            world.champions_from = f"project registry {project_uri}"
            use_registry(world)
            return found
    found = _champions(world.mlflow_uri)
    if not found:
        echo(f"  no champions found: training on the {world.size} bench world (liverec train) ...")
        env = {**os.environ, "MLFLOW_TRACKING_URI": world.mlflow_uri}
        env["LIVEREC_DATA_DIR"] = str(world.data_dir)
        cmd = [
            sys.executable,
            str(PROJECT_ROOT / "liverec.py"),
            "train",
            "--data-dir",
            str(world.data_dir),
            "--size",
            world.size,
            "--bootstrap",
            "20",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=world.root)
        world.train["wall_s"] = time.perf_counter() - t0
        world.train["exit"] = proc.returncode
        if proc.returncode != 0:
            echo(proc.stdout[-2000:] + proc.stderr[-2000:])
        found = _champions(world.mlflow_uri) or _promote_latest(world.mlflow_uri)
        if not found:
            raise RuntimeError("training produced no model versions to serve")
    world.champions_from = f"bench registry {world.mlflow_uri}"
    use_registry(world)
    return found


def use_registry(world: BenchWorld) -> None:
    """MLflow resolves ``models:/`` URIs against its default registry whatever is passed:
    point this process's MLflow at the registry the champions came from."""
    os.environ["MLFLOW_TRACKING_URI"] = world.mlflow_uri
    os.environ["MLFLOW_REGISTRY_URI"] = world.mlflow_uri
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _promote_latest(uri: str) -> dict[str, str] | None:
    """In the bench's own registry only: a gate that kept a model challenger must not stop
    the benchmark, which measures speed, not quality."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out = {}
    for name in MODELS:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            return None
        latest = max(versions, key=lambda v: int(v.version))
        client.set_registered_model_alias(name, "champion", latest.version)
        out[name] = str(latest.version)
    return out


# -- the live workload -------------------------------------------------------------------


@dataclass
class Workload:
    """Synthetic live events: ``rooms`` rooms, ``viewers_per_room`` each (distinct viewers),
    a realistic mix (joins first, then impressions, likes, chats, clicks, carts)."""

    rooms: int
    viewers_per_room: int
    products_per_room: int = 30
    prefix: str = "bench"
    seed: int = 1
    #: In every event id, so a rerun is not taken for duplicates of the last run's events.
    run: str = field(default_factory=lambda: f"{int(time.time() * 1000):x}")

    def room_ids(self) -> list[str]:
        return [f"{self.prefix}-room-{r}" for r in range(self.rooms)]


_MIX = (
    ("overlay_impression", 0.35),
    ("like", 0.25),
    ("chat", 0.10),
    ("product_click", 0.15),
    ("add_to_cart", 0.05),
    ("share", 0.05),
    ("checkout_start", 0.05),
)


def opening_events(w: Workload, world: BenchWorld, t: float) -> list[dict[str, Any]]:
    """Stream starts, a product on stage, and every viewer's join, stamped ``t``."""
    out: list[dict[str, Any]] = []
    n = 0
    for r, room in enumerate(w.room_ids()):
        out.append(_event(f"{w.prefix}-{w.run}-open-{n}", "stream_start", t, room))
        n += 1
        out.append(
            _event(
                f"{w.prefix}-{w.run}-open-{n}",
                "stage_change",
                t,
                room,
                product=world.products[r % len(world.products)],
            )
        )
        n += 1
        for v in _room_viewers(w, world, r):
            out.append(_event(f"{w.prefix}-{w.run}-open-{n}", "join", t, room, viewer=v))
            n += 1
    return out


def _room_viewers(w: Workload, world: BenchWorld, r: int) -> list[str]:
    start = (r * w.viewers_per_room) % max(1, len(world.viewers))
    ring = world.viewers[start:] + world.viewers[:start]
    out = ring[: w.viewers_per_room]
    # More viewers than the world has: the rest are new (cold-start) viewers.
    out += [f"{w.prefix}-new-{r}-{i}" for i in range(w.viewers_per_room - len(out))]
    return out


def room_products(w: Workload, world: BenchWorld, r: int) -> list[str]:
    k = min(w.products_per_room, len(world.products))
    start = (r * 7) % len(world.products)
    ring = world.products[start:] + world.products[:start]
    return ring[:k]


def activity(
    w: Workload, world: BenchWorld, n: int, t: float, start_id: int = 0
) -> Iterator[dict[str, Any]]:
    """``n`` in-room events stamped ``t`` (viewers and products drawn uniformly)."""
    rng = random.Random(w.seed + start_id)
    kinds = [k for k, _ in _MIX]
    weights = [p for _, p in _MIX]
    rooms = w.room_ids()
    viewers = [_room_viewers(w, world, r) for r in range(w.rooms)]
    products = [room_products(w, world, r) for r in range(w.rooms)]
    for i in range(start_id, start_id + n):
        r = rng.randrange(w.rooms)
        kind = rng.choices(kinds, weights)[0]
        v = viewers[r][rng.randrange(len(viewers[r]))]
        p = (
            products[r][rng.randrange(len(products[r]))]
            if kind not in ("like", "chat", "share")
            else None
        )
        topic = rng.choice(("price", "shipping", "size_fit")) if kind == "chat" else None
        yield _event(
            f"{w.prefix}-{w.run}-ev-{i}", kind, t, rooms[r], viewer=v, product=p, topic=topic
        )


def _event(
    eid: str,
    kind: str,
    t: float,
    room: str,
    viewer: str | None = None,
    product: str | None = None,
    topic: str | None = None,
) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": eid, "event_type": kind, "event_time": t, "room_id": room}
    if viewer:
        e["viewer_id"] = viewer
    if product:
        e["product_id"] = product
    if topic:
        e["chat_topic"] = topic
    return e


def make_aggregator(world: BenchWorld, work: Path, **limits: Any) -> Any:
    """An :class:`~service.ingest.aggregator.Aggregator` writing to the bench online store."""
    import pandas as pd

    from features.build import fx_lookup
    from features.store import open_store
    from service.ingest.aggregator import Aggregator, IngestLimits
    from service.ingest.online_writer import OnlineWriter

    fx = fx_lookup(pd.read_parquet(world.data_dir / "fx.parquet"))
    region = world.region
    return Aggregator(
        work / "wal",
        work / "events",
        OnlineWriter(open_store(world.settings())),
        region_of=lambda v: region.get(v, ""),
        fx=fx,
        limits=IngestLimits(**limits),
    )


async def open_rooms(
    sink: Any, world: BenchWorld, w: Workload, extra_events: int = 0, batch: int = 1000
) -> int:
    """Open ``w``'s rooms (and ``extra_events`` of activity) through ``sink``: accepted."""
    t = time.time()
    events = opening_events(w, world, t)
    events += list(activity(w, world, extra_events, t))
    accepted = 0
    for i in range(0, len(events), batch):
        accepted += await sink.publish(events[i : i + batch])
    return accepted
