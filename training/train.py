"""LightGBM binary models with monotone funnel constraints and a Platt calibrator.

Trees are fitted on the ``train`` streams with early stopping on the ``valid``
streams; the calibrator (``sigmoid(a * margin + b)``) is fitted on the
``calib`` streams, which neither saw. Deterministic and single-threaded by
default so a test run is reproducible; ``--dask`` fits on a Dask cluster
through LightGBM's Dask integration instead.

``python -m training.train --help`` trains one model on a data dir and writes
its served directory, without MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import lightgbm as lgb
import numpy as np
import typer

from features.served_model import apply_calibrator
from features.vector import ModelSpec
from training.data import TrainingSet
from training.export import float32_thresholds

log = logging.getLogger(__name__)

MAX_ROUNDS = 1500
EARLY_STOPPING = 100


def lgb_params(spec: ModelSpec, num_threads: int = 1, seed: int = 7) -> dict[str, Any]:
    """The LightGBM parameters of a model (logged to MLflow as they are)."""
    return {
        "objective": "binary",
        "metric": "binary_logloss",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 40,
        "min_sum_hessian_in_leaf": 1e-3,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "monotone_constraints": spec.monotone_constraints(),
        "monotone_constraints_method": "intermediate",
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
        "seed": seed,
        "verbose": -1,
    }


@dataclass
class Trained:
    """A fitted booster with its calibrator: LightGBM's side of the parity gate."""

    spec: ModelSpec
    booster: lgb.Booster
    calibrator: dict[str, Any]
    params: dict[str, Any]
    best_iteration: int
    history: dict[str, list[float]] = field(default_factory=dict)

    def margin(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(X, raw_score=True), dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64)."""
        return apply_calibrator(self.calibrator, self.margin(X))

    def importance(self) -> dict[str, float]:
        gain = self.booster.feature_importance(importance_type="gain")
        return dict(zip(self.spec.columns, map(float, gain), strict=True))


def fit_platt(margin: np.ndarray, y: np.ndarray, weight: np.ndarray) -> dict[str, Any]:
    """Platt scaling on the margin; identity when the split cannot support a fit."""
    from sklearn.linear_model import LogisticRegression

    positives = float(np.sum(y > 0))
    if positives < 2 or positives == len(y):
        return {"kind": "platt", "a": 1.0, "b": 0.0, "in_graph": True, "fitted": False}
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(margin.reshape(-1, 1), y, sample_weight=weight)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if a <= 0:
        # A non-increasing map would undo the monotone constraints: keep the raw model.
        return {"kind": "platt", "a": 1.0, "b": 0.0, "in_graph": True, "fitted": False}
    return {"kind": "platt", "a": a, "b": b, "in_graph": True, "fitted": True}


def train_model(
    ts: TrainingSet,
    spec: ModelSpec | None = None,
    num_threads: int = 1,
    seed: int = 7,
    dask_client: Any = None,
    *,
    max_rounds: int = MAX_ROUNDS,
    label: np.ndarray | None = None,
) -> Trained:
    """Fit ``spec`` (default: the set's own) on ``ts``; ``label`` overrides (tests only)."""
    spec = spec or ts.spec
    y = ts.y if label is None else np.asarray(label, dtype=np.float64)
    w = ts.weight
    tr, va, ca = ts.part("train"), ts.part("valid"), ts.part("calib")
    X = ts.matrix(spec)
    params = lgb_params(spec, num_threads, seed)
    if dask_client is not None:
        booster, best, history = _fit_dask(dask_client, params, X, y, w, tr, va, max_rounds)
    else:
        booster, best, history = _fit_local(params, X, y, w, tr, va, max_rounds)
    booster = float32_thresholds(booster)
    calibrator = fit_platt(booster.predict(X[ca], raw_score=True), y[ca], w[ca])
    log.info("%s: %d trees, calibrator %s", spec.name, best, calibrator)
    return Trained(spec, booster, calibrator, params, best, history)


def _fit_local(
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    tr: np.ndarray,
    va: np.ndarray,
    max_rounds: int,
) -> tuple[lgb.Booster, int, dict[str, list[float]]]:
    train = lgb.Dataset(X[tr], y[tr], weight=w[tr], free_raw_data=False)
    valid = lgb.Dataset(X[va], y[va], weight=w[va], reference=train)
    history: dict[str, Any] = {}
    booster = lgb.train(
        params,
        train,
        num_boost_round=max_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(EARLY_STOPPING, verbose=False),
            lgb.record_evaluation(history),
        ],
    )
    best = booster.best_iteration or booster.current_iteration()
    # Keep exactly the trees that are served: no num_iteration argument anywhere else.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return booster, best, {"valid_logloss": list(history["valid"]["binary_logloss"])}


