"""The whole training run: data -> train -> export + parity -> evaluate -> register.

Each stage lives in its own module; this one only wires them in order for the
two models and reports progress. ``liverec train`` calls :func:`run`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from features.served_model import ServedModel
from features.vector import CONVERSION, CONVERSION_PROFILE_ONLY, NEXT_PRODUCT, ModelSpec
from training import data, evaluate, export, register
from training.train import Trained, start_dask, train_model

log = logging.getLogger(__name__)

MODELS = ("conversion", "next_product")


@dataclass
class Options:
    """Everything a run depends on besides the data (logged as run parameters)."""

    data_dir: Path
    num_threads: int = 1
    seed: int = 7
    dask: bool = False
    dask_address: str | None = None
    join: str = "auto"
    max_exposure_rows: int = data.MAX_EXPOSURE_ROWS
    bootstrap: int = evaluate.BOOTSTRAP
    models: tuple[str, ...] = MODELS
    progress: bool = True


@dataclass
class Outcome:
    """One model's run: what was logged, the evaluation, and the registry decision."""

    result: register.RunResult
    report: evaluate.Report
    trained: Trained


def _spec_of(model: ServedModel) -> ModelSpec:
    return ModelSpec(model.name, model.feature_service, tuple(model.columns))


class _Stages:
    """A progress bar over the named stages of one model."""

    def __init__(self, model: str, stages: list[str], enabled: bool):
        self.bar = tqdm(total=len(stages), desc=model, disable=not enabled, unit="stage")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        yield
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


STAGES = ["data", "train", "export", "parity", "evaluate", "register"]


def run_conversion(opts: Options, fetch: data.Fetcher, client: Any, work: Path) -> Outcome:
    st = _Stages("conversion", STAGES, opts.progress)
    with st.stage("data"):
        ts = data.conversion_set(opts.data_dir, fetch, seed=opts.seed)
    with st.stage("train"):
        trained = train_model(ts, CONVERSION, opts.num_threads, opts.seed, client)
        ablation = train_model(ts, CONVERSION_PROFILE_ONLY, opts.num_threads, opts.seed, client)
    te = ts.part("test")
    test = ts.frame.iloc[te].reset_index(drop=True)
    X = ts.matrix(rows=te)
    served_dir = work / "conversion"
    with st.stage("export"):
        export.write_served(
            served_dir,
            trained.booster,
            trained.calibrator,
            export.served_spec(trained, ts),
            export.parity_sample(X, np.random.default_rng(opts.seed)),
        )
    with st.stage("parity"):
        served = ServedModel.load(served_dir)
        parity = export.parity_gate(
            served, X, test["room_id"].to_numpy(), test["point_id"].to_numpy()
        )
    with st.stage("evaluate"):
        p = served.predict(X).astype(np.float64)
        p_abl = ablation.predict(ts.matrix(CONVERSION_PROFILE_ONLY, rows=te))
        report = evaluate.evaluate_conversion(ts.frame, p, p_abl, work / "plots", opts.bootstrap)
    y, w = test["label"].to_numpy(float), test["weight"].to_numpy(float)
    oracle = test["oracle"].to_numpy(float)

    def comparison(scores: np.ndarray) -> register.Comparison:
        return register.Comparison(
            primary=lambda i: evaluate.norm_auc(y[i], scores[i], oracle[i], w[i]),
            logloss_rows=scores,
        )

    def gate(old: ServedModel) -> register.Verdict:
        p_old = old.predict(data.vectors(_spec_of(old), test)).astype(np.float64)
        return register.promotion_gate(
            comparison(p),
            comparison(p_old),
            test["room_id"].to_numpy(),
            y,
            w,
            test["region"].to_numpy(),
            "norm_auc",
            None,
            opts.bootstrap,
            seed=opts.seed,
        )

    with st.stage("register"):
        result = register.log_run(
            "conversion",
            trained,
            ts.fingerprint(),
            report,
            parity,
            served_dir,
            _params(opts, ts),
            gate,
        )
    st.close()
    return Outcome(result, report, trained)


