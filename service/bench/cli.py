"""``liverec bench``: every measurement of DESIGN §10 in one run, side by side.

Order: build what is missing (the bench world, champions), play the big room in
through the aggregator, then against one ``liverec serve`` subprocess:
RankProducts at fixed rates with the empty-call floor beside each, the rate
search, the room calls, freshness, ingestion + scoring together; then
``--workers 2``; then, with no server running, the in-process alternatives
(textbook path, inference alone), the aggregator's throughput and training.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from features.settings import PROJECT_ROOT

bench_app = typer.Typer(help="Benchmark against the alternatives.", add_completion=False)
log = logging.getLogger(__name__)


def _config(smoke: bool, size: str | None) -> dict[str, Any]:
    from service.bench.procstat import cores

    if smoke:
        return {
            "smoke": True,
            "size": size or "tiny",
            "rates": [100, 500],
            "search": [],
            "refine": 1,
            "budget_rate": 500,
            "duration_s": 2.0,
            "channels": 4,
            "single_calls": 200,
            "textbook_calls": 20,
            "inference_calls": 200,
            "room_viewers": 300,
            "score_viewers": 200,
            "score_rate": 5,
            "next_calls": 2,
            "next_events_rate": 300,
            "next_cold_calls": 2,
            "room_duration_s": 2.0,
            "probes": 5,
            "ingest_events": 20_000,
            "ingest_rooms": 4,
            "ingest_viewers_per_room": 100,
            "ingest_batch": 500,
            "background_rate": 1000,
            "combined_s": 2.0,
            "train_rows": 20_000,
            "profile_calls": 100,
            "cores": cores(),
        }
    return {
        "smoke": False,
        "size": size or "default",
        "rates": [100, 500, 1000],
        "search": [1500, 2000, 3000, 4000],
        "refine": 3,
        "budget_rate": 500,
        "duration_s": 10.0,
        "channels": 4,
        "single_calls": 2000,
        "textbook_calls": 300,
        "inference_calls": 2000,
        "room_viewers": 2000,
        "score_viewers": 200,
        "score_rate": 5,
        # 100 calls each: the p99 of fewer samples is the slowest call, not a percentile
        # (20 calls put 81% of the weight of their p99 on the slowest one).
        "next_calls": 100,
        # While they run, the room's 2,000 viewers send 2,000 events/s: 86x the simulated
        # world's 0.7 events per viewer-minute, so each call finds ~5% of the viewers
        # changed since the one before (what the simulated room would show asked every ~4 s).
        "next_events_rate": 2000,
        # Then calls with the candidates in a new order each time: nothing kept.
        "next_cold_calls": 30,
        "room_duration_s": 20.0,
        "probes": 50,
        "ingest_events": 200_000,
        "ingest_rooms": 20,
        "ingest_viewers_per_room": 500,
        "ingest_batch": 500,
        "background_rate": 2000,
        "combined_s": 10.0,
        "train_rows": 100_000,
        "profile_calls": 500,
        "cores": cores(),
    }


@bench_app.command()
def bench(
    smoke: bool = typer.Option(
        False, "--smoke", help="About a minute on a tiny world: keeps the harness working (CI)."
    ),
    size: str | None = typer.Option(
        None, "--size", help="World to benchmark on (default: default; tiny with --smoke)."
    ),
    out: Path = typer.Option(
        PROJECT_ROOT / "bench", "--out", help="Where results.json, its dated copy and REPORT.md go."
    ),
    ingest_path: str = typer.Option(
        "auto",
        "--ingest-path",
        help="Events into: grpc (PublishEvents), inproc (the aggregator core) or auto.",
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Simulate the bench world again."),
) -> None:
    """Measure the service against the textbook path, the empty-call floor and ONNX vs
    LightGBM; print one table with the budgets (a miss never fails the command)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(level=logging.WARNING)
    cfg = _config(smoke, size)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "config": cfg}
    try:
        _run(cfg, result, ingest_path, rebuild)
    except Exception as exc:  # report what was measured; the failure is part of the report
        log.exception("benchmark stopped early")
        result["error"] = f"{type(exc).__name__}: {exc}"
        typer.echo(f"benchmark stopped early: {result['error']}", err=True)
    result["took_s"] = time.perf_counter() - t0
    from service.bench import report

    path = report.write(result, out, echo=typer.echo)
    typer.echo(f"\nwrote {path} and {out / 'REPORT.md'} in {result['took_s']:.0f}s")
    if "error" in result:  # a broken harness fails (CI's smoke run); a missed budget never does
        raise typer.Exit(1)


