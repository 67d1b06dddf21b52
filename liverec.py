"""`liverec`: the front door. It only composes the packages' own CLI apps.

Each verb imports its package's app when it runs, so `liverec serve` never
loads the trainer and `liverec --help` is instant.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

import typer

#: verb -> (module, Typer app attribute, help)
VERBS: dict[str, tuple[str, str, str]] = {
    "simulate": ("features.cli", "simulate_app", "Simulate a seeded cross-border world."),
    "features": ("features.cli", "features_app", "Build features; apply/materialize Feast."),
    "review": ("features.review_cli", "review_app", "Post-stream review and audiences."),
    "train": ("training.cli", "train_app", "Train, evaluate and register the models."),
    "models": ("training.cli", "models_app", "List, promote and roll back model aliases."),
    "prepare": ("service.demo", "prepare_app", "Simulate, build features, train: what is missing."),
    "serve": ("service.cli", "serve_app", "Run the gRPC scoring service."),
    "replay": ("service.cli", "replay_app", "Replay a simulated stream into a server."),
    "demo": ("service.demo", "demo_app", "End-to-end demo on the embedded default."),
    "bench": ("service.bench.cli", "bench_app", "Benchmark against the alternatives."),
}

app = typer.Typer(
    help="LiveRec: real-time recommendations for cross-border live-stream shopping.",
    no_args_is_help=True,
    add_completion=False,
)


def _forward(verb: str) -> None:
    module, attr, help_text = VERBS[verb]

    @app.command(
        name=verb,
        help=help_text,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def command(ctx: typer.Context) -> None:
        try:
            sub = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            typer.echo(f"`liverec {verb}` is not available in this build: {exc}", err=True)
            raise typer.Exit(2) from exc
        sub(args=ctx.args, prog_name=f"liverec {verb}")


for _verb in VERBS:
    _forward(_verb)


@app.callback()
def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LIVEREC_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # Feast logs every registry refresh at INFO; ibis warns about its own API.
    logging.getLogger("feast").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="ibis")


if __name__ == "__main__":
    app()
