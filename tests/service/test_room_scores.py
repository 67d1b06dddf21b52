"""A room's last grid, kept so that the next call scores only the rows that moved."""

from __future__ import annotations

import numpy as np
import pytest

from features.served_model import BranchKeys
from features.vector import GridSources
from service.room_scores import RoomScores, cross_of

# Features 0-1 lead every row (the viewer's), feature 2 is the product's, feature 3 the
# row's own (a cross column).
KEYS = BranchKeys(
    [
        np.array([0.0, 10.0], dtype=np.float32),
        np.array([5.0], dtype=np.float32),
        np.array([3.0], dtype=np.float32),
        np.array([1.0, 2.0], dtype=np.float32),
    ]
)
SOURCES = GridSources(2, np.array([2]), np.array([3]))
MODEL = object()
PRODUCTS = [0.0, 4.0]  # the two products' own column


def _grid(viewers: list[tuple[float, float]], cross: list[list[float]]) -> np.ndarray:
    """Viewer-major grid: each viewer's two values, the product's, then the row's own."""
    rows = [
        [*v, p, c]
        for v, own in zip(viewers, cross, strict=True)
        for p, c in zip(PRODUCTS, own, strict=True)
    ]
    return np.array(rows, dtype=np.float32)


def _put(
    rooms: RoomScores,
    key: object,
    model: object,
    viewers: list[str],
    X: np.ndarray,
    scores: np.ndarray,
) -> None:
    rooms.put(key, model, viewers, X, SOURCES, scores, cross_of(X, SOURCES))


def _kept(capacity: int = 100) -> tuple[RoomScores, np.ndarray]:
    rooms = RoomScores(capacity)
    X = _grid([(1.0, 1.0), (5.0, 7.0), (20.0, 1.0)], [[0.5, 1.5], [1.5, 3.0], [0.0, 2.5]])
    _put(rooms, "room", MODEL, ["a", "b", "c"], X, np.arange(6.0) / 10)
    return rooms, X


def _moved(rooms: RoomScores, viewers: list[str], part: np.ndarray) -> tuple[np.ndarray, ...]:
    grid = rooms.get("room", MODEL)
    assert grid is not None
    products = rooms.products_moved(grid, KEYS, part[:2], SOURCES)
    return rooms.moved(grid, KEYS, viewers, part, SOURCES, products, cross_of(part, SOURCES))


def test_rows_that_did_not_move_take_their_kept_scores() -> None:
    rooms, X = _kept()
    grid = rooms.get("room", MODEL)
    assert grid is not None and grid.rows == 6 and grid.products.tolist() == [[0.0], [4.0]]
    need, kept = _moved(rooms, ["a", "b", "c"], X.copy())
    assert not need.any() and kept.tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    # Values moved within their intervals (and -0.0 for 0.0) move nothing.
    near = _grid([(9.0, 2.0), (5.5, 6.0), (11.0, 4.0)], [[0.9, 1.9], [1.1, 9.0], [-0.0, 2.1]])
    near[1::2, 2] = 9.0  # the second product's column, still above its threshold
    need, _ = _moved(rooms, ["a", "b", "c"], near)
    assert not need.any()


def test_a_value_across_a_split_moves_the_rows_it_stands_in() -> None:
    rooms, X = _kept()
    moved = X.copy()
    moved[2:4, 1] = 5.0  # viewer b's second value onto its threshold: both of b's rows
    moved[5, 3] = 1.0  # viewer c's second row, its own value onto a threshold: that row
    need, kept = _moved(rooms, ["a", "b", "c"], moved)
    assert need.tolist() == [False, False, True, True, False, True]
    assert kept[~need].tolist() == [0.0, 0.1, 0.4] and np.isnan(kept[need]).all()
    # The first product's column across its split: that product's row of every viewer.
    moved = X.copy()
    moved[0::2, 2] = 3.5
    need, _ = _moved(rooms, ["a", "b", "c"], moved)
    assert need.tolist() == [True, False, True, False, True, False]


