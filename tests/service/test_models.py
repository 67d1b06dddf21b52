"""The model registry: MLflow champions, parity checks, the last good copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.models import MlflowSource, ModelRegistry
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL, ServiceSettings
from tests.service.fakes import FakeSource, LinearModel, write_artifact

NAMES = (CONVERSION_MODEL, NEXT_PRODUCT_MODEL)


def _settings(tmp: Path) -> ServiceSettings:
    return ServiceSettings(data_dir=tmp / "data", models_dir=tmp / "models")


def _source(tmp: Path, broken: str | None = None) -> FakeSource:
    source = FakeSource()
    for name in NAMES:
        source.add(name, "5", write_artifact(tmp / "art" / name, name, broken=broken))
    return source


def test_start_from_the_last_good_copy_when_the_registry_is_unreachable(tmp_path: Path) -> None:
    first = ModelRegistry(_settings(tmp_path), LinearModel.load, _source(tmp_path))
    first.start()
    assert first.ready
    down = FakeSource()
    down.reachable = False
    second = ModelRegistry(_settings(tmp_path), LinearModel.load, down)
    second.start()
    assert second.ready
    assert {n: second.get(n).version for n in NAMES} == {n: "5" for n in NAMES}  # type: ignore[union-attr]


def test_processes_sharing_the_models_folder_keep_the_copy_in_place(tmp_path: Path) -> None:
    """``--workers N`` starts several processes on one ``models/``: a process arriving
    second uses the complete copy already there, never replaces it under the first (which
    may be reading it), and leaves no staging folder behind."""
    first = ModelRegistry(_settings(tmp_path), LinearModel.load, _source(tmp_path))
    first.start()
    folder = tmp_path / "models" / CONVERSION_MODEL
    saved = (folder / "5" / "version.json").read_text()
    in_use = folder / "5" / "in-use"
    in_use.write_text("the first process reads from here")
    (folder / ".5.partial-999999").mkdir()  # left by a process that died while staging
    second = ModelRegistry(_settings(tmp_path), LinearModel.load, _source(tmp_path))
    second.start()
    assert first.ready and second.ready
    assert in_use.exists() and (folder / "5" / "version.json").read_text() == saved
    assert [p.name for p in folder.glob(".*partial*")] == [".5.partial-999999"]


def test_without_registry_or_copy_nothing_is_served(tmp_path: Path) -> None:
    down = FakeSource()
    down.reachable = False
    registry = ModelRegistry(_settings(tmp_path), LinearModel.load, down)
    registry.start()
    assert not registry.ready
    assert registry.get(CONVERSION_MODEL) is None


@pytest.mark.parametrize("broken", ["parity", "load"])
def test_a_broken_champion_is_never_served_nor_kept(tmp_path: Path, broken: str) -> None:
    registry = ModelRegistry(_settings(tmp_path), LinearModel.load, _source(tmp_path, broken))
    registry.start()
    assert not registry.ready
    assert not (tmp_path / "models" / CONVERSION_MODEL / "current").exists()


def test_a_champion_whose_columns_differ_from_the_serving_spec_is_refused(tmp_path: Path) -> None:
    source = _source(tmp_path)
    (tmp_path / "art" / CONVERSION_MODEL / "spec.json").write_text('{"columns": ["a", "b"]}')
    registry = ModelRegistry(_settings(tmp_path), LinearModel.load, source)
    assert registry.poll()[CONVERSION_MODEL] == "refused"
    assert registry.poll()[NEXT_PRODUCT_MODEL] == "unchanged"


def test_champions_come_from_an_mlflow_registry(tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "runs").as_uri())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in NAMES:
        folder = write_artifact(tmp_path / "art" / name, name)
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(folder), artifact_path="served")
        client.create_registered_model(name)
        version = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/served", run_id=run.info.run_id
        )
        client.set_registered_model_alias(name, "champion", version.version)
    registry = ModelRegistry(_settings(tmp_path), LinearModel.load, MlflowSource(uri, "champion"))
    registry.start()
    assert registry.ready
    assert registry.get(CONVERSION_MODEL).version == "1"  # type: ignore[union-attr]
    assert (tmp_path / "models" / CONVERSION_MODEL / "1" / "model.onnx").exists()
    assert registry.poll() == {n: "unchanged" for n in NAMES}


def test_an_unreachable_mlflow_falls_back_to_the_last_good_copy(tmp_path: Path) -> None:
    ModelRegistry(_settings(tmp_path), LinearModel.load, _source(tmp_path)).start()
    gone = MlflowSource(f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}", "champion")
    registry = ModelRegistry(_settings(tmp_path), LinearModel.load, gone, registry_timeout_s=20)
    registry.start()
    assert registry.ready
    assert registry.get(NEXT_PRODUCT_MODEL).version == "5"  # type: ignore[union-attr]
    assert registry.poll()[NEXT_PRODUCT_MODEL].startswith("error")
    assert registry.get(NEXT_PRODUCT_MODEL).version == "5"  # type: ignore[union-attr]
