"""`liverec simulate`: a seeded cross-border live-commerce world (DESIGN §9).

Writes ``viewers``, ``products``, ``streams``, ``events`` (partitioned by date),
``fx``, ``scoring_points`` and ``truth`` in the raw schema of
:mod:`features.schema`, plus ``manifest.json`` with the parameters and counts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from features import schema
from features.markets import CHAT_TEXTS, MARKETS
from features.schema import CHAT_TOPICS, CURRENCY_EXPONENT, EVENT_TYPES, PAYMENT_METHODS
from features.session_sim import (
    DROP,
    EXPOSURE_WINDOW_MIN,
    MAX_POINTS_PER_SESSION,
    OVERLAY_RATE,
    SCORING_EVERY_MIN,
    Session,
    build_sessions,
    oracle_buy_before_leave,
    oracle_buy_if_shown,
    topic_draws,
    transition_probs,
)
from features.world import (
    DEFAULT_END,
    SIZES,
    World,
    fx_frame,
    local_hour_activity,
    make_world,
    product_id,
    products_frame,
    utc_offset_hours,
    viewer_id,
    viewers_frame,
)

SHUFFLED_SHARE = 0.2
_ET = {name: i for i, name in enumerate(EVENT_TYPES)}
_CURRENCIES = list(CURRENCY_EXPONENT)
_US = 1_000_000


@dataclass
class StreamPlan:
    index: int
    room_id: str
    host: int
    market: str
    start_us: int
    lineup: np.ndarray
    slot_min: int
    order: np.ndarray  # stage order: positions into lineup
    shuffled: bool

    @property
    def minutes(self) -> int:
        return self.slot_min * len(self.lineup)

    def stage_by_min(self) -> np.ndarray:
        return np.repeat(self.order, self.slot_min)


@dataclass
class _Events:
    """Column buffers for one stream's events (indices, -1 = null)."""

    cols: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {
            k: []
            for k in (
                "type",
                "t",
                "viewer",
                "product",
                "topic",
                "text",
                "amount",
                "cur",
                "pay",
                "plan_end",
            )
        }
    )

    def add(self, etype: str, t: np.ndarray, **kw: np.ndarray) -> None:
        n = len(t)
        if n == 0:
            return
        self.cols["type"].append(np.full(n, _ET[etype], dtype=np.int8))
        self.cols["t"].append(np.asarray(t, dtype=np.int64))
        for k in ("viewer", "product", "topic", "text", "amount", "cur", "pay", "plan_end"):
            v = kw.get(k)
            self.cols[k].append(np.full(n, -1, dtype=np.int64) if v is None else np.asarray(v))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.cols.items()}


@dataclass
class _Points:
    viewer: list[np.ndarray] = field(default_factory=list)
    t: list[np.ndarray] = field(default_factory=list)
    join_t: list[np.ndarray] = field(default_factory=list)
    k: list[np.ndarray] = field(default_factory=list)
    room: list[np.ndarray] = field(default_factory=list)
    p_buy: list[np.ndarray] = field(default_factory=list)
    lineup: list[np.ndarray] = field(default_factory=list)
    p_shown: list[np.ndarray] = field(default_factory=list)


