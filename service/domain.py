"""Plain domain objects of the scoring core: no gRPC, no protobuf."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple


class Segment(IntEnum):
    """Matches ``livecommerce.v1.Segment`` by number."""

    UNSPECIFIED = 0
    HIGH_CONVERSION = 1
    HIGH_POTENTIAL = 2
    TO_BE_ACTIVATED = 3


@dataclass(slots=True)
class Flags:
    """Why an answer is less good than usual (all false on the normal path)."""

    cold_start: bool = False
    stale_features: bool = False
    missing_features: bool = False
    fallback: bool = False

    def merge(self, other: Flags) -> Flags:
        self.cold_start |= other.cold_start
        self.stale_features |= other.stale_features
        self.missing_features |= other.missing_features
        self.fallback |= other.fallback
        return self

    def copy(self) -> Flags:
        return Flags(self.cold_start, self.stale_features, self.missing_features, self.fallback)

    @property
    def degraded(self) -> bool:
        return self.cold_start or self.stale_features or self.missing_features or self.fallback


class Reason(NamedTuple):
    """One reason of an answer. Immutable like a frozen dataclass, and made about three
    times faster (measured 0.65 against 1.9 µs): ScoreConversion makes 600 of them."""

    code: str
    args: dict[str, str]
    text: str
    weight: float


@dataclass(slots=True)
class Meta:
    model_name: str
    model_version: str
    feature_age_ms: int
    flags: Flags


@dataclass(slots=True)
class ViewerScore:
    viewer_id: str
    probability: float
    segment: Segment
    reasons: list[Reason]
    flags: Flags
    feature_age_ms: int


@dataclass(slots=True)
class ScoredProduct:
    product_id: str
    score: float
    reasons: list[Reason]
    flags: Flags
    expected_conversions: float = 0.0


@dataclass(slots=True)
class ConversionAnswer:
    scores: list[ViewerScore]
    meta: Meta


@dataclass(slots=True)
class RankAnswer:
    products: list[ScoredProduct]
    meta: Meta


@dataclass(slots=True)
class NextProductAnswer:
    products: list[ScoredProduct]
    viewers_present: int
    meta: Meta


@dataclass(slots=True)
class ProfileAnswer:
    """A viewer's profile: the raw feature rows by view (``None`` when absent)."""

    viewer_id: str
    room_id: str | None
    rows: dict[str, dict[str, Any] | None]
    segment: Segment
    last_event_ts: float | None
    now: float
    meta: Meta


@dataclass(frozen=True, slots=True)
class Deadline:
    """When the caller stops waiting, on the monotonic clock."""

    expires_at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()


# Queries, validated (service.validation) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoreConversionQuery:
    room_id: str
    viewer_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RankProductsQuery:
    room_id: str
    viewer_id: str
    candidates: tuple[str, ...]
    top_k: int


@dataclass(frozen=True, slots=True)
class NextProductQuery:
    room_id: str
    candidates: tuple[str, ...]
    top_k: int


@dataclass(frozen=True, slots=True)
class ProfileQuery:
    viewer_id: str
    room_id: str | None = field(default=None)
