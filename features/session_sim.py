"""One live stream, minute by minute, and the oracle at every scoring point.

The hidden process (per viewer session, one step a minute from the join):

1. leave with a hazard that depends on the viewer, the mood of the session and
   how much the product on stage appeals to them;
2. otherwise, for every product of the lineup an independent funnel chain
   ``browse -> clicked -> carted -> checkout -> bought`` moves one step, with
   probabilities from the viewer x product utility and the exposure (on stage,
   in an overlay impression this minute, or merely listed in the shop);
3. chats (topic driven by the session's hidden concern), likes and shares are
   emitted at rates driven by engagement and mood.

Because presence depends only on the (known) schedule and the chains are
independent given presence, the probability of what a label asks can be
computed exactly from the hidden state at a scoring point by a forward pass
(:func:`oracle_buy_before_leave`, :func:`oracle_buy_if_shown`).  Those are the
``truth`` table the models are judged against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.markets import CATEGORY_PRICE_USD, COMPLIANCE_SENSITIVE, MARKETS, REGION_BEHAVIOUR
from features.schema import CATEGORIES, REGIONS
from features.world import World

#: Minutes between scoring points (join + k * SCORING_EVERY_MIN, k >= 1).
SCORING_EVERY_MIN = 5
MAX_POINTS_PER_SESSION = 24
#: Window after an exposure in which a purchase of that product counts (minutes).
EXPOSURE_WINDOW_MIN = 10
#: Expected overlay impressions per viewer per minute, spread over the lineup.
OVERLAY_RATE = 0.3

#: Utility enters every funnel probability scaled by this.
U_SCALE = 0.5
CLICK_BIAS = -7.7
CART_BIAS = -2.8
CHECKOUT_BIAS = -1.0
STAGE_BONUS = 3.0
OVERLAY_BONUS = 2.0
CONCERN_PENALTY = 0.6
DROP = (0.15, 0.06, 0.10)  # from clicked, carted, checkout back to browsing
BUY_AT_CHECKOUT = 0.4
MOOD_UTILITY = 1.0
MOOD_LEAVE = 0.55

_TOPIC_MIX = np.array([REGION_BEHAVIOUR[r].topic_mix for r in REGIONS], dtype=float)
_TOPIC_MIX /= _TOPIC_MIX.sum(axis=1, keepdims=True)
#: Concerns are the six real topics (never "other").
_CONCERN_MIX = _TOPIC_MIX[:, :6] / _TOPIC_MIX[:, :6].sum(axis=1, keepdims=True)
_SENSITIVE = np.array([c in COMPLIANCE_SENSITIVE for c in CATEGORIES])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Session:
    """Hidden parameters of the sessions of one stream (row = session)."""

    viewers: np.ndarray  # world viewer index
    join_min: np.ndarray  # stream minute of the first step
    join_sec: np.ndarray  # seconds after that minute the viewer joined
    utility: np.ndarray  # (n, L)
    mood: np.ndarray  # bool
    concern: np.ndarray  # index into CHAT_TOPICS (never "other")
    lam: np.ndarray  # (n, L): leave hazard rate when product l is on stage
    c_stage: np.ndarray  # (n, L) click prob when on stage
    c_overlay: np.ndarray
    c_browse: np.ndarray
    t12_stage: np.ndarray
    t12_off: np.ndarray
    t23: np.ndarray
    t34: np.ndarray


def session_params(
    w: World,
    rng: np.random.Generator,
    viewers: np.ndarray,
    lineup: np.ndarray,
    host: int,
    local_hours: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Utility (n, L), mood, concern and speed of each session."""
    n = len(viewers)
    region = w.v_region[viewers]
    beh = [REGION_BEHAVIOUR[r] for r in REGIONS]
    pick = lambda attr: np.array([getattr(b, attr) for b in beh])[region]  # noqa: E731
    cat = w.p_category[lineup]
    aff = np.clip(np.log(len(CATEGORIES) * w.v_affinity[viewers][:, cat] + 0.05), -2.5, 1.5)
    ship = np.array(
        [MARKETS[w.market_codes[m]].shipping_days for m in w.v_market[viewers]], dtype=float
    )
    ship = ship[:, None] + 2.0 * (
        w.p_seller_market[lineup][None, :] != w.v_market[viewers][:, None]
    )
    # Price relative to what the category usually costs: cheap for its kind appeals
    # to the price-sensitive, whatever the category.
    ref = np.array([CATEGORY_PRICE_USD[c] for c in CATEGORIES])[cat]
    price_term = np.log(w.p_price_usd[lineup] * (1 - w.p_discount[lineup]) / ref)
    noncompliant = (~w.p_compliant[lineup] & _SENSITIVE[cat]).astype(float)
    prime = np.exp(-0.5 * ((local_hours - 20.5) / 2.0) ** 2)
    mood = rng.uniform(size=n) < sigmoid(w.v_mood[viewers] + 0.5 * prime)
    u = (
        w.v_base[viewers][:, None]
        + pick("trust_gain")[:, None] * np.log1p(w.v_orders[viewers])[:, None]
        + 1.1 * aff
        + pick("discount_response")[:, None] * w.p_discount[lineup][None, :]
        - w.v_price_sens[viewers][:, None] * price_term[None, :]
        - pick("compliance_penalty")[:, None] * noncompliant[None, :]
        - pick("shipping_penalty")[:, None] * ship
        + pick("liveliness_response")[:, None] * (w.h_energy[host] - 0.5)
        + w.p_quality[lineup][None, :]
        + MOOD_UTILITY * mood[:, None]
        + rng.normal(0.0, 0.6, size=(n, len(lineup)))
    )
    topic_mix = _CONCERN_MIX[region]
    concern = (topic_mix.cumsum(axis=1) > rng.uniform(size=(n, 1))).argmax(axis=1)
    speed = w.v_speed[viewers]
    return u, mood, concern, speed


