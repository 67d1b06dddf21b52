"""The bench's server process: what it logged is shown when a run against it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bench.serverproc import ServerProcess, Target


def test_a_failed_run_shows_the_servers_log_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ServerProcess(Target(tmp_path, "sqlite:///unused.db", tmp_path / "models"))
    server._log.write_text("starting\nPublishEvents: write-ahead log stalled\n")
    # Never started: only the exit path of ``with ServerProcess(...)`` runs.
    server.__exit__(TimeoutError, TimeoutError("deadline exceeded"), None)
    err = capsys.readouterr().err
    assert "the run failed: TimeoutError" in err
    assert "write-ahead log stalled" in err

    quiet = ServerProcess(Target(tmp_path, "sqlite:///unused.db", tmp_path / "models"))
    quiet._log.write_text("nothing wrong\n")
    quiet.__exit__(None, None, None)
    assert "nothing wrong" not in capsys.readouterr().err
