"""The parity gate: ONNX (with the calibrator in the graph) must reproduce LightGBM."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from features import served_model
from features.served_model import (
    BOOSTER_FILE,
    CALIBRATOR_FILE,
    MODEL_FILE,
    PARITY_FILE,
    SPEC_FILE,
    ParityError,
    ServedModel,
    download_served,
)
from features.vector import CONVERSION
from tests.training.conftest import Trained
from training import data, export, register


@pytest.fixture(scope="module")
def champion_dir(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("champion")
    return download_served(
        register.REGISTERED["conversion"], register.CHAMPION, tmp, trained.tracking_uri
    )


def test_served_directory_layout(champion_dir: Path) -> None:
    for name in (MODEL_FILE, CALIBRATOR_FILE, SPEC_FILE, PARITY_FILE, BOOSTER_FILE):
        assert (champion_dir / name).is_file(), name
    model = ServedModel.load(champion_dir)
    assert model.columns == list(CONVERSION.columns)
    assert model.feature_service == "conversion_v2"
    assert model.spec["exposure_window_min"] == 10
    with np.load(champion_dir / PARITY_FILE) as parity:
        assert np.isnan(parity["X"]).any(axis=1).sum() > 0, "parity sample needs NaN rows"
        assert 100 <= len(parity["X"]) <= 1000
    assert model.check_parity() <= 1e-5


def test_parity_gate_passes_on_the_whole_test_set(
    champion_dir: Path, conversion_set: data.TrainingSet
) -> None:
    model = ServedModel.load(champion_dir)
    te = conversion_set.part("test")
    test = conversion_set.frame.iloc[te]
    result = export.parity_gate(
        model,
        conversion_set.matrix(rows=te),
        test["room_id"].to_numpy(),
        test["point_id"].to_numpy(),
    )
    assert result.ok, result.reason
    assert result.nan_rows > 0 and result.max_abs_diff <= 1e-5


def _perturb_one_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    model = onnx.load(dst / MODEL_FILE)
    (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor"]
    for attr in node.attribute:
        if attr.name == "target_treeids":
            first_tree = np.asarray(attr.ints) == 0
        if attr.name == "target_weights":
            weights = np.asarray(attr.floats, dtype=np.float32)
    weights[first_tree] += np.float32(0.02)  # what a converter bug in one tree looks like
    for attr in node.attribute:
        if attr.name == "target_weights":
            del attr.floats[:]
            attr.floats.extend(weights.tolist())
    onnx.save(model, dst / MODEL_FILE)


def test_parity_gate_fails_for_a_perturbed_onnx_file(
    champion_dir: Path, conversion_set: data.TrainingSet, tmp_path: Path
) -> None:
    _perturb_one_tree(champion_dir, tmp_path / "bad")
    bad = ServedModel.load(tmp_path / "bad")
    te = conversion_set.part("test")
    test = conversion_set.frame.iloc[te]
    result = export.parity_gate(
        bad, conversion_set.matrix(rows=te), test["room_id"].to_numpy(), test["point_id"].to_numpy()
    )
    assert not result.ok
    assert "max |ONNX - LightGBM|" in result.reason
    with pytest.raises(ParityError):
        bad.check_parity()


def test_the_leaf_graph_reaches_lightgbms_leaves_and_a_disagreeing_one_is_refused(
    champion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ServedModel.load(champion_dir)
    with np.load(champion_dir / PARITY_FILE) as parity:
        X = parity["X"]
    leaves = model.explainer().leaves(X)
    assert np.array_equal(leaves, model.booster().predict(X, pred_leaf=True))
    assert np.isnan(X).any() and leaves.max() > 1

    # What a converter bug in the leaf graph looks like: one tree's leaves off by one.
    real = served_model._LeafReader.__call__

    def off_by_one(self: served_model._LeafReader, X: np.ndarray) -> np.ndarray:
        out = real(self, X)
        out[:, 0] = (out[:, 0] + 1) % (out[:, 0].max() + 1)
        return out

    monkeypatch.setattr(served_model._LeafReader, "__call__", off_by_one)
    with pytest.raises(ParityError, match="different leaves"):
        ServedModel.load(champion_dir).explainer()


def test_calibrator_is_in_the_graph(champion_dir: Path) -> None:
    model = onnx.load(champion_dir / MODEL_FILE)
    ops = [n.op_type for n in model.graph.node]
    assert ops[-3:-1] == ["Add", "Sigmoid"] or "Sigmoid" in ops
    a = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}["platt_a"]
    served = ServedModel.load(champion_dir)
    assert float(a) == pytest.approx(served.calibrator["a"], rel=1e-6)


def test_float32_thresholds_make_onnx_agree_on_adjacent_float32_values() -> None:
    # Feature values one float32 ulp apart: LightGBM's double threshold lies between
    # them, and rounding it to float32 naively sends one of the two the wrong way.
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1000, 400).astype(np.float32)
    x = np.concatenate([base, np.nextafter(base, np.float32(np.inf))])
    X = np.column_stack([x, rng.normal(size=len(x)).astype(np.float32)])
    X[::17, 1] = np.nan
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(X[:, 0] - 500) / 100))).astype(float)
    params = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 1, "num_leaves": 63}
    booster = export.float32_thresholds(lgb.train(params, lgb.Dataset(X, y), 50))
    calibrator = {"kind": "platt", "a": 1.3, "b": -0.2}
    sess_model = export.to_onnx(booster, calibrator, X.shape[1])
    import onnxruntime as ort

    sess = ort.InferenceSession(sess_model.SerializeToString())
    (got,) = sess.run(None, {"input": X})
    ref = 1 / (1 + np.exp(-(1.3 * booster.predict(X, raw_score=True) - 0.2)))
    assert np.max(np.abs(got - ref)) <= 1e-5


def test_misordered_groups_counts_true_swaps_not_near_ties() -> None:
    groups = np.array(["a", "a", "a", "b", "b"])
    ties = np.array(["p1", "p2", "p3", "p1", "p2"])
    expected = np.array([0.30, 0.20, 0.10, 0.5, 0.5 + 1e-7])
    same = expected.astype(np.float32).astype(np.float64)
    assert export.misordered_groups(same, expected, groups, ties) == 0
    swapped = same.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert export.misordered_groups(swapped, expected, groups, ties) == 1


def test_a_room_sized_batch_is_split_across_threads_with_the_same_answers(
    champion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past BULK_ROWS the rows are scored in parts at once: each row's answer is the one
    it gets alone (the room call sums them, so a difference would move its ranking)."""
    from features import served_model

    monkeypatch.setattr(served_model, "BULK_THREADS", 2)  # split even on a one-core machine

    model = ServedModel.load(champion_dir)
    with np.load(champion_dir / PARITY_FILE) as parity:
        sample = parity["X"]
    X = np.ascontiguousarray(np.resize(sample, (served_model.BULK_ROWS + 7, sample.shape[1])))
    whole = model.predict(X)
    chunks = np.concatenate([model.predict(X[i : i + 500]) for i in range(0, len(X), 500)])
    assert whole.shape == (len(X),)
    assert np.array_equal(whole, chunks)
    # Parts submitted to the model's threads (a room's grid, built part by part) too.
    parts = [(model.submit(X[i : i + 3000]), X[i : i + 3000]) for i in range(0, len(X), 3000)]
    assert len(parts) == 3
    assert np.array_equal(np.concatenate([model.collect(f, x) for f, x in parts]), whole)
    with pytest.raises(ValueError, match="features"):
        model.submit(X[:, :3])
