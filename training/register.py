"""MLflow tracking, registration and the champion/challenger promotion gate.

One experiment per model; each run logs parameters, metrics, the training-set
fingerprint, plots, feature importance, the LightGBM model (with a signature
and a synthetic input example: no real viewer's row leaves the machine), and
the served artifact directory (ONNX graph, calibrator, spec, parity sample,
booster text) both under the run's ``served/`` and inside the logged model's
``extra_files/``. A version that passed the parity gate is registered and
aliased ``challenger``; it becomes ``champion`` when it is the first version,
or when on the same test streams its primary metric beats the champion's
(paired bootstrap over streams, 95% lower bound > 0) and no market's log-loss
is worse by more than :data:`LOGLOSS_MARGIN` (relative).

``python -m training.register --help``: list, promote and roll back aliases.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from features.schema import REGIONS
from features.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

REGISTERED = {"conversion": "liverec-conversion", "next_product": "liverec-next-product"}
EXPERIMENTS = REGISTERED
PRIMARY = {"conversion": "norm_auc", "next_product": "ndcg5_model"}
CHAMPION = "champion"
CHALLENGER = "challenger"
#: A challenger may not be worse on any market's log-loss by more than this share.
LOGLOSS_MARGIN = 0.02
HISTORY_TAG = "champion_history"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the project's ``sqlite:///<root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def artifact_root(uri: str | None = None) -> Path:
    """Artifacts beside a SQLite store (``<root>/mlartifacts`` for the project's own)."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return PROJECT_ROOT / "mlartifacts"


def client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def ensure_experiment(name: str) -> str:
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = (artifact_root() / name).as_uri()
    return str(c.create_experiment(name, artifact_location=location))


# ---------------------------------------------------------------- promotion gate


@dataclass
class Verdict:
    """Whether a challenger replaces the champion, and why."""

    promote: bool
    reason: str
    champion_version: str | None = None
    primary: str = ""
    diff: float = float("nan")
    diff_lo: float = float("nan")
    diff_hi: float = float("nan")
    market_logloss: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Comparison:
    """What the gate needs about one model on the shared test streams.

    ``primary(idx)`` returns the primary metric on the bootstrap-resampled units
    ``idx`` (rows of ``units_stream``); ``logloss_rows`` are test-row predictions.
    """

    primary: Callable[[np.ndarray], float]
    logloss_rows: np.ndarray


def promotion_gate(
    new: Comparison,
    old: Comparison,
    units_stream: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    regions: np.ndarray,
    primary_name: str,
    champion_version: str | None,
    n_boot: int = 200,
    margin: float = LOGLOSS_MARGIN,
    seed: int = 7,
) -> Verdict:
    """Paired bootstrap over streams on the primary metric, then per-market log-loss."""
    from training.evaluate import interval, logloss, stream_bootstrap

    all_units = np.arange(len(units_stream))
    diff = new.primary(all_units) - old.primary(all_units)
    boot = stream_bootstrap(units_stream, lambda i: new.primary(i) - old.primary(i), n_boot, seed)
    lo, hi = interval(boot)
    markets: dict[str, dict[str, float]] = {}
    worse = []
    for region in REGIONS:
        m = regions == region
        if not m.any():
            continue
        a = logloss(y[m], new.logloss_rows[m], w[m])
        b = logloss(y[m], old.logloss_rows[m], w[m])
        markets[region] = {"challenger": a, "champion": b}
        if a > b * (1 + margin):
            worse.append(f"{region} {a:.4f} > {b:.4f}×{1 + margin:g}")
    verdict = Verdict(False, "", champion_version, primary_name, diff, lo, hi, markets)
    if not lo > 0:
        verdict.reason = (
            f"{primary_name} not better: Δ={diff:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] "
            "(lower bound must be > 0)"
        )
    elif worse:
        verdict.reason = f"log-loss worse beyond {margin:.0%} in: " + ", ".join(worse)
    else:
        verdict.promote = True
        verdict.reason = (
            f"{primary_name} better: Δ={diff:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]; "
            f"no market worse on log-loss beyond {margin:.0%}"
        )
    return verdict


# ---------------------------------------------------------------- logging


def synthetic_example(n_features: int) -> np.ndarray:
    """An input example that is no one's data: zeros, ones and a row of NaN."""
    return np.vstack(
        [np.zeros(n_features), np.ones(n_features), np.full(n_features, np.nan)]
    ).astype(np.float32)


@dataclass
class RunResult:
    model: str
    run_id: str
    registered_name: str
    version: str | None
    verdict: Verdict | None
    parity_ok: bool
    parity_reason: str


def log_run(
    model: str,
    trained: Any,
    fingerprint: dict[str, Any],
    report: Any,
    parity: Any,
    served_dir: Path,
    extra_params: dict[str, Any],
    gate: Callable[[Any], Verdict] | None,
) -> RunResult:
    """Log one model's run; register and alias it if its parity gate passed.

    ``gate(champion_served_model)`` compares with the current champion (loaded from
    the registry) on the same test streams; it is not called for a first version.
    """
    import mlflow
    from mlflow.models import infer_signature

    from features.served_model import ServedModel
    from training.evaluate import importance_plot

    mlflow.set_tracking_uri(tracking_uri())
    name = REGISTERED[model]
    exp_id = ensure_experiment(EXPERIMENTS[model])
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{model}") as run:
        params = {k: v for k, v in trained.params.items() if k != "monotone_constraints"}
        params["monotone_up"] = ",".join(
            c
            for c, m in zip(trained.spec.columns, trained.spec.monotone_constraints(), strict=True)
            if m > 0
        )
        params["monotone_down"] = ",".join(
            c
            for c, m in zip(trained.spec.columns, trained.spec.monotone_constraints(), strict=True)
            if m < 0
        )
        params.update({f"fingerprint_{k}": v for k, v in fingerprint.items()})
        params.update({"trees": trained.best_iteration, **extra_params})
        params.update({f"calibrator_{k}": v for k, v in trained.calibrator.items()})
        mlflow.log_params(params)
        mlflow.set_tags(
            {
                "model": model,
                "feature_service": fingerprint["feature_service"],
                "fingerprint": fingerprint["sha256"],
                "parity": "ok" if parity.ok else f"failed: {parity.reason}",
            }
        )
        metrics = {k: float(v) for k, v in report.metrics.items() if np.isfinite(v)}
        metrics.update(parity.as_metrics())
        mlflow.log_metrics(metrics)
        mlflow.log_dict(fingerprint, "fingerprint.json")
        mlflow.log_text(report.text(), "evaluation.txt")
        for path in report.plots:
            mlflow.log_artifact(str(path), "plots")
        importance = trained.importance()
        mlflow.log_dict(importance, "feature_importance.json")
        with tempfile.TemporaryDirectory() as tmp:
            png = importance_plot(importance, f"{model} importance", Path(tmp) / "importance.png")
            mlflow.log_artifact(str(png), "plots")
        mlflow.log_artifacts(str(served_dir), "served")
        example = synthetic_example(len(trained.spec.columns))
        signature = infer_signature(example, trained.booster.predict(example))
        files = sorted(str(p) for p in served_dir.iterdir() if p.is_file())
        info = mlflow.lightgbm.log_model(
            trained.booster,
            name="model",
            signature=signature,
            input_example=example,
            extra_files=files,
            # Pinned here rather than inferred (inference shells out to `uv export`).
            pip_requirements=_requirements(),
            registered_model_name=name if parity.ok else None,
        )
        result = RunResult(model, run.info.run_id, name, None, None, parity.ok, parity.reason)
        if not parity.ok:
            typer.echo(f"{model}: NOT registered, parity gate failed: {parity.reason}")
            mlflow.set_tag("verdict", f"not registered: {parity.reason}")
            return result
        version = str(info.registered_model_version)
        result.version = version
        c = client()
        c.set_model_version_tag(
            name, version, "served_artifacts", f"runs:/{run.info.run_id}/served"
        )
        c.set_model_version_tag(name, version, "fingerprint", fingerprint["sha256"])
        c.set_registered_model_alias(name, CHALLENGER, version)
        champion = _alias_version(name, CHAMPION)
        if champion is None:
            verdict = Verdict(True, "first version: becomes champion", None, PRIMARY[model])
        elif gate is None:
            verdict = Verdict(False, "no comparison possible", champion, PRIMARY[model])
        else:
            with tempfile.TemporaryDirectory() as tmp:
                from features.served_model import download_served

                try:
                    old = ServedModel.load(download_served(name, CHAMPION, tmp, tracking_uri()))
                    verdict = gate(old)
                except (KeyError, ValueError) as exc:
                    verdict = Verdict(
                        False, f"champion v{champion} not comparable: {exc}", champion
                    )
            verdict.champion_version = champion
        result.verdict = verdict
        mlflow.log_dict(verdict.as_dict(), "verdict.json")
        mlflow.set_tag(
            "verdict", ("promoted: " if verdict.promote else "kept champion: ") + verdict.reason
        )
        c.set_model_version_tag(name, version, "verdict", verdict.reason[:4000])
        if verdict.promote:
            promote(name, version)
    return result


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("lightgbm", "numpy", "onnxruntime", "scikit-learn")]


