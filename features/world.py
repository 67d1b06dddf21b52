"""The simulated population: viewers, products, hosts and streams with hidden traits.

Everything here is drawn from one seeded generator, so a seed fixes the world.
Observable attributes become the ``viewers``/``products``/``streams`` tables;
hidden traits stay in the arrays of :class:`World` and drive
:mod:`features.session_sim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.markets import (
    CATEGORY_PRICE_USD,
    COMPLIANCE_SENSITIVE,
    FX_START,
    MARKETS,
    REGION_BEHAVIOUR,
)
from features.schema import CATEGORIES, REGIONS, to_minor


@dataclass(frozen=True)
class WorldSize:
    viewers: int
    products: int
    hosts: int
    days: int
    streams_per_day: int
    viewers_per_stream: int
    lineup: tuple[int, int]
    slot_minutes: tuple[int, int]


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize(900, 60, 6, 4, 5, 60, (6, 8), (4, 7)),
    "small": WorldSize(6000, 160, 20, 14, 8, 160, (8, 11), (5, 9)),
    "default": WorldSize(30000, 400, 60, 30, 14, 360, (8, 12), (5, 10)),
    "large": WorldSize(150000, 1000, 150, 30, 24, 700, (8, 12), (5, 10)),
}

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("female", "male", "other")
DEVICES = ("mobile", "desktop", "tv")
INCOME_BANDS = ("low", "mid", "high")
DEFAULT_END = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class World:
    """The population and its hidden traits, indexed by position."""

    size: WorldSize
    start: datetime
    market_codes: list[str]
    # viewers
    v_market: np.ndarray
    v_region: np.ndarray
    v_age: np.ndarray
    v_gender: np.ndarray
    v_device: np.ndarray
    v_income: np.ndarray
    v_signup: np.ndarray
    v_base: np.ndarray
    v_price_sens: np.ndarray
    v_affinity: np.ndarray
    v_speed: np.ndarray
    v_leave: np.ndarray
    v_mood: np.ndarray
    v_engagement: np.ndarray
    v_activity: np.ndarray
    v_pay: np.ndarray
    # products
    p_category: np.ndarray
    p_price_usd: np.ndarray
    p_discount: np.ndarray
    p_compliant: np.ndarray
    p_quality: np.ndarray
    p_seller_market: np.ndarray
    # hosts
    h_market: np.ndarray
    h_energy: np.ndarray
    h_focus: np.ndarray
    h_popularity: np.ndarray
    # evolving state
    v_orders: np.ndarray = field(init=False)
    v_busy_until: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.v_orders = np.zeros(len(self.v_market), dtype=np.int32)
        self.v_busy_until = np.full(len(self.v_market), np.iinfo(np.int64).min, dtype=np.int64)


def viewer_id(i: int | np.ndarray) -> str:
    return f"v{int(i):07d}"


def product_id(i: int | np.ndarray) -> str:
    return f"p{int(i):05d}"


def make_world(size: WorldSize, rng: np.random.Generator, end_at: datetime) -> World:
    """Draw the population. ``end_at`` is when the world's last day ends."""
    start = (end_at - timedelta(days=size.days)).astimezone(UTC)
    codes = list(MARKETS)
    weights = np.array([MARKETS[c].weight for c in codes])
    n = size.viewers
    v_market = rng.choice(len(codes), size=n, p=weights / weights.sum())
    v_region = np.array([REGIONS.index(MARKETS[codes[m]].region) for m in v_market])
    v_age = rng.choice(len(AGE_BANDS), size=n, p=[0.22, 0.33, 0.22, 0.14, 0.09])
    v_gender = rng.choice(len(GENDERS), size=n, p=[0.58, 0.39, 0.03])
    v_device = rng.choice(len(DEVICES), size=n, p=[0.78, 0.17, 0.05])
    v_income = rng.choice(len(INCOME_BANDS), size=n, p=[0.35, 0.45, 0.20])
    signup_days = rng.uniform(-400, size.days * 0.8, size=n)
    v_signup = (pd.Timestamp(start).value // 1000 + (signup_days * 86400e6)).astype(np.int64)

    beh = [REGION_BEHAVIOUR[REGIONS[r]] for r in range(len(REGIONS))]
    ps_mean = np.array([b.price_sensitivity for b in beh])[v_region]
    income_factor = np.array([1.3, 1.0, 0.65])[v_income]
    v_price_sens = ps_mean * income_factor * rng.lognormal(0.0, 0.3, size=n)
    v_speed = np.array([b.decision_speed for b in beh])[v_region] * rng.lognormal(0, 0.3, size=n)

    # Category affinities: Dirichlet around a prior tilted by observable demographics,
    # so the profile carries some (not all) of the signal.
    prior = np.ones((n, len(CATEGORIES)))
    cat = {c: i for i, c in enumerate(CATEGORIES)}
    prior[v_gender == 0, cat["beauty"]] += 1.5
    prior[v_gender == 0, cat["fashion"]] += 1.0
    prior[v_gender == 1, cat["electronics"]] += 1.5
    prior[v_age >= 2, cat["home"]] += 0.8
    prior[v_age >= 2, cat["kids"]] += 0.8
    prior[v_age >= 3, cat["health"]] += 1.0
    prior[v_region == REGIONS.index("MENA"), cat["modest_fashion"]] += 2.0
    prior[v_region == REGIONS.index("SEA"), cat["food"]] += 0.8
    v_affinity = np.stack([rng.dirichlet(row * 0.6) for row in prior])

    device_leave = np.array([1.1, 0.8, 0.9])[v_device]
    v_leave = rng.gamma(0.9, 0.085 / 0.9, size=n) * device_leave
    pay = np.array([MARKETS[codes[m]].payment_mix for m in v_market])
    v_pay = (pay.cumsum(axis=1) > rng.uniform(size=(n, 1))).argmax(axis=1)

    p = size.products
    p_category = rng.choice(len(CATEGORIES), size=p)
    base_price = np.array([CATEGORY_PRICE_USD[CATEGORIES[c]] for c in p_category])
    p_price_usd = np.round(base_price * rng.lognormal(0, 0.55, size=p), 2)
    p_discount = rng.choice([0.0, 0.1, 0.2, 0.3, 0.5], size=p, p=[0.35, 0.25, 0.2, 0.13, 0.07])
    sensitive = np.isin(p_category, [cat[c] for c in COMPLIANCE_SENSITIVE])
    p_compliant = ~sensitive | (rng.uniform(size=p) < 0.5)
    p_compliant[p_category == cat["modest_fashion"]] = True
    p_seller_market = rng.choice(len(codes), size=p, p=weights / weights.sum())

    h = size.hosts
    return World(
        size=size,
        start=start,
        market_codes=codes,
        v_market=v_market,
        v_region=v_region,
        v_age=v_age,
        v_gender=v_gender,
        v_device=v_device,
        v_income=v_income,
        v_signup=v_signup,
        v_base=rng.normal(0.0, 0.55, size=n),
        v_price_sens=v_price_sens,
        v_affinity=v_affinity,
        v_speed=v_speed,
        v_leave=v_leave,
        v_mood=rng.normal(-1.1, 1.0, size=n),
        v_engagement=rng.lognormal(0.0, 0.6, size=n),
        v_activity=rng.pareto(1.6, size=n) + 0.05,
        v_pay=v_pay,
        p_category=p_category,
        p_price_usd=p_price_usd,
        p_discount=p_discount,
        p_compliant=p_compliant,
        p_quality=rng.normal(0.0, 0.45, size=p),
        p_seller_market=p_seller_market,
        h_market=rng.choice(len(codes), size=h, p=weights / weights.sum()),
        h_energy=rng.uniform(0, 1, size=h),
        h_focus=rng.choice(len(CATEGORIES), size=(h, 3)),
        h_popularity=rng.lognormal(0, 0.35, size=h),
    )


def viewers_frame(w: World) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "viewer_id": [viewer_id(i) for i in range(len(w.v_market))],
            "market": np.array(w.market_codes)[w.v_market],
            "region": np.array(REGIONS)[w.v_region],
            "age_band": np.array(AGE_BANDS)[w.v_age],
            "gender": np.array(GENDERS)[w.v_gender],
            "language": [MARKETS[w.market_codes[m]].language for m in w.v_market],
            "device": np.array(DEVICES)[w.v_device],
            "income_band": np.array(INCOME_BANDS)[w.v_income],
            "signup_time": pd.to_datetime(w.v_signup, unit="us", utc=True),
        }
    )


