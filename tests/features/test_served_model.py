"""The path explainer: exact decomposition of the margin, cheap per row."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from features.served_model import PathExplainer


def test_path_contributions_add_up_to_the_margin_and_track_shap() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 6)).astype(np.float32)
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    y = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) ** 2 + rng.normal(size=4000) > 0.8
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": 15,
            "verbose": -1,
            "deterministic": True,
            "num_threads": 1,
            "seed": 1,
        },
        lgb.Dataset(X, y.astype(int)),
        num_boost_round=40,
    )
    ex = PathExplainer(booster)
    # The splits counted per feature are LightGBM's own count.
    assert np.array_equal(ex.splits, booster.feature_importance("split"))
    rows = X[:300]
    contrib = ex.contributions(rows)
    margin = booster.predict(rows, raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1) + ex.bias, margin, atol=1e-9)
    # The features that matter get the weight, as with TreeSHAP.
    shap = np.asarray(booster.predict(rows, pred_contrib=True))[:, :-1]
    assert np.argmax(np.abs(contrib).mean(0)) == np.argmax(np.abs(shap).mean(0)) == 0
    assert np.abs(contrib[:, 2:]).mean() < 0.2 * np.abs(contrib[:, :2]).mean()
    corr = np.corrcoef(contrib[:, 0], shap[:, 0])[0, 1]
    assert corr > 0.9
    # Summed over a room by leaf counts: the same as summing the rows.
    np.testing.assert_allclose(ex.total(rows), contrib.sum(axis=0), rtol=1e-9, atol=1e-9)
    # Several groups in one leaf prediction: each group's own sum.
    group = np.arange(len(rows)) % 3
    per_group = ex.totals(rows, group, 3)
    for g in range(3):
        want = contrib[group == g].sum(axis=0)
        np.testing.assert_allclose(per_group[g], want, rtol=1e-9, atol=1e-9)
    assert ex.totals(rows[:0], group[:0], 2).shape == (2, rows.shape[1])


def _fit(X: np.ndarray, y: np.ndarray, leaves: int, rounds: int) -> lgb.Booster:
    params = {"objective": "binary", "num_leaves": leaves, "verbose": -1, "num_threads": 1}
    return lgb.train({**params, "seed": 1}, lgb.Dataset(X, y.astype(int)), num_boost_round=rounds)


def test_contributions_of_many_rows_are_the_same_bits_as_of_few() -> None:
    """Each cell sums its path entries tree by tree, however many rows: the same bits."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 5)).astype(np.float32)
    y = X[:, 0] + rng.normal(size=2000) > 0
    booster = _fit(X, y, leaves=7, rounds=30)
    ex = PathExplainer(booster)
    rows = X[:500]
    many = ex.contributions(rows)
    few = np.concatenate([ex.contributions(rows[i : i + 10]) for i in range(0, len(rows), 10)])
    assert np.array_equal(many, few)


def test_leaves_from_the_leaf_graph_are_lightgbms_own() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1500, 4)).astype(np.float32)
    X[rng.uniform(size=X.shape) < 0.2] = np.nan
    y = np.nan_to_num(X[:, 0]) + rng.normal(size=1500) > 0
    booster = _fit(X, y, leaves=9, rounds=20)
    ex = PathExplainer(booster)
    expected = booster.predict(X[:300], pred_leaf=True)
    assert np.array_equal(ex.leaves(X[:300]), expected)
    assert np.array_equal(ex.leaves(X[:1]), expected[:1])
    with pytest.raises(ValueError, match="features"):
        ex.leaves(X[:, :3])


def test_sparse_contributions_equal_the_dense_leaf_table() -> None:
    """The per-leaf path entries, summed, are the table's whole leaf vectors."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    y = X[:, 0] * X[:, 3] + rng.normal(size=3000) > 0
    booster = _fit(X, y, leaves=31, rounds=25)
    ex = PathExplainer(booster)
    rows = X[:50]
    leaves = np.asarray(booster.predict(rows, pred_leaf=True), dtype=np.int64)
    dense = ex.table[np.arange(leaves.shape[1])[None, :], leaves].sum(axis=1)
    np.testing.assert_allclose(ex.contributions(rows), dense, rtol=1e-12, atol=1e-12)
    assert ex.contributions(rows[:0]).shape == (0, 8)
