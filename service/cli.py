"""The service's verbs: ``liverec serve``, ``liverec replay`` (placeholders: demo, bench)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from service.replay import replay_app  # the verb lives in its own module

log = logging.getLogger(__name__)
__all__ = ["bench_app", "build_app", "demo_app", "replay_app", "serve_app"]

serve_app = typer.Typer(help="Run the gRPC scoring service.", add_completion=False)
demo_app = typer.Typer(help="End-to-end demo on the embedded default.", add_completion=False)
bench_app = typer.Typer(help="Benchmark against the alternatives.", add_completion=False)


@serve_app.command()
def serve(
    port: int | None = typer.Option(
        None, "--port", help="gRPC port (0 = a free port); default LIVEREC_GRPC_PORT or 50051."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus port (0 = a free port); default 9464."
    ),
    host: str | None = typer.Option(None, "--host", help="Bind address; default 127.0.0.1."),
    ready_file: Path | None = typer.Option(
        None,
        "--ready-file",
        help="Write {grpc_port, metrics_port, pid} as JSON here once health is SERVING.",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help=(
            "Server processes sharing the port. N > 1 starts one aggregator process (owns "
            "live state) and N workers that forward events and room calls to it."
        ),
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Feature data root; default LIVEREC_DATA_DIR."
    ),
    role: str = typer.Option(
        "all",
        "--role",
        hidden=True,
        help="all | aggregator | worker (set by --workers N for its children).",
    ),
    bind: str | None = typer.Option(
        None, "--bind", hidden=True, help="Aggregator role: address to serve on (unix:...)."
    ),
    aggregator: str | None = typer.Option(
        None, "--aggregator", hidden=True, help="Worker role: the aggregator's address."
    ),
) -> None:
    """Serve the champions of the MLflow registry over the online feature store."""
    from service.settings import ServiceSettings

    overrides: dict[str, Any] = {}
    for key, value in (
        ("grpc_port", port),
        ("metrics_port", metrics_port),
        ("grpc_host", host),
        ("data_dir", data_dir),
    ):
        if value is not None:
            overrides[key] = value
    if aggregator is not None:
        overrides["aggregator_address"] = aggregator
    settings = ServiceSettings(**overrides, workers=workers)
    if role not in ("all", "aggregator", "worker"):
        raise typer.BadParameter("--role must be all, aggregator or worker")
    if role == "all" and settings.workers > 1:
        from service.workers import supervise

        raise typer.Exit(supervise(settings, ready_file))
    if role == "worker" and settings.aggregator_address is None:
        raise typer.BadParameter("--role worker needs --aggregator ADDRESS")
    from service.heap import collector_paused

    with collector_paused(settings.gc_freeze):  # the server settles its heap once ready
        from service.server import serve as run

        app = build_app(settings, live=role != "worker")

    asyncio.run(run(app, ready_file, address=bind))


def build_app(settings: Any, live: bool = True) -> Any:
    """The real composition: Feast online store, MLflow champions, ServedModel artifacts;
    with ``live`` this process owns the aggregator, else (a worker) it links to it."""
    from features.store import open_store
    from service.feast_reader import FeastReader
    from service.models import MlflowSource
    from service.server import App

    try:
        from features.served_model import ServedModel
    except ImportError as exc:
        typer.echo(f"features.served_model is not available in this build: {exc}", err=True)
        raise typer.Exit(2) from exc
    from service.ingest.live import AggregatorLink, build_aggregator

    reader = FeastReader(open_store(settings))
    source = MlflowSource(settings.mlflow_tracking_uri, settings.model_alias)
    if live and settings.ingest_enabled:
        aggregator = build_aggregator(settings)
        return App(settings, reader, ServedModel.load, source, aggregator=aggregator)
    if live:
        return App(settings, reader, ServedModel.load, source)
    link = AggregatorLink(settings.aggregator_address)
    return App(settings, reader, ServedModel.load, source, link=link)


def _placeholder(app: typer.Typer, verb: str) -> None:
    @app.command(
        name=verb, context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )
    def run(ctx: typer.Context) -> None:
        typer.echo(f"liverec {verb}: not yet implemented", err=True)
        raise typer.Exit(2)


_placeholder(demo_app, "demo")
_placeholder(bench_app, "bench")


if __name__ == "__main__":  # the children of `liverec serve --workers N`
    logging.basicConfig(
        level=os.environ.get("LIVEREC_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("feast").setLevel(logging.WARNING)
    serve_app(prog_name="liverec serve")