def run_next_product(opts: Options, fetch: data.Fetcher, client: Any, work: Path) -> Outcome:
    st = _Stages("next_product", STAGES, opts.progress)
    with st.stage("data"):
        ts = data.next_product_set(
            opts.data_dir, fetch, max_rows=opts.max_exposure_rows, seed=opts.seed
        )
        rank = data.ranking_set(opts.data_dir, fetch, "test")
    with st.stage("train"):
        trained = train_model(ts, NEXT_PRODUCT, opts.num_threads, opts.seed, client)
    te = ts.part("test")
    test = ts.frame.iloc[te].reset_index(drop=True)
    X = ts.matrix(rows=te)
    X_rank = rank.matrix()
    served_dir = work / "next_product"
    with st.stage("export"):
        export.write_served(
            served_dir,
            trained.booster,
            trained.calibrator,
            export.served_spec(trained, ts),
            export.parity_sample(np.vstack([X, X_rank]), np.random.default_rng(opts.seed)),
        )
    with st.stage("parity"):
        served = ServedModel.load(served_dir)
        groups = np.concatenate(
            [
                ("exposures:" + test["room_id"]).to_numpy(),
                ("point:" + rank.frame["point_id"]).to_numpy(),
            ]
        )
        ties = np.concatenate(
            [
                (test["product_id"] + "/" + test["viewer_id"]).to_numpy(),
                rank.frame["product_id"].to_numpy(),
            ]
        )
        parity = export.parity_gate(served, np.vstack([X, X_rank]), groups, ties)
    with st.stage("evaluate"):
        p = served.predict(X).astype(np.float64)
        p_rank = served.predict(X_rank).astype(np.float64)
        report = evaluate.evaluate_next_product(
            ts.frame, p, rank.frame, p_rank, rank.extra, work / "plots", opts.bootstrap
        )
    y, w = test["label"].to_numpy(float), test["weight"].to_numpy(float)
    point_ids = rank.frame["point_id"].to_numpy()
    meta = rank.frame.groupby("point_id").agg(room=("room_id", "first"))

    def ndcg(scores: np.ndarray) -> np.ndarray:
        g = evaluate.ranking_metrics(
            point_ids, rank.frame["label"].to_numpy(), scores, rank.frame["product_id"].to_numpy()
        )
        return g.loc[meta.index, "ndcg"].to_numpy()

    nd_new = ndcg(p_rank)

    def gate(old: ServedModel) -> register.Verdict:
        spec = _spec_of(old)
        p_old = old.predict(data.vectors(spec, test)).astype(np.float64)
        nd_old = ndcg(old.predict(data.vectors(spec, rank.frame)).astype(np.float64))
        return register.promotion_gate(
            register.Comparison(lambda i: float(nd_new[i].mean()), p),
            register.Comparison(lambda i: float(nd_old[i].mean()), p_old),
            meta["room"].to_numpy(),
            y,
            w,
            test["region"].to_numpy(),
            "ndcg5_model",
            None,
            opts.bootstrap,
            seed=opts.seed,
        )

    with st.stage("register"):
        result = register.log_run(
            "next_product",
            trained,
            ts.fingerprint(),
            report,
            parity,
            served_dir,
            {**_params(opts, ts), "ranking_groups": rank.extra.get("groups", 0)},
            gate,
        )
    st.close()
    return Outcome(result, report, trained)


def _params(opts: Options, ts: data.TrainingSet) -> dict[str, Any]:
    splits = ts.frame.groupby("split")["room_id"].nunique().to_dict()
    return {
        "data_dir": str(opts.data_dir),
        "seed": opts.seed,
        "dask": opts.dask,
        "join": opts.join,
        "negative_rate": ts.extra.get("negative_rate", 1.0),
        **{f"streams_{k}": v for k, v in splits.items()},
    }


def run(opts: Options) -> list[Outcome]:
    """Train, evaluate and register the requested models; return what happened."""
    from features.settings import FeatureSettings

    settings = FeatureSettings(data_dir=opts.data_dir)
    fetch = data.make_fetcher(settings, opts.join)
    client = start_dask(opts.dask_address, opts.num_threads) if opts.dask else None
    outcomes = []
    try:
        with tempfile.TemporaryDirectory(prefix="liverec-train-") as tmp:
            work = Path(tmp)
            if "conversion" in opts.models:
                outcomes.append(run_conversion(opts, fetch, client, work))
            if "next_product" in opts.models:
                outcomes.append(run_next_product(opts, fetch, client, work))
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None and opts.dask_address is None:
                cluster.close()
    return outcomes


def summary(outcomes: list[Outcome]) -> pd.DataFrame:
    rows = []
    for o in outcomes:
        r = o.result
        rows.append(
            {
                "model": r.model,
                "run_id": r.run_id,
                "registered": f"{r.registered_name} v{r.version}" if r.version else "no",
                "parity": "ok" if r.parity_ok else r.parity_reason,
                "champion": ("yes" if r.verdict and r.verdict.promote else "no"),
                "verdict": r.verdict.reason if r.verdict else "",
            }
        )
    return pd.DataFrame(rows)