def _fit_dask(
    client: Any,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    tr: np.ndarray,
    va: np.ndarray,
    max_rounds: int,
) -> tuple[lgb.Booster, int, dict[str, list[float]]]:
    """Fit on the cluster, then cut at the best validation round (no early stop in Dask)."""
    import dask.array as da

    workers = max(1, len(client.scheduler_info()["workers"]))
    chunk = max(1, -(-len(tr) // workers))
    dX = da.from_array(X[tr], chunks=(chunk, X.shape[1]))
    dy = da.from_array(y[tr], chunks=(chunk,))
    dw = da.from_array(w[tr], chunks=(chunk,))
    kwargs = {k: v for k, v in params.items() if k not in ("objective", "metric", "num_threads")}
    model = lgb.DaskLGBMClassifier(
        client=client, n_estimators=max_rounds, **kwargs, num_threads=params["num_threads"]
    )
    model.fit(dX, dy, sample_weight=dw)
    booster = model.to_local().booster_
    losses = []
    steps = list(range(10, booster.current_iteration() + 1, 10)) or [booster.current_iteration()]
    for k in steps:
        p = np.clip(booster.predict(X[va], num_iteration=k), 1e-12, 1 - 1e-12)
        losses.append(
            float(-np.average(y[va] * np.log(p) + (1 - y[va]) * np.log(1 - p), weights=w[va]))
        )
    best = steps[int(np.argmin(losses))]
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return booster, best, {"valid_logloss_every_10": losses}


def start_dask(address: str | None, num_threads: int) -> Any:
    """A Dask client: to ``address``, or to a LocalCluster of 2 workers, dashboard off."""
    from dask.distributed import Client, LocalCluster

    if address:
        return Client(address)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=max(1, num_threads), dashboard_address=None, processes=True
    )
    return Client(cluster)


app = typer.Typer(help=__doc__, no_args_is_help=False, add_completion=False)


@app.command()
def main(
    model: Annotated[str, typer.Option(help="conversion or next_product.")] = "conversion",
    data_dir: Annotated[
        Path | None, typer.Option(help="Data dir with features applied (default: settings).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the served directory.")] = Path(
        "models/dev"
    ),
    num_threads: Annotated[int, typer.Option(help="LightGBM threads.")] = 1,
    seed: Annotated[int, typer.Option(help="LightGBM and sampling seed.")] = 7,
) -> None:
    """Train one model and write its served artifact directory (no MLflow)."""
    from features.settings import FeatureSettings
    from training import data
    from training.export import parity_sample, served_spec, write_served

    settings = FeatureSettings(data_dir=data_dir) if data_dir else FeatureSettings()
    fetch = data.make_fetcher(settings, "auto")
    ts = (
        data.conversion_set(settings.data_dir, fetch, seed=seed)
        if model == "conversion"
        else data.next_product_set(settings.data_dir, fetch, seed=seed)
    )
    trained = train_model(ts, num_threads=num_threads, seed=seed)
    X = ts.matrix()
    rng = np.random.default_rng(seed)
    write_served(
        out, trained.booster, trained.calibrator, served_spec(trained, ts), parity_sample(X, rng)
    )
    typer.echo(f"{model}: {trained.best_iteration} trees -> {out}")


if __name__ == "__main__":
    app()
