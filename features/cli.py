"""CLI verbs of the features package: `liverec simulate` and `liverec features ...`."""

from __future__ import annotations

import enum
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from features.world import SIZES

SizeChoice = enum.Enum("SizeChoice", {name: name for name in SIZES}, type=str)  # type: ignore[misc]

simulate_app = typer.Typer(
    help="Simulate a cross-border live-commerce world.", no_args_is_help=False
)
features_app = typer.Typer(
    help="Build offline features and manage the Feast store.", no_args_is_help=True
)
log = logging.getLogger("liverec.features")


def _settings():
    from features.settings import FeatureSettings

    return FeatureSettings()


@simulate_app.command()
def simulate(
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default: LIVEREC_DATA_DIR, else ./data)."),
    ] = None,
    size: Annotated[
        SizeChoice,
        typer.Option(
            help="World size: tiny (seconds), small, default (~1 min), large (>5M events)."
        ),
    ] = SizeChoice.default,  # type: ignore[attr-defined]
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives identical tables.")
    ] = 7,
    end_at: Annotated[
        str | None,
        typer.Option(help="When the world ends: 'now' or an ISO time (default: a fixed date)."),
    ] = None,
) -> None:
    """Simulate a seeded world and write its raw tables (events, viewers, truth, ...)."""
    from features.simulator import simulate as run

    out_dir = out or _settings().data_dir
    end = None
    if end_at == "now":
        end = datetime.now(UTC)
    elif end_at:
        end = datetime.fromisoformat(end_at)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
    t0 = time.perf_counter()
    manifest = run(out_dir, size=size.value, seed=seed, end_at=end)
    typer.echo(
        f"simulated {size.value} world (seed {seed}) into {out_dir} "
        f"in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{k}={v:,}" for k, v in manifest.counts.items())
    )


@features_app.command("build")
def build(
    data_dir: Annotated[
        Path | None, typer.Option(help="Raw tables folder (default: settings).")
    ] = None,
) -> None:
    """Turn the event log into offline feature tables (parquet, point-in-time stamped)."""
    from features.build import build_features

    settings = _settings()
    src = data_dir or settings.data_dir
    t0 = time.perf_counter()
    counts = build_features(src, settings.offline_dir if data_dir is None else src / "features")
    typer.echo(
        f"built features in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{k}={v:,}" for k, v in counts.items())
    )


@features_app.command("apply")
def apply() -> None:
    """Register entities, feature views and feature services in the Feast registry."""
    from features.store import apply as run

    run(_settings())
    typer.echo("feast definitions applied")


@features_app.command("materialize")
def materialize(
    end: Annotated[
        str | None, typer.Option(help="Materialize up to this ISO time (default: now).")
    ] = None,
) -> None:
    """Load the latest feature values into the online store (incremental)."""
    from features.store import materialize as run

    when = datetime.fromisoformat(end) if end else None
    run(_settings(), end=when)
    typer.echo("materialized")
