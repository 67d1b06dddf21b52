"""A room's last grid, kept so that the next call walks only the rows, and the groups of
trees, that moved."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from features.served_model import BranchKeys
from features.vector import GridBlocks, GridSources
from service.room_scores import RoomScores

# Features 0-1 lead every row (the viewer's), feature 2 is the product's, feature 3 the
# row's own (a cross column). Two groups of trees: each threshold is one group's split.
KEYS = BranchKeys(
    [
        np.array([0.0, 10.0], dtype=np.float32),
        np.array([5.0], dtype=np.float32),
        np.array([3.0], dtype=np.float32),
        np.array([1.0, 2.0], dtype=np.float32),
    ],
    [np.array([0, 1]), np.array([1]), np.array([0]), np.array([0, 1])],
)
SOURCES = GridSources(2, np.array([2]), np.array([3]))
MODEL = object()
PRODUCTS = [0.0, 4.0]  # the two products' own column
#: Row i's kept margins: i / 10 in group 0, 1 + i / 10 in group 1.
MARGINS = np.stack([np.arange(6.0) / 10, 1 + np.arange(6.0) / 10], axis=1).astype(np.float32)


def _grid(viewers: list[tuple[float, float]], cross: list[list[float]]) -> np.ndarray:
    """Viewer-major grid: each viewer's two values, the product's, then the row's own."""
    rows = [
        [*v, p, c]
        for v, own in zip(viewers, cross, strict=True)
        for p, c in zip(PRODUCTS, own, strict=True)
    ]
    return np.array(rows, dtype=np.float32)


def _blocks(X: np.ndarray, viewers: int) -> GridBlocks:
    """``X`` (viewer-major rows of ``viewers``) held by its sources."""
    nc = len(X) // viewers
    assert len(X) == nc * viewers
    return GridBlocks(SOURCES, 4, X[::nc, :2].copy(), X[:nc, [2]].copy(), X[:, [3]].copy())


def _put(
    rooms: RoomScores,
    key: object,
    model: object,
    viewers: list[str],
    X: np.ndarray,
    margins: np.ndarray | None = None,
    inputs: Any = None,
) -> None:
    if margins is None:
        margins = np.zeros((len(X), 2), dtype=np.float32)
    rooms.put(key, model, viewers, _blocks(X, len(viewers)), margins, inputs)


def _kept(capacity: int = 100) -> tuple[RoomScores, np.ndarray]:
    rooms = RoomScores(capacity)
    X = _grid([(1.0, 1.0), (5.0, 7.0), (20.0, 1.0)], [[0.5, 1.5], [1.5, 3.0], [0.0, 2.5]])
    _put(rooms, "room", MODEL, ["a", "b", "c"], X, MARGINS.copy())
    return rooms, X


