"""The model registry (MLflow champions, parity checks, the last good copy) and the
scores a served model keeps by branch key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.vector import CONVERSION, NEXT_PRODUCT
from service.models import SPECS, LoadedModel, MlflowSource, ModelRegistry
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL, ServiceSettings
from tests.service.fakes import FakeSource, LinearModel, write_artifact
from tests.service.registry_helpers import served_dir

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


def _next_product(tmp: Path, kept_rows: int) -> LoadedModel:
    from features.served_model import ServedModel

    served = ServedModel.load(served_dir(tmp / "served", NEXT_PRODUCT, seed=3))
    return LoadedModel(NEXT_PRODUCT_MODEL, "1", served, SPECS[NEXT_PRODUCT_MODEL], kept_rows)


def _carts_interval(model: LoadedModel) -> tuple[float, float]:
    """The widest interval between two split thresholds of ``carts`` in the served graph
    (the feature the trees use most)."""
    import onnx

    from features.served_model import BranchKeys

    graph = onnx.load(str(model.model.directory / "model.onnx"))  # type: ignore[attr-defined]
    per_feature = BranchKeys.split_thresholds(graph.graph, len(NEXT_PRODUCT.columns))
    assert per_feature is not None
    t = np.unique(per_feature[NEXT_PRODUCT.columns.index("carts")])
    assert len(t) >= 2
    i = int(np.argmax(np.diff(t)))
    return float(t[i]), float(t[i + 1])


def test_kept_scores_are_the_graphs_own_bits_and_only_rows_that_moved_are_scored(
    tmp_path: Path,
) -> None:
    model = _next_product(tmp_path, kept_rows=1024)
    kept = model.kept
    assert kept is not None
    rng = np.random.default_rng(7)
    X = rng.uniform(0, 3, size=(50, len(NEXT_PRODUCT.columns))).astype(np.float32)
    X[:, :40] = X[0, :40]  # one viewer's columns over 50 candidates
    X[3, 5] = np.nan

    def exact(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        p, keys = model.predict_kept(rows)
        assert np.array_equal(p, np.asarray(model.predict(rows), dtype=np.float64))
        top = [0, 3, 7]
        contrib = model.contributions_kept(rows[top], keys and [keys[i] for i in top])
        want = model.contributions(rows[top])
        assert contrib is not None and want is not None
        assert np.array_equal(contrib, want)
        return p, contrib

    first = exact(X)
    assert (kept.scored, kept.looked_up) == (50, 0)
    # The same rows again: nothing scored.
    assert np.array_equal(exact(X)[0], first[0])
    assert (kept.scored, kept.looked_up) == (50, 50)
    # Every value moved within its interval (the time moved, no split crossed): all kept.
    lo, hi = _carts_interval(model)
    carts = NEXT_PRODUCT.columns.index("carts")
    X[:, carts] = np.float32(lo + 0.3 * (hi - lo))
    exact(X)
    scored = kept.scored
    X[:, carts] = np.float32(lo + 0.6 * (hi - lo))
    exact(X)
    assert kept.scored == scored
    # One candidate's value crosses a split: that row alone is scored again.
    X[9, carts] = np.nextafter(np.float32(hi), np.float32(np.inf))
    exact(X)
    assert kept.scored == scored + 1
    # A small memory turns over and stays exact.
    small = _next_product(tmp_path / "small", kept_rows=8)
    for i in range(0, 50, 5):
        p, _ = small.predict_kept(X[i : i + 5])
        assert np.array_equal(p, np.asarray(model.predict(X[i : i + 5]), dtype=np.float64))
    p, _ = small.predict_kept(X)
    assert np.array_equal(p, np.asarray(model.predict(X), dtype=np.float64))


def test_nothing_is_kept_when_switched_off_or_for_a_model_without_branches(
    tmp_path: Path,
) -> None:
    off = _next_product(tmp_path, kept_rows=0)
    assert off.kept is None
    X = np.zeros((4, len(NEXT_PRODUCT.columns)), dtype=np.float32)
    p, keys = off.predict_kept(X)
    assert keys is None and np.array_equal(p, np.asarray(off.predict(X), dtype=np.float64))
    linear = LinearModel(NEXT_PRODUCT.columns, {"carts": 1.0}, 0.0)
    fake = LoadedModel(NEXT_PRODUCT_MODEL, "1", linear, SPECS[NEXT_PRODUCT_MODEL], 1024)
    assert fake.kept is None
    assert fake.predict_kept(X)[1] is None


def test_the_registry_keeps_scores_as_set(tmp_path: Path) -> None:
    registry = ModelRegistry(_settings(tmp_path), LinearModel.load, _source(tmp_path))
    loaded = registry._loaded(NEXT_PRODUCT_MODEL, "1", LinearModel(NEXT_PRODUCT.columns, {}, 0))
    assert loaded.kept_rows == ServiceSettings().score_kept_rows > 0
    off = ModelRegistry(
        ServiceSettings(data_dir=tmp_path / "data", models_dir=tmp_path / "m", score_kept_rows=0),
        LinearModel.load,
        _source(tmp_path),
    )
    other = off._loaded(CONVERSION_MODEL, "1", LinearModel(CONVERSION.columns, {}, 0))
    assert other.kept_rows == 0


def test_a_swap_carries_the_kept_rows_counts_over(tmp_path: Path) -> None:
    """``liverec_model_rows_total`` is a counter: a new version goes on from the old one's
    counts instead of starting again from nothing."""
    registry = ModelRegistry(_settings(tmp_path), LinearModel.load, _source(tmp_path))
    first = _next_product(tmp_path, kept_rows=64)
    assert first.kept is not None
    first.kept.looked_up, first.kept.scored = 7, 3
    registry._swap(first)
    second = _next_product(tmp_path / "2", kept_rows=64)
    assert second.kept is not None
    second.kept.scored = 1  # a call on the new version before the swap completed
    registry._swap(second)
    assert registry.get(NEXT_PRODUCT_MODEL) is second
    assert (second.kept.looked_up, second.kept.scored) == (7, 4)
