"""Answers out: domain answers of :mod:`service.scoring` -> protobuf responses."""

from __future__ import annotations

import math
from typing import Any

from features.schema import CATEGORIES, CHAT_TOPICS
from features.tables import VIEWER_DEMOGRAPHICS, VIEWER_LIVE, VIEWER_PROFILE
from service.domain import (
    ConversionAnswer,
    Flags,
    Meta,
    NextProductAnswer,
    ProfileAnswer,
    RankAnswer,
    Reason,
)
from service.generated.livecommerce.v1 import live_recommender_pb2 as pb


def flags(f: Flags) -> pb.DegradationFlags:
    if not f.degraded:
        return pb.DegradationFlags()  # all false: the same message, built 3x faster
    return pb.DegradationFlags(
        cold_start=f.cold_start,
        stale_features=f.stale_features,
        missing_features=f.missing_features,
        fallback=f.fallback,
    )


def meta(m: Meta) -> pb.ResponseMeta:
    return pb.ResponseMeta(
        model=pb.ModelInfo(name=m.model_name, version=m.model_version),
        feature_age_ms=m.feature_age_ms,
        flags=flags(m.flags),
    )


# The responses are built in place (``add``, ``update``, ``CopyFrom``) rather than from
# nested constructors: the same messages, about half the cost on the hot path.


def _add_reasons(field: Any, rs: list[Reason]) -> None:
    add = field.add
    for r in rs:
        out = add(code=r.code, text=r.text, weight=r.weight)
        if r.args:
            # Item by item: the map's update() is the MutableMapping mixin's, in Python
            # (measured ~0.4 µs more per reason).
            args = out.args
            for k, v in r.args.items():
                args[k] = v


def _set_flags(field: Any, f: Flags) -> None:
    if f.degraded:
        field.CopyFrom(flags(f))
    else:
        field.SetInParent()  # present and all false, as flags(f) would set it


def conversion(a: ConversionAnswer) -> pb.ScoreConversionResponse:
    out = pb.ScoreConversionResponse(meta=meta(a.meta))
    add = out.scores.add
    for s in a.scores:
        m = add(
            viewer_id=s.viewer_id,
            probability=s.probability,
            segment=int(s.segment),
            feature_age_ms=s.feature_age_ms,
        )
        _add_reasons(m.reasons, s.reasons)
        _set_flags(m.flags, s.flags)
    return out


def ranked(a: RankAnswer) -> pb.RankProductsResponse:
    out = pb.RankProductsResponse(meta=meta(a.meta))
    add = out.products.add
    for p in a.products:
        m = add(product_id=p.product_id, score=p.score)
        _add_reasons(m.reasons, p.reasons)
        _set_flags(m.flags, p.flags)
    return out


def next_products(a: NextProductAnswer) -> pb.RecommendNextProductResponse:
    out = pb.RecommendNextProductResponse(viewers_present=a.viewers_present, meta=meta(a.meta))
    add = out.products.add
    for p in a.products:
        m = add(
            product_id=p.product_id,
            score=p.score,
            expected_conversions=p.expected_conversions,
        )
        _add_reasons(m.reasons, p.reasons)
        _set_flags(m.flags, p.flags)
    return out


def _num(row: dict[str, Any] | None, key: str) -> float | None:
    if row is None:
        return None
    v = row.get(key)
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _f(row: dict[str, Any] | None, key: str) -> float:
    v = _num(row, key)
    return 0.0 if v is None else v


def _s(row: dict[str, Any] | None, key: str) -> str:
    v = row.get(key) if row else None
    return v if isinstance(v, str) else ""


def profile(a: ProfileAnswer) -> pb.ViewerProfile:
    demo = a.rows.get(VIEWER_DEMOGRAPHICS.name)
    prof = a.rows.get(VIEWER_PROFILE.name)
    live = a.rows.get(VIEWER_LIVE.name)
    out = pb.ViewerProfile(viewer_id=a.viewer_id, segment=int(a.segment), meta=meta(a.meta))  # type: ignore[arg-type]
    if demo is not None:
        out.demographics.CopyFrom(
            pb.Demographics(
                **{
                    k: _s(demo, k)
                    for k in (
                        "market",
                        "region",
                        "age_band",
                        "gender",
                        "language",
                        "device",
                        "income_band",
                    )
                }
            )
        )
    if prof is not None:
        pbh = out.purchase_behaviour
        pbh.order_count = int(_f(prof, "order_count"))
        pbh.order_value_usd = _f(prof, "order_value_usd")
        pbh.avg_order_value_usd = _f(prof, "avg_order_value_usd")
        last = _num(prof, "last_order_ts")
        if last is not None and pbh.order_count > 0:
            pbh.days_since_last_order = max(0.0, (a.now - last) / 86400.0)
        decision = _num(prof, "decision_time_min")
        if decision is not None and pbh.order_count > 0:
            pbh.decision_time_min = decision
        payment = _s(prof, "preferred_payment")
        if payment:
            pbh.preferred_payment = pb.PaymentMethod.Value(  # type: ignore[assignment]
                f"PAYMENT_METHOD_{payment.upper()}"
            )
        for c in CATEGORIES:
            aff = _f(prof, f"cat_aff_{c}")
            if aff > 0:
                out.interests.category_affinity[c] = aff
        out.interests.avg_dwell_min = _f(prof, "avg_dwell_min")
        out.interests.sessions_count = int(_f(prof, "sessions_count"))
        for t in CHAT_TOPICS:
            rate = _num(prof, f"topic_rate_{t}")
            if rate is not None:
                out.motivation.topic_rate[t] = rate
        out.motivation.cart_abandon_rate = _f(prof, "cart_abandon_rate")
    if live is not None and a.room_id is not None:
        signals = out.live
        signals.room_id = a.room_id
        signals.present = _f(live, "present") == 1.0
        join = _num(live, "join_ts")
        signals.dwell_s = max(0.0, a.now - join) if join is not None else 0.0
        for t in CHAT_TOPICS:
            count = int(_f(live, f"chat_{t}"))
            if count:
                signals.chat_counts[t] = count
        for k in ("likes", "shares", "clicks", "carts", "checkouts", "purchases"):
            setattr(signals, k, int(_f(live, k)))
        signals.funnel_step = int(_f(live, "funnel_step"))  # type: ignore[assignment]
    if a.last_event_ts is not None:
        out.last_event_applied.FromNanoseconds(int(a.last_event_ts * 1e9))
    return out
