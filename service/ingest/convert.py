"""Live events between protobuf and the raw-event schema's dicts (both directions).

The aggregator works on dicts with the raw schema's field names and
``event_time`` in epoch seconds (:mod:`features.schema`). Enum names map to the
schema's strings by dropping the prefix and lower-casing
(``EVENT_TYPE_ADD_TO_CART`` -> ``"add_to_cart"``). Nothing is judged here: an
unset or unknown enum becomes a value :func:`features.schema.event_problem`
rejects with the field named, so one bad event never fails its batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from service.generated.livecommerce.v1 import live_recommender_pb2 as pb

if TYPE_CHECKING:  # the aggregator pulls in Feast; `liverec replay` needs none of it
    from service.ingest.aggregator import IngestResult

_ENUMS: tuple[tuple[str, EnumTypeWrapper, str], ...] = (
    ("event_type", pb.EventType, "EVENT_TYPE_"),
    ("chat_topic", pb.ChatTopic, "CHAT_TOPIC_"),
    ("payment_method", pb.PaymentMethod, "PAYMENT_METHOD_"),
)


def _names(enum: EnumTypeWrapper, prefix: str) -> dict[int, str]:
    return {
        number: name.removeprefix(prefix).lower()
        for name, number in enum.items()
        if number != 0  # UNSPECIFIED: absent
    }


_TO_STR = {field: _names(enum, prefix) for field, enum, prefix in _ENUMS}
_TO_NUM = {field: {v: k for k, v in names.items()} for field, names in _TO_STR.items()}


def _seconds(t: Any) -> float:
    """A Timestamp as epoch seconds, kept to microseconds: live state must not be finer
    than a rebuild from the event log."""
    return float(t.seconds + (t.nanos // 1000) / 1e6)


def event(e: pb.LiveEvent) -> dict[str, Any]:
    """One protobuf event as a raw-schema dict (absent fields are ``None``)."""
    out: dict[str, Any] = {
        "event_id": e.event_id or None,
        "room_id": e.room_id or None,
        "viewer_id": e.viewer_id or None,
        "product_id": e.product_id or None,
        "chat_text": e.chat_text or None,
        # The event log keeps microseconds: live state must not be finer than a rebuild.
        "event_time": _seconds(e.event_time) if e.HasField("event_time") else None,
        "planned_end_time": (
            _seconds(e.planned_end_time) if e.HasField("planned_end_time") else None
        ),
        "amount_minor": e.amount.amount_minor if e.HasField("amount") else None,
        "currency": (e.amount.currency or None) if e.HasField("amount") else None,
    }
    for field, names in _TO_STR.items():
        number = getattr(e, field)
        # An unknown number (a newer client) stays visible in the rejection reason.
        out[field] = None if number == 0 else names.get(number, f"<unknown {number}>")
    return out


def events(batch: Iterable[pb.LiveEvent]) -> list[dict[str, Any]]:
    return [event(e) for e in batch]


def to_proto(e: dict[str, Any]) -> pb.LiveEvent:
    """A raw-schema dict (``event_time`` in epoch seconds or a datetime) as a LiveEvent."""
    msg = pb.LiveEvent(
        event_id=e.get("event_id") or "",
        room_id=e.get("room_id") or "",
        viewer_id=e.get("viewer_id") or "",
        product_id=e.get("product_id") or "",
        chat_text=e.get("chat_text") or "",
    )
    msg.event_time.FromNanoseconds(_nanos(e["event_time"]))
    if e.get("planned_end_time") is not None:
        msg.planned_end_time.FromNanoseconds(_nanos(e["planned_end_time"]))
    for field, numbers in _TO_NUM.items():
        value = e.get(field)
        if value:
            setattr(msg, field, numbers[value])
    if e.get("amount_minor") is not None:
        msg.amount.amount_minor = int(e["amount_minor"])
        msg.amount.currency = e.get("currency") or ""
    return msg


def _nanos(t: datetime | float) -> int:
    seconds = t.timestamp() if isinstance(t, datetime) else float(t)
    return round(seconds * 1e9)


def summary(result: IngestResult, offset: int = 0) -> pb.IngestSummary:
    """The summary of one ingest call; ``offset`` shifts indices (a chunk of a stream)."""
    out = pb.IngestSummary(accepted=result.accepted, duplicates=result.duplicates, late=result.late)
    add_rejected(out, result, offset)
    return out


def add_rejected(out: pb.IngestSummary, result: IngestResult, offset: int) -> None:
    out.rejected.extend(
        pb.RejectedEvent(
            index=r.index + offset, event_id=r.event_id, reason=r.reason, field=r.field
        )
        for r in result.rejected
    )


def merge(total: pb.IngestSummary, part: pb.IngestSummary, offset: int) -> None:
    """Add a chunk's summary (indices relative to the chunk) into the stream's total."""
    total.accepted += part.accepted
    total.duplicates += part.duplicates
    total.late += part.late
    total.rejected.extend(
        pb.RejectedEvent(
            index=r.index + offset, event_id=r.event_id, reason=r.reason, field=r.field
        )
        for r in part.rejected
    )
