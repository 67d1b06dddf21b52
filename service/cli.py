"""The service's verbs: ``liverec serve`` (and placeholders for replay, demo, bench)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import typer

log = logging.getLogger(__name__)

serve_app = typer.Typer(help="Run the gRPC scoring service.", add_completion=False)
replay_app = typer.Typer(help="Replay a simulated stream into a server.", add_completion=False)
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
        1, "--workers", min=1, help="Server processes (only 1 is implemented so far)."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Feature data root; default LIVEREC_DATA_DIR."
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
    settings = ServiceSettings(**overrides, workers=workers)
    if settings.workers > 1:
        typer.echo("--workers > 1 is not implemented yet; run one process per port.", err=True)
        raise typer.Exit(2)
    app = build_app(settings)
    from service.server import serve as run

    asyncio.run(run(app, ready_file))


def build_app(settings: Any) -> Any:
    """The real composition: Feast online store, MLflow champions, ServedModel artifacts."""
    from features.store import open_store
    from service.feast_reader import FeastReader
    from service.models import MlflowSource
    from service.server import App

    try:
        from features.served_model import ServedModel
    except ImportError as exc:
        typer.echo(f"features.served_model is not available in this build: {exc}", err=True)
        raise typer.Exit(2) from exc
    reader = FeastReader(open_store(settings))
    source = MlflowSource(settings.mlflow_tracking_uri, settings.model_alias)
    return App(settings, reader, ServedModel.load, source)


def _placeholder(app: typer.Typer, verb: str) -> None:
    @app.command(
        name=verb, context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )
    def run(ctx: typer.Context) -> None:
        typer.echo(f"liverec {verb}: not yet implemented", err=True)
        raise typer.Exit(2)


_placeholder(replay_app, "replay")
_placeholder(demo_app, "demo")
_placeholder(bench_app, "bench")
