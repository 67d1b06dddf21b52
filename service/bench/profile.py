"""Where the microseconds of one RankProducts go, stage by stage, in one process.

The server's own objects (``service.cli.build_app``: Feast reader, champions,
product cache), driven step by step as :meth:`service.scoring.Scorer._rank`
runs them, each step timed on its own over ``n`` calls (median and p99,
microseconds). What gRPC itself adds is the end-to-end single-call latency
minus the ``total as served`` row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from service.bench.textbook import timed
from service.bench.world import BenchWorld


def _stats(seconds: np.ndarray) -> dict[str, float]:
    return {
        "p50_us": float(np.median(seconds) * 1e6),
        "p99_us": float(np.percentile(seconds, 99) * 1e6),
    }


def _time(fn: Callable[[], Any], n: int) -> dict[str, float]:
    return _stats(timed(fn, n, warmup=max(5, n // 10)))


def _cpu_after_idle(fn: Callable[[], Any], n: int, gap_s: float) -> dict[str, float]:
    """CPU time of ``fn`` (this thread's) when the process idled ``gap_s`` before each call.

    On a shared machine a core that idles loses its caches to other tenants: the same
    call costs more CPU at 100 calls/s than back to back, which is what a server's CPU
    per call at a low rate reflects."""
    for _ in range(5):
        fn()
    out = np.empty(n)
    for i in range(n):
        if gap_s:
            time.sleep(gap_s)
        t0 = time.thread_time()
        fn()
        out[i] = time.thread_time() - t0
    return _stats(out)


#: The stages a served RankProducts runs, in its order: :func:`_in_sequence` times each
#: where it stands in a call, after the others, not repeated alone.
SEQUENCE = (
    "2 validation",
    "3 product_stats (cache)",
    "4d   store reads in place, as served (row caches, live row held)",
    "5 product columns from rows (cached)",
    "6 assemble: viewer block, product block, grid (parts kept as served)",
    "7 scores: branch keys, kept rows looked up, the rest by ONNX (as served)",
    "8 top-k sort",
    "9 reasons: contributions, kept rows looked up (as served)",
    "10 reasons: explain (10 rows at once)",
    "11 protobuf build + serialize (response)",
)
#: The key of the share of rows whose next-product score was kept (not run through ONNX).
KEPT_SHARE = "rows whose score was looked up by branch key, share over these calls"
#: The key of the per-call sum of the stages run in sequence.
SEQUENCE_SUM = "sum of stages 2-11 run in sequence, per call"


def _in_sequence(steps: list[tuple[str, Callable[[], Any]]], n: int) -> dict[str, dict[str, float]]:
    """Each step timed where it stands in a call: all steps run in order, ``n`` times.

    Timed alone, a stage runs with its own code and data hot in the caches and the
    branch predictor trained on it, which a real call never gives it (measured: the
    stages alone summed to about half of one call). The p50 of each step in sequence
    is what it costs inside a call; ``SEQUENCE_SUM`` is the per-call sum."""
    clock = time.perf_counter
    spent = np.empty((n, len(steps)))
    for i in range(-max(5, n // 10), n):
        t = clock()
        for j, (_, fn) in enumerate(steps):
            fn()
            t, before = clock(), t
            if i >= 0:
                spent[i, j] = t - before
    out = {
        name: {"seq_p50_us": float(np.median(spent[:, j]) * 1e6)}
        for j, (name, _) in enumerate(steps)
    }
    total = spent.sum(axis=1)
    out[SEQUENCE_SUM] = {"seq_p50_us": float(np.median(total) * 1e6)}
    return out


def rank_stages(world: BenchWorld, request: Any, n: int) -> dict[str, dict[str, float]]:
    import asyncio

    from features.tables import PRODUCT_LIVE, VIEWER_LIVE
    from features.vector import (
        EXPOSURE_OVERLAY,
        NEXT_PRODUCT,
        assemble_grid,
        product_at,
    )
    from service import convert, validation
    from service.cli import build_app
    from service.domain import Deadline, RankAnswer
    from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
    from service.ingest.rooms import ViewerRows
    from service.reasons import explain_rows
    from service.scoring import ProductColumns, _without_held
    from service.settings import NEXT_PRODUCT_MODEL

    # No aggregator here: the profile is of the scoring path alone.
    app = build_app(world.settings(grpc_port=0, metrics_port=0, ingest_enabled=False))
    app.models.start()
    app._prepare_features()
    loop = asyncio.new_event_loop()
    try:
        s = app.s
        feats = app.features
        scorer = app.scorer
        model = app.models.get(NEXT_PRODUCT_MODEL)
        assert model is not None, "no next-product model loaded"
        wire = request.SerializeToString()
        q = validation.rank_products(request, s)
        cands = list(q.candidates)
        nc = len(cands)

        def deadline() -> Deadline:
            return Deadline.after(1.0)

        rows = feats.fetch(scorer._rank_request(q), deadline())
        assert rows is not None
        stats, _ = feats.products(cands, deadline())
        live = rows[PRODUCT_LIVE.name]
        now = time.time()
        pcols, pstatic = scorer._product_cols.get(q.candidates, stats, live)
        vb, pblock = (
            scorer._viewers_block([q.viewer_id], rows, now),
            product_at(pstatic, pcols, now),
        )

        def assemble() -> Any:
            return scorer._rank_grid(q, rows, stats, now, held=True)  # as the fold's owner

        X = assemble_grid(NEXT_PRODUCT, vb, pblock, EXPOSURE_OVERLAY)
        p = np.clip(np.asarray(model.predict(X), dtype=np.float64).ravel(), 0.0, 1.0)
        scores = p.tolist()
        top = sorted(range(nc), key=lambda i: (-scores[i], cands[i]))[: q.top_k]
        contrib = model.contributions(X[top])
        _, keys = model.predict_kept(X)
        top_keys = keys and [keys[i] for i in top]
        answer: RankAnswer = scorer._rank(q, now, stats, True, rows)

        # The viewer's live row held, as the process that owns live state holds it in its
        # fold (one row object until the viewer's next event): what the server reads.
        held = ViewerRows([rows[VIEWER_LIVE.name][0]], None)

        async def served() -> Any:
            return convert.ranked(await scorer.rank_products_async(q, deadline(), held))

        def read_in_place() -> Any:
            request = scorer._rank_request(q)
            _without_held(request, held)
            return feats._read_all(request)

        reader = feats.reader
        stages: dict[str, Callable[[], Any]] = {
            "1 protobuf parse (request)": lambda: pb.RankProductsRequest.FromString(wire),
            "2 validation": lambda: validation.rank_products(request, s),
            "3 product_stats (cache)": lambda: feats.cached_products(cands),
            "4 store reads, pooled fetch (one thread hop)": lambda: feats.fetch(
                scorer._rank_request(q), deadline()
            ),
            "4d   store reads in place, as served (row caches, live row held)": read_in_place,
            "4a   viewer_live read (1 row, uncached)": lambda: reader.read(
                VIEWER_LIVE.name, [(q.viewer_id, q.room_id)]
            ),
            "4b   product_live read (50 rows, cache miss)": lambda: reader.read(
                PRODUCT_LIVE.name, [(c, q.room_id) for c in cands]
            ),
            "4c   viewer_profile + demographics read (cache miss)": lambda: (
                reader.read("viewer_profile", [(q.viewer_id,)]),
                reader.read("viewer_demographics", [(q.viewer_id,)]),
            ),
            "5 product columns from rows (cached)": lambda: scorer._product_cols.get(
                q.candidates, stats, live
            ),
            "5a   product columns, rebuilt (live rows refreshed)": lambda: ProductColumns().get(
                q.candidates, stats, live
            ),
            "6 assemble: viewer block, product block, grid (parts kept as served)": assemble,
            "7 scores: branch keys, kept rows looked up, the rest by ONNX (as served)": (
                lambda: model.predict_kept(X)
            ),
            "7a   ONNX predict (50 rows, nothing kept)": lambda: model.predict(X),
            "7b   branch keys alone (50 rows)": lambda: model.kept and model.kept.keys.rows(X),
            "8 top-k sort": lambda: sorted(range(nc), key=lambda i: (-scores[i], cands[i]))[
                : q.top_k
            ],
            "9 reasons: contributions, kept rows looked up (as served)": (
                lambda: model.contributions_kept(X[top], top_keys)
            ),
            "9a   contributions (10 rows, path explainer, nothing kept)": (
                lambda: model.contributions(X[top])
            ),
            "10 reasons: explain (10 rows at once)": lambda: explain_rows(
                NEXT_PRODUCT.columns, X[top], contrib, s.reasons_per_item
            ),
            "11 protobuf build + serialize (response)": lambda: convert.ranked(
                answer
            ).SerializeToString(),
            "total in-process (Scorer.rank_products + convert)": lambda: convert.ranked(
                scorer.rank_products(validation.rank_products(request, s), deadline())
            ).SerializeToString(),
            "total as served (rank_products_async on a loop + convert)": lambda: (
                loop.run_until_complete(served()).SerializeToString()
            ),
        }
        kept = model.kept
        before = (kept.looked_up, kept.scored) if kept else (0, 0)
        out = {name: _time(fn, n) for name, fn in stages.items()}
        steps = [(name, stages[name]) for name in SEQUENCE]
        for name, timing in _in_sequence(steps, n).items():
            out.setdefault(name, {}).update(timing)
        as_served = stages["total as served (rank_products_async on a loop + convert)"]
        for gap_ms in (0, 2, 10):
            out[f"CPU as served, {gap_ms} ms idle before each call"] = _cpu_after_idle(
                as_served, max(50, n // 5), gap_ms / 1000.0
            )
        if kept is not None:
            # Over every call above (the time moves between them, as between a viewer's
            # overlay refreshes): the share of rows whose score was looked up.
            looked_up, scored = kept.looked_up - before[0], kept.scored - before[1]
            out[KEPT_SHARE] = {"share": looked_up / max(1, looked_up + scored)}
        return out
    finally:
        loop.close()
        app.features.close()
        app.servicer.close()
        app.metrics.close()
