"""The offline feature tables: names, keys and columns, declared once.

The batch build (:mod:`features.build`) writes these parquet tables, the Feast
definitions (:mod:`features.definitions`) declare views over them, the live
aggregator writes rows with the same columns, and the vector assembly
(:mod:`features.vector`) reads them back by these names.

Time-dependent values are stored as *anchors* (epoch seconds, suffix ``_ts``)
and derived at the moment of scoring by :func:`features.transforms.as_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from features.schema import CATEGORIES, CHAT_TOPICS, REGIONS


@dataclass(frozen=True)
class FeatureTable:
    name: str
    keys: tuple[str, ...]
    #: Column -> one of "float", "int", "string".
    columns: dict[str, str]
    #: How long a row stays valid (Feast TTL, applied by LiveRec online too).
    ttl: timedelta
    #: "batch" (built from history) or "push" (written live by the aggregator).
    kind: str
    description: str

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"


def _floats(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, "float")


VIEWER_DEMOGRAPHICS = FeatureTable(
    name="viewer_demographics",
    keys=("viewer_id",),
    columns=dict.fromkeys(
        ("market", "region", "age_band", "gender", "language", "device", "income_band"), "string"
    ),
    ttl=timedelta(days=3650),
    kind="batch",
    description="Dimension 1: who the viewer is (from the viewer directory).",
)

VIEWER_PROFILE = FeatureTable(
    name="viewer_profile",
    keys=("viewer_id",),
    columns={
        **_floats(
            "sessions_count",
            "total_dwell_min",
            "avg_dwell_min",
            "order_count",
            "order_value_usd",
            "avg_order_value_usd",
            "last_order_ts",
            "first_seen_ts",
            "decision_time_min",
            "clicks_per_session",
            "likes_per_session",
            "cart_abandon_rate",
        ),
        "preferred_payment": "string",
        **_floats(*(f"cat_aff_{c}" for c in CATEGORIES)),
        **_floats(*(f"topic_rate_{t}" for t in CHAT_TOPICS)),
    },
    ttl=timedelta(days=400),
    kind="batch",
    description=(
        "Dimensions 2-4 from completed sessions before each daily snapshot: purchase "
        "behaviour, interests, motivation and pain points."
    ),
)

VIEWER_LIVE = FeatureTable(
    name="viewer_live",
    keys=("viewer_id", "room_id"),
    columns={
        **_floats("join_ts", "last_event_ts", "present"),
        **_floats("last_click_ts", "last_cart_ts", "last_checkout_ts", "last_purchase_ts"),
        **_floats(*(f"chat_{t}" for t in CHAT_TOPICS)),
        **_floats(
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
        ),
        "last_product_id": "string",
        **_floats("last_product_step"),
        "cart_products": "string",
    },
    ttl=timedelta(hours=12),
    kind="push",
    description="Live signals of one viewer in one room (one session never leaks into the next).",
)

PRODUCT_STATS = FeatureTable(
    name="product_stats",
    keys=("product_id",),
    columns={
        "category": "string",
        **_floats("price_usd", "discount_pct", "final_price_usd", "mena_compliant"),
        **_floats("lineup_sessions", "click_rate", "cart_rate", "purchase_rate"),
        **_floats(*(f"purchase_rate_{r}" for r in REGIONS)),
    },
    ttl=timedelta(days=400),
    kind="batch",
    description="Catalogue facts and per-market conversion rates from history (daily snapshots).",
)

PRODUCT_LIVE = FeatureTable(
    name="product_live",
    keys=("product_id", "room_id"),
    columns=_floats("clicks", "carts", "purchases", "on_stage", "stage_start_ts"),
    ttl=timedelta(hours=12),
    kind="push",
    description="How a product is doing in one room right now.",
)

ROOM_STATE = FeatureTable(
    name="room_state",
    keys=("room_id",),
    columns={
        **_floats("stream_start_ts", "planned_end_ts"),
        **_floats("viewers_present", "viewers_joined", "likes", "chats"),
        **_floats(*(f"share_{r}" for r in REGIONS)),
        "stage_product_id": "string",
        **_floats("stage_start_ts"),
    },
    ttl=timedelta(hours=12),
    kind="push",
    description="The room: who is present, the market mix, what is on stage.",
)

ALL_TABLES: tuple[FeatureTable, ...] = (
    VIEWER_DEMOGRAPHICS,
    VIEWER_PROFILE,
    VIEWER_LIVE,
    PRODUCT_STATS,
    PRODUCT_LIVE,
    ROOM_STATE,
)
BY_NAME = {t.name: t for t in ALL_TABLES}
TIMESTAMP = "event_timestamp"
