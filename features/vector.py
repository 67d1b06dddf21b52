"""Feature-vector assembly shared by training and serving (DESIGN §7).

Both sides hand :func:`assemble` the raw feature columns as Feast names them
with ``full_feature_names=True`` (``"<view>__<feature>"``) plus the moment of
scoring; it derives the time-dependent and cross features and returns a
float32 matrix in the model's column order.  Training calls it on the columns
of a point-in-time training frame, serving on the columns of online rows, so
the same code decides every value the model sees.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from features.markets import MARKETS
from features.schema import CATEGORIES, CHAT_TOPICS, PAYMENT_METHODS, REGIONS
from features.tables import PRODUCT_STATS as PRODUCT_STATS_VIEW
from features.transforms import AS_OF, as_of
from features.world import AGE_BANDS, DEVICES, GENDERS, INCOME_BANDS
from features.world import utc_offset_hours as _offset

#: Exposure kinds of the next-product model.
EXPOSURE_STAGE = 0.0
EXPOSURE_OVERLAY = 1.0

_VOCAB: dict[str, tuple[str, ...]] = {
    "viewer_demographics__region": REGIONS,
    "viewer_demographics__market": tuple(MARKETS),
    "viewer_demographics__age_band": AGE_BANDS,
    "viewer_demographics__gender": GENDERS,
    "viewer_demographics__device": DEVICES,
    "viewer_demographics__income_band": INCOME_BANDS,
    "viewer_profile__preferred_payment": PAYMENT_METHODS,
    "product_stats__category": CATEGORIES,
}

_PROFILE = (
    "sessions_count",
    "avg_dwell_min",
    "order_count",
    "order_value_usd",
    "avg_order_value_usd",
    "decision_time_min",
    "clicks_per_session",
    "likes_per_session",
    "cart_abandon_rate",
    *(f"cat_aff_{c}" for c in CATEGORIES),
    *(f"topic_rate_{t}" for t in CHAT_TOPICS),
)
_LIVE = (
    *(f"chat_{t}" for t in CHAT_TOPICS),
    "chats",
    "likes",
    "shares",
    "overlay_seen",
    "clicks",
    "carts",
    "checkouts",
    "purchases",
    "funnel_step",
    "purchase_usd",
)

#: Columns of the profile-only ablation (no live session signal at all).
PROFILE_COLUMNS: tuple[str, ...] = (
    "region",
    "market",
    "age_band",
    "gender",
    "device",
    "income_band",
    "preferred_payment",
    "local_hour",
    "days_since_last_order",
    "tenure_days",
    *_PROFILE,
)
LIVE_COLUMNS: tuple[str, ...] = (
    "dwell_min",
    "idle_s",
    *_LIVE,
    "cart_size",
    "likes_per_min",
    "chats_per_min",
    "room_viewers_present",
    "room_stream_age_min",
    "room_likes_per_viewer",
    "room_share_own_region",
    "since_click_min",
    "since_cart_min",
    "since_checkout_min",
    "since_purchase_min",
    "room_minutes_left",
)
CONVERSION_COLUMNS: tuple[str, ...] = PROFILE_COLUMNS + LIVE_COLUMNS
PRODUCT_COLUMNS: tuple[str, ...] = (
    "category",
    "price_usd",
    "discount_pct",
    "final_price_usd",
    "mena_compliant",
    "lineup_sessions",
    "click_rate",
    "cart_rate",
    "purchase_rate",
    "purchase_rate_own_region",
    "room_product_clicks",
    "room_product_carts",
    "room_product_purchases",
    "on_stage",
    "on_stage_for_min",
    "affinity_to_category",
    "noncompliant_for_mena",
    "discount_x_sea",
    "price_vs_aov",
    "is_last_product",
    "last_product_step",
    "in_cart",
    "exposure_kind",
)
NEXT_PRODUCT_COLUMNS: tuple[str, ...] = CONVERSION_COLUMNS + PRODUCT_COLUMNS

#: Features whose effect is constrained to be non-decreasing (funnel depth).
MONOTONE_UP = frozenset(
    {
        "carts",
        "checkouts",
        "funnel_step",
        "cart_size",
        "in_cart",
        "last_product_step",
        # Compliance never hurts a sale; with the -1 below, a MENA viewer can never be
        # scored higher for a non-compliant product than for the same product compliant.
        "mena_compliant",
    }
)
#: Features whose effect is constrained to be non-increasing.
MONOTONE_DOWN = frozenset({"noncompliant_for_mena"})


@dataclass(frozen=True)
class ModelSpec:
    """What a model reads: its Feast feature service and its column order."""

    name: str
    feature_service: str
    columns: tuple[str, ...]

    def monotone_constraints(self) -> list[int]:
        return [1 if c in MONOTONE_UP else -1 if c in MONOTONE_DOWN else 0 for c in self.columns]


CONVERSION = ModelSpec("conversion", "conversion_v2", CONVERSION_COLUMNS)
CONVERSION_PROFILE_ONLY = ModelSpec("conversion_profile_only", "conversion_v2", PROFILE_COLUMNS)
NEXT_PRODUCT = ModelSpec("next_product", "next_product_v2", NEXT_PRODUCT_COLUMNS)
SPECS = {s.name: s for s in (CONVERSION, CONVERSION_PROFILE_ONLY, NEXT_PRODUCT)}


def _num(cols: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    v = cols.get(name)
    if v is None:
        return np.full(n, np.nan)
    if type(v) is np.ndarray and v.dtype == np.float64 and v.shape == (n,):
        return v  # already a float64 column (online rows, most frames)
    arr = np.asarray(v)
    if arr.dtype == object:
        arr = np.array([np.nan if x is None else x for x in arr], dtype=np.float64)
    arr = arr.astype(np.float64, copy=False)
    return arr if arr.shape == (n,) else np.broadcast_to(arr, (n,))


def _nums(cols: Mapping[str, Any], names: tuple[str, ...], n: int) -> np.ndarray:
    """(len(names), n) float64: :func:`_num` of each name, as one matrix (one numpy call
    for the lot instead of one per column: what a single row is mostly made of)."""
    return np.array([_num(cols, name, n) for name in names], dtype=np.float64).reshape(
        len(names), n
    )


def _zero_nan(x: np.ndarray) -> np.ndarray:
    return np.where(x == x, x, 0.0)


def _strings(cols: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    v = cols.get(name)
    if v is None:
        return np.full(n, "", dtype=object)
    arr = np.asarray(v, dtype=object)
    if arr.ndim == 0:
        arr = np.broadcast_to(arr, (n,))
    # Missing strings arrive as None (Feast) or NaN (pandas joins): both mean "".
    return np.array([x if isinstance(x, str) else "" for x in arr], dtype=object)


_INDEX = {
    name: {value: float(i) for i, value in enumerate(vocab)} for name, vocab in _VOCAB.items()
}


def _code(cols: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    v = cols.get(name)
    if v is None:
        return np.full(n, np.nan)
    index = _INDEX[name]
    arr = np.asarray(v, dtype=object)
    if arr.ndim == 0:
        arr = np.broadcast_to(arr, (n,))
    # Vocabularies hold strings only: None, NaN and "" (missing) all give NaN.
    return np.fromiter((index.get(x, np.nan) for x in arr), dtype=np.float64, count=n)


_OFFSETS: dict[tuple[str, float], float] = {}


def local_hour(markets: np.ndarray, now: np.ndarray) -> np.ndarray:
    """The viewer's local hour of day at ``now`` (daily cycles differ by market).

    Each row's UTC offset is looked up by (market, day) in plain Python values, then one
    array sum: per row the same float64 operations as the hour itself, so rows grouped or
    alone get the same bits. An unknown market or a missing ``now`` gives NaN."""
    days = np.floor(now / 86400.0).tolist()
    names = markets.tolist() if isinstance(markets, np.ndarray) else list(markets)
    keys = list(zip(names, days, strict=True))
    get = _OFFSETS.get
    offsets = [get(k) for k in keys]
    if None in offsets:
        for i, (m, day) in enumerate(keys):
            if offsets[i] is not None:
                continue
            if m not in MARKETS or day != day:  # NaN day: no time to place
                offsets[i] = np.nan
                continue
            if (m, day) not in _OFFSETS:
                _OFFSETS[m, day] = _offset(m, datetime.fromtimestamp(int(day) * 86400, tz=UTC))
            offsets[i] = _OFFSETS[m, day]
    return (now / 3600.0 + np.array(offsets, dtype=np.float64)) % 24


def _times(now: float | np.ndarray, n: int) -> np.ndarray:
    """``now`` as a float64 column of ``n`` (a scalar filled: cheaper than broadcast_to)."""
    if not isinstance(now, np.ndarray) or now.ndim == 0:
        return np.full(n, now, dtype=np.float64)
    return np.broadcast_to(np.asarray(now, dtype=np.float64), (n,))


_DEMOGRAPHICS = ("region", "market", "age_band", "gender", "device", "income_band")
#: The time-dependent features of a viewer (all of AS_OF but the product's), and which of
#: them are room columns under another name.
_VIEWER_AS_OF = tuple(k for k in AS_OF if not k.startswith("on_stage"))
_ROOM_AS_OF = {"stream_age_min": "room_stream_age_min", "minutes_left": "room_minutes_left"}
_PROFILE_NAMES = tuple(f"viewer_profile__{c}" for c in _PROFILE)
#: Rows of the profile matrix that hold the category affinities, in CATEGORIES order.
_AFFINITY_AT = _PROFILE.index("cat_aff_" + CATEGORIES[0])
_AFFINITY = slice(_AFFINITY_AT, _AFFINITY_AT + len(CATEGORIES))
assert _PROFILE[_AFFINITY] == tuple(f"cat_aff_{c}" for c in CATEGORIES), "contiguous"
_LIVE_NAMES = tuple(f"viewer_live__{c}" for c in _LIVE)
_ROOM_NAMES = (
    "room_state__viewers_present",
    "room_state__likes",
    "room_state__viewers_joined",
    *(f"room_state__share_{r}" for r in REGIONS),
)


def viewer_block(cols: Mapping[str, Any], now: float | np.ndarray) -> dict[str, np.ndarray]:
    """The viewer's columns (all of :data:`CONVERSION_COLUMNS`) plus what cross features need."""
    return viewer_at(viewer_static(cols), cols, now)