def _moved(
    rooms: RoomScores, viewers: list[str], part: np.ndarray, same: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """What moved in ``part`` (rows of ``viewers`` x the two products) since the kept grid."""
    grid = rooms.get("room", MODEL)
    assert grid is not None
    products = KEYS.moved(part[:2, SOURCES.products], grid.blocks.products, SOURCES.products)
    at = rooms.positions(grid, viewers)
    lead = part.reshape(len(viewers), 2, -1)[:, 0, : SOURCES.lead]
    return rooms.moved(grid, KEYS, at, lead, SOURCES, products, part[:, SOURCES.cross], same)


def test_rows_that_did_not_move_take_their_kept_margins() -> None:
    rooms, X = _kept()
    grid = rooms.get("room", MODEL)
    assert grid is not None and grid.rows == 6 and grid.blocks.products.tolist() == [[0.0], [4.0]]
    need, kept = _moved(rooms, ["a", "b", "c"], X.copy())
    assert need.shape == (6, 2) and not need.any()
    assert np.array_equal(kept, MARGINS) and kept.dtype == np.float32
    # Values moved within their intervals (and -0.0 for 0.0) move nothing.
    near = _grid([(9.0, 2.0), (5.5, 6.0), (11.0, 4.0)], [[0.9, 1.9], [1.1, 9.0], [-0.0, 2.1]])
    near[1::2, 2] = 9.0  # the second product's column, still above its threshold
    need, _ = _moved(rooms, ["a", "b", "c"], near)
    assert not need.any()


def test_a_value_across_a_split_moves_its_rows_in_that_splits_group_only() -> None:
    rooms, X = _kept()
    moved = X.copy()
    moved[2:4, 1] = 5.0  # viewer b's second value onto group 1's threshold: b's rows
    moved[5, 3] = 1.5  # viewer c's second row, its own value across group 1's 2.0
    moved[0, 3] = 1.0  # viewer a's first row onto group 0's 1.0
    need, kept = _moved(rooms, ["a", "b", "c"], moved)
    assert need.tolist() == [
        [True, False],
        [False, False],
        [False, True],
        [False, True],
        [False, False],
        [False, True],
    ]
    assert np.array_equal(kept[~need], MARGINS[~need]) and np.isnan(kept[need]).all()
    # The first product's column across its split (group 0's): that product's row of
    # every viewer, in group 0.
    moved = X.copy()
    moved[0::2, 2] = 3.5
    need, _ = _moved(rooms, ["a", "b", "c"], moved)
    assert need[:, 0].tolist() == [True, False] * 3 and not need[:, 1].any()
    # A value across splits of both groups moves both.
    moved = X.copy()
    moved[4:6, 0] = -1.0  # c's first value from 20 to below 0: past 10 (g1) and 0 (g0)
    need, _ = _moved(rooms, ["a", "b", "c"], moved)
    assert need.tolist() == [[False, False]] * 4 + [[True, True]] * 2


def test_a_value_that_becomes_nan_moves_every_group_that_splits_on_its_feature() -> None:
    rooms, X = _kept()
    moved = X.copy()
    moved[0:2, 1] = np.nan  # viewer a's second value: feature 1 is split in group 1 alone
    moved[3, 3] = np.nan  # b's second row's own value: both groups split on feature 3
    need, _ = _moved(rooms, ["a", "b", "c"], moved)
    assert need.tolist() == [
        [False, True],
        [False, True],
        [False, False],
        [True, True],
        [False, False],
        [False, False],
    ]
    _put(rooms, "room", MODEL, ["a", "b", "c"], moved, MARGINS.copy())
    need, _ = _moved(rooms, ["a", "b", "c"], moved.copy())
    assert not need.any()  # NaN again is no move


def test_viewers_are_matched_by_id_and_new_ones_are_scored() -> None:
    rooms, X = _kept()
    # c, then a newcomer, then a: in another order than the kept grid.
    part = np.concatenate([X[4:6], _grid([(1.0, 1.0)], [[0.5, 1.5]]), X[0:2]])
    need, kept = _moved(rooms, ["c", "new", "a"], part)
    assert need.any(axis=1).tolist() == [False, False, True, True, False, False]
    assert need[2:4].all()  # a newcomer walks every group
    assert np.array_equal(kept[[0, 1, 4, 5]], MARGINS[[4, 5, 0, 1]])
    grid = rooms.get("room", MODEL)
    assert grid is not None
    at = rooms.positions(grid, ["c", "new", "a"])
    lead = part[::2, : SOURCES.lead]
    with pytest.raises(
        ValueError,
        match=r"3 viewers' columns, 6 cross rows and \(2,\) products moved for 3 viewers x "
        r"2 products x 2 groups",
    ):
        rooms.moved(grid, KEYS, at, lead, SOURCES, np.zeros(2, bool), part[:, 3:])
    with pytest.raises(ValueError, match=r"2 viewers' columns, 6 cross rows"):
        rooms.moved(grid, KEYS, at, lead[:2], SOURCES, np.zeros((2, 2), bool), part[:, 3:])


def test_a_grid_is_kept_for_the_model_that_scored_it_within_the_rows_allowed() -> None:
    rooms, X = _kept(capacity=12)
    assert rooms.get("room", object()) is None  # another model (a swap) starts again
    assert rooms.get("other", MODEL) is None
    _put(rooms, "second", MODEL, ["a", "b", "c"], X)
    assert rooms.get("room", MODEL) is not None  # 12 rows: both kept; "room" asked last
    _put(rooms, "third", MODEL, ["a", "b", "c"], X)
    assert rooms.get("second", MODEL) is None  # the least recently asked went out
    assert rooms.get("room", MODEL) is not None and rooms.get("third", MODEL) is not None
    # Kept as handed over (not copied), and read-only from then on.
    blocks = _blocks(X, 3)
    margins = np.zeros((6, 2), dtype=np.float32)
    rooms.put("fourth", MODEL, ["a", "b", "c"], blocks, margins)
    grid = rooms.get("fourth", MODEL)
    assert grid is not None and grid.blocks.cross is blocks.cross and grid.margins is margins
    for kept in (grid.blocks.viewers, grid.blocks.products, grid.blocks.cross, grid.margins):
        assert not kept.flags.writeable
    # Margins or viewers that are not the blocks' rows: nothing kept (nor an older grid).
    rooms.put("fourth", MODEL, ["a", "b", "c"], _blocks(X, 3), margins[:4])
    assert rooms.get("fourth", MODEL) is None
    rooms.put("fourth", MODEL, ["a", "b"], _blocks(X, 3), margins.copy())
    assert rooms.get("fourth", MODEL) is None
    # A grid larger than all that may be kept is not kept; 0 keeps nothing.
    _put(rooms, "big", MODEL, ["v"] * 13, np.zeros((13, 4), np.float32))
    assert rooms.get("big", MODEL) is None
    none = RoomScores(0)
    _put(none, "room", MODEL, ["a"], np.zeros((1, 4), np.float32))
    assert none.get("room", MODEL) is None
    # A grid too large to keep takes its key's older grid out (it would only grow staler).
    _put(rooms, "room", MODEL, ["v"] * 13, np.zeros((13, 4), np.float32))
    assert rooms.get("room", MODEL) is None
    _put(rooms, "room", MODEL, ["a", "b", "c"], X)
    assert rooms.get("room", MODEL) is not None and rooms.get("third", MODEL) is not None


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_a_models_grids_are_forgotten_when_a_version_is_swapped_in() -> None:
    rooms, X = _kept()
    other = _Named("liverec-conversion")
    swapped = _Named("liverec-next-product")
    _put(rooms, "by-other", other, ["a", "b", "c"], X)
    _put(rooms, "by-swapped", swapped, ["a", "b", "c"], X)
    rooms.forget("liverec-next-product")
    assert rooms.get("by-swapped", swapped) is None
    assert rooms.get("by-other", other) is not None
    # What was forgotten is free again: 100 rows hold the rest and 15 grids of 6 more.
    for k in range(15):
        _put(rooms, k, other, ["a", "b", "c"], X)
    assert rooms.get("by-other", other) is not None


def test_counts_are_the_rows_and_the_row_groups_walked() -> None:
    rooms = RoomScores(10)
    rooms.count(3, 2, 3, 2)  # 3 rows, 2 through a group, 3 (row, group) pairs walked
    rooms.count(4, 4, 8, 2)  # every pair walked
    rooms.count(0, 0, 0, 2)
    assert (rooms.looked_up, rooms.scored) == (1, 6)
    assert (rooms.groups_looked_up, rooms.groups_scored) == (3, 11)


def test_cross_rows_said_the_same_are_not_compared() -> None:
    rooms, X = _kept()
    grid = rooms.get("room", MODEL)
    assert grid is not None
    moved = X.copy()
    moved[5, 3] = 1.5  # c's second row's own value across group 1's 2.0
    need, _ = _moved(rooms, ["a", "b", "c"], moved)
    assert need[5].tolist() == [False, True]
    # Said the same (its inputs held the same bits): c's cross rows are not compared.
    same = np.array([True, True, True])
    need, _ = _moved(rooms, ["a", "b", "c"], moved, same)
    assert not need.any()
    need, _ = _moved(rooms, ["a", "b", "c"], moved, ~same)
    assert need[5].tolist() == [False, True]


def test_a_viewers_cross_rows_are_the_same_while_its_inputs_hold_the_same_bits() -> None:
    rooms = RoomScores(100)
    X = _grid([(1.0, 1.0), (5.0, 7.0), (20.0, 1.0)], [[0.5, 1.5], [1.5, 3.0], [0.0, 2.5]])
    viewers = {
        "region": np.array([0.0, 1.0, np.nan]),
        "_affinity": np.arange(6.0).reshape(3, 2),
        "avg_order_value_usd": np.array([10.0, 0.0, 30.0]),
        "_last_product": np.array(["p1", "", "p2"], dtype=object),
        "_last_step": np.array([1.0, 0.0, 2.0]),
        "_cart": np.array(["", "p1|p2", ""], dtype=object),
    }
    products = {
        "category": np.array([0.0, 1.0]),
        "_rates": np.ones((2, 3)),
        "mena_compliant": np.array([1.0, 0.0]),
        "discount_pct": np.array([0.0, 0.1]),
        "final_price_usd": np.array([5.0, 6.0]),
        "_product_id": np.array(["p1", "p2"], dtype=object),
    }
    _put(rooms, "room", MODEL, ["a", "b", "c"], X, MARGINS.copy(), (viewers, products))
    grid = rooms.get("room", MODEL)
    assert grid is not None
    # In another order, with a newcomer: the same bits are the same (NaN too).
    at = rooms.positions(grid, ["c", "new", "a", "b"])
    assert at.tolist() == [2, -1, 0, 1]
    order = [2, 0, 0, 1]

    def block(**changed: Any) -> dict[str, np.ndarray]:
        out = {k: v[order].copy() for k, v in viewers.items()}
        for k, (i, value) in changed.items():
            out[k][i] = value
        return out

    assert rooms.cross_same(grid, at, block(), products).tolist() == [True, False, True, True]
    # A viewer's input changed (-0.0 is not 0.0 here), or a row of its affinities.
    got = rooms.cross_same(grid, at, block(avg_order_value_usd=(3, -0.0)), products)
    assert got.tolist() == [True, False, True, False]
    got = rooms.cross_same(grid, at, block(_affinity=(0, [4.0, 9.0])), products)
    assert got.tolist() == [False, False, True, True]
    got = rooms.cross_same(grid, at, block(_cart=(2, "p2")), products)
    assert got.tolist() == [True, False, False, True]
    # A product's input changed: no viewer's rows are the same.
    changed = {**products, "final_price_usd": np.array([5.0, 6.5])}
    assert not rooms.cross_same(grid, at, block(), changed).any()
    # Inputs missing or not arrays of the viewers: nothing is said the same.
    assert not rooms.cross_same(grid, at, {**block(), "region": 1.0}, products).any()
    _put(rooms, "bare", MODEL, ["a", "b", "c"], X, MARGINS.copy())
    bare = rooms.get("bare", MODEL)
    assert bare is not None and not rooms.cross_same(bare, at, block(), products).any()


def test_the_same_viewers_in_the_same_places_are_compared_in_place_on_a_copy() -> None:
    """The usual call: every viewer where it stood. The kept margins come back as a copy
    the call may write (the kept grid stays read-only and unchanged), the same as when
    the viewers are matched one by one."""
    rooms, X = _kept()
    grid = rooms.get("room", MODEL)
    assert grid is not None and not grid.margins.flags.writeable
    moved = X.copy()
    moved[2:4, 0] = 6.0  # viewer b's first value moves between the splits at 0 and 10
    moved[4:6, 1] = 6.0  # viewer c's second value crosses 5 (a split of group 1)
    need, kept = _moved(rooms, ["a", "b", "c"], moved)
    assert need.tolist() == [[False, False]] * 4 + [[False, True]] * 2
    assert kept.flags.writeable and np.isnan(kept[need]).all()
    np.testing.assert_array_equal(kept[~need], MARGINS[~need])
    assert not np.shares_memory(kept, grid.margins)  # the kept grid is never written
    # Matched one by one (another order), each viewer's rows get the same answer.
    order = [2, 0, 1]

    def by_viewer(a: np.ndarray) -> np.ndarray:
        return a.reshape(3, 2, -1)[order].reshape(6, -1)

    need, kept = _moved(rooms, ["a", "b", "c"], moved)
    need2, kept2 = _moved(rooms, ["c", "a", "b"], by_viewer(moved))
    np.testing.assert_array_equal(need2, by_viewer(need))
    np.testing.assert_array_equal(kept2, by_viewer(kept))  # NaN where walked, in both