def build_sessions(
    w: World,
    rng: np.random.Generator,
    viewers: np.ndarray,
    join_min: np.ndarray,
    lineup: np.ndarray,
    host: int,
    local_hours: np.ndarray,
) -> Session:
    u, mood, concern, speed = session_params(w, rng, viewers, lineup, host, local_hours)
    region = w.v_region[viewers]
    leave_mult = np.array([REGION_BEHAVIOUR[r].leave_mult for r in REGIONS])[region]
    base_lam = w.v_leave[viewers] * leave_mult * np.where(mood, MOOD_LEAVE, 1.0)
    appeal = np.clip(u - u.mean(axis=1, keepdims=True), -3, 3)
    lam = base_lam[:, None] * np.exp(-0.35 * appeal)
    sp = speed[:, None]
    us = U_SCALE * u
    t12_stage = np.clip(sigmoid(us + CART_BIAS - CONCERN_PENALTY + 0.5) * sp, 0, 1 - DROP[0])
    return Session(
        viewers=viewers,
        join_min=join_min,
        join_sec=rng.uniform(1.0, 59.0, size=len(viewers)),
        utility=u,
        mood=mood,
        concern=concern,
        lam=lam,
        c_stage=sigmoid(us + CLICK_BIAS + STAGE_BONUS),
        c_overlay=sigmoid(us + CLICK_BIAS + OVERLAY_BONUS),
        c_browse=sigmoid(us + CLICK_BIAS),
        t12_stage=t12_stage,
        t12_off=np.clip(sigmoid(us + CART_BIAS - CONCERN_PENALTY) * sp, 0, 1 - DROP[0]),
        t23=np.clip(sigmoid(us + CHECKOUT_BIAS - CONCERN_PENALTY) * sp, 0, 1 - DROP[1]),
        t34=np.broadcast_to(np.clip(BUY_AT_CHECKOUT * np.sqrt(sp), 0, 1 - DROP[2]), u.shape),
    )


