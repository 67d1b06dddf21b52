"""Feature-vector assembly: the fast grid path equals the row-by-row definition."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from features import schema
from features.markets import MARKETS
from features.tables import PRODUCT_STATS
from features.vector import (
    CONVERSION,
    CROSS_PRODUCT_INPUTS,
    CROSS_VIEWER_INPUTS,
    EXPOSURE_OVERLAY,
    EXPOSURE_STAGE,
    NEXT_PRODUCT,
    VIEWER_NOW_COLUMNS,
    assemble,
    assemble_grid,
    assemble_viewers,
    cross_block,
    grid_blocks,
    grid_sources,
    local_hour,
    pack_static,
    product_block,
    stack_static,
    viewer_at,
    viewer_block,
    viewer_live,
    viewer_now,
    viewer_static,
)
from tests.features.helpers import conversion_columns, epoch, pit_join


def _room_frames(world: Path) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    pts = schema.read_table("scoring_points", world).to_pandas()
    room = pts["room_id"].value_counts().idxmax()
    pts = pts[pts["room_id"] == room]
    at = pts["point_time"].median()
    viewers = pts.drop_duplicates("viewer_id").assign(point_time=at)
    vcols = conversion_columns(viewers, world / "features")
    streams = schema.read_table("streams", world).to_pandas().set_index("room_id")
    lineup = [*list(streams.loc[room, "lineup"]), "p_unknown"]
    ent = pd.DataFrame({"product_id": lineup, "room_id": room, "ts": at})
    pcols = pit_join(ent, PRODUCT_STATS.name, world / "features")
    pcols = pcols.join(pit_join(ent, "product_live", world / "features").filter(like="__"))
    return (
        vcols.reset_index(drop=True),
        pcols.reset_index(drop=True),
        float(epoch(pd.Series([at]))[0]),
    )


def test_grid_equals_row_by_row_assembly(tiny_world: Path) -> None:
    vcols, pcols, now = _room_frames(tiny_world)
    nv, npr = len(vcols), len(pcols)
    assert nv >= 3 and npr >= 5
    grid = assemble_grid(
        NEXT_PRODUCT,
        viewer_block({c: vcols[c].to_numpy() for c in vcols.columns}, now),
        product_block({c: pcols[c].to_numpy() for c in pcols.columns}, now),
    )
    rows = vcols.loc[np.repeat(np.arange(nv), npr)].reset_index(drop=True)
    prod = pcols.loc[np.tile(np.arange(npr), nv)].reset_index(drop=True)
    both = pd.concat([rows, prod.drop(columns=["room_id"], errors="ignore")], axis=1)
    both = both.loc[:, ~both.columns.duplicated()]
    explicit = assemble(NEXT_PRODUCT, {c: both[c].to_numpy() for c in both.columns}, now)
    np.testing.assert_array_equal(grid, explicit)
    # The viewer part is exactly the conversion model's vector.
    conv = assemble(CONVERSION, {c: vcols[c].to_numpy() for c in vcols.columns}, now)
    np.testing.assert_array_equal(grid[::npr, : len(CONVERSION.columns)], conv)
    # Something non-trivial was compared: cross features vary across the grid.
    j = NEXT_PRODUCT.columns.index("affinity_to_category")
    assert np.unique(grid[:, j][~np.isnan(grid[:, j])]).size > 3
    assert 0 < grid[:, NEXT_PRODUCT.columns.index("in_cart")].sum() < nv * npr


def test_a_grids_columns_come_from_the_viewer_the_product_or_the_pair(tiny_world: Path) -> None:
    """What RecommendNextProduct's kept room grids compare: a viewer's columns once per
    viewer, a product's once per product, the cross columns row by row."""
    vcols, pcols, now = _room_frames(tiny_world)
    viewers = viewer_block({c: vcols[c].to_numpy() for c in vcols.columns}, now)
    products = product_block({c: pcols[c].to_numpy() for c in pcols.columns}, now)
    nv, npr = len(vcols), len(pcols)
    src = grid_sources(NEXT_PRODUCT)
    cross = cross_block(viewers, products, 0.0, grid=True)
    assert [NEXT_PRODUCT.columns[j] for j in src.cross] == [
        c for c in NEXT_PRODUCT.columns if c in cross
    ]
    assert sorted([*range(src.lead), *src.products, *src.cross]) == list(
        range(len(NEXT_PRODUCT.columns))
    )
    grid = assemble_grid(NEXT_PRODUCT, viewers, products).reshape(nv, npr, -1)
    lead = grid[:, :, : src.lead]
    np.testing.assert_array_equal(lead, np.broadcast_to(lead[:, :1], lead.shape))
    own = grid[:, :, src.products]
    np.testing.assert_array_equal(own, np.broadcast_to(own[:1], own.shape))
    for k, j in enumerate(src.products):
        name = NEXT_PRODUCT.columns[j]
        np.testing.assert_array_equal(own[0, :, k], products[name].astype(np.float32))
    with pytest.raises(ValueError, match="conversion: no grid"):
        grid_sources(CONVERSION)