def plan_streams(w: World, rng: np.random.Generator) -> list[StreamPlan]:
    """Streams at local evening hours of their host's market, in time order."""
    size = w.size
    plans = []
    pop = w.h_popularity / w.h_popularity.sum()
    for day in range(size.days):
        midnight = w.start + timedelta(days=day)
        for _ in range(size.streams_per_day):
            host = int(rng.choice(len(pop), p=pop))
            market = w.market_codes[w.h_market[host]]
            local_hour = float(np.clip(rng.normal(20.0, 1.8), 9.0, 23.0))
            offset = utc_offset_hours(market, midnight)
            start = midnight + timedelta(hours=local_hour - offset)
            start = start.replace(second=0, microsecond=0)
            n_items = int(rng.integers(size.lineup[0], size.lineup[1] + 1))
            focus = np.isin(w.p_category, w.h_focus[host])
            weights = np.where(focus, 4.0, 1.0)
            lineup = rng.choice(
                len(w.p_category), size=n_items, replace=False, p=weights / weights.sum()
            )
            # The host's own order: what looks best first; shuffled in a known share.
            appeal = w.p_discount[lineup] + 0.3 * rng.normal(size=n_items)
            shuffled = bool(rng.uniform() < SHUFFLED_SHARE)
            order = rng.permutation(n_items) if shuffled else np.argsort(-appeal, kind="stable")
            plans.append(
                StreamPlan(
                    index=-1,
                    room_id="",
                    host=host,
                    market=market,
                    start_us=int(pd.Timestamp(start).value // 1000),
                    lineup=lineup,
                    slot_min=int(rng.integers(size.slot_minutes[0], size.slot_minutes[1] + 1)),
                    order=order,
                    shuffled=shuffled,
                )
            )
    plans.sort(key=lambda p: p.start_us)
    for i, p in enumerate(plans):
        p.index, p.room_id = i, f"r{i:06d}"
    return plans


def _pick_audience(w: World, rng: np.random.Generator, plan: StreamPlan) -> np.ndarray:
    """Weighted sample without replacement (Efraimidis-Spirakis keys)."""
    when = datetime.fromtimestamp(plan.start_us / _US, tz=UTC)
    offsets = np.array([utc_offset_hours(m, when) for m in w.market_codes])
    hour_utc = when.hour + when.minute / 60
    local = (hour_utc + offsets[w.v_market]) % 24
    same = w.v_region == w.v_region.dtype.type(_region_index(plan.market))
    weight = w.v_activity * np.where(same, 1.0, 0.12) * local_hour_activity(local)
    weight = np.where((w.v_busy_until < plan.start_us) & (w.v_signup < plan.start_us), weight, 0.0)
    n = round(w.size.viewers_per_stream * w.h_popularity[plan.host] * rng.lognormal(0, 0.3))
    n = max(5, min(n, int((weight > 0).sum())))
    keys = np.log(rng.uniform(size=len(weight))) / np.maximum(weight, 1e-300)
    return np.sort(np.argpartition(-keys, n)[:n])


def _region_index(market: str) -> int:
    return schema.REGIONS.index(MARKETS[market].region)


def run_stream(
    w: World, rng: np.random.Generator, plan: StreamPlan, fx_today: dict[str, float]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Simulate one stream; returns its event columns and its scoring points with truth."""
    viewers = _pick_audience(w, rng, plan)
    n, n_lineup, minutes = len(viewers), len(plan.lineup), plan.minutes
    early = rng.uniform(size=n) < 0.55
    join_min = np.where(early, rng.exponential(4.0, size=n), rng.uniform(0, minutes, size=n))
    join_min = np.minimum(join_min.astype(np.int64), minutes - 1)
    when = datetime.fromtimestamp(plan.start_us / _US, tz=UTC)
    offsets = np.array([utc_offset_hours(m, when) for m in w.market_codes])
    local_hours = (when.hour + offsets[w.v_market[viewers]]) % 24
    s = build_sessions(w, rng, viewers, join_min, plan.lineup, plan.host, local_hours)
    stage_by_min = plan.stage_by_min()
    ev = _Events()
    t0 = plan.start_us
    # The host announces the schedule's end with the start (the stream closes 2 min later).
    ev.add("stream_start", np.array([t0]), plan_end=np.array([t0 + minutes * 60 * _US]))
    for slot, pos in enumerate(plan.order):
        ev.add(
            "stage_change",
            np.array([t0 + slot * plan.slot_min * 60 * _US]),
            product=np.array([plan.lineup[pos]]),
        )
    state = np.zeros((n, n_lineup), dtype=np.int8)
    present = np.zeros(n, dtype=bool)
    step_us = (s.join_sec * _US).astype(np.int64)
    pts_rows, pts_min, pts_state = [], [], []
    region = w.v_region[viewers]
    for minute in range(minutes + 1):
        newly = np.flatnonzero(join_min == minute)
        present[newly] = True
        ev.add("join", t0 + minute * 60 * _US + step_us[newly], viewer=viewers[newly])
        rows = np.flatnonzero(present)
        base = t0 + minute * 60 * _US + step_us[rows]
        if minute == minutes:  # the stream ends: everyone still here leaves
            ev.add("leave", base + _jitter(rng, len(rows)), viewer=viewers[rows])
            break
        since = minute - join_min[rows]
        due = (since > 0) & (since % SCORING_EVERY_MIN == 0)
        due &= since <= SCORING_EVERY_MIN * MAX_POINTS_PER_SESSION
        pts_rows.append(rows[due])
        pts_min.append(np.full(int(due.sum()), minute))
        pts_state.append(state[rows[due]].copy())
        stage = stage_by_min[minute]
        leaving = rng.uniform(size=len(rows)) < 1 - np.exp(-s.lam[rows, stage])
        ev.add(
            "leave", base[leaving] + _jitter(rng, int(leaving.sum())), viewer=viewers[rows[leaving]]
        )
        present[rows[leaving]] = False
        rows, base = rows[~leaving], base[~leaving]
        _step_viewers(w, rng, plan, s, ev, state, rows, base, stage, region, fx_today)
    ev.add("stream_end", np.array([t0 + (minutes + 2) * 60 * _US]))
    w.v_busy_until[viewers] = t0 + (minutes + 2) * 60 * _US
    bought = (state == 4).sum(axis=1)
    w.v_orders[viewers] += bought.astype(np.int32)
    return ev.arrays(), _truth(s, plan, pts_rows, pts_min, pts_state, stage_by_min, t0)


def _jitter(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.uniform(0.5, 59.5, size=n) * _US).astype(np.int64)


def _step_viewers(
    w: World,
    rng: np.random.Generator,
    plan: StreamPlan,
    s: Session,
    ev: _Events,
    state: np.ndarray,
    rows: np.ndarray,
    base: np.ndarray,
    stage: int,
    region: np.ndarray,
    fx_today: dict[str, float],
) -> None:
    """One minute for the viewers who stayed: overlay, funnel, chat, likes, shares."""
    k, n_lineup = len(rows), len(plan.lineup)
    overlay = rng.uniform(size=(k, n_lineup)) < OVERLAY_RATE / n_lineup
    r_ov, c_ov = np.nonzero(overlay)
    ev.add(
        "overlay_impression",
        base[r_ov] + _jitter(rng, len(r_ov)) // 4,
        viewer=s.viewers[rows[r_ov]],
        product=plan.lineup[c_ov],
    )
    on_stage = np.zeros((k, n_lineup), dtype=bool)
    on_stage[:, stage] = True
    c01, c12, c23, c34 = transition_probs(s, rows, on_stage, overlay)
    st = state[rows]
    u = rng.uniform(size=st.shape)
    new = st.copy()
    for frm, p in ((0, c01), (1, c12), (2, c23), (3, c34)):
        at = st == frm
        new[at & (u < p)] = frm + 1
        if frm > 0:
            new[at & (u >= p) & (u < p + DROP[frm - 1])] = 0
    state[rows] = new
    for step, etype in ((1, "product_click"), (2, "add_to_cart"), (3, "checkout_start")):
        r, c = np.nonzero((new == step) & (st == step - 1))
        ev.add(
            etype,
            base[r] + _jitter(rng, len(r)) // 2 + 30 * _US * (step - 1) // 3,
            viewer=s.viewers[rows[r]],
            product=plan.lineup[c],
        )
    r, c = np.nonzero((new == 4) & (st == 3))
    if len(r):
        vw = s.viewers[rows[r]]
        cur = np.array(
            [_CURRENCIES.index(MARKETS[w.market_codes[m]].currency) for m in w.v_market[vw]]
        )
        pay_pref = w.v_pay[vw]
        pay = np.where(
            rng.uniform(size=len(r)) < 0.85,
            pay_pref,
            rng.integers(0, len(PAYMENT_METHODS), size=len(r)),
        )
        usd = w.p_price_usd[plan.lineup[c]] * (1 - w.p_discount[plan.lineup[c]])
        amount = np.array(
            [
                round(a / fx_today[_CURRENCIES[ci]] * 10 ** CURRENCY_EXPONENT[_CURRENCIES[ci]])
                for a, ci in zip(usd, cur, strict=True)
            ]
        )
        ev.add(
            "purchase",
            base[r] + 50 * _US + _jitter(rng, len(r)) // 10,
            viewer=vw,
            product=plan.lineup[c],
            amount=amount,
            cur=cur,
            pay=pay,
        )
    engaged = ((st >= 1) & (st < 4)).any(axis=1)
    eng = w.v_engagement[s.viewers[rows]] * np.where(s.mood[rows], 2.0, 1.0)
    appeal = np.clip(s.utility[rows, stage] - s.utility[rows].mean(axis=1), -3, 3)
    n_chat = rng.poisson(0.03 * eng * (1 + 1.5 * engaged))
    idx = np.repeat(np.arange(k), n_chat)
    topics = topic_draws(rng, s.concern[rows[idx]], region[rows[idx]])
    texts = rng.integers(0, 3, size=len(idx))
    ev.add(
        "chat",
        base[idx] + _jitter(rng, len(idx)),
        viewer=s.viewers[rows[idx]],
        topic=topics,
        text=texts,
    )
    energy = w.h_energy[plan.host]
    n_like = rng.poisson(0.10 * eng * (1 + 0.5 * energy) * np.exp(0.3 * appeal))
    idx = np.repeat(np.arange(k), n_like)
    ev.add("like", base[idx] + _jitter(rng, len(idx)), viewer=s.viewers[rows[idx]])
    n_share = rng.poisson(0.004 * eng)
    idx = np.repeat(np.arange(k), n_share)
    ev.add("share", base[idx] + _jitter(rng, len(idx)), viewer=s.viewers[rows[idx]])


def _truth(
    s: Session,
    plan: StreamPlan,
    pts_rows: list[np.ndarray],
    pts_min: list[np.ndarray],
    pts_state: list[np.ndarray],
    stage_by_min: np.ndarray,
    t0: int,
) -> dict[str, np.ndarray]:
    rows = np.concatenate(pts_rows)
    minute = np.concatenate(pts_min)
    states = np.concatenate(pts_state) if pts_state else np.zeros((0, len(plan.lineup)))
    p_buy = oracle_buy_before_leave(s, rows, minute, states, stage_by_min)
    p_shown = oracle_buy_if_shown(s, rows, minute, states, plan.minutes - minute)
    join_us = t0 + s.join_min[rows] * 60 * _US + (s.join_sec[rows] * _US).astype(np.int64)
    return {
        "viewer": s.viewers[rows],
        "t": t0 + minute * 60 * _US + (s.join_sec[rows] * _US).astype(np.int64),
        "join_t": join_us,
        "k": (minute - s.join_min[rows]) // SCORING_EVERY_MIN,
        "p_buy": p_buy,
        "p_shown": p_shown,
    }


@dataclass
class Manifest:
    """What was simulated, with counts and the parameters a reader must know."""

    size: str
    seed: int
    start: str
    end: str
    scoring_every_min: int = SCORING_EVERY_MIN
    exposure_window_min: int = EXPOSURE_WINDOW_MIN
    shuffled_share: float = SHUFFLED_SHARE
    counts: dict[str, int] = field(default_factory=dict)
    size_params: dict[str, object] = field(default_factory=dict)

    def write(self, out_dir: Path) -> None:
        (out_dir / "manifest.json").write_text(json.dumps(asdict(self), indent=2) + "\n")


def simulate(
    out_dir: Path,
    size: str = "default",
    seed: int = 7,
    end_at: datetime | None = None,
    progress: bool = True,
) -> Manifest:
    """Simulate a world and write its tables to ``out_dir``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    end = (end_at or DEFAULT_END).astimezone(UTC)
    rng = np.random.default_rng(seed)
    w = make_world(SIZES[size], rng, end)
    plans = plan_streams(w, rng)
    fx = fx_frame(w, rng)
    fx_lookup = {
        (d, c): r for d, c, r in zip(fx["date"], fx["currency"], fx["usd_per_unit"], strict=True)
    }
    events: list[dict[str, np.ndarray]] = []
    rooms: list[np.ndarray] = []
    truths: list[dict[str, np.ndarray]] = []
    for plan in tqdm(plans, desc=f"simulating {size} world", unit="stream", disable=not progress):
        day = datetime.fromtimestamp(plan.start_us / _US, tz=UTC).date()
        fx_today = {c: fx_lookup[(day, c)] for c in _CURRENCIES}
        ev, truth = run_stream(w, rng, plan, fx_today)
        events.append(ev)
        rooms.append(np.full(len(ev["t"]), plan.index, dtype=np.int64))
        truth["room"] = np.full(len(truth["t"]), plan.index, dtype=np.int64)
        truth["lineup_room"] = np.full(len(truth["t"]), plan.index, dtype=np.int64)
        truths.append(truth)
    # Shift so the world ends exactly at `end` (a replayed stream then looks live).
    last = max(p.start_us + (p.minutes + 2) * 60 * _US for p in plans)
    shift = int(pd.Timestamp(end).value // 1000) - last
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    events_table = _events_table(w, plans, events, rooms, shift, rng)
    schema.write_table("events", events_table, out_dir)
    schema.write_table("viewers", viewers_frame(w), out_dir)
    schema.write_table("products", products_frame(w), out_dir)
    schema.write_table("streams", _streams_frame(plans, shift), out_dir)
    schema.write_table("fx", fx, out_dir)
    points, truth = _points_tables(plans, truths, shift)
    schema.write_table("scoring_points", points, out_dir)
    schema.write_table("truth", truth, out_dir)
    manifest = Manifest(
        size=size,
        seed=seed,
        start=str(pd.Timestamp(w.start.timestamp() * 1e9 + shift * 1000, tz="UTC")),
        end=str(pd.Timestamp(end)),
        counts={
            "viewers": len(w.v_market),
            "products": len(w.p_category),
            "streams": len(plans),
            "events": events_table.num_rows,
            "scoring_points": len(points),
        },
        size_params=asdict(SIZES[size]),
    )
    manifest.write(out_dir)
    return manifest


def _events_table(
    w: World,
    plans: list[StreamPlan],
    events: list[dict[str, np.ndarray]],
    rooms: list[np.ndarray],
    shift: int,
    rng: np.random.Generator,
) -> pa.Table:
    cols = {k: np.concatenate([e[k] for e in events]) for k in events[0]}
    room = np.concatenate(rooms)
    t = cols["t"] + shift
    order = np.lexsort((cols["type"], room, t))
    n = len(order)
    ids = rng.permutation(n)  # ids carry no order, as a real sender's would not
    event_id = [f"e{i:09d}" for i in ids]
    vid = [viewer_id(i) for i in range(len(w.v_market))]
    pid = [product_id(i) for i in range(len(w.p_category))]
    rid = [p.room_id for p in plans]

    def dict_col(idx: np.ndarray, values: list[str]) -> pa.Array:
        arr = pa.array(idx[order], mask=idx[order] < 0, type=pa.int64())
        return pa.DictionaryArray.from_arrays(arr, pa.array(values)).cast(pa.string())

    topic = cols["topic"][order]
    text_idx = np.where(topic >= 0, topic * 3 + cols["text"][order], -1)
    texts = [CHAT_TEXTS[tp][j % len(CHAT_TEXTS[tp])] for tp in CHAT_TOPICS for j in range(3)]
    amount = cols["amount"][order]
    return pa.table(
        {
            "event_id": pa.array(event_id, type=pa.string()),
            "event_type": dict_col(cols["type"].astype(np.int64), list(EVENT_TYPES)),
            "event_time": pa.array(t[order], type=schema.TS),
            "room_id": dict_col(room, rid),
            "viewer_id": dict_col(cols["viewer"], vid),
            "product_id": dict_col(cols["product"], pid),
            "chat_topic": dict_col(cols["topic"], list(CHAT_TOPICS)),
            "chat_text": pa.DictionaryArray.from_arrays(
                pa.array(text_idx, mask=text_idx < 0), pa.array(texts)
            ).cast(pa.string()),
            "amount_minor": pa.array(amount, mask=amount < 0, type=pa.int64()),
            "currency": dict_col(cols["cur"], _CURRENCIES),
            "payment_method": dict_col(cols["pay"], list(PAYMENT_METHODS)),
            "planned_end_time": pa.array(
                cols["plan_end"][order] + shift, mask=cols["plan_end"][order] < 0, type=schema.TS
            ),
        }
    )


def _streams_frame(plans: list[StreamPlan], shift: int) -> pa.Table:
    rows = []
    for p in plans:
        start = p.start_us + shift
        schedule = [
            {
                "product_id": product_id(p.lineup[pos]),
                "start_time": pd.Timestamp((start + slot * p.slot_min * 60 * _US) * 1000, tz="UTC"),
                "end_time": pd.Timestamp(
                    (start + (slot + 1) * p.slot_min * 60 * _US) * 1000, tz="UTC"
                ),
            }
            for slot, pos in enumerate(p.order)
        ]
        rows.append(
            {
                "room_id": p.room_id,
                "host_id": f"h{p.host:04d}",
                "market": p.market,
                "region": MARKETS[p.market].region,
                "start_time": pd.Timestamp(start * 1000, tz="UTC"),
                "end_time": pd.Timestamp((start + (p.minutes + 2) * 60 * _US) * 1000, tz="UTC"),
                "lineup": [product_id(i) for i in p.lineup],
                "stage_schedule": schedule,
                "stage_shuffled": p.shuffled,
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.STREAMS)


def _points_tables(
    plans: list[StreamPlan], truths: list[dict[str, np.ndarray]], shift: int
) -> tuple[pd.DataFrame, pa.Table]:
    points = []
    truth_rows: dict[str, list] = {
        "point_id": [],
        "p_buy_before_leave": [],
        "product_ids": [],
        "p_buy_if_shown": [],
    }
    for plan, tr in zip(plans, truths, strict=True):
        if not len(tr["t"]):
            continue
        vids = [viewer_id(v) for v in tr["viewer"]]
        pids = [f"{plan.room_id}-{v}-{k:02d}" for v, k in zip(vids, tr["k"], strict=True)]
        points.append(
            pd.DataFrame(
                {
                    "point_id": pids,
                    "viewer_id": vids,
                    "room_id": plan.room_id,
                    "point_time": pd.to_datetime(tr["t"] + shift, unit="us", utc=True),
                    "join_time": pd.to_datetime(tr["join_t"] + shift, unit="us", utc=True),
                    "k": tr["k"].astype(np.int32),
                }
            )
        )
        lineup = [product_id(i) for i in plan.lineup]
        truth_rows["point_id"].extend(pids)
        truth_rows["p_buy_before_leave"].extend(tr["p_buy"].tolist())
        truth_rows["product_ids"].extend([lineup] * len(pids))
        truth_rows["p_buy_if_shown"].extend(tr["p_shown"].tolist())
    return pd.concat(points, ignore_index=True), pa.table(truth_rows, schema=schema.TRUTH)
