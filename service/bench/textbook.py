"""The alternatives, in this one process: the textbook path and inference alone.

Textbook = what a first version would do: Feast SDK ``get_online_features`` for
the viewer and every candidate (one call, 50 entity rows, the model's feature
service), the same :func:`features.vector.assemble`, then LightGBM
``Booster.predict`` on the champion's own booster, and pred_contrib for the
top 10's reasons (as the service does for its reasons).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.bench.loadgen import percentiles
from service.bench.world import BenchWorld
from service.settings import NEXT_PRODUCT_MODEL

_SERVED: dict[tuple[str, str], Path] = {}


def served_dir(world: BenchWorld, name: str, dest: Path | None = None) -> Path:
    """The champion's served files, downloaded once per run."""
    from features.served_model import download_served

    key = (world.mlflow_uri, name)
    if key not in _SERVED:
        root = Path(tempfile.mkdtemp(prefix="liverec-bench-served-")) if dest is None else dest
        _SERVED[key] = download_served(name, "champion", root / name, tracking_uri=world.mlflow_uri)
    return _SERVED[key]


def timed(fn: Any, n: int, warmup: int) -> np.ndarray:
    """Seconds per call of ``fn``, ``n`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def textbook(
    world: BenchWorld, room: str, viewer: str, cands: list[str], n: int, top_k: int = 10
) -> dict[str, Any]:
    """p50/p99 of the textbook RankProducts, one call after another in one process."""
    from features.served_model import ServedModel
    from features.store import open_store
    from features.vector import EXPOSURE_OVERLAY, NEXT_PRODUCT, assemble

    store = open_store(world.settings())
    model = ServedModel.load(served_dir(world, NEXT_PRODUCT_MODEL))
    booster = model.booster()
    service = store.get_feature_service(model.feature_service)
    rows = [{"viewer_id": viewer, "room_id": room, "product_id": p} for p in cands]

    def call() -> list[tuple[str, float]]:
        now = time.time()
        cols = store.get_online_features(
            features=service, entity_rows=rows, full_feature_names=True
        ).to_dict()
        cols = {k: np.asarray(v, dtype=object) for k, v in cols.items()}
        X = assemble(NEXT_PRODUCT, _numeric(cols), now, EXPOSURE_OVERLAY)
        p = booster.predict(X)
        top = np.argsort(-p, kind="stable")[:top_k]
        booster.predict(X[top], pred_contrib=True)
        return [(cands[i], float(p[i])) for i in top]

    lat = timed(call, n, warmup=max(3, n // 20))
    return {"n": n, **percentiles(lat).as_dict()}


def _numeric(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feast gives Python objects with None; assemble wants float64 NaN for numbers."""
    out: dict[str, np.ndarray] = {}
    for k, v in cols.items():
        if any(isinstance(x, str) for x in v):
            out[k] = v
        else:
            out[k] = np.array([np.nan if x is None else float(x) for x in v], dtype=np.float64)
    return out


def inference(world: BenchWorld, n: int) -> dict[str, Any]:
    """ONNX Runtime (one thread) vs LightGBM native on the same 50 rows and on 1 row."""
    from features.served_model import PARITY_FILE, ServedModel

    model = ServedModel.load(served_dir(world, NEXT_PRODUCT_MODEL))
    booster = model.booster()
    with np.load(model.directory / PARITY_FILE) as parity:
        sample = parity["X"].astype(np.float32)
    rng = np.random.default_rng(0)
    X50 = sample[rng.integers(0, len(sample), 50)]
    X1 = X50[:1]
    out: dict[str, Any] = {"trees": booster.num_trees(), "columns": X50.shape[1]}
    for label, X in (("rows50", X50), ("rows1", X1)):
        onnx = percentiles(timed(lambda X=X: model.predict(X), n, warmup=50))
        native = percentiles(timed(lambda X=X: booster.predict(X, num_threads=1), n, warmup=50))
        contrib = percentiles(
            timed(lambda X=X: booster.predict(X[:10], pred_contrib=True, num_threads=1), n, 50)
        )
        out[label] = {
            "onnx": onnx.as_dict(),
            "lightgbm": native.as_dict(),
            "lightgbm_contrib_top10": contrib.as_dict(),
            "ratio_lightgbm_over_onnx_p50": native.p50_ms / onnx.p50_ms,
        }
    return out