# ---------------------------------------------------------------- aliases


def _alias_version(name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _history(name: str) -> list[str]:
    tags = client().get_registered_model(name).tags
    return list(json.loads(tags.get(HISTORY_TAG, "[]")))


def promote(name: str, version: str) -> str | None:
    """Make ``version`` the champion; the previous one is remembered for rollback."""
    c = client()
    c.get_model_version(name, str(version))  # raises if it does not exist
    previous = _alias_version(name, CHAMPION)
    if previous == str(version):
        return previous
    history = _history(name)
    if previous is not None:
        history.append(previous)
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
    c.set_registered_model_alias(name, CHAMPION, str(version))
    if _alias_version(name, CHALLENGER) == str(version):
        c.delete_registered_model_alias(name, CHALLENGER)
    log.info("%s: champion v%s (was v%s)", name, version, previous)
    return previous


def rollback(name: str) -> str:
    """Give ``champion`` back to the version that held it before the current one."""
    c = client()
    history = _history(name)
    if not history:
        raise ValueError(f"{name}: no previous champion to roll back to")
    version = history.pop()
    c.set_registered_model_alias(name, CHAMPION, version)
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    return version


def list_models() -> list[dict[str, Any]]:
    c = client()
    rows = []
    for name in REGISTERED.values():
        try:
            c.get_registered_model(name)
        except Exception:
            continue
        for found in c.search_model_versions(f"name='{name}'"):
            # Search results leave aliases out; the version itself carries them.
            v = c.get_model_version(name, found.version)
            rows.append(
                {
                    "name": name,
                    "version": str(v.version),
                    "aliases": ",".join(sorted(v.aliases)),
                    "run_id": v.run_id,
                    "verdict": v.tags.get("verdict", ""),
                }
            )
    return sorted(rows, key=lambda r: (r["name"], int(r["version"])))


models_cli = typer.Typer(help="List, promote and roll back model aliases.", no_args_is_help=True)


@models_cli.command("list")
def list_cmd() -> None:
    """Registered versions with their aliases and promotion verdicts."""
    rows = list_models()
    if not rows:
        typer.echo(f"no registered models in {tracking_uri()}")
    for r in rows:
        typer.echo(
            f"{r['name']:<22} v{r['version']:<4} {r['aliases']:<22} "
            f"run {r['run_id']}  {r['verdict']}"
        )


@models_cli.command("promote")
def promote_cmd(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. liverec-conversion.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
) -> None:
    """Make VERSION the champion of NAME (manual override of the gate)."""
    from mlflow.exceptions import MlflowException

    try:
        previous = promote(name, version)
    except MlflowException as exc:
        typer.echo(f"{name} v{version}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{name}: champion v{version} (was {('v' + previous) if previous else 'none'})")


@models_cli.command("rollback")
def rollback_cmd(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. liverec-conversion.")],
) -> None:
    """Give the champion alias back to the previous champion of NAME."""
    from mlflow.exceptions import MlflowException

    try:
        version = rollback(name)
    except MlflowException as exc:
        typer.echo(f"{name}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{name}: champion rolled back to v{version}")


if __name__ == "__main__":
    models_cli()
