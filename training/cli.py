"""CLI verbs of the training package: ``liverec train`` and ``liverec models ...``."""

from __future__ import annotations

import enum
import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from features.world import SIZES

log = logging.getLogger("liverec.training")

SizeChoice = enum.Enum("SizeChoice", {name: name for name in SIZES}, type=str)  # type: ignore[misc]

train_app = typer.Typer(
    help="Train, evaluate and register the conversion and next-product models.",
    no_args_is_help=False,
    add_completion=False,
)


def prepare_data(data_dir: Path, size: str, seed: int) -> None:
    """Simulate, build, apply and materialize when ``data_dir`` has no features yet."""
    from features.settings import FeatureSettings
    from features.store import apply, materialize
    from features.tables import ALL_TABLES

    settings = FeatureSettings(data_dir=data_dir)
    if not (data_dir / "scoring_points.parquet").exists():
        from features.simulator import simulate

        typer.echo(f"[1/4] no world in {data_dir}: simulating a {size} world (seed {seed})")
        simulate(data_dir, size=size, seed=seed)
    built = all((settings.offline_dir / t.file).exists() for t in ALL_TABLES)
    if not built:
        from features.build import build_features

        typer.echo("[2/4] building offline feature tables")
        build_features(data_dir, settings.offline_dir, progress=True)
    if not (settings.feast_dir / "registry.db").exists():
        typer.echo("[3/4] applying Feast definitions")
        apply(settings)
        typer.echo("[4/4] materializing the online store")
        materialize(settings)


@train_app.command()
def train(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data dir (raw tables, features/, feast/); default: LIVEREC_DATA_DIR."),
    ] = None,
    size: Annotated[
        SizeChoice,
        typer.Option(help="World size simulated first when the data dir has no world yet."),
    ] = SizeChoice.default,  # type: ignore[attr-defined]
    num_threads: Annotated[int, typer.Option(help="LightGBM threads per process.")] = 2,
    dask: Annotated[
        bool, typer.Option(help="Fit with LightGBM's Dask integration (LocalCluster of 2).")
    ] = False,
    dask_address: Annotated[
        str | None,
        typer.Option(help="Scheduler address of an existing Dask cluster (implies --dask)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of simulation, sampling and LightGBM.")] = 7,
    join: Annotated[
        str,
        typer.Option(
            help="Point-in-time join: feast (Feast SDK), asof (same semantics, fast) or auto."
        ),
    ] = "auto",
    max_exposure_rows: Annotated[
        int, typer.Option(help="Cap on next-product exposure rows (negatives subsampled).")
    ] = 300_000,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples over test streams.")] = 200,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Train only this model (conversion, next_product); repeatable."),
    ] = None,
) -> None:
    """Train both models, evaluate on later streams, log to MLflow and gate promotion."""
    from features.settings import FeatureSettings
    from training import pipeline, register

    data_dir = (data_dir or FeatureSettings().data_dir).expanduser().absolute()
    t0 = time.perf_counter()
    prepare_data(data_dir, size.value, seed)
    opts = pipeline.Options(
        data_dir=data_dir,
        num_threads=num_threads,
        seed=seed,
        dask=dask or dask_address is not None,
        dask_address=dask_address,
        join=join,
        max_exposure_rows=max_exposure_rows,
        bootstrap=bootstrap,
        models=tuple(model) if model else pipeline.MODELS,
    )
    unknown = set(opts.models) - set(pipeline.MODELS)
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {sorted(unknown)}", param_hint="--model")
    outcomes = pipeline.run(opts)
    for o in outcomes:
        typer.echo(o.report.text())
        v = o.result.verdict
        if v is not None:
            typer.echo(
                f"verdict {o.result.registered_name} v{o.result.version}: "
                f"{'PROMOTED to champion' if v.promote else 'stays challenger'} — {v.reason}"
            )
    typer.echo("\n== summary ==")
    typer.echo(pipeline.summary(outcomes).to_string(index=False))
    typer.echo(f"MLflow: {register.tracking_uri()}  ({time.perf_counter() - t0:.0f}s)")
    if any(not o.result.parity_ok for o in outcomes):
        raise typer.Exit(1)


models_app = typer.Typer(
    help="List, promote and roll back model aliases in the MLflow registry.",
    no_args_is_help=True,
    add_completion=False,
)


@models_app.command("list")
def list_cmd() -> None:
    """Registered versions with their aliases and promotion verdicts."""
    from training import register

    register.list_cmd()


@models_app.command("promote")
def promote_cmd(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. liverec-conversion.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
) -> None:
    """Make VERSION the champion of NAME (a manual override of the gate)."""
    from training import register

    register.promote_cmd(name, version)


@models_app.command("rollback")
def rollback_cmd(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. liverec-conversion.")],
) -> None:
    """Give the champion alias back to the previous champion of NAME."""
    from training import register

    register.rollback_cmd(name)
