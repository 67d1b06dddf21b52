"""``liverec replay --stream ROOM_ID``: a simulated stream, live, into a running server.

The stream's events are read from the event log, their times shifted so the
stream starts now (``--speed X`` plays it X times faster; ``--speed 0`` sends
as fast as the server takes them, with times shifted so the stream ends now,
since the server refuses events from the future), and sent in PublishEvents
batches when they fall due. Event ids get a per-run suffix, so a second replay
of the same stream counts as new events rather than duplicates.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import typer

from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
from service.generated.livecommerce.v1 import live_recommender_pb2_grpc as pb_grpc
from service.ingest.convert import to_proto

replay_app = typer.Typer(help="Replay a simulated stream into a server.", add_completion=False)


@dataclass
class ReplayStats:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    rejected: int = 0
    batches: int = 0
    retries: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, summary: pb.IngestSummary, n: int) -> None:
        self.sent += n
        self.batches += 1
        self.accepted += summary.accepted
        self.duplicates += summary.duplicates
        self.late += summary.late
        self.rejected += len(summary.rejected)
        for r in summary.rejected[: max(0, 5 - len(self.reasons))]:
            self.reasons.append(f"#{r.index} {r.event_id}: {r.reason}")


def load_stream(data_dir: Path, room_id: str) -> list[dict[str, Any]]:
    """The stream's events in time order, ``event_time`` in epoch seconds."""
    import pyarrow.compute as pc

    from features import schema

    table = schema.read_events(data_dir)
    table = table.filter(pc.equal(table.column("room_id"), room_id))
    rows = table.drop_columns([c for c in table.column_names if c == "event_date"]).to_pylist()
    for r in rows:
        r["event_time"] = r["event_time"].timestamp()
        if r.get("planned_end_time") is not None:
            r["planned_end_time"] = r["planned_end_time"].timestamp()
    rows.sort(key=lambda r: (r["event_time"], r["event_id"]))
    return rows


def shifted(
    events: list[dict[str, Any]], now: float, speed: float, run_id: str
) -> list[tuple[float, dict[str, Any]]]:
    """(seconds after the start to send it, the event with its new time and id)."""
    if not events:
        return []
    t0 = events[0]["event_time"]
    t1 = events[-1]["event_time"]
    out = []
    for e in events:
        if speed > 0:
            due = (e["event_time"] - t0) / speed
            t = now + due
        else:
            due = 0.0
            t = e["event_time"] + (now - t1)
        moved = {**e, "event_time": t, "event_id": f"{e['event_id']}~{run_id}"}
        if e.get("planned_end_time") is not None:
            # The schedule moves with the stream (and keeps its length in stream time).
            ahead = e["planned_end_time"] - e["event_time"]
            moved["planned_end_time"] = t + (ahead / speed if speed > 0 else ahead)
        out.append((due, moved))
    return out


def send(
    stub: pb_grpc.LiveRecommenderStub,
    plan: list[tuple[float, dict[str, Any]]],
    batch_size: int = 500,
    tick_s: float = 0.05,
    timeout_s: float = 10.0,
    progress: bool = True,
) -> ReplayStats:
    """Send each event when due (batched per tick); RESOURCE_EXHAUSTED is retried."""
    from rich.progress import Progress

    stats = ReplayStats()
    start = time.monotonic()
    i = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("replaying", total=len(plan))
        while i < len(plan):
            elapsed = time.monotonic() - start
            due_at = plan[i][0]
            if due_at > elapsed:
                time.sleep(min(due_at - elapsed, 1.0))  # pacing: real time is the point
                continue
            horizon = elapsed + tick_s
            j = i
            while j < len(plan) and j - i < batch_size and plan[j][0] <= horizon:
                j += 1
            batch = pb.EventBatch(events=[to_proto(e) for _, e in plan[i:j]])
            while True:
                try:
                    summary = stub.PublishEvents(batch, timeout=timeout_s)
                    break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    stats.retries += 1
                    time.sleep(0.05)  # back-pressure: the server asked us to back off
            stats.add(summary, j - i)
            bar.update(task, advance=j - i)
            i = j
    return stats


@replay_app.command()
def replay(
    stream: str = typer.Option(..., "--stream", help="Room id of the simulated stream to replay."),
    speed: float = typer.Option(
        1.0, "--speed", min=0.0, help="Playback speed (2 = twice as fast; 0 = as fast as possible)."
    ),
    target: str = typer.Option(
        "127.0.0.1:50051", "--target", help="host:port of a running `liverec serve`."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Where the event log is; default LIVEREC_DATA_DIR."
    ),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Most events per batch."),
    run_id: str | None = typer.Option(
        None, "--run-id", help="Suffix of the replayed event ids; default a random token."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Stream a simulated stream's events into a server in (scaled) real time."""
    from features.settings import FeatureSettings

    root = data_dir if data_dir is not None else FeatureSettings().data_dir
    events = load_stream(root, stream)
    if not events:
        typer.echo(f"no events for stream {stream!r} in {root}", err=True)
        raise typer.Exit(1)
    run = run_id or uuid.uuid4().hex[:8]
    plan = shifted(events, time.time(), speed, run)
    span = plan[-1][0]
    typer.echo(
        f"replaying {len(plan)} events of {stream} to {target} "
        f"(speed {speed:g}, about {span:.0f} s, run {run})",
        err=True,
    )
    t = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stats = send(
            pb_grpc.LiveRecommenderStub(channel), plan, batch_size=batch_size, progress=not quiet
        )
    took = time.monotonic() - t
    typer.echo(
        f"sent {stats.sent} in {stats.batches} batches in {took:.1f} s "
        f"({stats.sent / max(took, 1e-9):.0f} events/s): accepted {stats.accepted}, "
        f"duplicates {stats.duplicates}, late {stats.late}, rejected {stats.rejected}, "
        f"retries {stats.retries}"
    )
    for reason in stats.reasons:
        typer.echo(f"  rejected {reason}")
