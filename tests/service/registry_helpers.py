"""Register a served-model directory in an MLflow store, as training.register does."""

from __future__ import annotations

from pathlib import Path

from features.served_model import ServedModel


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
