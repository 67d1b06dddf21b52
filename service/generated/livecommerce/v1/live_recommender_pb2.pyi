import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Segment(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEGMENT_UNSPECIFIED: _ClassVar[Segment]
    SEGMENT_HIGH_CONVERSION: _ClassVar[Segment]
    SEGMENT_HIGH_POTENTIAL: _ClassVar[Segment]
    SEGMENT_TO_BE_ACTIVATED: _ClassVar[Segment]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_STREAM_START: _ClassVar[EventType]
    EVENT_TYPE_STREAM_END: _ClassVar[EventType]
    EVENT_TYPE_STAGE_CHANGE: _ClassVar[EventType]
    EVENT_TYPE_OVERLAY_IMPRESSION: _ClassVar[EventType]
    EVENT_TYPE_JOIN: _ClassVar[EventType]
    EVENT_TYPE_LEAVE: _ClassVar[EventType]
    EVENT_TYPE_CHAT: _ClassVar[EventType]
    EVENT_TYPE_LIKE: _ClassVar[EventType]
    EVENT_TYPE_SHARE: _ClassVar[EventType]
    EVENT_TYPE_PRODUCT_CLICK: _ClassVar[EventType]
    EVENT_TYPE_ADD_TO_CART: _ClassVar[EventType]
    EVENT_TYPE_CHECKOUT_START: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE: _ClassVar[EventType]

class ChatTopic(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHAT_TOPIC_UNSPECIFIED: _ClassVar[ChatTopic]
    CHAT_TOPIC_PRICE: _ClassVar[ChatTopic]
    CHAT_TOPIC_SHIPPING: _ClassVar[ChatTopic]
    CHAT_TOPIC_SIZE_FIT: _ClassVar[ChatTopic]
    CHAT_TOPIC_USAGE: _ClassVar[ChatTopic]
    CHAT_TOPIC_AUTHENTICITY: _ClassVar[ChatTopic]
    CHAT_TOPIC_PAYMENT: _ClassVar[ChatTopic]
    CHAT_TOPIC_OTHER: _ClassVar[ChatTopic]

class PaymentMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_METHOD_UNSPECIFIED: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_CARD: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_WALLET: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_COD: _ClassVar[PaymentMethod]
    PAYMENT_METHOD_BANK_TRANSFER: _ClassVar[PaymentMethod]

class FunnelStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUNNEL_STEP_UNSPECIFIED: _ClassVar[FunnelStep]
    FUNNEL_STEP_PRODUCT_CLICK: _ClassVar[FunnelStep]
    FUNNEL_STEP_ADD_TO_CART: _ClassVar[FunnelStep]
    FUNNEL_STEP_CHECKOUT_START: _ClassVar[FunnelStep]
    FUNNEL_STEP_PURCHASE: _ClassVar[FunnelStep]
SEGMENT_UNSPECIFIED: Segment
SEGMENT_HIGH_CONVERSION: Segment
SEGMENT_HIGH_POTENTIAL: Segment
SEGMENT_TO_BE_ACTIVATED: Segment
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_STREAM_START: EventType
EVENT_TYPE_STREAM_END: EventType
EVENT_TYPE_STAGE_CHANGE: EventType
EVENT_TYPE_OVERLAY_IMPRESSION: EventType
EVENT_TYPE_JOIN: EventType
EVENT_TYPE_LEAVE: EventType
EVENT_TYPE_CHAT: EventType
EVENT_TYPE_LIKE: EventType
EVENT_TYPE_SHARE: EventType
EVENT_TYPE_PRODUCT_CLICK: EventType
EVENT_TYPE_ADD_TO_CART: EventType
EVENT_TYPE_CHECKOUT_START: EventType
EVENT_TYPE_PURCHASE: EventType
CHAT_TOPIC_UNSPECIFIED: ChatTopic
CHAT_TOPIC_PRICE: ChatTopic
CHAT_TOPIC_SHIPPING: ChatTopic
CHAT_TOPIC_SIZE_FIT: ChatTopic
CHAT_TOPIC_USAGE: ChatTopic
CHAT_TOPIC_AUTHENTICITY: ChatTopic
CHAT_TOPIC_PAYMENT: ChatTopic
CHAT_TOPIC_OTHER: ChatTopic
PAYMENT_METHOD_UNSPECIFIED: PaymentMethod
PAYMENT_METHOD_CARD: PaymentMethod
PAYMENT_METHOD_WALLET: PaymentMethod
PAYMENT_METHOD_COD: PaymentMethod
PAYMENT_METHOD_BANK_TRANSFER: PaymentMethod
FUNNEL_STEP_UNSPECIFIED: FunnelStep
FUNNEL_STEP_PRODUCT_CLICK: FunnelStep
FUNNEL_STEP_ADD_TO_CART: FunnelStep
FUNNEL_STEP_CHECKOUT_START: FunnelStep
FUNNEL_STEP_PURCHASE: FunnelStep

class ModelInfo(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DegradationFlags(_message.Message):
    __slots__ = ("cold_start", "stale_features", "missing_features", "fallback")
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    STALE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FEATURES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    cold_start: bool
    stale_features: bool
    missing_features: bool
    fallback: bool
    def __init__(self, cold_start: _Optional[bool] = ..., stale_features: _Optional[bool] = ..., missing_features: _Optional[bool] = ..., fallback: _Optional[bool] = ...) -> None: ...

class ResponseMeta(_message.Message):
    __slots__ = ("model", "feature_age_ms", "flags")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    feature_age_ms: int
    flags: DegradationFlags
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., feature_age_ms: _Optional[int] = ..., flags: _Optional[_Union[DegradationFlags, _Mapping]] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "args", "text", "weight")
    class ArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    code: str
    args: _containers.ScalarMap[str, str]
    text: str
    weight: float
    def __init__(self, code: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ..., text: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Money(_message.Message):
    __slots__ = ("amount_minor", "currency")
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount_minor: int
    currency: str
    def __init__(self, amount_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class ScoreConversionRequest(_message.Message):
    __slots__ = ("room_id", "viewer_ids")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    VIEWER_IDS_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    viewer_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, room_id: _Optional[str] = ..., viewer_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoreConversionResponse(_message.Message):
    __slots__ = ("scores", "meta")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ViewerScore]
    meta: ResponseMeta
    def __init__(self, scores: _Optional[_Iterable[_Union[ViewerScore, _Mapping]]] = ..., meta: _Optional[_Union[ResponseMeta, _Mapping]] = ...) -> None: ...

class ViewerScore(_message.Message):
    __slots__ = ("viewer_id", "probability", "segment", "reasons", "flags", "feature_age_ms")
    VIEWER_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    viewer_id: str
    probability: float
    segment: Segment
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    flags: DegradationFlags
    feature_age_ms: int
    def __init__(self, viewer_id: _Optional[str] = ..., probability: _Optional[float] = ..., segment: _Optional[_Union[Segment, str]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., flags: _Optional[_Union[DegradationFlags, _Mapping]] = ..., feature_age_ms: _Optional[int] = ...) -> None: ...

class RankProductsRequest(_message.Message):
    __slots__ = ("room_id", "viewer_id", "candidate_product_ids", "top_k")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    VIEWER_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    viewer_id: str
    candidate_product_ids: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    def __init__(self, room_id: _Optional[str] = ..., viewer_id: _Optional[str] = ..., candidate_product_ids: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ...) -> None: ...

class RankProductsResponse(_message.Message):
    __slots__ = ("products", "meta")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[RankedProduct]
    meta: ResponseMeta
    def __init__(self, products: _Optional[_Iterable[_Union[RankedProduct, _Mapping]]] = ..., meta: _Optional[_Union[ResponseMeta, _Mapping]] = ...) -> None: ...

class RankedProduct(_message.Message):
    __slots__ = ("product_id", "score", "reasons", "flags")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    score: float
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    flags: DegradationFlags
    def __init__(self, product_id: _Optional[str] = ..., score: _Optional[float] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., flags: _Optional[_Union[DegradationFlags, _Mapping]] = ...) -> None: ...

class RecommendNextProductRequest(_message.Message):
    __slots__ = ("room_id", "candidate_product_ids", "top_k")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    candidate_product_ids: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    def __init__(self, room_id: _Optional[str] = ..., candidate_product_ids: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ...) -> None: ...

class RecommendNextProductResponse(_message.Message):
    __slots__ = ("products", "viewers_present", "meta")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    VIEWERS_PRESENT_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[NextProduct]
    viewers_present: int
    meta: ResponseMeta
    def __init__(self, products: _Optional[_Iterable[_Union[NextProduct, _Mapping]]] = ..., viewers_present: _Optional[int] = ..., meta: _Optional[_Union[ResponseMeta, _Mapping]] = ...) -> None: ...

class NextProduct(_message.Message):
    __slots__ = ("product_id", "score", "expected_conversions", "reasons", "flags")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    score: float
    expected_conversions: float
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    flags: DegradationFlags
    def __init__(self, product_id: _Optional[str] = ..., score: _Optional[float] = ..., expected_conversions: _Optional[float] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., flags: _Optional[_Union[DegradationFlags, _Mapping]] = ...) -> None: ...

class LiveEvent(_message.Message):
    __slots__ = ("event_id", "event_type", "event_time", "room_id", "viewer_id", "product_id", "chat_topic", "chat_text", "amount", "payment_method", "planned_end_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    VIEWER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_TOPIC_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEXT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    PLANNED_END_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: EventType
    event_time: _timestamp_pb2.Timestamp
    room_id: str
    viewer_id: str
    product_id: str
    chat_topic: ChatTopic
    chat_text: str
    amount: Money
    payment_method: PaymentMethod
    planned_end_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[_Union[EventType, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., room_id: _Optional[str] = ..., viewer_id: _Optional[str] = ..., product_id: _Optional[str] = ..., chat_topic: _Optional[_Union[ChatTopic, str]] = ..., chat_text: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., payment_method: _Optional[_Union[PaymentMethod, str]] = ..., planned_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[LiveEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[LiveEvent, _Mapping]]] = ...) -> None: ...

class IngestSummary(_message.Message):
    __slots__ = ("accepted", "duplicates", "late", "rejected")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    late: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedEvent]
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., late: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedEvent, _Mapping]]] = ...) -> None: ...

