"""The path explainer (exact decomposition of the margin, cheap per row) and the branch
keys (rows that take the same branches everywhere)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from features import served_model
from features.served_model import (
    PARITY_TOLERANCE,
    BranchKeys,
    ParityError,
    PathExplainer,
    ServedModel,
    TreeGroups,
)


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


def test_leaves_from_the_leaf_graph_are_lightgbms_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(served_model, "BULK_THREADS", 2)  # split even on a one-core machine
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1500, 4)).astype(np.float32)
    X[rng.uniform(size=X.shape) < 0.2] = np.nan
    y = np.nan_to_num(X[:, 0]) + rng.normal(size=1500) > 0
    booster = _fit(X, y, leaves=9, rounds=20)
    ex = PathExplainer(booster)
    expected = booster.predict(X[:300], pred_leaf=True)
    assert np.array_equal(ex.leaves(X[:300]), expected)
    assert np.array_equal(ex.leaves(X[:1]), expected[:1])
    # From BULK_LEAF_ROWS rows on, in row blocks on the bulk threads: the same leaves.
    assert len(X) >= served_model.BULK_LEAF_ROWS
    assert np.array_equal(ex.leaves(X), booster.predict(X, pred_leaf=True))
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


def test_branch_keys_place_each_value_among_its_features_thresholds() -> None:
    keys = BranchKeys(
        [np.array([1.0, 0.0, 1.0], dtype=np.float32), np.array([], dtype=np.float32)]
    )  # repeats, unsorted
    negative_nan = np.array([0xFFC00000], dtype=np.uint32).view(np.float32)[0]
    column = np.array(
        [negative_nan, -np.inf, -5.0, -0.0, 0.0, 0.5, 1.0, 2.0, np.inf, np.nan], dtype=np.float32
    )
    X = np.stack([column, np.zeros_like(column)], axis=1)
    got = keys(X[::-1])[::-1]  # no row's key depends on the others'
    # Feature 0's thresholds are -inf, 0, 1, +inf: 2 per threshold strictly below, +1 if equal.
    assert got[:, 0].tolist() == [0, 1, 2, 3, 3, 4, 5, 6, 7, 8]
    # Feature 1 (no split), past feature 0's 8 places: below -inf, -inf, numbers, +inf, NaN.
    assert keys(
        np.array([[0, -np.inf], [0, -7.0], [0, 3e38], [0, np.inf], [0, np.nan]], dtype=np.float32)
    )[:, 1].tolist() == [9, 10, 10, 11, 12]
    # Rows that differ only inside an interval (or by -0.0 against 0.0) share a key.
    rows = keys.rows(
        np.array([[0.25, 5.0], [0.75, -1.0], [-0.0, 1.0], [0.0, 2.0]], dtype=np.float32)
    )
    assert rows[0] == rows[1] and rows[2] == rows[3] and rows[0] != rows[2]
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        keys(np.zeros((3, 3), dtype=np.float32))


def test_branch_keys_search_a_column_alike_in_every_row_once_with_the_same_result() -> None:
    rng = np.random.default_rng(4)
    keys = BranchKeys([np.sort(rng.normal(size=k)).astype(np.float32) for k in (5, 0, 9, 3)])
    grid = rng.normal(size=(40, 4)).astype(np.float32)
    grid[:, [0, 2]] = grid[0, [0, 2]]  # one viewer's columns over 40 candidates
    grid[5, 3] = np.nan
    one_by_one = np.concatenate([keys(row[None, :]) for row in grid])
    assert np.array_equal(keys(grid), one_by_one)
    assert np.array_equal(keys(grid), keys(grid))  # the layout kept for the next call
    alike = np.repeat(grid[:1], 3, axis=0)
    assert np.array_equal(keys(alike), np.repeat(keys(grid[:1]), 3, axis=0))


def test_branch_keys_say_which_rows_moved_across_a_split_as_their_keys_do() -> None:
    rng = np.random.default_rng(5)
    thresholds = [np.sort(rng.normal(size=k)).astype(np.float32) for k in (6, 0, 4, 9)]
    keys = BranchKeys(thresholds)
    old = rng.normal(size=(500, 4)).astype(np.float32)
    old[rng.uniform(size=old.shape) < 0.05] = np.nan
    new = old.copy()
    # Values nudged (many within their interval, some across a threshold), values set on a
    # threshold, -0.0 for 0.0, NaN for a number and back.
    nudge = rng.uniform(size=old.shape) < 0.3
    new[nudge] += rng.normal(scale=0.05, size=int(nudge.sum())).astype(np.float32)
    new[7, 0] = thresholds[0][2]
    old[9, 2], new[9, 2] = 0.0, -0.0
    new[11, 3] = np.nan
    old[13, 3], new[13, 3] = np.nan, 0.5
    # Rows whose keys differ are the rows that moved, whatever the rows around them.
    expect = (keys(new) != keys(old)).any(axis=1)
    assert 0 < expect.sum() < len(old) and expect[7] and not expect[9] and expect[11]
    assert keys.moved(new, old).shape == (500, 1)
    assert np.array_equal(keys.moved(new, old)[:, 0], expect)
    assert not keys.moved(old, old.copy()).any()
    # Any leading shape; the last axis holds the features given (or a run from one).
    assert np.array_equal(
        keys.moved(new.reshape(50, 10, 4), old.reshape(50, 10, 4)), expect.reshape(50, 10, 1)
    )
    assert np.array_equal(
        keys.moved(new[:, 2:], old[:, 2:], 2)[:, 0], (keys(new) != keys(old))[:, 2:].any(axis=1)
    )
    assert keys.moved(new[:, :0], old[:, :0]).shape == (500, 1)
    picked = np.array([3, 0])
    assert np.array_equal(
        keys.moved(new[:, picked], old[:, picked], picked)[:, 0],
        (keys(new) != keys(old))[:, picked].any(axis=1),
    )
    with pytest.raises(ValueError, match="alike"):
        keys.moved(new, old[:, :3])
    with pytest.raises(ValueError, match=r"features \[2, 3, 4\] for 3 columns of 4"):
        keys.moved(new[:, :3], old[:, :3], 2)
    with pytest.raises(ValueError, match=r"features \[0\] for 2 columns"):
        keys.moved(new[:, :2], old[:, :2], np.array([0]))


def test_branch_keys_with_owners_say_which_groups_of_trees_each_row_moved_in() -> None:
    """Per group, a row moved if one of its values crossed one of that group's thresholds
    (the keys of the group's thresholds alone differ), or became NaN or stopped being
    one on a feature the group splits on."""
    rng = np.random.default_rng(9)
    groups = 3
    thresholds = [np.sort(rng.normal(size=k)).astype(np.float32) for k in (12, 0, 5, 9, 1)]
    owners = [rng.integers(0, groups, size=len(t)) for t in thresholds]
    thresholds[0][3] = thresholds[0][4]  # one threshold in two groups' trees
    keys = BranchKeys(thresholds, owners)
    assert keys.groups == groups
    old = rng.normal(size=(400, 5)).astype(np.float32)
    old[rng.uniform(size=old.shape) < 0.05] = np.nan
    new = old.copy()
    nudge = rng.uniform(size=old.shape) < 0.3
    new[nudge] += rng.normal(scale=0.1, size=int(nudge.sum())).astype(np.float32)
    new[rng.uniform(size=old.shape) < 0.02] = np.nan
    flip = np.isnan(old) & (rng.uniform(size=old.shape) < 0.3)
    new[flip] = 0.25
    new[3, 0] = thresholds[0][4]
    new[4, 3], new[5, 3], new[6, 2] = np.inf, -np.inf, np.inf  # past every threshold
    got = keys.moved(new, old)
    assert got.shape == (400, groups)
    zeros = np.zeros((1, 5), dtype=np.float32)
    assert not keys.moved(-zeros, zeros).any()  # -0.0 stands where 0.0 does
    for g in range(groups):
        # Independently: a value moved if, among group g's thresholds of its feature, the
        # count below it or the count equal to it changed; NaN against a number moves it
        # (if the group splits on the feature), NaN against NaN does not.
        expect = np.zeros(400, dtype=bool)
        for j, (t, o) in enumerate(zip(thresholds, owners, strict=True)):
            mine = t[o == g].astype(np.float64)
            a, b = new[:, j].astype(np.float64), old[:, j].astype(np.float64)
            below = (mine[None, :] < a[:, None]).sum(1) != (mine[None, :] < b[:, None]).sum(1)
            equal = (mine[None, :] == a[:, None]).sum(1) != (mine[None, :] == b[:, None]).sum(1)
            na, nb = np.isnan(a), np.isnan(b)
            moved = np.where(na | nb, (na != nb) & (len(mine) > 0), below | equal)
            expect |= moved
        assert np.array_equal(got[:, g], expect), g
    assert got[4].any() or got[5].any() or got[6].any()
    assert 0 < got.sum() < got.size and not keys.moved(old, old.copy()).any()
    # A feature no group splits on moves nothing, NaN or not.
    other = old.copy()
    other[:, 1] = np.where(np.isnan(old[:, 1]), 1.0, np.nan)
    assert not keys.moved(other, old).any()
    with pytest.raises(ValueError, match="feature 2: 1 owners for 5 thresholds"):
        BranchKeys(thresholds, [owners[0], owners[1], np.zeros(1), owners[3], owners[4]])
    with pytest.raises(ValueError, match="2 owner lists for 5 features"):
        BranchKeys(thresholds, owners[:2])
    # More groups than owners name (a group of trees without splits) answer too.
    assert BranchKeys(thresholds, owners, groups + 2).moved(new, old).shape == (400, groups + 2)
    with pytest.raises(ValueError, match=r"owners outside groups 0\.\.1"):
        BranchKeys(thresholds, owners, 2)


def _served(tmp: Path, X: np.ndarray, y: np.ndarray) -> ServedModel:
    from training.export import write_served

    booster = _fit(X, y, leaves=15, rounds=30)
    calibrator = {"kind": "platt", "a": 1.0, "b": 0.0, "in_graph": True}
    columns = [f"f{j}" for j in range(X.shape[1])]
    spec = {"model": "test", "feature_service": "test", "columns": columns}
    return ServedModel.load(write_served(tmp, booster, calibrator, spec, X[:64]))


def _small_served(tmp: Path, seed: int) -> tuple[ServedModel, Any]:
    """A served model of 3 features (30 trees) and its ONNX graph as written."""
    import onnx

    X = np.random.default_rng(seed).normal(size=(500, 3)).astype(np.float32)
    model = _served(tmp, X, X[:, 0] > 0)
    return model, onnx.load(str(tmp / "model.onnx"))


def _twins(keys: BranchKeys, thresholds: list[np.ndarray], X: np.ndarray, rng: Any) -> np.ndarray:
    """Each value moved to another value of its interval (a threshold stays put)."""
    out = X.copy()
    for j, t in enumerate(thresholds):
        edges = np.concatenate([[-np.inf], np.unique(t), [np.inf]]).astype(np.float64)
        x = X[:, j].astype(np.float64)
        at = np.isin(x, edges) | np.isnan(x)
        i = np.searchsorted(edges, x[~at])
        lo, hi = np.maximum(edges[i - 1], -1e6), np.minimum(edges[i], 1e6)
        moved = lo + (hi - lo) * rng.uniform(0.01, 0.99, size=len(i))
        moved32 = moved.astype(np.float32)
        # float32 rounding may land on an edge: keep those values as they were.
        inside = (moved32 > edges[i - 1]) & (moved32 < edges[i])
        col = out[:, j]
        col[np.flatnonzero(~at)[inside]] = moved32[inside]
    return out


def test_rows_with_equal_branch_keys_score_and_explain_the_same_bits(tmp_path: Path) -> None:
    """What KeptScores relies on: equal keys, same leaves in the served graph and in the
    explainer's leaf graph, so the same score and contributions; a value moved across a
    threshold moves the key."""
    import onnx

    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 5)).astype(np.float32)
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    y = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2]) > 0.3
    model = _served(tmp_path, X, y)
    keys = model.branch_keys()
    assert keys is not None
    graph = onnx.load(str(tmp_path / "model.onnx"))
    thresholds = BranchKeys.split_thresholds(graph.graph, 5)
    assert thresholds is not None
    # Rows on the thresholds themselves, next to them, at the infinities, and -0.0.
    rows = X[:400].copy()
    assert sum(len(t) > 0 for t in thresholds) >= 3
    for j, t in enumerate(thresholds):
        if not len(t):
            continue
        picks = rng.choice(t, size=100)
        rows[:100, j] = picks
        rows[100:200, j] = np.nextafter(picks, np.float32(np.inf))
    rows[200:210] = np.inf
    rows[210:220] = -np.inf
    rows[220:230] = -0.0
    twins = _twins(keys, thresholds, rows, rng)
    assert (twins != rows).any(axis=1).mean() > 0.5
    assert keys.rows(twins) == keys.rows(rows)
    explainer = model.explainer()
    assert np.array_equal(model.predict(twins), model.predict(rows))
    assert np.array_equal(explainer.leaves(twins), explainer.leaves(rows))
    assert np.array_equal(explainer.contributions(twins), explainer.contributions(rows))
    # One value of a row moved onto the other side of a threshold: another key.
    j = int(np.argmax([len(t) for t in thresholds]))
    t = np.sort(thresholds[j])[len(thresholds[j]) // 2]
    below, above = rows[:2].copy(), rows[:2].copy()
    below[:, j], above[:, j] = t, np.nextafter(t, np.float32(np.inf))
    assert keys.rows(below)[0] != keys.rows(above)[0]


def test_no_branch_keys_for_a_graph_that_reads_its_input_other_than_by_splits(
    tmp_path: Path,
) -> None:
    from onnx import helper

    model, graph = _small_served(tmp_path, seed=6)
    assert BranchKeys.of_graphs([graph], 3) is not None
    found = BranchKeys.split_thresholds(graph.graph, 3)
    assert found is not None and sum(len(t) for t in found) > 0
    graph.graph.node.append(helper.make_node("Abs", ["input"], ["input_abs"]))
    assert BranchKeys.of_graphs([graph], 3) is None
    assert BranchKeys.split_thresholds(graph.graph, 3) is None
    assert model.branch_keys() is not None


def test_branch_keys_take_a_byte_a_feature_then_two() -> None:
    few = BranchKeys([np.arange(125, dtype=np.float32), np.zeros(1, dtype=np.float32)])
    # Feature 1's places (254-260) wrap past a byte and stay apart.
    column = np.array([-np.inf, -1.0, 0.0, 1.0, np.inf, np.nan], dtype=np.float32)
    wrapped = few(np.stack([np.zeros_like(column), column], axis=1))[:, 1]
    assert wrapped.tolist() == [255, 0, 1, 2, 3, 4]
    many = BranchKeys([np.arange(126, dtype=np.float32)])
    assert few(np.zeros((2, 2), dtype=np.float32)).dtype == np.uint8
    assert len(few.rows(np.zeros((3, 2), dtype=np.float32))[0]) == 2
    # 126 thresholds and the infinities: positions up to 256, past a byte.
    values = np.array([[126.0], [np.nan]], dtype=np.float32)
    assert many(values).dtype == np.uint16 and many(values)[:, 0].tolist() == [254, 256]


def test_a_part_no_thread_has_started_is_scored_by_the_caller(tmp_path: Path) -> None:
    """A room's parts wait in the bulk threads' queue; whoever collects one that no thread
    has started scores it itself instead of waiting behind other calls' parts."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(600, 4)).astype(np.float32)
    model = _served(tmp_path, X, X[:, 0] > 0)
    release = threading.Event()
    busy = [served_model.bulk_pool().submit(release.wait) for _ in range(8)]
    try:
        queued = model.submit(X[:100])
        out: dict[str, np.ndarray] = {}
        caller = threading.Thread(target=lambda: out.update(got=model.collect(queued, X[:100])))
        caller.start()
        caller.join(10.0)
        assert not caller.is_alive()  # answered while every bulk thread is held
        assert queued.cancelled()
        got = out["got"]
        assert np.array_equal(got, model.predict(X[:100]))
    finally:
        release.set()
    assert all(f.result() for f in busy)
    started = model.submit(X[:100])
    started.result()
    assert np.array_equal(model.collect(started, X[:100]), got)  # done on its thread


def test_tree_groups_score_as_the_served_graph_and_each_group_alike_rows_alike(
    tmp_path: Path,
) -> None:
    """The served trees in groups: the same probabilities as the one-ensemble graph (to
    float32 rounding), each group's margins the same bits for a row alone or in any
    batch, and a row whose values moved without crossing a group's splits keeps its
    margin in that group bit for bit (what a room's kept grid relies on)."""
    rng = np.random.default_rng(10)
    X = rng.normal(size=(3000, 5)).astype(np.float32)
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    y = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2]) > 0.3
    model = _served(tmp_path, X, y)
    rows = X[:500]
    for size in (1, 4, 7, 30, 100):
        groups = model.tree_groups(size)
        assert groups.groups == -(-30 // size)
        assert groups.group_of.tolist() == [t // size for t in range(30)]
        got = groups.predict(rows)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, model.predict(rows), rtol=0, atol=1e-6)
        np.testing.assert_allclose(got, model.reference(rows), rtol=0, atol=PARITY_TOLERANCE)
    groups = model.tree_groups(4)
    margins = groups.all_margins(rows)
    assert margins.shape == (500, 8) and margins.dtype == np.float32
    picked = rng.choice(500, size=37, replace=False)
    for g in range(groups.groups):
        alone = np.concatenate([groups.margins(rows[i : i + 1], g) for i in picked[:5]])
        assert np.array_equal(alone, margins[picked[:5], g])
    # Walked on a bulk thread, some (row, group) pairs only: those are filled in.
    need = rng.uniform(size=(37, 8)) < 0.4
    need[:, 2] = True
    need[:, 5] = False
    out = np.full((37, 8), np.nan, dtype=np.float32)
    future = groups.submit(rows[picked], need, out)
    assert groups.collect(future, rows[picked], need, out) is out
    assert np.array_equal(out[need], margins[picked][need]) and np.isnan(out[~need]).all()
    with pytest.raises(ValueError, match=r"out must be float32 \(37, 8\)"):
        groups.submit(rows[picked], need, out[:, :3])
    # Values moved: within their intervals of every split, or across some.
    import onnx

    thresholds = BranchKeys.split_thresholds(onnx.load(str(tmp_path / "model.onnx")).graph, 5)
    assert thresholds is not None
    moved = _twins(groups.keys, thresholds, rows, rng)
    crossed = rng.uniform(size=rows.shape) < 0.02
    moved[crossed] = rng.normal(size=int(crossed.sum())).astype(np.float32)
    walk = groups.keys.moved(moved, rows)
    assert 0 < walk.sum() < walk.size
    again = groups.all_margins(moved)
    assert np.array_equal(again[~walk], margins[~walk])
    assert (again[walk] != margins[walk]).any()  # some moves do change a group's margin
    # Kept margins and walked ones put together: the whole graph's answer, bit for bit.
    mixed = np.where(walk, again, margins)
    assert np.array_equal(groups.probability(mixed), groups.predict(moved))
    with pytest.raises(ValueError, match=r"expected \(n, 8\) margins"):
        groups.probability(margins[:, :3])
    with pytest.raises(ValueError, match="at least 1"):
        model.tree_groups(0)


def test_tree_groups_refuse_a_graph_of_another_shape_and_a_failed_parity(
    tmp_path: Path,
) -> None:
    import onnx
    from onnx import helper

    model, graph = _small_served(tmp_path, seed=11)
    assert TreeGroups(graph, 3, 5).groups == 6
    no_sigmoid = onnx.load(str(tmp_path / "model.onnx"))
    nodes = [n for n in no_sigmoid.graph.node if n.op_type != "Sigmoid"]
    del no_sigmoid.graph.node[:]
    no_sigmoid.graph.node.extend(nodes)
    with pytest.raises(ValueError, match="not a Platt calibration"):
        TreeGroups(no_sigmoid, 3, 5)
    graph.graph.node.append(helper.make_node("Abs", ["input"], ["input_abs"]))
    with pytest.raises(ValueError, match="not read by one tree ensemble alone"):
        TreeGroups(graph, 3, 5)
    with np.load(tmp_path / "parity.npz") as parity:
        saved = {k: parity[k] for k in parity.files}
    saved["expected"] = saved["expected"] + 1e-3
    np.savez(tmp_path / "parity.npz", **saved)
    with pytest.raises(ParityError, match="in groups of 5 trees differs from LightGBM"):
        model.tree_groups(5)
