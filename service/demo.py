"""`liverec demo`: the whole product on the embedded default, in one command.

Prepares what is missing (a simulated world, its features in Feast, trained
champions — each step by the `liverec` verb that owns it, so this module
imports neither the trainer nor the simulator), starts `liverec serve`, replays
a simulated stream into it over gRPC while asking the questions a seller asks,
prints the answers as the stream unfolds, and stops the server. Nothing is
left running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.replay import load_stream, send, shifted
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL, ServiceSettings

demo_app = typer.Typer(help="End-to-end demo on the embedded default.", add_completion=False)
prepare_app = typer.Typer(
    help="Simulate, build features and train, if missing.", add_completion=False
)

SEGMENTS = {1: "high-conversion", 2: "high-potential", 3: "to-be-activated"}


def _liverec(*args: str) -> None:
    """Run a `liverec` verb as its own process (the front door composes packages)."""
    cmd = [sys.executable, "-m", "liverec", *args]
    typer.echo(f"$ liverec {' '.join(args)}", err=True)
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parent.parent)


def _has_champions(settings: ServiceSettings) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    try:
        for name in (CONVERSION_MODEL, NEXT_PRODUCT_MODEL):
            client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return False
    return True


def prepare(settings: ServiceSettings, size: str, seed: int) -> None:
    """Simulate, build features, apply + materialize, and train, each only if missing."""
    data = ["--out", str(settings.data_dir)]
    if not (settings.data_dir / "events").exists():
        _liverec("simulate", "--size", size, "--seed", str(seed), *data)
    if not (settings.offline_dir / "viewer_live.parquet").exists():
        _liverec("features", "build")
    if not (settings.feast_dir / "registry.db").exists() and settings.profile == "embedded":
        _liverec("features", "apply")
        _liverec("features", "materialize")
    if not _has_champions(settings):
        _liverec("train")


def pick_stream(data_dir: Path) -> tuple[str, list[str]]:
    """The most eventful of the world's last streams, and its lineup."""
    from features import schema

    streams = schema.read_table("streams", data_dir).to_pandas().sort_values("start_time")
    last = streams.tail(8)
    best = last.iloc[int(np.argmax([len(x) for x in last["stage_schedule"]]))]
    return str(best["room_id"]), [str(p) for p in best["lineup"]]


class Server:
    """`liverec serve` in a subprocess on a free port, stopped with SIGTERM."""

    def __init__(self, workdir: Path) -> None:
        self.ready = workdir / "ready.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.target = ""

    def __enter__(self) -> Server:
        cmd = [sys.executable, "-m", "liverec", "serve", "--port", "0"]
        cmd += ["--ready-file", str(self.ready)]
        self.proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent)
        deadline = time.monotonic() + 180
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"liverec serve exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("liverec serve did not become ready in 180 s")
            time.sleep(0.2)
        info = json.loads(self.ready.read_text())
        self.target = f"127.0.0.1:{info['grpc_port']}"
        with grpc.insecure_channel(self.target) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Latencies:
    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)

    def call(self, name: str, fn: Any, request: Any) -> Any:
        t = time.perf_counter()
        out = fn(request, timeout=2.0)
        self.ms[name].append((time.perf_counter() - t) * 1000)
        return out

    def table(self) -> list[str]:
        rows = []
        for name, xs in self.ms.items():
            a = np.array(xs)
            rows.append(
                f"  {name:<22} {len(a):>5} calls   p50 {np.percentile(a, 50):6.2f} ms"
                f"   p99 {np.percentile(a, 99):6.2f} ms"
            )
        return rows


def _present(plan: list[tuple[float, dict[str, Any]]], elapsed: float) -> list[str]:
    here: dict[str, None] = {}
    for due, e in plan:
        if due > elapsed:
            break
        if e["event_type"] == "join":
            here[e["viewer_id"]] = None
        elif e["event_type"] == "leave":
            here.pop(e["viewer_id"], None)
    return list(here)


