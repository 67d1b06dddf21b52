"""Session fixtures: the tiny world in a Feast repo, a temp MLflow store, one training run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from features.settings import FeatureSettings
from features.store import apply
from training import data, pipeline


@dataclass
class Trained:
    data_dir: Path
    settings: FeatureSettings
    tracking_uri: str
    outcomes: dict[str, pipeline.Outcome]


@pytest.fixture(scope="session")
def feast_world(tiny_world: Path) -> Iterator[FeatureSettings]:
    """The tiny world with Feast definitions applied; LIVEREC_DATA_DIR points at it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIVEREC_DATA_DIR", str(tiny_world))
        settings = FeatureSettings(data_dir=tiny_world)
        apply(settings)
        yield settings


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway MLflow store (SQLite + artifacts beside it) for the session."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture(scope="session")
def options(feast_world: FeatureSettings) -> pipeline.Options:
    return pipeline.Options(
        data_dir=feast_world.data_dir, num_threads=1, seed=7, bootstrap=30, progress=False
    )


@pytest.fixture(scope="session")
def trained(feast_world: FeatureSettings, mlflow_store: str, options: pipeline.Options) -> Trained:
    """`liverec train` on the tiny world, once: both models logged and registered."""
    outcomes = pipeline.run(options)
    return Trained(
        feast_world.data_dir, feast_world, mlflow_store, {o.result.model: o for o in outcomes}
    )


@pytest.fixture(scope="session")
def conversion_set(feast_world: FeatureSettings) -> data.TrainingSet:
    return data.conversion_set(feast_world.data_dir, data.feast_fetcher(feast_world))


@pytest.fixture(scope="session")
def next_product_set(feast_world: FeatureSettings) -> data.TrainingSet:
    return data.next_product_set(feast_world.data_dir, data.feast_fetcher(feast_world))
