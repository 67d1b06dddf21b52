"""Feature-vector assembly shared by training and serving (DESIGN §7).

Both sides hand :func:`assemble` the raw feature columns as Feast names them
with ``full_feature_names=True`` (``"<view>__<feature>"``) plus the moment of
scoring; it derives the time-dependent and cross features and returns a
float32 matrix in the model's column order.  Training calls it on the columns
of a point-in-time training frame, serving on the columns of online rows, so
the same code decides every value the model sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from features.markets import MARKETS
from features.schema import CATEGORIES, CHAT_TOPICS, PAYMENT_METHODS, REGIONS
from features.transforms import as_of
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
    {"carts", "checkouts", "funnel_step", "cart_size", "in_cart", "last_product_step"}
)


@dataclass(frozen=True)
class ModelSpec:
    """What a model reads: its Feast feature service and its column order."""

    name: str
    feature_service: str
    columns: tuple[str, ...]

    def monotone_constraints(self) -> list[int]:
        return [1 if c in MONOTONE_UP else 0 for c in self.columns]


CONVERSION = ModelSpec("conversion", "conversion_v1", CONVERSION_COLUMNS)
CONVERSION_PROFILE_ONLY = ModelSpec("conversion_profile_only", "conversion_v1", PROFILE_COLUMNS)
NEXT_PRODUCT = ModelSpec("next_product", "next_product_v1", NEXT_PRODUCT_COLUMNS)
SPECS = {s.name: s for s in (CONVERSION, CONVERSION_PROFILE_ONLY, NEXT_PRODUCT)}


def _num(cols: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    v = cols.get(name)
    if v is None:
        return np.full(n, np.nan)
    arr = np.asarray(v)
    if arr.dtype == object:
        arr = np.array([np.nan if x is None else x for x in arr], dtype=np.float64)
    return np.broadcast_to(arr.astype(np.float64, copy=False), (n,))


def _code(cols: Mapping[str, Any], name: str, n: int) -> np.ndarray:
    v = cols.get(name)
    if v is None:
        return np.full(n, np.nan)
    index = {value: float(i) for i, value in enumerate(_VOCAB[name])}
    arr = np.asarray(v, dtype=object)
    return np.broadcast_to(np.array([index.get(x, np.nan) for x in arr.ravel()]), (n,))


_OFFSETS: dict[tuple[str, int], float] = {}


def local_hour(markets: np.ndarray, now: np.ndarray) -> np.ndarray:
    """The viewer's local hour of day at ``now`` (daily cycles differ by market)."""
    out = np.full(len(markets), np.nan)
    for i, (m, t) in enumerate(zip(markets, now, strict=True)):
        if m not in MARKETS or np.isnan(t):
            continue
        day = int(t // 86400)
        key = (m, day)
        if key not in _OFFSETS:
            _OFFSETS[key] = _offset(m, datetime.fromtimestamp(day * 86400, tz=UTC))
        out[i] = ((t / 3600.0) + _OFFSETS[key]) % 24
    return out


def assemble(
    spec: ModelSpec,
    cols: Mapping[str, Any],
    now: float | np.ndarray,
    exposure_kind: float | np.ndarray = EXPOSURE_STAGE,
) -> np.ndarray:
    """Raw feature columns -> float32 matrix (rows, len(spec.columns))."""
    n = _rows(cols)
    now_arr = np.broadcast_to(np.asarray(now, dtype=np.float64), (n,))
    derived = as_of(cols, now_arr)
    f: dict[str, np.ndarray] = {}
    for short in ("region", "market", "age_band", "gender", "device", "income_band"):
        f[short] = _code(cols, f"viewer_demographics__{short}", n)
    f["preferred_payment"] = _code(cols, "viewer_profile__preferred_payment", n)
    markets = np.asarray(cols.get("viewer_demographics__market", [None] * n), dtype=object)
    f["local_hour"] = local_hour(np.broadcast_to(markets, (n,)), now_arr)
    for k in ("days_since_last_order", "tenure_days", "dwell_min", "idle_s"):
        f[k] = np.asarray(derived[k], dtype=np.float64)
    for c in _PROFILE:
        f[c] = _num(cols, f"viewer_profile__{c}", n)
    live_present = ~np.isnan(_num(cols, "viewer_live__join_ts", n))
    for c in _LIVE:
        # A session with no live row yet has zero of everything, not "unknown".
        f[c] = np.where(live_present, np.nan_to_num(_num(cols, f"viewer_live__{c}", n)), 0.0)
    cart = cols.get("viewer_live__cart_products")
    cart_arr = np.broadcast_to(np.asarray(cart if cart is not None else [""] * n, dtype=object), (n,))
    f["cart_size"] = np.array([len(c.split("|")) if c else 0 for c in cart_arr], dtype=np.float64)
    minutes = np.maximum(np.nan_to_num(f["dwell_min"]), 1.0)
    f["likes_per_min"] = f["likes"] / minutes
    f["chats_per_min"] = f["chats"] / minutes
    present = _num(cols, "room_state__viewers_present", n)
    f["room_viewers_present"] = present
    f["room_stream_age_min"] = np.asarray(derived["stream_age_min"], dtype=np.float64)
    f["room_likes_per_viewer"] = _num(cols, "room_state__likes", n) / np.maximum(
        _num(cols, "room_state__viewers_joined", n), 1.0
    )
    region_idx = f["region"]
    shares = np.stack([_num(cols, f"room_state__share_{r}", n) for r in REGIONS], axis=1)
    f["room_share_own_region"] = _pick(shares, region_idx)
    if spec.columns is NEXT_PRODUCT_COLUMNS or "category" in spec.columns:
        _product_features(f, cols, derived, n, region_idx, cart_arr, exposure_kind)
    return np.column_stack([f[c] for c in spec.columns]).astype(np.float32)


def _product_features(
    f: dict[str, np.ndarray],
    cols: Mapping[str, Any],
    derived: Mapping[str, Any],
    n: int,
    region_idx: np.ndarray,
    cart_arr: np.ndarray,
    exposure_kind: float | np.ndarray,
) -> None:
    f["category"] = _code(cols, "product_stats__category", n)
    for c in (
        "price_usd",
        "discount_pct",
        "final_price_usd",
        "mena_compliant",
        "lineup_sessions",
        "click_rate",
        "cart_rate",
        "purchase_rate",
    ):
        f[c] = _num(cols, f"product_stats__{c}", n)
    rates = np.stack([_num(cols, f"product_stats__purchase_rate_{r}", n) for r in REGIONS], axis=1)
    f["purchase_rate_own_region"] = _pick(rates, region_idx)
    for c, src in (
        ("room_product_clicks", "clicks"),
        ("room_product_carts", "carts"),
        ("room_product_purchases", "purchases"),
        ("on_stage", "on_stage"),
    ):
        f[c] = np.nan_to_num(_num(cols, f"product_live__{src}", n))
    f["on_stage_for_min"] = np.where(
        f["on_stage"] > 0, np.asarray(derived["on_stage_for_min"], dtype=np.float64), np.nan
    )
    aff = np.stack([f[f"cat_aff_{c}"] for c in CATEGORIES], axis=1)
    f["affinity_to_category"] = _pick(aff, f["category"])
    mena = float(REGIONS.index("MENA"))
    f["noncompliant_for_mena"] = ((region_idx == mena) & (f["mena_compliant"] == 0.0)).astype(
        np.float64
    )
    f["discount_x_sea"] = f["discount_pct"] * (region_idx == float(REGIONS.index("SEA")))
    f["price_vs_aov"] = f["final_price_usd"] / f["avg_order_value_usd"]
    pid = np.broadcast_to(np.asarray(cols.get("product_id", [""] * n), dtype=object), (n,))
    last = np.broadcast_to(
        np.asarray(cols.get("viewer_live__last_product_id", [""] * n), dtype=object), (n,)
    )
    is_last = np.array([bool(a) and a == b for a, b in zip(last, pid, strict=True)])
    f["is_last_product"] = is_last.astype(np.float64)
    step = np.nan_to_num(_num(cols, "viewer_live__last_product_step", n))
    f["last_product_step"] = np.where(is_last, step, 0.0)
    f["in_cart"] = np.array(
        [bool(c) and p in c.split("|") for c, p in zip(cart_arr, pid, strict=True)], dtype=np.float64
    )
    f["exposure_kind"] = np.broadcast_to(np.asarray(exposure_kind, dtype=np.float64), (n,))


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
