"""Evaluation on the held-out (latest) test streams, against the oracle and baselines.

Conversion: AUC beside the oracle's AUC and normalised AUC
``(AUC - 0.5) / (oracle AUC - 0.5)``; log-loss against a base-rate-per-market
baseline; calibration error on equal-mass bins (and a reliability plot); the
profile-only ablation. Next-product: log-loss and calibration on exposures,
and NDCG@5 / hit-rate@5 per (viewer, scoring point) group over the stream's
lineup, beside popularity and the oracle. Everything by market (the viewer's
region) with bootstrap intervals over test streams.

``python -m training.evaluate --help`` evaluates served directories on a data dir.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

from features.schema import REGIONS

BINS = 10
BOOTSTRAP = 200
K = 5


@dataclass
class Report:
    """Metrics (flat, MLflow-ready), printable tables and the plots written."""

    model: str
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)

    def text(self) -> str:
        parts = [f"== {self.model} =="]
        for name, table in self.tables.items():
            parts.append(f"-- {name} --")
            parts.append(table.to_string(float_format=lambda v: f"{v:.4f}"))
        return "\n".join(parts)


# ---------------------------------------------------------------- metrics


def auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p, sample_weight=w))


def logloss(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    if len(y) == 0:
        return float("nan")
    return float(-np.average(y * np.log(p) + (1 - y) * np.log(1 - p), weights=w))


def calibration_bins(
    y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None, bins: int = BINS
) -> pd.DataFrame:
    """Equal-mass bins (by weight) of predictions: mean predicted vs observed rate."""
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    cum = np.cumsum(w[order])
    edges = cum[-1] * np.arange(1, bins) / bins if len(cum) else np.array([])
    b = np.empty(len(y), dtype=int)
    b[order] = np.searchsorted(edges, cum, side="left")
    frame = pd.DataFrame({"bin": b, "w": w, "wp": w * p, "wy": w * y})
    g = frame.groupby("bin")[["w", "wp", "wy"]].sum()
    return pd.DataFrame(
        {"predicted": g["wp"] / g["w"], "observed": g["wy"] / g["w"], "weight": g["w"]}
    )


def calibration_error(
    y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None, bins: int = BINS
) -> float:
    """Expected calibration error over equal-mass bins (weight-averaged |pred - obs|)."""
    if len(y) == 0:
        return float("nan")
    t = calibration_bins(y, p, w, bins)
    return float(np.average(np.abs(t["predicted"] - t["observed"]), weights=t["weight"]))


def ranking_metrics(
    groups: np.ndarray, label: np.ndarray, score: np.ndarray, tie: np.ndarray, k: int = K
) -> pd.DataFrame:
    """Per group: NDCG@k and hit@k, ranking by score with ties broken by ``tie``."""
    df = pd.DataFrame({"g": groups, "y": label, "s": -np.asarray(score), "t": tie})
    df = df.sort_values(["g", "s", "t"], kind="stable")
    rank = df.groupby("g").cumcount().to_numpy()
    top = rank < k
    disc = np.where(top, 1.0 / np.log2(rank + 2.0), 0.0)
    df["dcg"] = df["y"].to_numpy() * disc
    df["hit"] = df["y"].to_numpy() * top
    out = df.groupby("g").agg(dcg=("dcg", "sum"), hit=("hit", "max"), npos=("y", "sum"))
    ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = ideal[np.clip(out["npos"].to_numpy().astype(int), 1, k) - 1]
    out["ndcg"] = out["dcg"] / idcg
    return out[["ndcg", "hit"]]


# ---------------------------------------------------------------- bootstrap


def stream_bootstrap(
    streams: np.ndarray,
    stat: Callable[[np.ndarray], float],
    n: int = BOOTSTRAP,
    seed: int = 7,
) -> np.ndarray:
    """``stat`` on ``n`` resamples of whole streams (row indices passed to ``stat``)."""
    codes, uniq = pd.factorize(streams)
    by_stream = [np.flatnonzero(codes == i) for i in range(len(uniq))]
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    for b in range(n):
        pick = rng.integers(0, len(by_stream), len(by_stream))
        out[b] = stat(np.concatenate([by_stream[i] for i in pick]))
    return out


def interval(samples: np.ndarray) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if len(s) == 0:
        return float("nan"), float("nan")
    return float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))


def norm_auc(y: np.ndarray, p: np.ndarray, oracle: np.ndarray, w: np.ndarray | None) -> float:
    return (auc(y, p, w) - 0.5) / (auc(y, oracle, w) - 0.5)


# ---------------------------------------------------------------- reports


def base_rates(frame: pd.DataFrame) -> dict[str, float]:
    """Base rate per market (viewer region) on the training streams; ``"*"`` overall."""
    tr = frame[frame["split"] == "train"]
    rates = {"*": float(np.average(tr["label"], weights=tr["weight"]))}
    for region, g in tr.groupby("region"):
        rates[str(region)] = float(np.average(g["label"], weights=g["weight"]))
    return rates


def _market_rows(
    test: pd.DataFrame, p: np.ndarray, rates: dict[str, float]
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per market: log-loss beside the base rate, calibration, AUC. Where the rows carry
    the simulator's oracle, its own calibration error on the same rows is given too: a
    perfectly calibrated predictor still shows that much on a finite test set (the floor
    a market's ECE target has to be read against)."""
    rows, metrics = [], {}
    y, w = test["label"].to_numpy(float), test["weight"].to_numpy(float)
    oracle = test["oracle"].to_numpy(float) if "oracle" in test else None
    base = test["region"].map(rates).fillna(rates["*"]).to_numpy(float)
    regions = test["region"].to_numpy()
    for region in ("ALL", *REGIONS):
        m = np.ones(len(test), bool) if region == "ALL" else regions == region
        if not m.any():
            continue
        rate = float(np.average(y[m], weights=w[m]))
        ece = calibration_error(y[m], p[m], w[m])
        row = {
            "market": region,
            "rows": int(m.sum()),
            # ECE on a market with few buyers is mostly noise: the count says how much.
            "positives": int((y[m] > 0).sum()),
            "base_rate": rate,
            "logloss": logloss(y[m], p[m], w[m]),
            "logloss_base": logloss(y[m], base[m], w[m]),
            "ece": ece,
            "ece_over_rate": ece / rate if rate > 0 else float("nan"),
            "auc": auc(y[m], p[m], w[m]),
        }
        floor = float("nan")
        if oracle is not None:
            floor = calibration_error(y[m], oracle[m], w[m]) / rate if rate > 0 else floor
            row["oracle_ece_over_rate"] = floor
        rows.append(row)
        key = "" if region == "ALL" else f"_{region}"
        for name in ("logloss", "logloss_base", "ece", "ece_over_rate", "auc", "base_rate"):
            metrics[f"{name}{key}"] = float(row[name])  # type: ignore[arg-type]
        if oracle is not None:
            metrics[f"oracle_ece_over_rate{key}"] = floor
    return pd.DataFrame(rows).set_index("market"), metrics