def _snapshot(
    stub: pb_grpc.LiveRecommenderStub,
    lat: Latencies,
    room: str,
    lineup: list[str],
    present: list[str],
    last: bool,
) -> list[tuple[str, float]]:
    nxt = lat.call(
        "RecommendNextProduct",
        stub.RecommendNextProduct,
        pb.RecommendNextProductRequest(room_id=room, candidate_product_ids=lineup, top_k=3),
    )
    line = ", ".join(f"{p.product_id} ({p.expected_conversions:.2f})" for p in nxt.products)
    typer.echo(f"  {nxt.viewers_present:>4} viewers present | feature next: {line}")
    if not present:
        return []
    scores = lat.call(
        "ScoreConversion",
        stub.ScoreConversion,
        pb.ScoreConversionRequest(room_id=room, viewer_ids=present[:200]),
    )
    ranked = sorted(scores.scores, key=lambda s: -s.probability)
    if last:
        typer.echo("\nViewers most likely to buy now:")
        for s in ranked[:5]:
            why = "; ".join(r.text for r in s.reasons[:2])
            typer.echo(
                f"  {s.viewer_id}  {s.probability:5.1%}  {SEGMENTS.get(s.segment, '?'):<16} {why}"
            )
        typer.echo("\nProducts for you (overlay):")
        for s in ranked[:3]:
            over = lat.call(
                "RankProducts",
                stub.RankProducts,
                pb.RankProductsRequest(
                    room_id=room, viewer_id=s.viewer_id, candidate_product_ids=lineup, top_k=3
                ),
            )
            items = ", ".join(f"{p.product_id} {p.score:.1%}" for p in over.products)
            typer.echo(f"  {s.viewer_id}: {items}")
        typer.echo("\nFeature next (expected conversions among present viewers):")
        for p in nxt.products:
            why = "; ".join(r.text for r in p.reasons[:2])
            typer.echo(f"  {p.product_id}  {p.expected_conversions:6.2f}  {why}")
    else:
        for s in ranked[:1]:
            lat.call(
                "RankProducts",
                stub.RankProducts,
                pb.RankProductsRequest(
                    room_id=room, viewer_id=s.viewer_id, candidate_product_ids=lineup, top_k=10
                ),
            )
    return [(s.viewer_id, s.probability) for s in ranked]


@demo_app.command()
def demo(
    size: str = typer.Option("default", help="World to simulate if none exists yet."),
    seed: int = typer.Option(7, help="Seed of that world."),
    speed: float = typer.Option(60.0, min=1.0, help="Replay speed (60 = a minute a second)."),
    max_seconds: float = typer.Option(60.0, min=5.0, help="Stop the replay after this long."),
    every: float = typer.Option(3.0, min=0.5, help="Seconds between snapshots."),
) -> None:
    """Train if needed, serve, replay a stream live over gRPC, show what a seller sees."""
    settings = ServiceSettings()
    prepare(settings, size, seed)
    room, lineup = pick_stream(settings.data_dir)
    events = load_stream(settings.data_dir, room)
    # Stop while the room is still full (80% through the stream, or max_seconds).
    span = (events[-1]["event_time"] - events[0]["event_time"]) / speed
    horizon = min(max_seconds, 0.8 * span)
    t0 = events[0]["event_time"]
    n_events = sum(1 for e in events if (e["event_time"] - t0) / speed <= horizon)
    typer.echo(
        f"\nReplaying stream {room} ({n_events} events, {speed:g}x) into a fresh "
        f"`liverec serve`; lineup of {len(lineup)} products.\n"
    )
    lat = Latencies()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Server(Path(tmp)) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        stub = pb_grpc.LiveRecommenderStub(channel)
        plan = shifted(events, time.time(), speed, uuid.uuid4().hex[:8])[:n_events]
        sender = threading.Thread(
            target=send, args=(stub, plan), kwargs={"progress": False}, daemon=True
        )
        start = time.monotonic()
        sender.start()
        history: dict[str, list[float]] = defaultdict(list)
        while sender.is_alive():
            time.sleep(every)
            elapsed = time.monotonic() - start
            typer.echo(f"t+{elapsed * speed / 60:5.1f} stream-min:", nl=False)
            for vid, p in _snapshot(stub, lat, room, lineup, _present(plan, elapsed), False):
                history[vid].append(p)
        sender.join()
        elapsed = time.monotonic() - start
        typer.echo("\nAt the end of the replay:")
        _snapshot(stub, lat, room, lineup, _present(plan, elapsed), True)
        movers = sorted(
            ((v, h) for v, h in history.items() if len(h) >= 2),
            key=lambda x: x[1][0] - x[1][-1],
        )[:3]
        if movers:
            typer.echo("\nScores moving as the stream unfolds (first -> last snapshot):")
            for v, h in movers:
                typer.echo(f"  {v}: " + " -> ".join(f"{p:.1%}" for p in h[:: max(1, len(h) // 6)]))
    typer.echo("\nLatency observed by this client (loopback, shared 2-core machine):")
    for row in lat.table():
        typer.echo(row)
    typer.echo("\nDone; the server has stopped.")


@prepare_app.command()
def prepare_command(
    size: str = typer.Option("default", help="World to simulate if none exists yet."),
    seed: int = typer.Option(7, help="Seed of that world."),
) -> None:
    """Make what `liverec serve` needs: a world, its features in Feast, champions."""
    prepare(ServiceSettings(), size, seed)
