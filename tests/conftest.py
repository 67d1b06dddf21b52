"""Worlds built once per test session (simulate + feature build in a temp dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.build import build_features
from features.simulator import simulate


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_world")
    simulate(out, "tiny", seed=11, progress=False)
    build_features(out, progress=False)
    return out


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small_world")
    simulate(out, "small", seed=5, progress=False)
    build_features(out, progress=False)
    return out