def reliability_plot(y: np.ndarray, p: np.ndarray, w: np.ndarray, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = calibration_bins(y, p, w)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    top = max(float(t["predicted"].max()), float(t["observed"].max()), 1e-3) * 1.05
    ax.plot([0, top], [0, top], ls="--", c="grey", lw=1)
    ax.plot(t["predicted"], t["observed"], marker="o")
    ax.set(xlabel="predicted", ylabel="observed", title=title, xlim=(0, top), ylim=(0, top))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def importance_plot(importance: dict[str, float], title: str, path: Path, top: int = 20) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(title=title, xlabel="gain")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_conversion(
    frame: pd.DataFrame,
    p: np.ndarray,
    p_profile_only: np.ndarray | None,
    out_dir: Path,
    n_boot: int = BOOTSTRAP,
) -> Report:
    """``frame``: the conversion set; ``p``: predictions for its ``test`` rows (in order)."""
    rep = Report("conversion")
    rates = base_rates(frame)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    y, w = test["label"].to_numpy(float), test["weight"].to_numpy(float)
    oracle = test["oracle"].to_numpy(float)
    streams = test["room_id"].to_numpy()
    rep.metrics["auc"] = auc(y, p, w)
    rep.metrics["oracle_auc"] = auc(y, oracle, w)
    rep.metrics["norm_auc"] = norm_auc(y, p, oracle, w)
    boot = stream_bootstrap(streams, lambda i: norm_auc(y[i], p[i], oracle[i], w[i]), n_boot)
    rep.metrics["norm_auc_lo"], rep.metrics["norm_auc_hi"] = interval(boot)
    boot = stream_bootstrap(streams, lambda i: auc(y[i], p[i], w[i]), n_boot)
    rep.metrics["auc_lo"], rep.metrics["auc_hi"] = interval(boot)
    markets, m = _market_rows(test, p, rates)
    rep.metrics.update(m)
    rep.metrics["oracle_logloss"] = logloss(y, oracle, w)
    summary = {
        "AUC": (rep.metrics["auc"], rep.metrics["auc_lo"], rep.metrics["auc_hi"]),
        "oracle AUC": (rep.metrics["oracle_auc"], np.nan, np.nan),
        "normalised AUC": (
            rep.metrics["norm_auc"],
            rep.metrics["norm_auc_lo"],
            rep.metrics["norm_auc_hi"],
        ),
    }
    if p_profile_only is not None:
        rep.metrics["auc_profile_only"] = auc(y, p_profile_only, w)
        rep.metrics["live_auc_gain"] = rep.metrics["auc"] - rep.metrics["auc_profile_only"]
        boot = stream_bootstrap(
            streams, lambda i: auc(y[i], p[i], w[i]) - auc(y[i], p_profile_only[i], w[i]), n_boot
        )
        rep.metrics["live_auc_gain_lo"], rep.metrics["live_auc_gain_hi"] = interval(boot)
        summary["AUC profile-only (ablation)"] = (rep.metrics["auc_profile_only"], np.nan, np.nan)
        summary["live features gain"] = (
            rep.metrics["live_auc_gain"],
            rep.metrics["live_auc_gain_lo"],
            rep.metrics["live_auc_gain_hi"],
        )
    rep.metrics["test_streams"] = float(len(np.unique(streams)))
    rep.metrics["test_rows"] = float(len(test))
    rep.tables["summary (95% bootstrap over test streams)"] = pd.DataFrame(
        summary, index=["value", "lo", "hi"]
    ).T
    rep.tables["by market"] = markets
    rep.plots.append(
        reliability_plot(y, p, w, "conversion reliability", out_dir / "conversion_reliability.png")
    )
    return rep


def evaluate_next_product(
    frame: pd.DataFrame,
    p: np.ndarray,
    ranking: pd.DataFrame,
    p_ranking: np.ndarray,
    ranking_extra: dict[str, Any],
    out_dir: Path,
    n_boot: int = BOOTSTRAP,
) -> Report:
    """Exposure-row quality on ``frame``'s test rows; ranking quality on ``ranking``."""
    rep = Report("next_product")
    rates = base_rates(frame)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    y, w = test["label"].to_numpy(float), test["weight"].to_numpy(float)
    markets, m = _market_rows(test, p, rates)
    rep.metrics.update({f"exposure_{k}": v for k, v in m.items()})
    rep.tables["exposures by market (weighted back to all rows)"] = markets
    rep.plots.append(
        reliability_plot(
            y, p, w, "next-product reliability", out_dir / "next_product_reliability.png"
        )
    )
    # Ranking over the lineup.
    scorers = {
        "model": p_ranking,
        "popularity": ranking["product_stats__purchase_rate"].fillna(0.0).to_numpy(float),
        "oracle": ranking["oracle"].to_numpy(float),
    }
    groups = ranking["point_id"].to_numpy()
    per_group = {
        name: ranking_metrics(
            groups, ranking["label"].to_numpy(), s, ranking["product_id"].to_numpy()
        )
        for name, s in scorers.items()
    }
    meta = ranking.groupby("point_id").agg(room=("room_id", "first"), region=("region", "first"))
    meta = meta.loc[per_group["model"].index]
    rows = []
    for region in ("ALL", *REGIONS):
        mask = np.ones(len(meta), bool) if region == "ALL" else meta["region"].to_numpy() == region
        if not mask.any():
            continue
        row: dict[str, Any] = {"market": region, "groups": int(mask.sum())}
        for name, g in per_group.items():
            row[f"ndcg@5 {name}"] = float(g["ndcg"].to_numpy()[mask].mean())
            row[f"hit@5 {name}"] = float(g["hit"].to_numpy()[mask].mean())
        rows.append(row)
        key = "" if region == "ALL" else f"_{region}"
        for name in scorers:
            rep.metrics[f"ndcg5_{name}{key}"] = row[f"ndcg@5 {name}"]
            rep.metrics[f"hit5_{name}{key}"] = row[f"hit@5 {name}"]
    rep.tables["ranking over the lineup, groups with a purchase"] = pd.DataFrame(rows).set_index(
        "market"
    )
    nd = {k: g["ndcg"].to_numpy() for k, g in per_group.items()}
    rooms = meta["room"].to_numpy()
    for name in scorers:
        values = nd[name]

        def mean_of(i: np.ndarray, a: np.ndarray = values) -> float:
            return float(a[i].mean())

        boot = stream_bootstrap(rooms, mean_of, n_boot)
        rep.metrics[f"ndcg5_{name}_lo"], rep.metrics[f"ndcg5_{name}_hi"] = interval(boot)
    oracle, pop = rep.metrics.get("ndcg5_oracle", np.nan), rep.metrics.get("ndcg5_popularity")
    rep.metrics["ndcg5_over_oracle"] = rep.metrics.get("ndcg5_model", np.nan) / oracle
    rep.metrics["ndcg5_over_popularity"] = rep.metrics.get("ndcg5_model", np.nan) / (
        pop if pop else np.nan
    )
    rep.metrics["ranking_groups"] = float(ranking_extra.get("groups", np.nan))
    rep.metrics["ranking_groups_kept"] = float(ranking_extra.get("groups_kept", np.nan))
    rep.metrics["ranking_dropped_share"] = float(ranking_extra.get("dropped_share", np.nan))
    rep.tables["summary"] = pd.DataFrame(
        {
            "NDCG@5 model": [
                rep.metrics.get("ndcg5_model", np.nan),
                rep.metrics["ndcg5_model_lo"],
                rep.metrics["ndcg5_model_hi"],
            ],
            "NDCG@5 / oracle": [rep.metrics["ndcg5_over_oracle"], np.nan, np.nan],
            "NDCG@5 / popularity": [rep.metrics["ndcg5_over_popularity"], np.nan, np.nan],
            "groups dropped (no purchase)": [rep.metrics["ranking_dropped_share"], np.nan, np.nan],
        },
        index=["value", "lo", "hi"],
    ).T
    return rep


app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


@app.command()
def main(
    conversion: Annotated[Path, typer.Option(help="Served directory of a conversion model.")],
    next_product: Annotated[Path, typer.Option(help="Served directory of a next-product model.")],
    data_dir: Annotated[
        Path | None, typer.Option(help="Data dir with features applied (default: settings).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write plots.")] = Path("models/eval"),
) -> None:
    """Evaluate two served directories on the test streams of a data dir."""
    from features.served_model import ServedModel
    from features.settings import FeatureSettings
    from training import data

    settings = FeatureSettings(data_dir=data_dir) if data_dir else FeatureSettings()
    fetch = data.make_fetcher(settings, "auto")
    conv = data.conversion_set(settings.data_dir, fetch)
    model = ServedModel.load(conversion)
    te = conv.part("test")
    rep = evaluate_conversion(conv.frame, model.predict(conv.matrix(rows=te)), None, out)
    typer.echo(rep.text())
    nxt = data.next_product_set(settings.data_dir, fetch)
    rank = data.ranking_set(settings.data_dir, fetch)
    model = ServedModel.load(next_product)
    te = nxt.part("test")
    rep = evaluate_next_product(
        nxt.frame,
        model.predict(nxt.matrix(rows=te)),
        rank.frame,
        model.predict(rank.matrix()),
        rank.extra,
        out,
    )
    typer.echo(rep.text())


if __name__ == "__main__":
    app()
