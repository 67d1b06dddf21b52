"""Reasons: the top contributing features of a score, as codes, arguments and sentences.

A model's per-feature contributions (LightGBM ``pred_contrib``, in raw-score
units) say which features pushed a score up or down; this module turns the
strongest few into ``Reason`` objects a host can read ("asked about shipping
twice", "price-sensitive market, 30% off"). Only the items returned get
reasons, so the cost is paid for ``top_k`` rows, not every candidate.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence

import numpy as np

from features.markets import MARKETS
from features.schema import CATEGORIES, CHAT_TOPICS, PAYMENT_METHODS, REGIONS
from features.world import AGE_BANDS, DEVICES, GENDERS, INCOME_BANDS
from service.domain import Reason
from service.generations import Generations

_TOPIC_WORDS = {
    "price": "the price",
    "shipping": "shipping",
    "size_fit": "size and fit",
    "usage": "how to use it",
    "authenticity": "authenticity",
    "payment": "payment options",
    "other": "other things",
}


def _times(n: float) -> str:
    k = round(n)
    return {0: "never", 1: "once", 2: "twice"}.get(k, f"{k} times")


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _name(vocab: Sequence[str], v: float) -> str:
    return vocab[int(v)] if not math.isnan(v) and 0 <= int(v) < len(vocab) else "unknown"


#: feature -> (code, args from the value, sentence from the value), for one viewer.
Rule = tuple[str, Callable[[float], dict[str, str]], Callable[[float], str]]
_RULES: dict[str, Rule] = {
    **{
        f"chat_{t}": (
            f"ASKED_{t.upper()}",
            lambda v, t=t: {"topic": t, "count": _num(v)},  # type: ignore[misc]
            lambda v, t=t: f"asked about {_TOPIC_WORDS[t]} {_times(v)}",  # type: ignore[misc]
        )
        for t in CHAT_TOPICS
    },
    "carts": (
        "ADDED_TO_CART",
        lambda v: {"count": _num(v)},
        lambda v: f"added to cart {_times(v)}" if v else "has not added anything to cart",
    ),
    "in_cart": (
        "IN_CART",
        lambda v: {},
        lambda v: "already in the cart" if v else "not in the cart",
    ),
    "cart_size": (
        "CART_SIZE",
        lambda v: {"count": _num(v)},
        lambda v: f"{_num(v)} products in cart",
    ),
    "checkouts": (
        "STARTED_CHECKOUT",
        lambda v: {"count": _num(v)},
        lambda v: f"started checkout {_times(v)}" if v else "has not started checkout",
    ),
    "clicks": (
        "CLICKED_PRODUCTS",
        lambda v: {"count": _num(v)},
        lambda v: f"clicked products {_times(v)}",
    ),
    "funnel_step": (
        "FUNNEL_STEP",
        lambda v: {"step": _num(v)},
        lambda v: f"reached funnel step {_num(v)} of 4",
    ),
    "dwell_min": (
        "DWELL",
        lambda v: {"minutes": _num(v)},
        lambda v: f"watching for {_num(v)} minutes",
    ),
    "idle_s": (
        "IDLE",
        lambda v: {"seconds": _num(v)},
        lambda v: f"last active {_num(v)} seconds ago",
    ),
    **{
        f"since_{step}_min": (
            f"LAST_{code}",
            lambda v: {"minutes": _num(v)},
            lambda v, words=words: f"{words} {_num(v)} minutes ago",  # type: ignore[misc]
        )
        for step, code, words in (
            ("click", "CLICK", "clicked a product"),
            ("cart", "ADD_TO_CART", "added to cart"),
            ("checkout", "CHECKOUT", "started checkout"),
            ("purchase", "PURCHASE", "bought"),
        )
    },
    "room_minutes_left": (
        "STREAM_ENDS_IN",
        lambda v: {"minutes": _num(v)},
        lambda v: (
            f"stream ends in {_num(v)} minutes"
            if v >= 0
            else f"stream {_num(-v)} minutes past its planned end"
        ),
    ),
    "likes": ("LIKED", lambda v: {"count": _num(v)}, lambda v: f"liked the stream {_times(v)}"),
    "shares": ("SHARED", lambda v: {"count": _num(v)}, lambda v: f"shared the stream {_times(v)}"),
    "order_count": (
        "PAST_ORDERS",
        lambda v: {"count": _num(v)},
        lambda v: f"{_num(v)} past orders" if v else "no past orders",
    ),
    "days_since_last_order": (
        "RECENT_ORDER",
        lambda v: {"days": _num(v)},
        lambda v: f"last order {_num(v)} days ago",
    ),
    "avg_order_value_usd": (
        "ORDER_VALUE",
        lambda v: {"usd": _num(v)},
        lambda v: f"average order ${_num(v)}",
    ),
    "cart_abandon_rate": (
        "ABANDONS_CARTS",
        lambda v: {"share": f"{v:.2f}"},
        lambda v: f"abandons {v * 100:.0f}% of carts",
    ),
    "sessions_count": (
        "RETURNING_VIEWER",
        lambda v: {"count": _num(v)},
        lambda v: f"watched {_num(v)} streams before",
    ),
    "discount_x_sea": (
        "PRICE_SENSITIVE_DISCOUNT",
        lambda v: {"discount_pct": _num(v * 100)},
        lambda v: f"price-sensitive market, {v * 100:.0f}% off",
    ),
    "discount_pct": (
        "DISCOUNT",
        lambda v: {"discount_pct": _num(v * 100)},
        lambda v: f"{v * 100:.0f}% off",
    ),
    "affinity_to_category": (
        "LIKES_CATEGORY",
        lambda v: {"affinity": f"{v:.2f}"},
        lambda v: f"{v * 100:.0f}% of past interest is in this category",
    ),
    "noncompliant_for_mena": (
        "NOT_MENA_COMPLIANT",
        lambda v: {},
        lambda v: "not certified for MENA norms" if v else "fits MENA norms",
    ),
    "purchase_rate_own_region": (
        "POPULAR_IN_REGION",
        lambda v: {"rate": f"{v:.3f}"},
        lambda v: f"{v * 100:.1f}% of viewers in this region buy it",
    ),
    "purchase_rate": (
        "POPULAR",
        lambda v: {"rate": f"{v:.3f}"},
        lambda v: f"{v * 100:.1f}% of viewers buy it",
    ),
    "on_stage": ("ON_STAGE", lambda v: {}, lambda v: "on stage now" if v else "not on stage"),
    "is_last_product": (
        "LAST_VIEWED",
        lambda v: {},
        lambda v: "the product they looked at last" if v else "not the last viewed",
    ),
    "price_vs_aov": (
        "PRICE_VS_BUDGET",
        lambda v: {"ratio": f"{v:.2f}"},
        lambda v: f"price is {v:.1f}× their average order",
    ),
    **{
        f"cat_aff_{c}": (
            "INTEREST_IN_CATEGORY",
            lambda v, c=c: {"category": c, "share": f"{v:.2f}"},  # type: ignore[misc]
            lambda v, c=c: f"{v * 100:.0f}% of past interest in {c.replace('_', ' ')}",  # type: ignore[misc]
        )
        for c in CATEGORIES
    },
    **{
        f"topic_rate_{t}": (
            f"USUALLY_ASKS_{t.upper()}",
            lambda v, t=t: {"topic": t, "per_stream": f"{v:.2f}"},  # type: ignore[misc]
            lambda v, t=t: f"usually asks about {_TOPIC_WORDS[t]} ({v:.1f} per stream)",  # type: ignore[misc]
        )
        for t in CHAT_TOPICS
    },
    "chats": ("CHATTED", lambda v: {"count": _num(v)}, lambda v: f"chatted {_times(v)}"),
    "purchases": (
        "BOUGHT",
        lambda v: {"count": _num(v)},
        lambda v: f"bought {_times(v)} in this stream",
    ),
    "overlay_seen": (
        "SAW_OVERLAY",
        lambda v: {"count": _num(v)},
        lambda v: f"saw the overlay {_times(v)}",
    ),
    "tenure_days": (
        "TENURE",
        lambda v: {"days": _num(v)},
        lambda v: f"a viewer for {_num(v)} days",
    ),
    "local_hour": (
        "LOCAL_HOUR",
        lambda v: {"hour": f"{int(v)}"},
        lambda v: f"{int(v)}:00 local time for the viewer",
    ),
    "room_viewers_present": (
        "ROOM_SIZE",
        lambda v: {"viewers": _num(v)},
        lambda v: f"{_num(v)} viewers in the room",
    ),
    "room_stream_age_min": (
        "STREAM_AGE",
        lambda v: {"minutes": _num(v)},
        lambda v: f"stream on air for {_num(v)} minutes",
    ),
    "lineup_sessions": (
        "FEATURED_BEFORE",
        lambda v: {"streams": _num(v)},
        lambda v: f"featured in {_num(v)} past streams",
    ),
    "final_price_usd": ("PRICE", lambda v: {"usd": f"{v:.2f}"}, lambda v: f"costs ${v:.2f}"),
    "on_stage_for_min": (
        "ON_STAGE_FOR",
        lambda v: {"minutes": _num(v)},
        lambda v: f"on stage for {_num(v)} minutes",
    ),
    **{
        feature: (
            code,
            lambda v, f=feature, vocab=vocab: {f: _name(vocab, v)},  # type: ignore[misc]
            lambda v, words=words, vocab=vocab: f"{words} {_name(vocab, v)}",  # type: ignore[misc]
        )
        for feature, code, words, vocab in (
            ("market", "MARKET_COUNTRY", "viewer in", tuple(MARKETS)),
            ("age_band", "AGE_BAND", "aged", AGE_BANDS),
            ("gender", "GENDER", "gender:", GENDERS),
            ("device", "DEVICE", "watching on", DEVICES),
            ("income_band", "INCOME_BAND", "income band:", INCOME_BANDS),
            ("preferred_payment", "PREFERRED_PAYMENT", "usually pays by", PAYMENT_METHODS),
        )
    },
    "region": (
        "MARKET",
        lambda v: {"region": _name(REGIONS, v)},
        lambda v: f"viewer in the {_name(REGIONS, v)} market",
    ),
    "category": (
        "CATEGORY",
        lambda v: {"category": _name(CATEGORIES, v)},
        lambda v: f"a {_name(CATEGORIES, v).replace('_', ' ')} product",
    ),
}


#: What a missing value means, for features where "missing" is a fact about the viewer.
_WHEN_MISSING: dict[str, tuple[str, str]] = {
    "since_click_min": ("NO_CLICK_YET", "has not clicked a product yet"),
    "since_cart_min": ("NO_CART_YET", "has not added to cart yet"),
    "since_checkout_min": ("NO_CHECKOUT_YET", "has not started checkout yet"),
    "since_purchase_min": ("NO_PURCHASE_YET", "has not bought in this stream yet"),
    "room_minutes_left": ("NO_PLANNED_END", "the stream's end was not announced"),
}


def _generic(feature: str, v: float) -> tuple[str, dict[str, str], str]:
    if math.isnan(v) and feature in _WHEN_MISSING:
        code, text = _WHEN_MISSING[feature]
        return code, {}, text
    shown = "unknown" if math.isnan(v) else f"{v:.3g}"
    return (
        f"FEATURE_{feature.upper()}",
        {"feature": feature, "value": shown},
        f"{feature} is {shown}",
    )


#: Features that explain nothing to a host: the same for every candidate of a call.
_SILENT = frozenset({"exposure_kind"})


def _audible(columns: Sequence[str], contrib: np.ndarray) -> np.ndarray:
    silent = _silent(tuple(columns))
    if not silent:
        return contrib
    out = np.array(contrib, dtype=np.float64, copy=True)
    out[..., silent] = 0.0
    return out


@functools.lru_cache(maxsize=64)
def _silent(columns: tuple[str, ...]) -> list[int]:
    """Positions of the columns that never give a reason (a model has one column order)."""
    return [j for j, c in enumerate(columns) if c in _SILENT]


def explain(
    columns: Sequence[str], x: np.ndarray, contrib: np.ndarray | None, n: int
) -> list[Reason]:
    """The ``n`` strongest contributions of one row, strongest first."""
    if contrib is None or n <= 0:
        return []
    return explain_rows(columns, np.asarray(x)[None, :], np.asarray(contrib)[None, :], n)[0]


def explain_rows(
    columns: Sequence[str], X: np.ndarray, contrib: np.ndarray | None, n: int
) -> list[list[Reason]]:
    """:func:`explain` of every row of ``X`` (``contrib`` aligned with it), with one sort
    for all the rows instead of one per row."""
    if contrib is None or n <= 0:
        return [[] for _ in range(len(X))]
    contrib = _audible(columns, contrib)
    order = (-np.abs(contrib)).argsort(axis=1, kind="stable")[:, :n]
    at = np.arange(len(order))[:, None]  # = take_along_axis, without its Python overhead
    weights = contrib[at, order].tolist()
    values = np.asarray(X)[at, order].tolist()
    out: list[list[Reason]] = []
    for js, ws, vs in zip(order.tolist(), weights, values, strict=True):
        reasons: list[Reason] = []
        for j, weight, value in zip(js, ws, vs, strict=True):
            if weight == 0.0:
                break
            reasons.append(_reason(columns[j], float(value), weight))
        out.append(reasons)
    return out


def _reason(feature: str, value: float, weight: float) -> Reason:
    if value != value:  # NaN never equals a key: one description per feature instead
        code, args, text = _missing(feature)
        return Reason(code, args, text, weight)
    key = (feature, value)
    described = _DESCRIBED.young.get(key)
    kept = _ARGS.young.get(key)
    if described is None or kept is None:
        described, kept = _describe_kept(key)
    # ``args`` is shared by every reason of this value: answers never change it.
    return Reason(described[0], kept, described[1], weight)


#: ``(feature, value)`` -> ``(code, text)`` and -> args: the same values come back call
#: after call (a product's price, a viewer's profile), so each is formatted once. Two
#: maps hold only strings, floats, tuples of them and dicts of strings, which the cyclic
#: garbage collector stops tracking: a tuple that holds a dict stays tracked for as long
#: as it lives, and every full collection walks it. (An ``lru_cache`` of ``(code, args,
#: text)`` with NaN keys, which never hit, filled to 65,536 such entries and made a
#: server's full collections about five times as long and as frequent.) Each in two
#: generations of at most ``DESCRIBED_MAX // 2`` entries (:class:`Generations`), written
#: together under one lock so that they turn over together.
DESCRIBED_MAX = 1 << 16
_DESCRIBED: Generations[tuple[str, float], tuple[str, str]] = Generations(DESCRIBED_MAX)
_ARGS: Generations[tuple[str, float], dict[str, str]] = Generations(DESCRIBED_MAX)
_described_lock = threading.Lock()


def _describe_kept(key: tuple[str, float]) -> tuple[tuple[str, str], dict[str, str]]:
    with _described_lock:
        args, described = _ARGS.get(key), _DESCRIBED.get(key)
        if described is not None and args is not None:
            return described, args
    code, args, text = _describe(*key)
    described = (code, text)
    with _described_lock:
        # Args first: the lock-free readers of _reason look up the text first, so one that
        # finds this text finds these args too.
        _ARGS.put(key, args)
        _DESCRIBED.put(key, described)
    return described, args


@functools.lru_cache(maxsize=256)
def _missing(feature: str) -> tuple[str, dict[str, str], str]:
    return _describe(feature, math.nan)


def _describe(feature: str, value: float) -> tuple[str, dict[str, str], str]:
    """Code, args and sentence of one feature value."""
    rule = _RULES.get(feature)
    if rule is None or (math.isnan(value) and feature in _RULES):
        return _generic(feature, value)
    return rule[0], rule[1](value), rule[2](value)


#: Count-like features: in a room, "k of n viewers present <verb>" (code MANY_<code>).
_ROOM_COUNTS: dict[str, tuple[str, str]] = {
    **{f"chat_{t}": (f"ASKED_{t.upper()}", f"asked about {w}") for t, w in _TOPIC_WORDS.items()},
    "carts": ("ADDED_TO_CART", "added something to cart"),
    "checkouts": ("STARTED_CHECKOUT", "started checkout"),
    "clicks": ("CLICKED_PRODUCTS", "clicked a product"),
    "likes": ("LIKED", "liked the stream"),
    "shares": ("SHARED", "shared the stream"),
    "chats": ("CHATTED", "chatted"),
    "purchases": ("BOUGHT", "bought something"),
    "in_cart": ("IN_CART", "have it in their cart"),
    "is_last_product": ("LAST_VIEWED", "looked at it last"),
    "order_count": ("PAST_ORDERS", "bought before"),
}


def explain_room(
    columns: Sequence[str],
    column: Callable[[int], np.ndarray],
    present: int,
    contrib: np.ndarray | None,
    n: int,
) -> list[Reason]:
    """Reasons of one candidate over a room: contributions summed over the viewers present.

    ``column(j)`` is column ``j`` of the candidate's rows, one value per viewer present
    (``present`` of them). ``contrib`` may cover only some of those rows (the viewers who
    carry the expected conversions, when a room is large); counts and means always use
    every viewer. Count features say how many viewers did it ("MANY_ASKED_SIZE_FIT":
    "7 of 40 viewers present asked about size and fit"); others give the room's mean
    value.
    """
    if contrib is None or n <= 0 or present == 0:
        return []
    contrib = _audible(columns, contrib)
    total = contrib.sum(axis=0)
    order = np.argsort(-np.abs(total), kind="stable")[:n]
    out: list[Reason] = []
    for j in order:
        weight = float(total[j])
        if weight == 0.0:
            break
        feature = columns[j]
        col = np.asarray(column(int(j)), dtype=np.float64)
        counted = _ROOM_COUNTS.get(feature)
        if counted is not None:
            k = int(np.sum(np.nan_to_num(col) > 0))
            args = {"viewers": str(k), "present": str(present)}
            if feature.startswith("chat_"):
                args["topic"] = feature[5:]
            text = f"{k} of {present} viewers present {counted[1]}"
            out.append(Reason(code=f"MANY_{counted[0]}", args=args, text=text, weight=weight))
            continue
        mean = float(np.nanmean(col)) if np.any(~np.isnan(col)) else float("nan")
        rule = _RULES.get(feature)
        if rule is None or math.isnan(mean):
            code, args, text = _generic(feature, mean)
        else:
            code, args, text = rule[0], rule[1](mean), rule[2](mean)
        out.append(Reason(code=code, args=args, text=f"on average: {text}", weight=weight))
    return out
