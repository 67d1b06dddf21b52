"""Settings of the scoring service: the feature settings plus what the server needs.

One :class:`ServiceSettings` is built at start-up (``LIVEREC_*`` variables and an
optional ``.env``, like :class:`features.settings.FeatureSettings`, which it
extends so a single ``.env`` configures the whole process) and passed down.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator

from features.settings import PROJECT_ROOT, FeatureSettings

#: Registered model names (DESIGN §7).
CONVERSION_MODEL = "liverec-conversion"
NEXT_PRODUCT_MODEL = "liverec-next-product"


class ServiceSettings(FeatureSettings):
    """Everything ``liverec serve`` reads; every field is a ``LIVEREC_<NAME>`` variable."""

    grpc_host: str = Field(
        default="127.0.0.1",
        description="Address the gRPC server binds ([::] for every interface).",
    )
    grpc_port: int = Field(
        default=50051,
        ge=0,
        le=65535,
        description="gRPC port; 0 binds a free port (written to the ready file).",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint; 0 binds a free port.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description=(
            "Server processes sharing the port. 1: one process serves everything and owns "
            "live state. N > 1: one aggregator process owns live state and N workers share "
            "the port (SO_REUSEPORT) and forward events and room-level calls to it."
        ),
    )
    default_deadline_ms: int = Field(
        default=1000,
        gt=0,
        description="Deadline applied to a call that carries none, in milliseconds.",
    )
    max_concurrency: int = Field(
        default=64,
        gt=0,
        description=(
            "Scoring calls in flight per process; past it calls get RESOURCE_EXHAUSTED at "
            "once instead of queueing. Health and reflection are not counted."
        ),
    )
    max_candidates: int = Field(
        default=500, gt=0, description="Most candidate products one call may send."
    )
    max_viewers: int = Field(default=500, gt=0, description="Most viewer ids one call may send.")
    max_present_viewers: int = Field(
        default=5000,
        gt=0,
        description="Most present viewers RecommendNextProduct sums over (the rest are left out).",
    )
    max_id_len: int = Field(
        default=128, gt=0, description="Longest accepted id (room, viewer, product), in characters."
    )
    top_k_default: int = Field(default=10, gt=0, description="top_k used when a call sends 0.")
    top_k_max: int = Field(
        default=500, gt=0, description="Largest top_k accepted; above it INVALID_ARGUMENT."
    )
    reasons_per_item: int = Field(
        default=3, ge=0, description="Reasons returned per viewer or product (top contributors)."
    )
    segment_high_conversion: float = Field(
        default=0.30,
        ge=0.0,
        le=1.0,
        description="Conversion probability at or above which a viewer is HIGH_CONVERSION.",
    )
    segment_high_potential: float = Field(
        default=0.08,
        ge=0.0,
        le=1.0,
        description=(
            "Probability at or above which (and below segment_high_conversion) a viewer is "
            "HIGH_POTENTIAL; below it TO_BE_ACTIVATED."
        ),
    )
    fallback_conversion_rate: float = Field(
        default=0.03,
        ge=0.0,
        le=1.0,
        description="Base rate answered (flagged `fallback`) when no conversion model can run.",
    )
    store_timeout_margin_ms: float = Field(
        default=2.0,
        ge=0.0,
        description=(
            "Time kept back from the remaining deadline when waiting on a store read, so a "
            "degraded answer still goes out before the caller gives up."
        ),
    )
    store_timeout_fraction: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description=(
            "Share of the remaining deadline also kept back from a store read (on top of "
            "store_timeout_margin_ms) for scoring, reasons and the way back."
        ),
    )
    store_threads: int = Field(
        default=8, gt=0, description="Threads running online-store reads (each bounded in time)."
    )
    gc_freeze: bool = Field(
        default=True,
        description=(
            "No automatic cyclic garbage collections while starting (each walked all that "
            "start-up had built: 2.3 s of a 17-22 s start); once serving, collect once and "
            "move everything loaded (models, Feast registry, caches, the rebuilt live "
            "state) out of the collector's reach (gc.freeze): a full collection over the "
            "start-up heap paused a call by ~0.5 s. See service.heap."
        ),
    )
    gc_young_threshold: int = Field(
        default=700,
        gt=0,
        description=(
            "Allocations between young-generation collections when gc_freeze is on "
            "(Python's default, 700). Each collection frees the cycles gRPC leaves per call "
            "(5 objects): at 20,000 one collection paused the loop 2.5-4.5 ms every second "
            "at 500 calls/s, at 700 about 0.05 ms."
        ),
    )
    inline_local_reads: bool = Field(
        default=True,
        description=(
            "Read an embedded (local SQLite) store on the event loop instead of through "
            "the read pool: a local read in WAL mode never waits on the writer and costs "
            "less than the thread hop around it. A networked store is always read in the pool."
        ),
    )
    product_refresh_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between background refreshes of the product_stats cache.",
    )
    viewer_cache_s: float = Field(
        default=60.0,
        ge=0,
        description=(
            "Seconds a viewer's batch rows (demographics, profile; rebuilt daily) are reused "
            "before they are read again. 0 reads them on every call."
        ),
    )
    viewer_cache_size: int = Field(
        default=100_000, gt=0, description="Most viewers' batch rows kept in memory (LRU)."
    )
    room_tree_group: int = Field(
        default=12,
        ge=0,
        description=(
            "Trees a group when RecommendNextProduct scores a room's grid: each group's "
            "margin is kept per row, and a row whose value crossed a split is walked again "
            "through the groups that split there only (a room column crossing a split then "
            "moves one or two groups, not every tree). Each group's margin costs 4 bytes a "
            "kept row (13 groups for a model of 156 trees). 0: the grid is scored by the "
            "whole graph and not kept."
        ),
    )
    score_kept_rows: int = Field(
        default=262_144,
        ge=0,
        description=(
            "Most rows whose score each model keeps by the branches they take in its "
            "trees (RankProducts, ScoreConversion; exact: such rows score the same bits), "
            "and an eighth as many rows' contributions; 0 keeps none. A room of 2,000 "
            "viewers x 50 candidates asked again in turn needs 100,000; at most about "
            "80 MB a model by default. The same number, apart, bounds the rows of the "
            "rooms' last RecommendNextProduct grids kept, whose (row, group of trees) pairs "
            "that did not move are not walked again (about 45 + 4 x groups bytes a row: "
            "with 13 groups, 4 rooms of 2,000 x 30, 23 MB, by default)."
        ),
    )
    live_cache_s: float = Field(
        default=0.25,
        ge=0,
        description=(
            "Seconds a room's product_live and room_state rows are reused across calls "
            "(adds at most this to event-to-scoring latency). 0 reads them on every call."
        ),
    )
    roster_refresh_s: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a room's present-viewer list is reused before it is read again.",
    )
    model_poll_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between checks of the registry's `champion` alias (hot swap).",
    )
    model_alias: str = Field(default="champion", description="Registry alias that is served.")
    models_dir: Path = Field(
        default=PROJECT_ROOT / "models",
        description=(
            "Last good copy of each served model (models/<name>/), used to start when the "
            "registry is unreachable."
        ),
    )
    mlflow_tracking_uri: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}",
        # LIVEREC_MLFLOW_TRACKING_URI, else MLflow's own MLFLOW_TRACKING_URI (what the
        # trainer reads), so one variable points training and serving at the same registry.
        validation_alias=AliasChoices("LIVEREC_MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
        description=(
            "MLflow tracking/registry URI the champion models are loaded from "
            "(LIVEREC_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI)."
        ),
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="Seconds in-flight calls get to finish after SIGTERM before they are cut.",
    )

    # -- live ingestion (DESIGN §4, §11) -------------------------------------------------
    ingest_enabled: bool = Field(
        default=True,
        description=(
            "Own live state (the aggregator: WAL, duplicate window, live aggregates, online "
            "writes). Off: scoring only; PublishEvents/IngestEvents answer UNIMPLEMENTED."
        ),
    )
    ingest_max_future_s: float = Field(
        default=300.0, gt=0, description="Events more than this far in the future are rejected."
    )
    ingest_max_past_s: float = Field(
        default=86400.0, gt=0, description="Events more than this far in the past are rejected."
    )
    ingest_out_of_order_s: float = Field(
        default=30.0,
        ge=0,
        description="Out-of-order window: older than the watermark minus this counts as late.",
    )
    ingest_dedupe_window_s: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds an event_id is remembered (and rebuilt from the log at start).",
    )
    ingest_dedupe_max_ids: int = Field(
        default=5_000_000, gt=0, description="Most event ids the duplicate window holds."
    )
    ingest_flush_interval_s: float = Field(
        default=0.2,
        gt=0,
        description="Seconds between micro-batched online-store writes of the changed rows.",
    )
    ingest_flush_max_rows: int = Field(
        default=5000, gt=0, description="Changed rows that trigger a write before the interval."
    )
    ingest_max_pending_rows: int = Field(
        default=200_000,
        gt=0,
        description="Changed rows not yet written past which ingestion gets RESOURCE_EXHAUSTED.",
    )
    ingest_chunk_events: int = Field(
        default=500,
        gt=0,
        description="IngestEvents: most events made durable together (one chunk of the stream).",
    )
    ingest_chunk_ms: float = Field(
        default=50.0,
        gt=0,
        description="IngestEvents: a chunk is made durable at most this long after it starts.",
    )
    wal_dir: Path | None = Field(
        default=None, description="Write-ahead log directory; default <data_dir>/wal."
    )
    aggregator_address: str | None = Field(
        default=None,
        description=(
            "Where the aggregator serves (e.g. unix:/tmp/x/aggregator.sock). Set by "
            "`--workers N` for its workers; a worker forwards events and room calls there."
        ),
    )

    @property
    def wal_path(self) -> Path:
        return self.wal_dir if self.wal_dir is not None else self.data_dir / "wal"

    @field_validator("models_dir")
    @classmethod
    def _absolute_models(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        if self.segment_high_potential > self.segment_high_conversion:
            raise ValueError("segment_high_potential must not exceed segment_high_conversion")
        if self.top_k_default > self.top_k_max:
            raise ValueError("top_k_default must not exceed top_k_max")
        return self