def _run(cfg: dict[str, Any], result: dict[str, Any], ingest_path: str, rebuild: bool) -> None:
    from service.bench import grpcbench, ingest, procstat, textbook, training
    from service.bench.calibrate import machine_speed
    from service.bench.serverproc import NotImplementedYet, ServerProcess
    from service.bench.world import (
        Workload,
        ensure_champions,
        ensure_world,
        forget_played,
        room_products,
    )
    from service.generated.livecommerce.v1 import live_recommender_pb2 as pb

    echo = typer.echo
    times = procstat.machine_times()
    result["machine"] = {"start": machine_speed()}
    echo(f"[1/6] bench world ({cfg['size']}) and champions")
    world = ensure_world(cfg["size"], rebuild=rebuild, echo=echo)
    forgotten = forget_played(world)
    if forgotten:
        echo(f"  removed {forgotten} event files that earlier runs played in")
    result["champions"] = ensure_champions(world, echo=echo)
    result["world"] = {
        "size": world.size,
        "data_dir": str(world.data_dir),
        "built_s": world.built_s,
    }
    big = Workload(rooms=1, viewers_per_room=cfg["room_viewers"], prefix="bench")
    load = Workload(
        rooms=cfg["ingest_rooms"],
        viewers_per_room=cfg["ingest_viewers_per_room"],
        prefix="bench-mix",
    )
    work = Path(tempfile.mkdtemp(prefix="liverec-bench-"))
    room = big.room_ids()[0]
    viewers = list(world.viewers[: big.viewers_per_room])
    products = room_products(big, world, 0)
    cands = products + [p for p in world.products if p not in products][: 50 - len(products)]
    calls = grpcbench.Calls(
        rank=pb.RankProductsRequest(
            room_id=room, viewer_id=viewers[0], candidate_product_ids=cands, top_k=10
        ),
        score=pb.ScoreConversionRequest(room_id=room, viewer_ids=viewers[: cfg["score_viewers"]]),
        next_product=pb.RecommendNextProductRequest(
            room_id=room, candidate_product_ids=products, top_k=10
        ),
        rank_viewers=[
            pb.RankProductsRequest(room_id=room, viewer_id=v, candidate_product_ids=cands, top_k=10)
            for v in viewers
        ],
    )
    rank: dict[str, Any] = {}
    result["rank"] = rank
    ing: dict[str, Any] = {"batch": cfg["ingest_batch"]}
    result["ingest"] = ing

    echo("[2/6] one worker: open the room, RankProducts + floor, room calls")
    with ServerProcess(world.target()) as server:
        wired = grpcbench.run(ingest.grpc_wired(server.address))
        path = "grpc" if ingest_path == "grpc" or (ingest_path == "auto" and wired) else "inproc"
        ing["path"] = (
            "gRPC PublishEvents into the server's aggregator"
            if path == "grpc"
            else "aggregator core in-process"
            + ("" if wired else " (PublishEvents not wired in this build)")
        )
        echo(f"  opening room {room} with {big.viewers_per_room:,} viewers ({ing['path']})")
        opened = grpcbench.run(
            _open(world, big, path, server.address, work / "open", 10 * big.viewers_per_room)
        )
        result["setup"] = _setup(world, big, room, viewers[0], cands, products, cfg, path, opened)
        result["single_call"] = grpcbench.run(_single(server, calls, cfg))
        rank["1"] = grpcbench.run(
            grpcbench.rank_suite(
                server,
                calls,
                cfg["rates"],
                cfg["duration_s"],
                cfg["channels"],
                search=cfg["search"],
                echo=echo,
                in_turn_rate=cfg["budget_rate"],
                refine=cfg["refine"],
            )
        )
        result["room"] = grpcbench.run(
            grpcbench.room_suite(
                server,
                calls,
                cfg["score_rate"],
                cfg["next_calls"],
                cfg["room_duration_s"],
                cfg["channels"],
                echo=echo,
                events=_room_events(world, big, server, cfg) if path == "grpc" else None,
                cold_calls=cfg["next_cold_calls"],
            )
        )
        echo("[3/6] ingestion: freshness, throughput, ingestion + scoring together")
        ing["freshness_background_rate"] = cfg["background_rate"]
        ing["freshness"] = grpcbench.run(
            _freshness(world, big, server, path, room, viewers, cfg, work / "fresh")
        )
        if path == "grpc":
            ing["throughput_grpc"] = grpcbench.run(
                _throughput(world, load, cfg, path, server.address, work / "tp-grpc")
            ).as_dict()
        ing["combined"] = _combined(world, load, server, calls, cfg, path)
        result["server_peak_rss_mb"] = server.peak_rss_mb()

    echo("[4/6] two workers")
    try:
        with ServerProcess(world.target(), workers=2) as server2:
            grpcbench.run(_open(world, big, path, server2.address, work / "open2", 0))
            rank["2"] = grpcbench.run(
                grpcbench.rank_suite(
                    server2,
                    calls,
                    cfg["rates"],
                    cfg["duration_s"],
                    cfg["channels"],
                    echo=echo,
                    refine=cfg["refine"],
                )
            )
            # Where --workers N is for: events to the aggregator process, scoring in the
            # workers, so neither waits on the other's event loop.
            echo("  ingestion + RankProducts together, two workers ...")
            try:
                ing["combined_2_workers"] = _combined(world, load, server2, calls, cfg, path)
            except Exception as exc:  # keeps the two-worker figures measured above
                log.exception("ingestion + RankProducts on two workers failed")
                ing["combined_2_workers_failed"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            result["server_peak_rss_mb_2_workers"] = server2.peak_rss_mb()
    except NotImplementedYet:
        rank["2"] = "n/a (not implemented)"
    except Exception as exc:  # a broken --workers 2 must not cost the rest of the run
        log.exception("--workers 2 failed")
        rank["2"] = f"n/a (failed: {type(exc).__name__}: {str(exc)[:200]})"

    echo("[5/6] in one process: textbook path, inference alone, stage profile")
    result["textbook"] = textbook.textbook(world, room, viewers[0], cands, cfg["textbook_calls"])
    result["inference"] = textbook.inference(world, cfg["inference_calls"])
    from service.bench import profile

    result["profile"] = profile.rank_stages(world, calls.rank, cfg["profile_calls"])

    echo("[6/6] aggregator core throughput, training cost")
    ing["throughput"] = grpcbench.run(
        _throughput(world, load, cfg, "inproc", "", work / "tp")
    ).as_dict()
    result["training"] = training.per_million_rows(world, cfg["train_rows"])
    result["machine"]["end"] = machine_speed()
    result["machine"]["stolen_share"] = round((procstat.machine_times() - times).stolen_share, 4)


def _combined(
    world: Any, load: Any, server: Any, calls: Any, cfg: dict[str, Any], path: str
) -> dict[str, Any]:
    """RankProducts at the budget rate while a second process ingests at 5x the
    background rate into the same server."""
    from service.bench import grpcbench, ingest

    proc, q = ingest.start_background(
        world, load, 5 * cfg["background_rate"], cfg["combined_s"] + 1, path, server.address
    )
    rank = grpcbench.run(
        grpcbench.measured_rank(
            server, calls, cfg["budget_rate"], cfg["combined_s"], cfg["channels"]
        )
    )
    return {"rank": rank, "ingest": ingest.background_result(proc, q, 120)}


def _setup(
    world: Any,
    big: Any,
    room: str,
    viewer: str,
    cands: list[str],
    products: list[str],
    cfg: dict[str, Any],
    path: str,
    opened: int,
) -> str:
    return (
        f"world `{world.size}` simulated to end 10 min after it was built and materialized "
        f"up to then (batch rows fresh, simulated rooms on air); room `{room}` opened live "
        f"by playing {opened:,} events in ({big.viewers_per_room:,} joins + activity, "
        f"stamped now) through {'PublishEvents' if path == 'grpc' else 'the aggregator core'}. "
        f"Champions from the {world.champions_from}. RankProducts: viewer `{viewer}`, "
        f"{len(cands)} candidates ({len(products)} with live rows in the room), top 10 with "
        f"reasons; {cfg['channels']} channels (one connection each); server = `liverec serve` "
        "subprocess on port 0, load generator = this process (grpc.aio, open loop, "
        "on a select() event loop whose timers keep microseconds)."
    )


async def _open(world: Any, w: Any, path: str, address: str, work: Path, extra_events: int) -> int:
    from service.bench import ingest
    from service.bench.world import open_rooms

    sink = await ingest.make_sink(path, world, work, address)
    try:
        n = await open_rooms(sink, world, w, extra_events)
        await sink.flush()
        return n
    finally:
        await sink.close()


async def _throughput(
    world: Any, w: Any, cfg: dict[str, Any], path: str, address: str, work: Path
) -> Any:
    from service.bench import ingest

    sink = await ingest.make_sink(path, world, work, address)
    try:
        return await ingest.throughput(sink, world, w, cfg["ingest_events"], cfg["ingest_batch"])
    finally:
        await sink.close()


async def _single(server: Any, calls: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """RankProducts one call at a time on one channel: the like-for-like of the textbook
    path (which also runs one call at a time)."""
    from service.bench import grpcbench, loadgen

    client = grpcbench.Client(server.address, 1)
    try:
        call = client.rank(calls.rank)
        await grpcbench.warm(call, 200, 1)
        run = await loadgen.run_closed_loop(call, cfg["single_calls"], 1)
        return run.stats().as_dict()
    finally:
        await client.close()


def _room_events(world: Any, w: Any, server: Any, cfg: dict[str, Any]) -> Any:
    """The room's viewers' events at ``next_events_rate``/s over PublishEvents, until told
    to stop: what changes between two RecommendNextProduct calls of a live room."""
    from service.bench import ingest

    async def play(stop: asyncio.Event) -> dict[str, Any]:
        sink = await ingest.make_sink("grpc", world, Path(), server.address)
        try:
            return await ingest.paced(
                sink, world, w, cfg["next_events_rate"], duration_s=3600.0, stop=stop
            )
        finally:
            await sink.close()

    return play


async def _freshness(
    world: Any,
    w: Any,
    server: Any,
    path: str,
    room: str,
    viewers: list[str],
    cfg: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    from service.bench import ingest
    from service.bench.world import open_rooms

    sink = await ingest.make_sink(path, world, work, server.address)
    try:
        if path == "inproc":  # a fresh aggregator must know the room's viewers first
            await open_rooms(sink, world, w)
        return await ingest.freshness(
            sink,
            server.address,
            room,
            viewers[:50],
            cfg["probes"],
            (world, w, cfg["background_rate"]),
        )
    finally:
        await sink.close()
