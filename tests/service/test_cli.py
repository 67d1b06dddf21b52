"""The service's CLI apps: placeholders say so and exit 2; real verbs document their options."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from service.cli import bench_app, demo_app, replay_app, serve_app


@pytest.mark.parametrize("app", [demo_app, bench_app])
def test_placeholders_exit_2(app: object) -> None:
    result = CliRunner().invoke(app, ["--anything"])  # type: ignore[arg-type]
    assert result.exit_code == 2
    assert "not yet implemented" in result.output


def test_serve_help_documents_every_option() -> None:
    result = CliRunner().invoke(serve_app, ["--help"])
    assert result.exit_code == 0
    for option in ("--port", "--ready-file", "--workers", "--metrics-port", "--data-dir"):
        assert option in result.output


def test_replay_help_documents_every_option() -> None:
    result = CliRunner().invoke(replay_app, ["--help"])
    assert result.exit_code == 0
    for option in ("--stream", "--speed", "--target", "--data-dir"):
        assert option in result.output


def test_replay_needs_a_stream() -> None:
    result = CliRunner().invoke(replay_app, [])
    assert result.exit_code == 2
