"""What RecommendNextProduct keeps of a room's last grid, so that the next call for the
same room walks only the rows, and only the trees, that moved.

A room's grid is 2,000 viewers x 30 products = 60,000 rows, and running them through
the trees is most of the call's CPU. The trees are scored in groups of consecutive trees
(:class:`~features.served_model.TreeGroups`), and each row's margin in each group is
kept. Between two calls, most of a room's viewers did nothing, and many values that
moved anyway (a viewer's idle seconds, a product's counts in the room) crossed no split.
A row whose every value stands on the same side of every split of a group's trees as
before reaches the same leaves of that group, so the group gives it the same margin bit
for bit: only the (row, group) pairs where a value crossed one of the group's splits
are walked again (:meth:`~features.served_model.BranchKeys.moved`). Only the values
whose bits changed are searched: per viewer for the viewer's columns (equal in all of a
viewer's rows), per product for the product's, and per row for the cross columns of the
viewers whose cross inputs changed (:meth:`RoomScores.cross_same`: the others' cross rows
are the kept ones, taken as they are). The answer is the one the whole grid walked again
through the same groups would give, bit for bit.

Why groups: a room column stands in every row, so when it crosses a split the whole grid
moves. On the bench (the room's viewers sending 2,000 events/s) the room's likes per
viewer did so in about one call in six, and each time it crossed a split of one or two
of the 156 trees: in groups of 12, those calls walk 10-19% of the grid's tree-rows
instead of all of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.served_model import BranchKeys
from features.vector import CROSS_PRODUCT_INPUTS, CROSS_VIEWER_INPUTS, GridBlocks, GridSources


@dataclass(frozen=True, slots=True)
class RoomGrid:
    """A room's grid as last scored: read-only once kept."""

    #: Who scored it (a model swapped in starts again from nothing).
    model: object
    #: Viewer id -> its place among the grid's viewers.
    at: dict[str, int]
    #: The grid's columns by their sources (read-only): each viewer's, each product's,
    #: each row's cross columns.
    blocks: GridBlocks
    #: (viewers x products, groups) float32: each row's margin in each group of trees.
    margins: np.ndarray
    #: What the cross columns were made of (:data:`~features.vector.CROSS_VIEWER_INPUTS`
    #: per viewer, in the grid's order; :data:`~features.vector.CROSS_PRODUCT_INPUTS`):
    #: a viewer whose inputs hold the same bits has the same cross rows.
    viewer_inputs: dict[str, np.ndarray] | None = None
    product_inputs: dict[str, np.ndarray] | None = None

    @property
    def rows(self) -> int:
        return len(self.margins)


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
        #: Of the calls that answered: rows taken whole from a kept grid, and rows walked
        #: through at least one group of trees; then the same in (row, group) pairs
        #: (plain counts for metrics and the bench: concurrent calls may lose one).
        self.looked_up = 0
        self.scored = 0
        self.groups_looked_up = 0
        self.groups_scored = 0

    def forget(self, model_name: str) -> None:
        """Drop every grid of a model called ``model_name`` (a new version was swapped in:
        the old one's grids would never match again, and they hold it in memory)."""
        with self._lock:
            for key in [k for k, g in self._grids.items() if _name(g.model) == model_name]:
                self._drop(key)

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
        blocks: GridBlocks,
        margins: np.ndarray,
        inputs: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
    ) -> None:
        """Keep ``blocks`` (the grid of ``viewers`` x the candidates) and its ``margins``
        (rows, groups) as ``key``'s last grid: kept as they are, not copied (the caller
        hands them over). ``inputs``: the viewer block (in the grid's order) and product
        block the cross columns were made of, whose
        :data:`~features.vector.CROSS_VIEWER_INPUTS` and
        :data:`~features.vector.CROSS_PRODUCT_INPUTS` are kept for :meth:`cross_same`."""
        n = len(margins)
        if (
            not viewers
            or not n
            or n > self.capacity
            or n != blocks.rows_count
            or len(blocks.viewers) != len(viewers)
        ):
            with self._lock:  # an older grid of this key would only grow staler
                self._drop(key)
            return
        nc = len(blocks.products)
        for kept in (blocks.viewers, blocks.products, blocks.cross):
            _frozen(kept, copy=False)
        grid = RoomGrid(
            model,
            {v: i for i, v in enumerate(viewers)},
            blocks,
            _frozen(np.asarray(margins, dtype=np.float32), copy=False),
            None if inputs is None else _inputs(inputs[0], CROSS_VIEWER_INPUTS, len(viewers)),
            None if inputs is None else _inputs(inputs[1], CROSS_PRODUCT_INPUTS, nc),
        )
        with self._lock:
            self._drop(key)
            while self._grids and self._rows + n > self.capacity:
                self._drop(next(iter(self._grids)))
            self._grids[key] = grid
            self._rows += n

    def _drop(self, key: Hashable) -> None:
        """Forget ``key``'s grid, if any (under the lock)."""
        old = self._grids.pop(key, None)
        if old is not None:
            self._rows -= old.rows

    def count(self, n: int, rows: int, pairs: int, groups: int) -> None:
        """Count a call's ``n`` rows, of which ``rows`` went through at least one group of
        trees, and ``pairs`` (row, group) pairs walked (of ``n`` x ``groups``)."""
        self.looked_up += n - rows
        self.scored += rows
        self.groups_looked_up += n * groups - pairs
        self.groups_scored += pairs

    @staticmethod
    def in_place(grid: RoomGrid, idx: np.ndarray) -> bool:
        """Whether the viewers at ``idx`` in ``grid`` (:meth:`positions`) are its viewers
        in its order: the usual call, where kept arrays are taken as they stand."""
        return len(idx) == len(grid.blocks.viewers) and bool((idx == np.arange(len(idx))).all())

    @staticmethod
    def positions(grid: RoomGrid, viewers: Sequence[str]) -> np.ndarray:
        """Each of ``viewers``' place in ``grid`` (-1: not in it)."""
        at = grid.at
        return np.fromiter((at.get(v, -1) for v in viewers), dtype=np.int64, count=len(viewers))

    @staticmethod
    def cross_same(
        grid: RoomGrid, idx: np.ndarray, viewers: Mapping[str, Any], products: Mapping[str, Any]
    ) -> np.ndarray:
        """Per viewer (at ``idx`` in ``grid``, -1: new), whether its cross rows are the
        kept ones bit for bit: the viewer block's (``viewers``, in the same order as
        ``idx``) cross inputs and the products' hold the same bits as when kept."""
        same = idx >= 0
        if grid.viewer_inputs is None or grid.product_inputs is None or not same.any():
            return np.zeros(len(idx), dtype=bool)
        nc = len(grid.blocks.products)
        now = _inputs(products, CROSS_PRODUCT_INPUTS, nc)
        if now is None or not all(
            _alike(now[k], grid.product_inputs[k]).all() for k in CROSS_PRODUCT_INPUTS
        ):
            return np.zeros(len(idx), dtype=bool)
        mine = _inputs(viewers, CROSS_VIEWER_INPUTS, len(idx))
        if mine is None:
            return np.zeros(len(idx), dtype=bool)
        known = np.flatnonzero(same)
        was = idx[known]
        ok = np.ones(len(known), dtype=bool)
        for k in CROSS_VIEWER_INPUTS:
            ok &= _alike(mine[k][known], grid.viewer_inputs[k][was])
        same[known] = ok
        return same

    @staticmethod
    def moved(
        grid: RoomGrid,
        keys: BranchKeys,
        idx: np.ndarray,
        lead: np.ndarray,
        sources: GridSources,
        products_moved: np.ndarray,
        cross_now: np.ndarray,
        cross_same: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """For the viewers at ``idx`` in ``grid`` (-1: new; :meth:`positions`), whose
        leading columns are ``lead`` (viewers, lead) and whose rows' cross columns are
        ``cross_now`` (viewer-major over the same candidates): which (row, group) pairs
        must be walked (rows x groups booleans: the viewer is new to the grid, or a value
        of the viewer's, of the product's (``products_moved``) or of the row's own crossed
        a split of the group's trees), and the kept margins of the others (NaN for those
        to walk). The cross rows of the viewers ``cross_same`` (:meth:`cross_same`) says
        are the kept ones are not compared."""
        nc, groups = grid.blocks.products.shape[0], keys.groups
        n = len(idx)
        if (
            lead.shape[0] != n
            or cross_now.shape[0] != n * nc
            or products_moved.shape != (nc, groups)
        ):
            raise ValueError(
                f"{lead.shape[0]} viewers' columns, {cross_now.shape[0]} cross rows and "
                f"{products_moved.shape} products moved for {n} viewers x {nc} products x "
                f"{groups} groups"
            )
        known = np.flatnonzero(idx >= 0)
        if not len(known):
            return (
                np.ones((n * nc, groups), dtype=bool),
                np.full((n * nc, groups), np.nan, dtype=np.float32),
            )
        was = idx[known]
        everyone = len(known) == n
        # The usual case: the same viewers in the same places as the kept grid.
        in_place = RoomScores.in_place(grid, idx)
        moved = (
            keys.moved(
                lead if everyone else lead[known],
                grid.blocks.viewers if in_place else grid.blocks.viewers[was],
                0,
            )[:, None, :]
            | products_moved
        )
        # Only the cross rows that may differ from the kept ones are compared.
        look = np.arange(len(known)) if cross_same is None else np.flatnonzero(~cross_same[known])
        if len(look):
            cross = cross_now.reshape(n, nc, -1)
            moved[look] |= keys.moved(
                cross[known[look]],
                grid.blocks.cross.reshape(-1, nc, len(sources.cross))[was[look]],
                sources.cross,
            )
        margins = grid.margins.reshape(-1, nc, groups)
        if in_place:
            need_at, kept_at = moved, margins.copy()
        elif everyone:
            need_at, kept_at = moved, margins[was]
        else:
            need_at = np.ones((n, nc, groups), dtype=bool)
            kept_at = np.full((n, nc, groups), np.nan, dtype=np.float32)
            need_at[known] = moved
            kept_at[known] = margins[was]
        need = need_at.reshape(n * nc, groups)
        kept = kept_at.reshape(n * nc, groups)
        kept[need] = np.nan
        return need, kept


def cross_of(X: np.ndarray, sources: GridSources) -> np.ndarray:
    """(rows, cross columns): the cross columns of grid rows ``X``, contiguous."""
    return X[:, sources.cross]


def _inputs(block: Mapping[str, Any], names: Sequence[str], n: int) -> dict[str, np.ndarray] | None:
    """Read-only copies of ``block``'s ``names`` (arrays of ``n`` rows); ``None`` if any
    is not such an array (nothing can then be said the same)."""
    out = {}
    for k in names:
        a = block.get(k)
        if not isinstance(a, np.ndarray) or a.ndim < 1 or len(a) != n:
            return None
        out[k] = _frozen(a)
    return out


def _alike(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row (first axis), whether ``a`` and ``b`` hold the same values: the same bits
    for numbers (-0.0 is not 0.0, NaN is NaN), equal objects otherwise."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return np.zeros(len(a), dtype=bool)
    if a.dtype.kind in "fiub":
        eq = a.view(np.dtype(f"u{a.dtype.itemsize}")) == b.view(np.dtype(f"u{b.dtype.itemsize}"))
    else:
        eq = np.asarray(a == b, dtype=bool)
    return eq.reshape(len(a), -1).all(axis=1) if eq.ndim > 1 else eq


def _frozen(a: np.ndarray, copy: bool = True) -> np.ndarray:
    if copy:
        a = np.array(a)  # a copy: not a view that keeps the caller's matrix alive
    a.flags.writeable = False
    return a


def _name(model: object) -> str | None:
    return getattr(model, "name", None)
