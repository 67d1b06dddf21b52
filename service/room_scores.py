"""What RecommendNextProduct keeps of a room's last grid, so that the next call for the
same room scores only the rows that moved.

A room's grid is 2,000 viewers x 30 products = 60,000 rows, and running them through
the trees is most of the call's CPU. Between two calls a few seconds apart most
viewers did nothing, and the values that moved anyway (the time since a viewer's last
click, the stream's age, a product's counts in the room) mostly crossed no split of
the trees. A row whose every value stands at the same place among its feature's
thresholds as in the row scored before reaches the same leaf of every tree, so the
served graph gives it the same score bit for bit
(:class:`~features.served_model.BranchKeys`). Only the values whose bits changed are
searched, per viewer for the viewer's columns (the grid's lead, equal in all of a
viewer's rows) and per row for the rest; so the answer is the one the whole grid
scored again would give, at the cost of a comparison for the rows that did not move.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from features.served_model import BranchKeys


@dataclass(frozen=True, slots=True)
class RoomGrid:
    """A room's grid as last scored: read-only once kept."""

    #: Who scored it (a model swapped in starts again from nothing).
    model: object
    #: Viewer id -> its place among the grid's viewers.
    at: dict[str, int]
    products: int
    #: (viewers, lead): the viewers' columns, which lead each of their rows.
    lead: np.ndarray
    #: (viewers x products, features - lead): the rest of every row.
    rest: np.ndarray
    #: (viewers x products,): the served model's scores of the rows.
    scores: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.scores)


class RoomScores:
    """The last grid of each (room, candidates) asked, up to ``rows`` rows in all (least
    recently asked first out); 0 keeps none.

    Safe from several threads: a kept grid is never written, and two calls for one room
    at once each score against the grid they found; the later one's is kept.
    """

    def __init__(self, rows: int) -> None:
        self.capacity = rows
        self._grids: OrderedDict[Hashable, RoomGrid] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()
        #: Rows whose score was taken from the kept grid, and rows scored by the model
        #: (plain counts for metrics and the bench: concurrent calls may lose one).
        self.looked_up = 0
        self.scored = 0

    def get(self, key: Hashable, model: object) -> RoomGrid | None:
        """The grid kept for ``key`` if ``model`` scored it."""
        with self._lock:
            grid = self._grids.get(key)
            if grid is None or grid.model is not model:
                return None
            self._grids.move_to_end(key)
            return grid

    def put(
        self,
        key: Hashable,
        model: object,
        viewers: Sequence[str],
        X: np.ndarray,
        lead: int,
        scores: np.ndarray,
    ) -> None:
        """Keep ``X`` (the grid of ``viewers`` x the candidates, viewer-major, its first
        ``lead`` columns the viewers') and its ``scores`` as ``key``'s last grid."""
        n = len(scores)
        if not viewers or n > self.capacity or n % len(viewers):
            return
        products = n // len(viewers)
        grid = RoomGrid(
            model,
            {v: i for i, v in enumerate(viewers)},
            products,
            _frozen(X[::products, :lead]),
            _frozen(X[:, lead:]),
            _frozen(np.asarray(scores, dtype=np.float64)),
        )
        with self._lock:
            old = self._grids.pop(key, None)
            if old is not None:
                self._rows -= old.rows
            while self._grids and self._rows + n > self.capacity:
                _, dropped = self._grids.popitem(last=False)
                self._rows -= dropped.rows
            self._grids[key] = grid
            self._rows += n

    def scored_all(self, rows: int) -> None:
        """Count ``rows`` scored with no grid kept to look them up in."""
        self.scored += rows

    def moved(
        self,
        grid: RoomGrid,
        keys: BranchKeys,
        viewers: Sequence[str],
        part: np.ndarray,
        lead: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """For ``part`` (the grid rows of ``viewers``, viewer-major over the same
        candidates as ``grid``): which rows must be scored (bool per row: the viewer is
        new to the grid, or a value of the row moved to another place among the
        thresholds), and the kept scores of the others (NaN for the rows to score)."""
        nc = grid.products
        n = len(viewers)
        if part.shape[0] != n * nc:
            raise ValueError(f"part has {part.shape[0]} rows for {n} viewers x {nc} products")
        at = grid.at
        idx = np.fromiter((at.get(v, -1) for v in viewers), dtype=np.int64, count=n)
        known = np.flatnonzero(idx >= 0)
        need_at = np.ones((n, nc), dtype=bool)
        kept_at = np.full((n, nc), np.nan)
        if len(known):
            was = idx[known]
            rows = part.reshape(n, nc, part.shape[1])[known]
            moved = keys.moved(rows[:, 0, :lead], grid.lead[was], 0)[:, None] | keys.moved(
                rows[:, :, lead:], grid.rest.reshape(-1, nc, grid.rest.shape[1])[was], lead
            )
            need_at[known] = moved
            kept_at[known] = grid.scores.reshape(-1, nc)[was]
        need = need_at.ravel()
        kept = kept_at.ravel()
        kept[need] = np.nan
        scored = int(need.sum())
        self.scored += scored
        self.looked_up += len(need) - scored
        return need, kept


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # a copy: not a view that keeps the caller's matrix alive
    a.flags.writeable = False
    return a