class RejectedEvent(_message.Message):
    __slots__ = ("index", "event_id", "reason", "field")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    index: int
    event_id: str
    reason: str
    field: str
    def __init__(self, index: _Optional[int] = ..., event_id: _Optional[str] = ..., reason: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class GetViewerProfileRequest(_message.Message):
    __slots__ = ("viewer_id", "room_id")
    VIEWER_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    viewer_id: str
    room_id: str
    def __init__(self, viewer_id: _Optional[str] = ..., room_id: _Optional[str] = ...) -> None: ...

class Demographics(_message.Message):
    __slots__ = ("market", "region", "age_band", "gender", "language", "device", "income_band")
    MARKET_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    AGE_BAND_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    INCOME_BAND_FIELD_NUMBER: _ClassVar[int]
    market: str
    region: str
    age_band: str
    gender: str
    language: str
    device: str
    income_band: str
    def __init__(self, market: _Optional[str] = ..., region: _Optional[str] = ..., age_band: _Optional[str] = ..., gender: _Optional[str] = ..., language: _Optional[str] = ..., device: _Optional[str] = ..., income_band: _Optional[str] = ...) -> None: ...

class PurchaseBehaviour(_message.Message):
    __slots__ = ("order_count", "order_value_usd", "avg_order_value_usd", "days_since_last_order", "decision_time_min", "preferred_payment")
    ORDER_COUNT_FIELD_NUMBER: _ClassVar[int]
    ORDER_VALUE_USD_FIELD_NUMBER: _ClassVar[int]
    AVG_ORDER_VALUE_USD_FIELD_NUMBER: _ClassVar[int]
    DAYS_SINCE_LAST_ORDER_FIELD_NUMBER: _ClassVar[int]
    DECISION_TIME_MIN_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_PAYMENT_FIELD_NUMBER: _ClassVar[int]
    order_count: int
    order_value_usd: float
    avg_order_value_usd: float
    days_since_last_order: float
    decision_time_min: float
    preferred_payment: PaymentMethod
    def __init__(self, order_count: _Optional[int] = ..., order_value_usd: _Optional[float] = ..., avg_order_value_usd: _Optional[float] = ..., days_since_last_order: _Optional[float] = ..., decision_time_min: _Optional[float] = ..., preferred_payment: _Optional[_Union[PaymentMethod, str]] = ...) -> None: ...

class Interests(_message.Message):
    __slots__ = ("category_affinity", "avg_dwell_min", "sessions_count")
    class CategoryAffinityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CATEGORY_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    AVG_DWELL_MIN_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_COUNT_FIELD_NUMBER: _ClassVar[int]
    category_affinity: _containers.ScalarMap[str, float]
    avg_dwell_min: float
    sessions_count: int
    def __init__(self, category_affinity: _Optional[_Mapping[str, float]] = ..., avg_dwell_min: _Optional[float] = ..., sessions_count: _Optional[int] = ...) -> None: ...

class Motivation(_message.Message):
    __slots__ = ("topic_rate", "cart_abandon_rate")
    class TopicRateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TOPIC_RATE_FIELD_NUMBER: _ClassVar[int]
    CART_ABANDON_RATE_FIELD_NUMBER: _ClassVar[int]
    topic_rate: _containers.ScalarMap[str, float]
    cart_abandon_rate: float
    def __init__(self, topic_rate: _Optional[_Mapping[str, float]] = ..., cart_abandon_rate: _Optional[float] = ...) -> None: ...

class LiveSignals(_message.Message):
    __slots__ = ("room_id", "present", "dwell_s", "chat_counts", "likes", "shares", "clicks", "carts", "checkouts", "purchases", "funnel_step")
    class ChatCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    DWELL_S_FIELD_NUMBER: _ClassVar[int]
    CHAT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LIKES_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    CARTS_FIELD_NUMBER: _ClassVar[int]
    CHECKOUTS_FIELD_NUMBER: _ClassVar[int]
    PURCHASES_FIELD_NUMBER: _ClassVar[int]
    FUNNEL_STEP_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    present: bool
    dwell_s: float
    chat_counts: _containers.ScalarMap[str, int]
    likes: int
    shares: int
    clicks: int
    carts: int
    checkouts: int
    purchases: int
    funnel_step: FunnelStep
    def __init__(self, room_id: _Optional[str] = ..., present: _Optional[bool] = ..., dwell_s: _Optional[float] = ..., chat_counts: _Optional[_Mapping[str, int]] = ..., likes: _Optional[int] = ..., shares: _Optional[int] = ..., clicks: _Optional[int] = ..., carts: _Optional[int] = ..., checkouts: _Optional[int] = ..., purchases: _Optional[int] = ..., funnel_step: _Optional[_Union[FunnelStep, str]] = ...) -> None: ...

class ViewerProfile(_message.Message):
    __slots__ = ("viewer_id", "demographics", "purchase_behaviour", "interests", "motivation", "live", "segment", "last_event_applied", "meta")
    VIEWER_ID_FIELD_NUMBER: _ClassVar[int]
    DEMOGRAPHICS_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_BEHAVIOUR_FIELD_NUMBER: _ClassVar[int]
    INTERESTS_FIELD_NUMBER: _ClassVar[int]
    MOTIVATION_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_APPLIED_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    viewer_id: str
    demographics: Demographics
    purchase_behaviour: PurchaseBehaviour
    interests: Interests
    motivation: Motivation
    live: LiveSignals
    segment: Segment
    last_event_applied: _timestamp_pb2.Timestamp
    meta: ResponseMeta
    def __init__(self, viewer_id: _Optional[str] = ..., demographics: _Optional[_Union[Demographics, _Mapping]] = ..., purchase_behaviour: _Optional[_Union[PurchaseBehaviour, _Mapping]] = ..., interests: _Optional[_Union[Interests, _Mapping]] = ..., motivation: _Optional[_Union[Motivation, _Mapping]] = ..., live: _Optional[_Union[LiveSignals, _Mapping]] = ..., segment: _Optional[_Union[Segment, str]] = ..., last_event_applied: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., meta: _Optional[_Union[ResponseMeta, _Mapping]] = ...) -> None: ...
