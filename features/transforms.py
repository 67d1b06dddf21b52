"""Feature transforms: one definition for the batch build, live aggregation and serving.

:class:`LiveAggregator` folds raw events, in time order, into the live states
of the three push tables (``viewer_live``, ``product_live``, ``room_state``).
The batch build runs the very same fold over the event log and writes a row
after every change; the live aggregator process runs it over incoming events
and writes the changed rows to the online store.  So the two cannot drift.

Time-dependent features are stored as anchors (``*_ts``, epoch seconds) and
derived at the moment of scoring by :func:`as_of` — in training at the
scoring point, in serving at request time — so both agree between events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from features.schema import CHAT_TOPICS, CURRENCY_EXPONENT, FUNNEL_STEP, REGIONS
from features.tables import PRODUCT_LIVE, ROOM_STATE, VIEWER_LIVE

NAN = float("nan")


@dataclass(slots=True)
class Event:
    """One raw event, in plain Python types (times in epoch seconds)."""

    event_id: str
    event_type: str
    event_time: float
    room_id: str
    viewer_id: str | None = None
    product_id: str | None = None
    chat_topic: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    payment_method: str | None = None
    planned_end_time: float | None = None


#: (currency, epoch seconds) -> USD per unit of that currency.
FxLookup = Callable[[str, float], float]


@dataclass(slots=True)
class ViewerSession:
    """Live signals of one viewer in one room."""

    join_ts: float = NAN
    last_event_ts: float = NAN
    present: float = 0.0
    chat: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHAT_TOPICS, 0.0))
    chats: float = 0.0
    likes: float = 0.0
    shares: float = 0.0
    overlay_seen: float = 0.0
    clicks: float = 0.0
    carts: float = 0.0
    checkouts: float = 0.0
    purchases: float = 0.0
    funnel_step: float = 0.0
    purchase_usd: float = 0.0
    last_product_id: str = ""
    last_product_step: float = 0.0
    #: product -> funnel step reached, for products carted but not yet bought.
    cart: dict[str, int] = field(default_factory=dict)
    first_click_ts: float = NAN
    #: Latest time each funnel step was reached (any product): how fresh the intent is.
    last_click_ts: float = NAN
    last_cart_ts: float = NAN
    last_checkout_ts: float = NAN
    last_purchase_ts: float = NAN
    #: Events applied to this session: a reader may keep its row until this moves.
    changes: int = 0

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "join_ts": self.join_ts,
            "last_event_ts": self.last_event_ts,
            "last_click_ts": self.last_click_ts,
            "last_cart_ts": self.last_cart_ts,
            "last_checkout_ts": self.last_checkout_ts,
            "last_purchase_ts": self.last_purchase_ts,
            "present": self.present,
            "chats": self.chats,
            "likes": self.likes,
            "shares": self.shares,
            "overlay_seen": self.overlay_seen,
            "clicks": self.clicks,
            "carts": self.carts,
            "checkouts": self.checkouts,
            "purchases": self.purchases,
            "funnel_step": self.funnel_step,
            "purchase_usd": self.purchase_usd,
            "last_product_id": self.last_product_id,
            "last_product_step": self.last_product_step,
            "cart_products": "|".join(sorted(self.cart)),
        }
        for topic, n in self.chat.items():
            out[f"chat_{topic}"] = n
        return out


@dataclass(slots=True)
class ProductInRoom:
    clicks: float = 0.0
    carts: float = 0.0
    purchases: float = 0.0
    on_stage: float = 0.0
    stage_start_ts: float = NAN

    def row(self) -> dict[str, Any]:
        return {
            "clicks": self.clicks,
            "carts": self.carts,
            "purchases": self.purchases,
            "on_stage": self.on_stage,
            "stage_start_ts": self.stage_start_ts,
        }


@dataclass(slots=True)
class Room:
    stream_start_ts: float = NAN
    planned_end_ts: float = NAN
    present: dict[str, str] = field(default_factory=dict)  # viewer -> region
    joined: int = 0
    likes: float = 0.0
    chats: float = 0.0
    stage_product_id: str = ""
    stage_start_ts: float = NAN
    ended: bool = False

    def row(self) -> dict[str, Any]:
        n = len(self.present)
        counts = dict.fromkeys(REGIONS, 0)
        for region in self.present.values():
            if region in counts:
                counts[region] += 1
        out: dict[str, Any] = {
            "stream_start_ts": self.stream_start_ts,
            "planned_end_ts": self.planned_end_ts,
            "viewers_present": float(n),
            "viewers_joined": float(self.joined),
            "likes": self.likes,
            "chats": self.chats,
            "stage_product_id": self.stage_product_id,
            "stage_start_ts": self.stage_start_ts,
        }
        for region, c in counts.items():
            out[f"share_{region}"] = c / n if n else 0.0
        return out


Key = tuple[str, ...]


@dataclass
class Changes:
    """Keys whose state an event changed, per push table."""

    viewer_live: list[Key] = field(default_factory=list)
    product_live: list[Key] = field(default_factory=list)
    room_state: list[Key] = field(default_factory=list)


class LiveAggregator:
    """Folds events into live state. Plain Python: no I/O, no clock, no threads.

    ``region_of`` maps a viewer to its region (for the room's market mix);
    ``fx`` converts purchase amounts to USD.
    """

    def __init__(self, region_of: Callable[[str], str], fx: FxLookup) -> None:
        self.region_of = region_of
        self.fx = fx
        self.viewers: dict[Key, ViewerSession] = {}
        self.products: dict[Key, ProductInRoom] = {}
        self.rooms: dict[str, Room] = {}

    def room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room()
        return room

    def apply(self, e: Event) -> Changes:
        ch = Changes()
        room = self.room(e.room_id)
        t = e.event_time
        et = e.event_type
        if et == "stream_start":
            room.stream_start_ts = t
            if e.planned_end_time is not None:
                room.planned_end_ts = float(e.planned_end_time)
            ch.room_state.append((e.room_id,))
            return ch
        if et == "stream_end":
            room.ended = True
            room.present.clear()
            ch.room_state.append((e.room_id,))
            return ch
        if et == "stage_change":
            assert e.product_id is not None
            old = room.stage_product_id
            if old:
                prev = self._product(old, e.room_id)
                prev.on_stage = 0.0
                ch.product_live.append((old, e.room_id))
            p = self._product(e.product_id, e.room_id)
            p.on_stage, p.stage_start_ts = 1.0, t
            room.stage_product_id, room.stage_start_ts = e.product_id, t
            ch.product_live.append((e.product_id, e.room_id))
            ch.room_state.append((e.room_id,))
            return ch
        assert e.viewer_id is not None
        key = (e.viewer_id, e.room_id)
        s = self.viewers.get(key)
        if s is None:
            s = self.viewers[key] = ViewerSession()
        # Order-tolerant: events inside the out-of-order window may arrive late.
        if not t <= s.last_event_ts:
            s.last_event_ts = t
        s.changes += 1
        ch.viewer_live.append(key)
        if et == "join":
            if s.present == 0.0:
                room.joined += 1
            s.present = 1.0
            if not s.join_ts <= t:
                s.join_ts = t
            room.present[e.viewer_id] = self.region_of(e.viewer_id)
            ch.room_state.append((e.room_id,))
        elif et == "leave":
            s.present = 0.0
            room.present.pop(e.viewer_id, None)
            ch.room_state.append((e.room_id,))
        elif et == "chat":
            s.chats += 1
            topic = e.chat_topic if e.chat_topic in s.chat else "other"
            s.chat[topic] += 1
            room.chats += 1
            ch.room_state.append((e.room_id,))
        elif et == "like":
            s.likes += 1
            room.likes += 1
            ch.room_state.append((e.room_id,))
        elif et == "share":
            s.shares += 1
        elif et == "overlay_impression":
            s.overlay_seen += 1
        elif et in FUNNEL_STEP:
            assert e.product_id is not None
            step = FUNNEL_STEP[et]
            p = self._product(e.product_id, e.room_id)
            ch.product_live.append((e.product_id, e.room_id))
            s.funnel_step = max(s.funnel_step, float(step))
            s.last_product_id, s.last_product_step = e.product_id, float(step)
            if step == 1:
                s.clicks += 1
                p.clicks += 1
                if not s.first_click_ts <= t:
                    s.first_click_ts = t
                if not t <= s.last_click_ts:
                    s.last_click_ts = t
            elif step == 2:
                s.carts += 1
                p.carts += 1
                s.cart[e.product_id] = 2
                if not t <= s.last_cart_ts:
                    s.last_cart_ts = t
            elif step == 3:
                s.checkouts += 1
                s.cart[e.product_id] = 3
                if not t <= s.last_checkout_ts:
                    s.last_checkout_ts = t
            else:
                s.purchases += 1
                p.purchases += 1
                s.cart.pop(e.product_id, None)
                if not t <= s.last_purchase_ts:
                    s.last_purchase_ts = t
                s.purchase_usd += usd_amount(e, self.fx)
        return ch

    def _product(self, product_id: str, room_id: str) -> ProductInRoom:
        key = (product_id, room_id)
        p = self.products.get(key)
        if p is None:
            p = self.products[key] = ProductInRoom()
        return p

    def rows(self, table: str, key: Key) -> dict[str, Any]:
        """The current row of ``table`` for ``key`` (without keys or timestamp)."""
        if table == VIEWER_LIVE.name:
            return self.viewers[key].row()
        if table == PRODUCT_LIVE.name:
            return self.products[key].row()
        if table == ROOM_STATE.name:
            return self.rooms[key[0]].row()
        raise KeyError(table)


def usd_amount(e: Event, fx: FxLookup) -> float:
    """A purchase's amount in USD, from integer minor units and the day's rate."""
    if e.amount_minor is None or e.currency is None:
        return 0.0
    major = e.amount_minor / 10 ** CURRENCY_EXPONENT[e.currency]
    return major * fx(e.currency, e.event_time)


#: Time-dependent features: name -> (anchor column, scale, sign);
#: value = sign * (now - anchor) / scale.
AS_OF: dict[str, tuple[str, float, float]] = {
    "dwell_min": ("viewer_live__join_ts", 60.0, 1.0),
    "idle_s": ("viewer_live__last_event_ts", 1.0, 1.0),
    "days_since_last_order": ("viewer_profile__last_order_ts", 86400.0, 1.0),
    "tenure_days": ("viewer_profile__first_seen_ts", 86400.0, 1.0),
    "on_stage_for_min": ("product_live__stage_start_ts", 60.0, 1.0),
    "stream_age_min": ("room_state__stream_start_ts", 60.0, 1.0),
    "since_click_min": ("viewer_live__last_click_ts", 60.0, 1.0),
    "since_cart_min": ("viewer_live__last_cart_ts", 60.0, 1.0),
    "since_checkout_min": ("viewer_live__last_checkout_ts", 60.0, 1.0),
    "since_purchase_min": ("viewer_live__last_purchase_ts", 60.0, 1.0),
    # Negative once the planned end has passed (an overrun): still informative.
    "minutes_left": ("room_state__planned_end_ts", 60.0, -1.0),
}


def as_of(
    row: Mapping[str, Any], now: float | np.ndarray, names: Iterable[str] | None = None
) -> dict[str, Any]:
    """Derive time-dependent features (:data:`AS_OF`, or just ``names``) from anchors at
    ``now`` (epoch seconds).

    Works on scalars (serving one row) and on numpy columns (training, batches).
    Missing anchors give NaN, which the models treat as missing.
    """

    def since(anchor_name: str, scale: float, sign: float) -> Any:
        anchor = row.get(anchor_name)
        if anchor is None:
            return np.nan if np.ndim(now) == 0 else np.full(np.shape(now), np.nan)
        value = (now - np.asarray(anchor, dtype=np.float64)) / scale
        return -value if sign < 0 else value

    return {name: since(*AS_OF[name]) for name in (AS_OF if names is None else names)}


#: The raw-schema columns an :class:`Event` is built from, in its field order.
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Event))


def events_from_columns(cols: Mapping[str, Iterable[Any]]) -> Iterable[Event]:
    """Events from column arrays of the raw schema (times as epoch seconds)."""
    for values in zip(*(cols[n] for n in EVENT_FIELDS), strict=True):
        yield Event(*values)
