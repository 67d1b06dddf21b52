"""End to end on the tiny world: tracked, registered, aliased; the gate keeps the champion."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from features.served_model import ServedModel, download_served
from features.vector import ModelSpec
from tests.training.conftest import Trained
from training import data, export, pipeline, register
from training.cli import models_app
from training.train import Trained as TrainedModel


def test_both_models_registered_with_champion(trained: Trained, tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=trained.tracking_uri)
    for model, name in register.REGISTERED.items():
        outcome = trained.outcomes[model]
        assert outcome.result.parity_ok, outcome.result.parity_reason
        assert outcome.result.version == "1"
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
        run = client.get_run(outcome.result.run_id)
        assert run.data.tags["fingerprint"] == run.data.params["fingerprint_sha256"]
        assert register.PRIMARY[model] in run.data.metrics
        assert run.data.metrics["parity_max_abs_diff"] <= 1e-5
        artifacts = {a.path for a in client.list_artifacts(outcome.result.run_id)}
        assert {"served", "plots", "fingerprint.json", "verdict.json"} <= artifacts
        served = ServedModel.load(download_served(name, "champion", tmp_path / model))
        assert served.check_parity() <= 1e-5
    conv = trained.outcomes["conversion"].report.metrics
    for key in ("auc", "oracle_auc", "norm_auc", "logloss_base", "ece", "auc_profile_only"):
        assert np.isfinite(conv[key]), key
    nxt = trained.outcomes["next_product"].report.metrics
    for key in ("ndcg5_model", "ndcg5_popularity", "ndcg5_oracle", "ranking_dropped_share"):
        assert np.isfinite(nxt[key]), key


def test_gate_refuses_a_worse_model_and_keeps_the_champion(
    trained: Trained, options: pipeline.Options, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model trained on shuffled labels is registered as challenger, never champion."""
    real = pipeline.train_model

    def shuffled(ts: data.TrainingSet, spec: ModelSpec, *args: Any) -> TrainedModel:
        labels = np.random.default_rng(0).permutation(ts.y)
        return real(ts, spec, *args, label=labels)

    monkeypatch.setattr(pipeline, "train_model", shuffled)
    (outcome,) = pipeline.run(pipeline.Options(**{**options.__dict__, "models": ("conversion",)}))
    name = register.REGISTERED["conversion"]
    client = MlflowClient(tracking_uri=trained.tracking_uri)
    verdict = outcome.result.verdict
    assert verdict is not None and not verdict.promote, verdict
    assert verdict.champion_version == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert (
        str(client.get_model_version_by_alias(name, "challenger").version) == outcome.result.version
    )


def test_gate_promotes_only_a_clear_win_without_market_regression() -> None:
    rng = np.random.default_rng(1)
    streams = np.repeat(np.arange(40), 50)
    y = (rng.random(len(streams)) < 0.2).astype(float)
    w = np.ones_like(y)
    regions = np.array(["US", "MENA"])[streams % 2]
    good = np.clip(0.2 + 0.3 * (y - 0.2) + rng.normal(0, 0.05, len(y)), 0.01, 0.99)
    bad = np.clip(0.2 + rng.normal(0, 0.05, len(y)), 0.01, 0.99)

    def cmp(p: np.ndarray) -> register.Comparison:
        from training.evaluate import auc

        return register.Comparison(lambda i: auc(y[i], p[i]), p)

    def gate(new: np.ndarray, old: np.ndarray) -> register.Verdict:
        return register.promotion_gate(
            cmp(new), cmp(old), streams, y, w, regions, "auc", "1", n_boot=100
        )

    better = gate(good, bad)
    assert better.promote, better.reason
    worse = gate(bad, good)
    assert not worse.promote and "not better" in worse.reason
    # Better ranking but much worse log-loss in one market: refused, naming the market.
    skewed = good.copy()
    skewed[regions == "MENA"] = np.clip(skewed[regions == "MENA"] * 4, 0, 0.99)
    verdict = gate(skewed, bad)
    assert not verdict.promote and "MENA" in verdict.reason


def test_models_cli_promote_and_rollback(trained: Trained) -> None:
    runner = CliRunner()
    name = register.REGISTERED["next_product"]
    client = MlflowClient(tracking_uri=trained.tracking_uri)
    before = str(client.get_model_version_by_alias(name, "champion").version)
    result = runner.invoke(models_app, ["list"])
    assert result.exit_code == 0 and name in result.output
    # Register a copy of the champion's run as a new version, promote it, roll back.
    src = client.get_model_version(name, before)
    new = client.create_model_version(name, str(src.source), run_id=src.run_id)
    result = runner.invoke(models_app, ["promote", name, str(new.version)])
    assert result.exit_code == 0, result.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(new.version)
    result = runner.invoke(models_app, ["rollback", name])
    assert result.exit_code == 0, result.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == before
    result = runner.invoke(models_app, ["promote", name, "999"])
    assert result.exit_code == 1 and "not found" in result.output


def test_a_model_failing_parity_is_logged_but_not_registered(
    trained: Trained, tmp_path: Path
) -> None:
    outcome = trained.outcomes["conversion"]
    name = register.REGISTERED["conversion"]
    client = MlflowClient(tracking_uri=trained.tracking_uri)
    versions = len(client.search_model_versions(f"name='{name}'"))
    served = download_served(name, "champion", tmp_path / "served")
    failed = export.Parity(False, 0.3, 10, 5, 2, 1, "max |ONNX - LightGBM| = 0.3 > 1e-05")
    result = register.log_run(
        "conversion",
        outcome.trained,
        {"sha256": "x", "feature_service": "conversion_v1", "rows": 1},
        dataclasses.replace(outcome.report, plots=[]),  # the run's temp plots are gone
        failed,
        served,
        {},
        None,
    )
    assert result.version is None and not result.parity_ok
    assert len(client.search_model_versions(f"name='{name}'")) == versions
    assert client.get_run(result.run_id).data.tags["parity"].startswith("failed")
