"""Where the microseconds of one RankProducts go, stage by stage, in one process.

The server's own objects (``service.cli.build_app``: Feast reader, champions,
product cache), driven step by step exactly as
:meth:`service.scoring.Scorer.rank_products` runs them, each step timed on its
own over ``n`` calls (median and p99, microseconds). What gRPC itself adds is
the end-to-end single-call latency minus the ``total in-process`` row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from service.bench.world import BenchWorld


def _time(fn: Callable[[], Any], n: int) -> dict[str, float]:
    for _ in range(max(5, n // 10)):
        fn()
    out = np.empty(n)
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return {"p50_us": float(np.median(out) * 1e6), "p99_us": float(np.percentile(out, 99) * 1e6)}


def rank_stages(world: BenchWorld, request: Any, n: int) -> dict[str, dict[str, float]]:
    from features.tables import PRODUCT_LIVE, ROOM_STATE, VIEWER_LIVE
    from features.vector import EXPOSURE_OVERLAY, NEXT_PRODUCT, assemble
    from service import convert, validation
    from service.cli import build_app
    from service.domain import Deadline, RankAnswer, ScoredProduct
    from service.features_online import VIEWER_VIEWS, judge
    from service.generated.livecommerce.v1 import live_recommender_pb2 as pb
    from service.reasons import explain
    from service.scoring import view_columns
    from service.settings import NEXT_PRODUCT_MODEL

    # No aggregator here: the profile is of the scoring path alone.
    app = build_app(world.settings(grpc_port=0, metrics_port=0, ingest_enabled=False))
    app.models.start()
    app._prepare_features()
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

        def store_request() -> dict[str, Any]:
            r = feats.viewer_request([q.viewer_id], q.room_id)
            r[PRODUCT_LIVE.name] = [(p, q.room_id) for p in cands]
            return r

        req = store_request()
        rows = feats.fetch(req, deadline())
        assert rows is not None
        stats, _ = feats.products(cands, deadline())

        def columns() -> dict[str, Any]:
            repeated = {v: rows[v] * nc for v in VIEWER_VIEWS}
            repeated[ROOM_STATE.name] = rows[ROOM_STATE.name]
            cols = scorer._viewer_cols(repeated, nc)
            cols.update(view_columns("product_stats", stats))
            cols.update(view_columns(PRODUCT_LIVE.name, rows[PRODUCT_LIVE.name]))
            cols["product_id"] = np.array(cands, dtype=object)
            return cols

        cols = columns()
        now = time.time()
        X = assemble(NEXT_PRODUCT, cols, now, EXPOSURE_OVERLAY)
        p = np.clip(np.asarray(model.predict(X), dtype=np.float64).ravel(), 0.0, 1.0)
        top = sorted(range(nc), key=lambda i: (-p[i], cands[i]))[: q.top_k]
        contrib = model.contributions(X[top])

        def reasons_and_flags() -> list[Any]:
            viewer_flags, _ = scorer._viewer_flags(rows, 0, now)
            out = []
            for rank, i in enumerate(top):
                judged = judge(
                    [("product_stats", stats[i]), (PRODUCT_LIVE.name, rows[PRODUCT_LIVE.name][i])],
                    now,
                )
                flags = judged.flags.merge(viewer_flags)
                rs = explain(NEXT_PRODUCT.columns, X[i], contrib[rank], s.reasons_per_item)
                out.append(ScoredProduct(cands[i], float(p[i]), rs, flags))
            return out

        products = reasons_and_flags()
        answer = RankAnswer(
            products, scorer._meta(NEXT_PRODUCT_MODEL, model, [(products[0].flags, 0)])
        )
        reader = feats.reader
        stages: dict[str, Callable[[], Any]] = {
            "1 protobuf parse (request)": lambda: pb.RankProductsRequest.FromString(wire),
            "2 validation": lambda: validation.rank_products(request, s),
            "3 product_stats (cache)": lambda: feats.products(cands, deadline()),
            "4 store reads, pooled fetch (as served)": lambda: feats.fetch(
                store_request(), deadline()
            ),
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
            "5 columns from rows (view_columns)": columns,
            "6 assemble (features.vector)": lambda: assemble(
                NEXT_PRODUCT, cols, now, EXPOSURE_OVERLAY
            ),
            "7 ONNX predict (50 rows)": lambda: model.predict(X),
            "8 top-k sort": lambda: sorted(range(nc), key=lambda i: (-p[i], cands[i]))[: q.top_k],
            "9 reasons: pred_contrib (10 rows, LightGBM)": lambda: model.contributions(X[top]),
            "10 reasons: explain + judge flags": reasons_and_flags,
            "11 protobuf build + serialize (response)": lambda: convert.ranked(
                answer
            ).SerializeToString(),
            "total in-process (Scorer.rank_products + convert)": lambda: convert.ranked(
                scorer.rank_products(validation.rank_products(request, s), deadline())
            ).SerializeToString(),
        }
        return {name: _time(fn, n) for name, fn in stages.items()}
    finally:
        app.features.close()
        app.servicer.close()
        app.metrics.close()
