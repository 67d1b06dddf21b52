"""Markets of the cross-border world and how their viewers behave (DESIGN §3).

The observable part (country, currency, time zone, payment mix, shipping days)
is what a real backend knows; the behavioural part (``RegionBehaviour``) is the
simulator's hidden truth and is never written as a column.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Market:
    code: str
    region: str
    tz: str
    currency: str
    language: str
    #: Weights of card, wallet, cod, bank_transfer.
    payment_mix: tuple[float, float, float, float]
    #: Typical cross-border delivery time in days.
    shipping_days: float
    #: Share of the viewer population.
    weight: float


MARKETS: dict[str, Market] = {
    m.code: m
    for m in (
        Market("US", "US", "America/New_York", "USD", "en", (0.72, 0.23, 0.0, 0.05), 6, 0.20),
        Market("DE", "EU", "Europe/Berlin", "EUR", "de", (0.40, 0.35, 0.0, 0.25), 7, 0.06),
        Market("FR", "EU", "Europe/Paris", "EUR", "fr", (0.55, 0.35, 0.0, 0.10), 7, 0.05),
        Market("UK", "EU", "Europe/London", "GBP", "en", (0.65, 0.30, 0.0, 0.05), 6, 0.05),
        Market("ID", "SEA", "Asia/Jakarta", "IDR", "id", (0.08, 0.50, 0.35, 0.07), 9, 0.10),
        Market("TH", "SEA", "Asia/Bangkok", "THB", "th", (0.15, 0.45, 0.30, 0.10), 8, 0.06),
        Market("VN", "SEA", "Asia/Ho_Chi_Minh", "VND", "vi", (0.08, 0.40, 0.47, 0.05), 9, 0.06),
        Market("PH", "SEA", "Asia/Manila", "PHP", "en", (0.10, 0.45, 0.40, 0.05), 10, 0.06),
        Market("MY", "SEA", "Asia/Kuala_Lumpur", "MYR", "ms", (0.25, 0.50, 0.15, 0.10), 8, 0.05),
        Market("JP", "JP", "Asia/Tokyo", "JPY", "ja", (0.60, 0.25, 0.10, 0.05), 5, 0.15),
        Market("AE", "MENA", "Asia/Dubai", "AED", "ar", (0.50, 0.20, 0.30, 0.0), 7, 0.08),
        Market("SA", "MENA", "Asia/Riyadh", "SAR", "ar", (0.40, 0.20, 0.40, 0.0), 8, 0.08),
    )
}

#: Units of each currency one US dollar buys, at the start of the world.
FX_START: dict[str, float] = {
    "USD": 1.0,
    "EUR": 0.92,
    "GBP": 0.79,
    "IDR": 15800.0,
    "THB": 35.5,
    "VND": 25000.0,
    "PHP": 57.0,
    "MYR": 4.7,
    "JPY": 150.0,
    "AED": 3.6725,
    "SAR": 3.75,
}


@dataclass(frozen=True)
class RegionBehaviour:
    """Hidden behaviour of a region's viewers (DESIGN §3)."""

    #: Mean sensitivity to log price (utility per log-unit of price).
    price_sensitivity: float
    #: Utility per unit of discount share (0.3 off -> 0.3 * this).
    discount_response: float
    #: Multiplier on funnel progression per minute (decision speed).
    decision_speed: float
    #: Multiplier on the leave hazard (lower = more patient).
    leave_mult: float
    #: Utility per log(1 + past orders): trust that makes viewers re-buy.
    trust_gain: float
    #: Utility penalty for products that do not fit religious/cultural norms.
    compliance_penalty: float
    #: Utility per unit of host energy (lively interaction).
    liveliness_response: float
    #: Utility penalty per day of shipping.
    shipping_penalty: float
    #: Weights over chat topics (price, shipping, size_fit, usage, authenticity, payment, other).
    topic_mix: tuple[float, float, float, float, float, float, float]


REGION_BEHAVIOUR: dict[str, RegionBehaviour] = {
    "US": RegionBehaviour(0.55, 1.0, 0.55, 1.0, 0.55, 0.0, 0.1, 0.03, (1, 2, 3, 5, 2, 1, 2)),
    "EU": RegionBehaviour(0.75, 1.3, 0.8, 1.0, 0.3, 0.0, 0.2, 0.05, (2, 4, 3, 2, 2, 1, 2)),
    "SEA": RegionBehaviour(1.3, 1.9, 1.2, 1.15, 0.15, 0.0, 0.5, 0.02, (6, 3, 1, 1, 1, 3, 2)),
    "JP": RegionBehaviour(0.65, 0.5, 0.45, 0.7, 0.35, 0.0, 0.0, 0.04, (1, 1, 4, 4, 3, 1, 1)),
    "MENA": RegionBehaviour(0.8, 1.6, 0.9, 1.0, 0.3, 2.6, 0.3, 0.04, (2, 2, 2, 1, 4, 3, 1)),
}

#: Categories where a non-compliant product matters to MENA viewers.
COMPLIANCE_SENSITIVE = frozenset({"beauty", "fashion", "food", "health"})

#: Typical list price in USD per category (log-normal centre).
CATEGORY_PRICE_USD: dict[str, float] = {
    "beauty": 28.0,
    "fashion": 45.0,
    "modest_fashion": 55.0,
    "electronics": 120.0,
    "home": 40.0,
    "food": 15.0,
    "health": 30.0,
    "kids": 25.0,
}

CHAT_TEXTS: dict[str, tuple[str, ...]] = {
    "price": ("how much?", "any discount code?", "price after discount?", "too expensive"),
    "shipping": ("ship to my country?", "how long is delivery?", "shipping fee?"),
    "size_fit": ("what size for 165cm?", "true to size?", "does it run small?"),
    "usage": ("how do you use it?", "show it again please", "is it good for daily use?"),
    "authenticity": ("is it original?", "halal certified?", "where is it made?"),
    "payment": ("cash on delivery ok?", "can I pay by wallet?", "installments?"),
    "other": ("hi from here!", "love this stream", "hello host"),
}
