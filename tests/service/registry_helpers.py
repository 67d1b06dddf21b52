"""Write a served-model directory and register it in an MLflow store, as training does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from features.served_model import ServedModel
from features.vector import ModelSpec


def register_served(uri: str, served: Path, name: str) -> str:
    """Log the booster with the served files as ``extra_files``; alias it ``champion``."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(name)
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        info = mlflow.lightgbm.log_model(
            ServedModel.load(served).booster(),
            name="model",
            extra_files=sorted(str(p) for p in served.iterdir()),
            registered_model_name=name,
        )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, "champion", version)
    return version


def served_dir(directory: Path, spec: ModelSpec, seed: int) -> Path:
    """A served directory of a small booster on synthetic rows of ``spec``'s columns
    (deterministic, one thread): a real artifact whose predictions mean nothing."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 3, size=(2000, len(spec.columns))).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    y = np.nan_to_num(X[:, spec.columns.index("carts")]) + rng.normal(0, 1, len(X)) > 2.5
    return train_served(directory, spec, X, y, seed, rounds=15)


def train_served(
    directory: Path,
    spec: ModelSpec,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    rounds: int,
    **params: Any,
) -> Path:
    """Train a small booster (7 leaves, one thread, deterministic) on ``X``, ``y`` and write
    it as ``spec``'s served directory, identity-calibrated."""
    import lightgbm as lgb

    from training.export import write_served

    params = {
        "objective": "binary",
        "deterministic": True,
        "num_threads": 1,
        "verbose": -1,
        "seed": seed,
        "num_leaves": 7,
        **params,
    }
    booster = lgb.train(params, lgb.Dataset(X, np.asarray(y).astype(int)), num_boost_round=rounds)
    calibrator = {"kind": "platt", "a": 1.0, "b": 0.0, "in_graph": True}
    served = {
        "model": spec.name,
        "feature_service": spec.feature_service,
        "columns": list(spec.columns),
    }
    return write_served(directory, booster, calibrator, served, X[:64])
