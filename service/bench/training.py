"""Training cost: LightGBM fit time per million rows, with the champion's own settings.

``service`` never imports ``training`` (DESIGN §5), and the MLflow runs do not
record fit time, so this times a fit here: the next-product champion's
hyper-parameters and tree count, on ``rows`` synthetic rows of its width (values
and labels drawn at random; fit time depends on rows, columns, bins and trees,
not on what the rows mean), two threads as ``liverec train`` uses by default.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from service.bench.world import BenchWorld
from service.settings import NEXT_PRODUCT_MODEL

#: Fit-time parameters copied from the champion (the rest are LightGBM defaults).
_KEEP = (
    "objective",
    "learning_rate",
    "num_leaves",
    "max_depth",
    "min_data_in_leaf",
    "feature_fraction",
    "bagging_fraction",
    "bagging_freq",
    "lambda_l1",
    "lambda_l2",
    "max_bin",
    "min_sum_hessian_in_leaf",
)


def per_million_rows(world: BenchWorld, rows: int, threads: int = 2) -> dict[str, Any]:
    import lightgbm as lgb

    from features.served_model import ServedModel
    from service.bench.textbook import served_dir

    booster = ServedModel.load(served_dir(world, NEXT_PRODUCT_MODEL)).booster()
    loaded = getattr(booster, "params", {}) or {}
    params: dict[str, Any] = {k: loaded[k] for k in _KEEP if k in loaded}
    params.setdefault("objective", "binary")
    params.update({"num_threads": threads, "verbose": -1, "deterministic": True, "seed": 7})
    trees = max(1, booster.num_trees())
    cols = booster.num_feature()
    rng = np.random.default_rng(7)
    X = rng.normal(size=(rows, cols)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=rows) > 1.5).astype(int)
    t0 = time.perf_counter()
    lgb.train(params, lgb.Dataset(X, y), num_boost_round=trees)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "rows": rows,
        "columns": cols,
        "trees": trees,
        "threads": threads,
        "seconds": seconds,
        "seconds_per_million_rows": seconds / rows * 1e6,
        "note": f"LightGBM fit incl. binning, champion's params, {trees} trees, {cols} cols, "
        f"{rows:,} synthetic rows, {threads} threads",
    }
    if world.train.get("wall_s"):
        out["bench_liverec_train_wall_s"] = world.train["wall_s"]
    return out