#: The time features' anchors that batch views hold (the profile's order and first-seen
#: times): :func:`viewer_static` carries them, so :func:`viewer_at` reads no batch column.
_BATCH_ANCHORS = tuple(
    AS_OF[k][0] for k in _VIEWER_AS_OF if AS_OF[k][0].startswith("viewer_profile__")
)


def viewer_static(cols: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The part of :func:`viewer_block` read from the batch views alone (demographics and
    profile, rebuilt daily) and not depending on ``now``. A caller scoring the same batch
    rows again may keep it; :func:`viewer_at` adds the rest."""
    n = _rows(cols)
    f: dict[str, np.ndarray] = {}
    for short in _DEMOGRAPHICS:
        f[short] = _code(cols, f"viewer_demographics__{short}", n)
    f["preferred_payment"] = _code(cols, "viewer_profile__preferred_payment", n)
    profile = _nums(cols, _PROFILE_NAMES, n)
    f.update(zip(_PROFILE, profile, strict=True))
    # For local_hour, the cross features and the time features (not model columns):
    f["_market"] = _strings(cols, "viewer_demographics__market", n)
    f["_affinity"] = profile[_AFFINITY].T  # the cat_aff_* rows, as (n, categories)
    f.update({a: cols[a] for a in _BATCH_ANCHORS if cols.get(a) is not None})
    return f


#: The float columns of :func:`viewer_static`, in the order of its packed row
#: (:func:`pack_static`); the affinity matrix is read back from the profile's slots.
_STATIC_FLOATS = (*_DEMOGRAPHICS, "preferred_payment", *_PROFILE, *_BATCH_ANCHORS)
_STATIC_AFFINITY = slice(
    len(_DEMOGRAPHICS) + 1 + _AFFINITY.start, len(_DEMOGRAPHICS) + 1 + _AFFINITY.stop
)


def pack_static(static: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`viewer_static` of ``n`` viewers as ``(n, W)`` float64, one row per viewer,
    and their markets: what a caller keeps per viewer and stacks for any set of viewers
    with :func:`stack_static`, instead of converting every viewer's batch rows per call."""
    if not all(a in static for a in _BATCH_ANCHORS):
        raise ValueError(f"viewer_static without its anchors {_BATCH_ANCHORS}: not packable")
    matrix = np.array([static[k] for k in _STATIC_FLOATS], dtype=np.float64).T
    return np.ascontiguousarray(matrix), np.asarray(static["_market"], dtype=object)


def stack_static(rows: Sequence[np.ndarray], markets: Sequence[str]) -> dict[str, np.ndarray]:
    """:func:`viewer_static` of the viewers whose :func:`pack_static` rows these are, in
    this order: the same arrays, bit for bit (a test checks it)."""
    n = len(rows)
    by_column = np.ascontiguousarray(
        np.array(rows, dtype=np.float64).reshape(n, len(_STATIC_FLOATS)).T
    )
    f: dict[str, np.ndarray] = dict(zip(_STATIC_FLOATS, by_column, strict=True))
    market = np.empty(n, dtype=object)
    market[:] = markets
    f["_market"] = market
    f["_affinity"] = by_column[_STATIC_AFFINITY].T
    # viewer_static's order: the anchors last.
    for a in _BATCH_ANCHORS:
        f[a] = f.pop(a)
    return f


def viewer_at(
    static: Mapping[str, np.ndarray], cols: Mapping[str, Any], now: float | np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`viewer_block` from its :func:`viewer_static` part: adds the time features, the
    live session's columns and the room's, reading only live and room columns of ``cols``."""
    return viewer_now(viewer_live(static, cols), cols, now)


#: The time features' anchors that the live session's row holds: :func:`viewer_live`
#: carries them, so :func:`viewer_now` reads no live column.
_LIVE_ANCHORS = tuple(AS_OF[k][0] for k in _VIEWER_AS_OF if AS_OF[k][0].startswith("viewer_live__"))
_ANCHORS = frozenset((*_BATCH_ANCHORS, *_LIVE_ANCHORS))


def viewer_live(static: Mapping[str, np.ndarray], cols: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The part of :func:`viewer_at` read from the batch part and the viewer's live row
    alone: not depending on ``now`` nor on the room's row. A caller scoring a viewer again
    with the same live row may keep it; :func:`viewer_now` adds the rest."""
    n = len(static["region"])
    f = dict(static)
    f.update({a: cols[a] for a in _LIVE_ANCHORS if cols.get(a) is not None})
    live_present = ~np.isnan(_num(cols, "viewer_live__join_ts", n))
    # A session with no live row yet has zero of everything, not "unknown".
    live = np.where(live_present[None, :], _zero_nan(_nums(cols, _LIVE_NAMES, n)), 0.0)
    f.update(zip(_LIVE, live, strict=True))
    carts = _strings(cols, "viewer_live__cart_products", n)
    f["cart_size"] = np.fromiter(
        (len(c.split("|")) if c else 0 for c in carts), dtype=np.float64, count=n
    )
    # For the cross features (not model columns themselves):
    f["_cart"] = carts
    f["_last_product"] = _strings(cols, "viewer_live__last_product_id", n)
    f["_last_step"] = _zero_nan(_num(cols, "viewer_live__last_product_step", n))
    return f


#: The model columns :func:`viewer_now` adds: all that changes with the time or the
#: room's row while a viewer's batch and live rows stay the same.
VIEWER_NOW_COLUMNS: tuple[str, ...] = (
    "local_hour",
    *(_ROOM_AS_OF.get(k, k) for k in _VIEWER_AS_OF),
    "likes_per_min",
    "chats_per_min",
    "room_viewers_present",
    "room_likes_per_viewer",
    "room_share_own_region",
)


def viewer_now(
    part: Mapping[str, np.ndarray], cols: Mapping[str, Any], now: float | np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`viewer_at` from its :func:`viewer_live` part: adds the time features
    (:data:`VIEWER_NOW_COLUMNS`) and the room's, reading only room columns of ``cols``."""
    n = len(part["region"])
    now_arr = _times(now, n)
    anchors = {a: part[a] for a in _ANCHORS if a in part}
    derived = as_of({**cols, **anchors}, now_arr, _VIEWER_AS_OF)
    f = dict(part)
    for a in anchors:
        del f[a]
    f["local_hour"] = local_hour(part["_market"], now_arr)
    for k in _VIEWER_AS_OF:
        f[_ROOM_AS_OF.get(k, k)] = np.asarray(derived[k], dtype=np.float64)
    minutes = np.maximum(_zero_nan(f["dwell_min"]), 1.0)
    f["likes_per_min"] = f["likes"] / minutes
    f["chats_per_min"] = f["chats"] / minutes
    room = _nums(cols, _ROOM_NAMES, n)
    f["room_viewers_present"] = room[0]
    f["room_likes_per_viewer"] = room[1] / np.maximum(room[2], 1.0)
    f["room_share_own_region"] = _pick(room[3:].T, f["region"])
    return f


#: The catalogue and history columns the models read as they are (category is coded).
_PRODUCT_STATS = tuple(
    c for c in PRODUCT_COLUMNS if c in PRODUCT_STATS_VIEW.columns and c != "category"
)
_PRODUCT_STATS_NAMES = tuple(f"product_stats__{c}" for c in _PRODUCT_STATS)
_PRODUCT_RATE_NAMES = tuple(f"product_stats__purchase_rate_{r}" for r in REGIONS)
_PRODUCT_LIVE = (
    ("room_product_clicks", "product_live__clicks"),
    ("room_product_carts", "product_live__carts"),
    ("room_product_purchases", "product_live__purchases"),
    ("on_stage", "product_live__on_stage"),
)


def product_block(cols: Mapping[str, Any], now: float | np.ndarray) -> dict[str, np.ndarray]:
    """The product's own columns (catalogue, history, how it does in the room)."""
    return product_at(product_static(cols), cols, now)


def product_static(cols: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The part of :func:`product_block` that does not depend on ``now`` (a caller
    scoring the same rows again at a later ``now`` may keep it)."""
    n = _rows(cols)
    f: dict[str, np.ndarray] = {"category": _code(cols, "product_stats__category", n)}
    f.update(zip(_PRODUCT_STATS, _nums(cols, _PRODUCT_STATS_NAMES, n), strict=True))
    f["_rates"] = _nums(cols, _PRODUCT_RATE_NAMES, n).T
    live = _zero_nan(_nums(cols, tuple(src for _, src in _PRODUCT_LIVE), n))
    f.update(zip((c for c, _ in _PRODUCT_LIVE), live, strict=True))
    f["_product_id"] = _strings(cols, "product_id", n)
    return f


def product_at(
    static: Mapping[str, np.ndarray], cols: Mapping[str, Any], now: float | np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`product_block` from its :func:`product_static` part: adds the time columns."""
    n = len(static["category"])
    now_arr = _times(now, n)
    since = as_of(cols, now_arr, ("on_stage_for_min",))["on_stage_for_min"]
    f = dict(static)
    f["on_stage_for_min"] = np.where(
        static["on_stage"] > 0, np.asarray(since, dtype=np.float64), np.nan
    )
    return f


#: What :func:`cross_block` reads of a viewer's block and of a product's: a viewer's
#: cross row over the same products is the same bits while these are (a test checks it).
CROSS_VIEWER_INPUTS = (
    "region",
    "_affinity",
    "avg_order_value_usd",
    "_last_product",
    "_last_step",
    "_cart",
)
CROSS_PRODUCT_INPUTS = (
    "category",
    "_rates",
    "mena_compliant",
    "discount_pct",
    "final_price_usd",
    "_product_id",
)


def cross_block(
    v: Mapping[str, np.ndarray],
    p: Mapping[str, np.ndarray],
    exposure_kind: float | np.ndarray,
    grid: bool,
) -> dict[str, np.ndarray]:
    """Viewer x product features: on aligned rows, or on the whole grid (viewer-major)."""

    def pair(a: np.ndarray, b: np.ndarray, op: Any) -> np.ndarray:
        return (op(a[:, None], b[None, :]) if grid else op(a, b)).ravel()

    f: dict[str, np.ndarray] = {}
    region = v["region"]
    cat = p["category"]
    if grid:
        aff = np.full((len(region), len(cat)), np.nan)
        ok = ~np.isnan(cat)
        aff[:, ok] = v["_affinity"][:, cat[ok].astype(int)]
        f["affinity_to_category"] = aff.ravel()
        rates = np.full((len(region), len(cat)), np.nan)
        rok = ~np.isnan(region)
        rates[rok] = p["_rates"][:, region[rok].astype(int)].T
        f["purchase_rate_own_region"] = rates.ravel()
    else:
        f["affinity_to_category"] = _pick(v["_affinity"], cat)
        f["purchase_rate_own_region"] = _pick(p["_rates"], region)
    mena = float(REGIONS.index("MENA"))
    sea = float(REGIONS.index("SEA"))
    f["noncompliant_for_mena"] = pair(
        region == mena, p["mena_compliant"] == 0.0, np.logical_and
    ).astype(np.float64)
    f["discount_x_sea"] = pair((region == sea).astype(np.float64), p["discount_pct"], np.multiply)
    f["price_vs_aov"] = pair(v["avg_order_value_usd"], p["final_price_usd"], lambda a, b: b / a)
    last, pid = v["_last_product"], p["_product_id"]
    is_last = pair(last, pid, lambda a, b: (a == b) & (a != ""))
    f["is_last_product"] = is_last.astype(np.float64)
    step = np.repeat(v["_last_step"], len(pid)) if grid else v["_last_step"]
    f["last_product_step"] = np.where(is_last, step, 0.0)
    in_cart = np.zeros(len(is_last))
    n_p = len(pid)
    carts = [(i, set(c.split("|"))) for i, c in enumerate(v["_cart"].tolist()) if c]
    if grid and len(carts) == 1:
        # One cart (a call about one viewer): one pass over the products.
        ((i, members),) = carts
        for j, x in enumerate(pid.tolist()):
            if x in members:
                in_cart[i * n_p + j] = 1.0
    elif grid and carts:
        # Each cart's few members are looked up among the products, rather than every
        # product among the members (viewers x products lookups for a room).
        places: dict[str, list[int]] = {}
        for j, x in enumerate(pid.tolist()):
            places.setdefault(x, []).append(j)
        for i, members in carts:
            for m in members:
                for j in places.get(m, ()):
                    in_cart[i * n_p + j] = 1.0
    else:
        for i, members in carts:
            in_cart[i] = pid[i] in members
    f["in_cart"] = in_cart
    f["exposure_kind"] = _times(exposure_kind, len(is_last))
    return f


def assemble(
    spec: ModelSpec,
    cols: Mapping[str, Any],
    now: float | np.ndarray,
    exposure_kind: float | np.ndarray = EXPOSURE_STAGE,
) -> np.ndarray:
    """Raw feature columns -> float32 matrix (rows, len(spec.columns)).

    Each row is one (viewer[, product]) at its ``now``; the column names are
    Feast's full feature names plus ``product_id`` for product models.
    """
    f = viewer_block(cols, now)
    if "category" in spec.columns:
        p = product_block(cols, now)
        f = {**f, **p, **cross_block(f, p, exposure_kind, grid=False)}
    return _matrix(spec, f)


def assemble_viewers(spec: ModelSpec, block: Mapping[str, np.ndarray]) -> np.ndarray:
    """:func:`assemble` of a viewer-only spec from the viewers' :func:`viewer_block`, which
    the caller built (e.g. :func:`viewer_at` over kept :func:`viewer_static` parts)."""
    if "category" in spec.columns:
        raise ValueError(f"{spec.name} has product columns: assemble it from rows")
    return _matrix(spec, block)


def _matrix(spec: ModelSpec, f: Mapping[str, np.ndarray]) -> np.ndarray:
    # np.array(...).T: the same matrix as np.column_stack, built 3-5x faster.
    return np.ascontiguousarray(np.array([f[c] for c in spec.columns]).T, dtype=np.float32)


def assemble_grid(
    spec: ModelSpec,
    viewers: Mapping[str, np.ndarray],
    products: Mapping[str, np.ndarray],
    exposure_kind: float = EXPOSURE_STAGE,
    cross: Mapping[str, np.ndarray] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Every viewer x every product (viewer-major), from blocks computed once each.

    Equal to :func:`assemble` on the explicit cross product (a test checks it),
    without repeating the per-viewer and per-product work for every pair: what
    lets a room of 2,000 viewers x 30 products be scored in one pass. ``cross`` is
    :func:`cross_block` of these blocks on the grid at this ``exposure_kind``, if the
    caller kept it: it reads neither the time, nor the room's row, nor the products'
    live rows, only a viewer's :func:`viewer_live` part and the products' catalogue
    and history (a test checks it). With ``out`` (a C-contiguous float32 matrix of the
    grid's shape, e.g. a part of a larger one) the grid is written there.
    """
    n_v = len(viewers["region"])
    n_p = len(products["category"])
    if cross is None:
        cross = cross_block(viewers, products, exposure_kind, grid=True)
    lead, from_products, from_cross, from_viewers = _grid_layout(
        spec.columns, tuple(cross), tuple(products)
    )
    shape = (n_v * n_p, len(spec.columns))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous float32 {shape} matrix, got {out.dtype} {out.shape}"
        )
    grid = out.reshape(n_v, n_p, len(spec.columns))
    # The viewer's columns lead every spec (CONVERSION_COLUMNS): one broadcast copy.
    # Each block is made float32 and contiguous before it is repeated: the repeats are then
    # plain copies (casting float64 in every repeat made the copy ~3x as long).
    if lead:
        block = np.array([viewers[c] for c in spec.columns[:lead]], dtype=np.float32).T
        grid[:, :, :lead] = np.ascontiguousarray(block)[:, None, :]
    # Then each source's columns as one (rows, k) block and one scattered copy.
    if from_products[0]:
        at, names = from_products
        grid[:, :, at] = np.array([products[c] for c in names], dtype=np.float32).T[None, :, :]
    if from_cross[0]:
        at, names = from_cross
        grid[:, :, at] = np.array([cross[c] for c in names], dtype=np.float32).T.reshape(
            n_v, n_p, len(names)
        )
    for j, c in zip(*from_viewers, strict=True):
        grid[:, :, j] = viewers[c][:, None]
    return out


#: The columns :func:`cross_block` makes, one value per viewer x product: the product's
#: purchase rate in the viewer's region and the last of :data:`PRODUCT_COLUMNS`.
CROSS_COLUMNS: tuple[str, ...] = (
    "purchase_rate_own_region",
    *PRODUCT_COLUMNS[PRODUCT_COLUMNS.index("affinity_to_category") :],
)


@dataclass(frozen=True)
class GridSources:
    """Where the columns of an :func:`assemble_grid` row come from: the first ``lead``
    from the viewer's block (the same in all of a viewer's rows), those at ``products``
    from the product's (the same in all of a product's rows), those at ``cross`` from
    :func:`cross_block` (the row's own)."""

    lead: int
    products: np.ndarray
    cross: np.ndarray


@functools.lru_cache(maxsize=8)
def grid_sources(spec: ModelSpec) -> GridSources:
    """:class:`GridSources` of ``spec``'s grids (its product columns are all past its
    viewer columns)."""
    lead = len(CONVERSION_COLUMNS)
    if spec.columns[:lead] != CONVERSION_COLUMNS or lead == len(spec.columns):
        raise ValueError(f"{spec.name}: no grid (viewer columns first, then product columns)")
    rest = range(lead, len(spec.columns))
    products = np.array([j for j in rest if spec.columns[j] not in CROSS_COLUMNS], np.intp)
    cross = np.array([j for j in rest if spec.columns[j] in CROSS_COLUMNS], dtype=np.intp)
    products.flags.writeable = cross.flags.writeable = False  # shared by every call
    return GridSources(lead, products, cross)


@dataclass(frozen=True, eq=False)
class GridBlocks:
    """A grid of viewers x products (viewer-major) held by where its columns come from
    (:class:`GridSources`) rather than row by row: each viewer's columns once, each
    product's once, the cross columns per row. A room's 2,000 x 30 grid is 21 MB as
    rows and 3 MB so; :meth:`rows` makes only the rows asked for, the same bits as
    :func:`assemble_grid`'s (a test checks it)."""

    sources: GridSources
    #: Columns of a row.
    width: int
    #: (viewers, lead) float32: each viewer's columns, which lead every one of its rows.
    viewers: np.ndarray
    #: (products, len(sources.products)) float32: each product's columns.
    products: np.ndarray
    #: (viewers x products, len(sources.cross)) float32: each row's cross columns.
    cross: np.ndarray

    def __post_init__(self) -> None:
        s, nv, nc = self.sources, len(self.viewers), len(self.products)
        want = (
            (nv, s.lead),
            (nc, len(s.products)),
            (nv * nc, len(s.cross)),
        )
        got = (self.viewers.shape, self.products.shape, self.cross.shape)
        if got != want or s.lead + len(s.products) + len(s.cross) != self.width:
            raise ValueError(f"grid blocks {got} for {want} and {self.width} columns")

    @property
    def rows_count(self) -> int:
        return len(self.cross)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), width) float32: the grid's rows at ``idx`` (viewer ``i // products``,
        product ``i % products``)."""
        s = self.sources
        idx = np.asarray(idx, dtype=np.intp)
        viewer, product = np.divmod(idx, len(self.products))
        out = np.empty((len(idx), self.width), dtype=np.float32)
        out[:, : s.lead] = self.viewers[viewer]
        out[:, s.products] = self.products[product]
        out[:, s.cross] = self.cross[idx]
        return out

    def column(self, j: int, product: int) -> np.ndarray:
        """(viewers,) float32: column ``j`` of ``product``'s rows, one per viewer."""
        s, nc = self.sources, len(self.products)
        if j < s.lead:
            return self.viewers[:, j]
        at = np.flatnonzero(s.products == j)
        if len(at):
            return np.full(len(self.viewers), self.products[product, at[0]], dtype=np.float32)
        (k,) = np.flatnonzero(s.cross == j)
        return self.cross[product::nc, k]


def grid_blocks(
    spec: ModelSpec,
    viewers: Mapping[str, np.ndarray],
    products: Mapping[str, np.ndarray],
    exposure_kind: float = EXPOSURE_STAGE,
    cross: np.ndarray | None = None,
) -> GridBlocks:
    """:class:`GridBlocks` of :func:`assemble_grid`'s grid of the same arguments; ``cross``
    (the grid's cross columns as one (rows, k) float32 matrix, in ``spec``'s order) if
    the caller kept it, else made by :func:`cross_block`."""
    s = grid_sources(spec)
    columns = spec.columns
    lead = np.array([viewers[c] for c in columns[: s.lead]], dtype=np.float32).T
    own = np.array([products[columns[j]] for j in s.products], dtype=np.float32).T
    if cross is None:
        made = cross_block(viewers, products, exposure_kind, grid=True)
        cross = np.array([made[columns[j]] for j in s.cross], dtype=np.float32).T
    return GridBlocks(
        s,
        len(columns),
        np.ascontiguousarray(lead),
        np.ascontiguousarray(own),
        np.ascontiguousarray(cross, dtype=np.float32),
    )


Positions = tuple[list[int], tuple[str, ...]]


@functools.lru_cache(maxsize=64)
def _grid_layout(
    columns: tuple[str, ...], cross: tuple[str, ...], products: tuple[str, ...]
) -> tuple[int, Positions, Positions, Positions]:
    """Where :func:`assemble_grid` takes each column from: the count of leading viewer
    columns, then the positions and names of the columns from the products, from the
    cross features and from the viewers (past the lead). Computed once per layout."""
    placed: dict[str, list[tuple[int, str]]] = {"p": [], "x": [], "v": []}
    for j, c in enumerate(columns):
        placed["x" if c in cross else "p" if c in products else "v"].append((j, c))
    own = [j for j, _ in placed["v"]]
    lead = len(own) if own == list(range(len(own))) else 0

    def positions(items: list[tuple[int, str]]) -> Positions:
        return [j for j, _ in items], tuple(c for _, c in items)

    return (
        lead,
        positions(placed["p"]),
        positions(placed["x"]),
        positions([(j, c) for j, c in placed["v"] if j >= lead]),
    )


def _pick(matrix: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Row-wise ``matrix[i, idx[i]]``, NaN where ``idx`` is NaN."""
    ok = ~np.isnan(idx)
    out = np.full(len(idx), np.nan)
    out[ok] = matrix[np.flatnonzero(ok), idx[ok].astype(int)]
    return out


def _rows(cols: Mapping[str, Any]) -> int:
    for v in cols.values():
        if np.ndim(v) > 0:
            return len(v)
    return 1