def test_a_grid_is_written_into_a_part_of_a_larger_matrix_as_built_alone(
    tiny_world: Path,
) -> None:
    """A room's grid is built viewers part by part into one matrix (RecommendNextProduct
    scores each part while it builds the next): each part is the grid of its viewers."""
    vcols, pcols, now = _room_frames(tiny_world)
    viewers = viewer_block({c: vcols[c].to_numpy() for c in vcols.columns}, now)
    products = product_block({c: pcols[c].to_numpy() for c in pcols.columns}, now)
    nv, npr = len(vcols), len(pcols)
    whole = assemble_grid(NEXT_PRODUCT, viewers, products)
    out = np.full((nv * npr + 3, len(NEXT_PRODUCT.columns)), -7.0, dtype=np.float32)
    for a, b in ((0, 1), (1, nv)):
        part = {k: v[a:b] if np.ndim(v) and len(v) == nv else v for k, v in viewers.items()}
        into = out[a * npr : b * npr]
        assert assemble_grid(NEXT_PRODUCT, part, products, out=into) is into  # in place
    np.testing.assert_array_equal(out[: nv * npr], whole)
    assert (out[nv * npr :] == -7.0).all()  # nothing written past the grid
    for bad in (out[:5], out[: nv * npr].astype(np.float64), np.asfortranarray(whole)):
        with pytest.raises(ValueError, match="out must be"):
            assemble_grid(NEXT_PRODUCT, viewers, products, out=bad)


def test_a_grid_held_by_its_sources_makes_the_rows_and_columns_of_the_grid(
    tiny_world: Path,
) -> None:
    """RecommendNextProduct holds a room's grid as blocks (each viewer's columns, each
    product's, the cross rows) and makes only the rows it walks: the same bits as the
    grid assembled whole, in any order, and each product's columns over its viewers."""
    vcols, pcols, now = _room_frames(tiny_world)
    viewers = viewer_block({c: vcols[c].to_numpy() for c in vcols.columns}, now)
    products = product_block({c: pcols[c].to_numpy() for c in pcols.columns}, now)
    nv, npr = len(vcols), len(pcols)
    whole = assemble_grid(NEXT_PRODUCT, viewers, products, EXPOSURE_STAGE)
    blocks = grid_blocks(NEXT_PRODUCT, viewers, products, EXPOSURE_STAGE)
    assert blocks.rows_count == nv * npr
    every = np.arange(nv * npr)
    assert blocks.rows(every).dtype == np.float32
    np.testing.assert_array_equal(blocks.rows(every), whole)
    some = np.random.default_rng(3).permutation(nv * npr)[: nv * npr // 2]
    np.testing.assert_array_equal(blocks.rows(some), whole[some])
    assert blocks.rows(every[:0]).shape == (0, len(NEXT_PRODUCT.columns))
    for j in range(len(NEXT_PRODUCT.columns)):
        for p in (0, npr - 1):
            np.testing.assert_array_equal(blocks.column(j, p), whole[p::npr, j], err_msg=str(j))
    # The cross rows given (as a room keeps them) are taken as they are.
    src = grid_sources(NEXT_PRODUCT)
    given = grid_blocks(NEXT_PRODUCT, viewers, products, EXPOSURE_STAGE, whole[:, src.cross])
    np.testing.assert_array_equal(given.rows(every), whole)
    with pytest.raises(ValueError, match="grid blocks"):
        grid_blocks(NEXT_PRODUCT, viewers, products, EXPOSURE_STAGE, whole[:-1, src.cross])


def test_the_viewer_block_splits_into_its_batch_part_and_the_rest(tiny_world: Path) -> None:
    """viewer_static reads only the batch views and viewer_at only the live and room ones:
    serving may keep the first between calls and still get viewer_block's bits."""
    vcols, _, now = _room_frames(tiny_world)
    cols = {c: vcols[c].to_numpy() for c in vcols.columns}
    batch_views = ("viewer_demographics__", "viewer_profile__")
    batch = {c: v for c, v in cols.items() if c.startswith(batch_views)}
    rest = {c: v for c, v in cols.items() if not c.startswith(batch_views)}
    assert batch and any(c.startswith("viewer_live__") for c in rest)
    whole = viewer_block(cols, now)
    split = viewer_at(viewer_static(batch), rest, now)
    assert list(whole) == list(split)
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name], err_msg=name)
    # The profile's time features came from the batch part.
    assert np.isfinite(split["tenure_days"]).any()