def products_frame(w: World) -> pd.DataFrame:
    rows = []
    for i in range(len(w.p_category)):
        market = MARKETS[w.market_codes[w.p_seller_market[i]]]
        category = CATEGORIES[w.p_category[i]]
        price_local = w.p_price_usd[i] * FX_START[market.currency]
        tags = []
        relevant = category in COMPLIANCE_SENSITIVE or category == "modest_fashion"
        if relevant and w.p_compliant[i]:
            tags.append("modest" if "fashion" in category else "halal")
        rows.append(
            {
                "product_id": product_id(i),
                "seller_market": market.code,
                "category": category,
                "title": f"{category.replace('_', ' ')} item {i}",
                "list_price_minor": int(to_minor(price_local, market.currency)),
                "currency": market.currency,
                "discount_pct": float(w.p_discount[i]),
                "compliance_tags": tags,
                "mena_compliant": bool(w.p_compliant[i]),
            }
        )
    return pd.DataFrame(rows)


#: Days of rates past the world's last day: a stream planned for a host's local evening on
#: that day may start on the next UTC day (up to 31 h after "midnight" in the Americas).
FX_DAYS_AFTER_END = 2


def fx_frame(w: World, rng: np.random.Generator) -> pd.DataFrame:
    """Daily rates to USD: a small random walk around the starting rates; the days after
    the world's last one keep its rate (no draw: the same seed gives the same walk)."""
    walked = w.size.days + 1
    days = pd.date_range(w.start.date(), periods=walked + FX_DAYS_AFTER_END, freq="D").date
    frames = []
    for cur, units_per_usd in FX_START.items():
        walk = np.exp(np.cumsum(rng.normal(0, 0.003 if cur != "USD" else 0.0, size=walked)))
        walk = np.concatenate([walk, np.repeat(walk[-1], FX_DAYS_AFTER_END)])
        frames.append(
            pd.DataFrame(
                {"date": days, "currency": cur, "usd_per_unit": 1.0 / (units_per_usd * walk)}
            )
        )
    return pd.concat(frames, ignore_index=True)


def local_hour_activity(hour: np.ndarray) -> np.ndarray:
    """Relative chance of watching at a local hour: evening peak, night trough."""
    return (
        0.08
        + np.exp(-0.5 * ((hour - 20.5) / 2.2) ** 2)
        + 0.35 * np.exp(-0.5 * ((hour - 12.5) / 1.5) ** 2)
    )


def utc_offset_hours(market: str, when: datetime) -> float:
    offset = when.astimezone(ZoneInfo(MARKETS[market].tz)).utcoffset()
    assert offset is not None
    return offset.total_seconds() / 3600.0