def test_viewers_are_matched_by_id_and_new_ones_are_scored() -> None:
    rooms, X = _kept()
    # c, then a newcomer, then a: in another order than the kept grid.
    part = np.concatenate([X[4:6], _grid([(1.0, 1.0)], [[0.5, 1.5]]), X[0:2]])
    need, kept = _moved(rooms, ["c", "new", "a"], part)
    assert need.tolist() == [False, False, True, True, False, False]
    assert kept[[0, 1, 4, 5]].tolist() == [0.4, 0.5, 0.0, 0.1]
    grid = rooms.get("room", MODEL)
    assert grid is not None
    with pytest.raises(ValueError, match="5 rows and \\(2,\\) products moved for 3 viewers"):
        rooms.moved(
            grid, KEYS, ["c", "new", "a"], part[:5], SOURCES, np.zeros(2, bool), part[:5, 3:]
        )


def test_a_grid_is_kept_for_the_model_that_scored_it_within_the_rows_allowed() -> None:
    rooms, X = _kept(capacity=12)
    assert rooms.get("room", object()) is None  # another model (a swap) starts again
    assert rooms.get("other", MODEL) is None
    _put(rooms, "second", MODEL, ["a", "b", "c"], X, np.zeros(6))
    assert rooms.get("room", MODEL) is not None  # 12 rows: both kept; "room" asked last
    _put(rooms, "third", MODEL, ["a", "b", "c"], X, np.zeros(6))
    assert rooms.get("second", MODEL) is None  # the least recently asked went out
    assert rooms.get("room", MODEL) is not None and rooms.get("third", MODEL) is not None
    # Kept as copies, read-only: the caller's matrix can be reused.
    grid = rooms.get("third", MODEL)
    assert grid is not None and not grid.cross.flags.writeable
    X[:] = 99.0
    assert grid.viewers[0].tolist() == [1.0, 1.0] and grid.cross[:, 0].tolist()[:2] == [0.5, 1.5]
    # A grid larger than all that may be kept is not kept; 0 keeps nothing.
    _put(rooms, "big", MODEL, ["v"] * 13, np.zeros((13, 4), np.float32), np.zeros(13))
    assert rooms.get("big", MODEL) is None
    none = RoomScores(0)
    _put(none, "room", MODEL, ["a"], np.zeros((1, 4), np.float32), np.zeros(1))
    assert none.get("room", MODEL) is None
    # A grid too large to keep takes its key's older grid out (it would only grow staler).
    _put(rooms, "room", MODEL, ["v"] * 13, np.zeros((13, 4), np.float32), np.zeros(13))
    assert rooms.get("room", MODEL) is None
    _put(rooms, "room", MODEL, ["a", "b", "c"], X, np.zeros(6))
    assert rooms.get("room", MODEL) is not None and rooms.get("third", MODEL) is not None


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_a_models_grids_are_forgotten_when_a_version_is_swapped_in() -> None:
    rooms, X = _kept()
    other = _Named("liverec-conversion")
    swapped = _Named("liverec-next-product")
    _put(rooms, "by-other", other, ["a", "b", "c"], X, np.zeros(6))
    _put(rooms, "by-swapped", swapped, ["a", "b", "c"], X, np.zeros(6))
    rooms.forget("liverec-next-product")
    assert rooms.get("by-swapped", swapped) is None
    assert rooms.get("by-other", other) is not None
    # What was forgotten is free again: 100 rows hold the rest and 15 grids of 6 more.
    for k in range(15):
        _put(rooms, k, other, ["a", "b", "c"], X, np.zeros(6))
    assert rooms.get("by-other", other) is not None


def test_counts_are_the_rows_of_answered_calls() -> None:
    rooms = RoomScores(10)
    rooms.counted(looked_up=5, scored=2)
    rooms.counted(looked_up=0, scored=6)
    assert (rooms.looked_up, rooms.scored) == (5, 8)