def _by_source(
    cols: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A viewer's columns split as serving reads them: batch views, live row, room row."""

    def of(*views: str) -> dict[str, np.ndarray]:
        return {c: v for c, v in cols.items() if c.startswith(views)}

    return of("viewer_demographics__", "viewer_profile__"), of("viewer_live__"), of("room_state__")


def test_the_viewer_block_splits_again_into_its_live_part_and_the_time_and_room(
    tiny_world: Path,
) -> None:
    """viewer_live reads the batch part and the live views alone, viewer_now the time and
    the room's row: serving may keep a viewer's live part while its live row is the same
    and still get viewer_block's bits, at any time and with any room row; the columns that
    then change are VIEWER_NOW_COLUMNS alone."""
    vcols, _, now = _room_frames(tiny_world)
    cols = {c: vcols[c].to_numpy() for c in vcols.columns}
    batch, live, room = _by_source(cols)
    assert live and room
    part = viewer_live(viewer_static(batch), live)
    for at in (now, now + 3600.0 * 7.5):
        whole = viewer_block(cols, at)
        split = viewer_now(part, room, at)
        assert list(split) == list(whole)
        for name in whole:
            np.testing.assert_array_equal(split[name], whole[name], err_msg=name)
    # Later, in a room that changed: the model columns outside VIEWER_NOW_COLUMNS stay.
    busier = {c: v * 2.0 if v.dtype == np.float64 else v for c, v in room.items()}
    before, after = viewer_now(part, room, now), viewer_now(part, busier, now + 600.0)
    changed = {
        c for c in CONVERSION.columns if not np.array_equal(before[c], after[c], equal_nan=True)
    }
    assert changed and changed <= set(VIEWER_NOW_COLUMNS), changed - set(VIEWER_NOW_COLUMNS)
    assert {"dwell_min", "local_hour", "room_viewers_present"} <= changed
    # The kept part is never written to.
    for v in part.values():
        v.flags.writeable = False
    viewer_now(part, busier, now)


def test_cross_features_read_no_time_no_room_and_no_live_product_row(tiny_world: Path) -> None:
    """cross_block reads a viewer's live part and the products' catalogue and history
    only: RankProducts may keep it while those rows stay the same, and assemble_grid given
    the kept block builds the matrix it builds alone, later, in a busier room, with the
    products' live rows moved on."""
    vcols, pcols, now = _room_frames(tiny_world)
    cols = {c: vcols[c].to_numpy() for c in vcols.columns}
    batch, live, room = _by_source(cols)
    busier = {c: v * 2.0 if v.dtype == np.float64 else v for c, v in room.items()}
    product = {c: pcols[c].to_numpy() for c in pcols.columns}
    moved = {
        c: np.nan_to_num(v.astype(np.float64)) + 3.0 if c.startswith("product_live__") else v
        for c, v in product.items()
    }
    part = viewer_live(viewer_static(batch), live)
    later = now + 1800.0
    kept = cross_block(viewer_block(cols, now), product_block(product, now), EXPOSURE_OVERLAY, True)
    v, p = viewer_now(part, busier, later), product_block(moved, later)
    fresh = cross_block(v, p, EXPOSURE_OVERLAY, True)
    assert list(kept) == list(fresh)
    for name in fresh:
        np.testing.assert_array_equal(kept[name], fresh[name], err_msg=name)
    alone = assemble_grid(NEXT_PRODUCT, v, p, EXPOSURE_OVERLAY)
    np.testing.assert_array_equal(assemble_grid(NEXT_PRODUCT, v, p, EXPOSURE_OVERLAY, kept), alone)
    # What moved did reach the matrix: the kept block was not the whole of it.
    at_first = assemble_grid(
        NEXT_PRODUCT, viewer_block(cols, now), product_block(product, now), EXPOSURE_OVERLAY
    )
    assert not np.array_equal(at_first, alone, equal_nan=True)


def test_cross_features_read_only_their_declared_inputs(tiny_world: Path) -> None:
    """A room's kept grid reuses a viewer's cross rows while CROSS_VIEWER_INPUTS and the
    products' CROSS_PRODUCT_INPUTS hold the same bits: cross_block reads nothing else,
    and each viewer's rows depend on that viewer's inputs alone."""
    vcols, pcols, now = _room_frames(tiny_world)
    cols = {c: vcols[c].to_numpy() for c in vcols.columns}
    product = {c: pcols[c].to_numpy() for c in pcols.columns}
    v, p = viewer_block(cols, now), product_block(product, now)
    read: set[str] = set()

    class Recording(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            read.add(key)
            return super().__getitem__(key)

    whole = cross_block(Recording(v), Recording(p), EXPOSURE_STAGE, True)
    assert read == {*CROSS_VIEWER_INPUTS, *CROSS_PRODUCT_INPUTS}
    only = cross_block(
        {k: v[k] for k in CROSS_VIEWER_INPUTS},
        {k: p[k] for k in CROSS_PRODUCT_INPUTS},
        EXPOSURE_STAGE,
        True,
    )
    n_v, n_p = len(v["region"]), len(p["category"])
    assert n_v >= 3
    for name in whole:
        np.testing.assert_array_equal(only[name], whole[name], err_msg=name)
        # A viewer's rows alone are the same as in the whole grid.
        one = cross_block({k: v[k][1:2] for k in CROSS_VIEWER_INPUTS}, p, EXPOSURE_STAGE, True)
        np.testing.assert_array_equal(one[name], whole[name][n_p : 2 * n_p], err_msg=name)


def test_packed_batch_parts_stack_into_viewer_static_for_any_viewers(tiny_world: Path) -> None:
    """Serving keeps each viewer's batch part as one packed row and stacks any set of
    viewers' rows: the same arrays as viewer_static of those viewers' columns, bit for bit,
    whichever calls packed them; and a conversion matrix from that block is assemble's."""
    vcols, _, now = _room_frames(tiny_world)
    cols = {c: vcols[c].to_numpy() for c in vcols.columns}
    n = len(vcols)
    assert n >= 4
    half = n // 2
    first = pack_static(viewer_static({c: v[:half] for c, v in cols.items()}))
    second = pack_static(viewer_static({c: v[half:] for c, v in cols.items()}))
    rows = [*first[0], *second[0]]
    markets = [*first[1], *second[1]]
    order = np.random.default_rng(3).permutation(n)
    stacked = stack_static([rows[i] for i in order], [markets[i] for i in order])
    want = viewer_static({c: v[order] for c, v in cols.items()})
    assert list(stacked) == list(want)
    for name in want:
        assert stacked[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(stacked[name], want[name], err_msg=name)
    # Something varied: missing values and several markets came through.
    assert len(set(markets)) > 1
    assert any(np.isnan(v).any() for v in stacked.values() if v.dtype == np.float64)
    block = viewer_at(stacked, {c: v[order] for c, v in cols.items()}, now)
    np.testing.assert_array_equal(
        assemble_viewers(CONVERSION, block),
        assemble(CONVERSION, {c: v[order] for c, v in cols.items()}, now),
    )


def test_local_hour_is_the_markets_wall_clock_hour_alone_or_in_a_batch() -> None:
    markets = sorted(MARKETS)
    # Every market at times spread over a year (daylight saving moves some offsets).
    rng = np.random.default_rng(3)
    now = 1.78e9 + rng.random(len(markets) * 40) * 86400 * 365
    names = np.array(markets * 40, dtype=object)
    got = local_hour(names, now)
    for m, t, h in zip(names, now, got, strict=True):
        wall = datetime.fromtimestamp(t, tz=UTC).astimezone(ZoneInfo(MARKETS[m].tz))
        expected = wall.hour + wall.minute / 60 + (wall.second + wall.microsecond / 1e6) / 3600
        assert abs(h - expected) < 1e-6 or abs(abs(h - expected) - 24) < 1e-6, (m, t)
        alone = local_hour(np.array([m], dtype=object), np.array([t]))
        assert alone.tobytes() == np.array([h]).tobytes()  # the same bits alone
    # No market, an unknown one, or no time: unknown hour.
    odd = local_hour(
        np.array(["", None, "XX", markets[0]], dtype=object),
        np.array([now[0], now[0], now[0], np.nan]),
    )
    assert np.isnan(odd).all()