def transition_probs(
    s: Session, rows: np.ndarray, on_stage: np.ndarray, overlay: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (row, product) probabilities of moving 0->1, 1->2, 2->3, 3->bought.

    ``on_stage`` is a boolean (rows, L) mask.  ``overlay`` is a boolean mask of
    impressions this minute, or ``None`` for the expectation over impressions
    (what the oracle uses, since impressions are independent draws).
    """
    c_off = s.c_browse[rows]
    if overlay is None:
        q = OVERLAY_RATE / s.utility.shape[1]
        c_off = q * s.c_overlay[rows] + (1 - q) * c_off
    else:
        c_off = np.where(overlay, s.c_overlay[rows], c_off)
    c01 = np.where(on_stage, s.c_stage[rows], c_off)
    c12 = np.where(on_stage, s.t12_stage[rows], s.t12_off[rows])
    return c01, c12, s.t23[rows], s.t34[rows]


def step_distribution(
    d: np.ndarray, probs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One minute of the funnel chains in distribution: (rows, L, 4) -> new d, bought."""
    c01, c12, c23, c34 = probs
    d0, d1, d2, d3 = d[..., 0], d[..., 1], d[..., 2], d[..., 3]
    new = np.empty_like(d)
    new[..., 0] = d0 * (1 - c01) + d1 * DROP[0] + d2 * DROP[1] + d3 * DROP[2]
    new[..., 1] = d0 * c01 + d1 * (1 - c12 - DROP[0])
    new[..., 2] = d1 * c12 + d2 * (1 - c23 - DROP[1])
    new[..., 3] = d2 * c23 + d3 * (1 - c34 - DROP[2])
    return new, d3 * c34


def _initial_distribution(states: np.ndarray) -> np.ndarray:
    """One-hot (rows, L, 4) from chain states; bought chains (4) get all zeros."""
    d = np.zeros((*states.shape, 4))
    for k in range(4):
        d[..., k] = states == k
    return d


def oracle_buy_before_leave(
    s: Session,
    rows: np.ndarray,
    start_min: np.ndarray,
    states: np.ndarray,
    stage_by_min: np.ndarray,
) -> np.ndarray:
    """P(the viewer buys anything from ``start_min`` until leaving), exactly."""
    order = np.argsort(start_min, kind="stable")
    rows, start, d = rows[order], start_min[order], _initial_distribution(states[order])
    n_lineup = s.utility.shape[1]
    survive = np.ones(len(rows))
    absorbed = np.zeros((len(rows), n_lineup))
    none_yet = np.ones(len(rows))
    result = np.zeros(len(rows))
    first = int(start.min()) if len(start) else len(stage_by_min)
    for minute in range(first, len(stage_by_min)):
        k = int(np.searchsorted(start, minute, side="right"))
        r = rows[:k]
        stage = stage_by_min[minute]
        # Leave is drawn at the start of each step, before the funnel moves.
        survive[:k] *= np.exp(-s.lam[r, stage])
        on_stage = np.zeros((k, n_lineup), dtype=bool)
        on_stage[:, stage] = True
        d[:k], bought = step_distribution(d[:k], transition_probs(s, r, on_stage, None))
        absorbed[:k] += bought
        # Chains are independent given presence: P(no purchase yet) is a product.
        still_none = np.prod(1.0 - absorbed[:k], axis=1)
        result[:k] += survive[:k] * (none_yet[:k] - still_none)
        none_yet[:k] = still_none
    out = np.empty_like(result)
    out[order] = result
    return out


def oracle_buy_if_shown(
    s: Session,
    rows: np.ndarray,
    start_min: np.ndarray,
    states: np.ndarray,
    minutes_left: np.ndarray,
) -> np.ndarray:
    """P(buy product l within the exposure window | l goes on stage now), (rows, L)."""
    d = _initial_distribution(states)
    n_rows, n_lineup = states.shape
    on_stage = np.ones((n_rows, n_lineup), dtype=bool)
    survive = np.ones((n_rows, n_lineup))
    result = np.zeros((n_rows, n_lineup))
    for m in range(EXPOSURE_WINDOW_MIN):
        alive = (m < minutes_left)[:, None]
        survive *= np.where(alive, np.exp(-s.lam[rows]), 1.0)
        d, bought = step_distribution(d, transition_probs(s, rows, on_stage, None))
        result += np.where(alive, survive * bought, 0.0)
        d = np.where(alive[..., None], d, 0.0)
    return result


def topic_draws(rng: np.random.Generator, concern: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Chat topic per message: the hidden concern 55% of the time, else the region's mix."""
    mix = _TOPIC_MIX[region]
    general = (mix.cumsum(axis=1) > rng.uniform(size=(len(region), 1))).argmax(axis=1)
    return np.where(rng.uniform(size=len(region)) < 0.55, concern, general)


__all__ = [
    "EXPOSURE_WINDOW_MIN",
    "SCORING_EVERY_MIN",
    "Session",
    "build_sessions",
    "oracle_buy_before_leave",
    "oracle_buy_if_shown",
    "step_distribution",
    "topic_draws",
    "transition_probs",
]
