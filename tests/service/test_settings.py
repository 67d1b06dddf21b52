"""ServiceSettings: LIVEREC_* variables, MLflow's own variable, consistency checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import ServiceSettings


def test_environment_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LIVEREC_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LIVEREC_GRPC_PORT", "0")
    s = ServiceSettings()
    assert s.grpc_port == 0
    assert (s.max_candidates, s.max_viewers) == (500, 500)
    assert s.mlflow_tracking_uri.endswith("/mlflow.db")
    assert s.models_dir.is_absolute() and s.models_dir.name == "models"


def test_mlflow_uri_follows_mlflow_then_liverec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///trainer.db")
    assert ServiceSettings().mlflow_tracking_uri == "sqlite:///trainer.db"
    monkeypatch.setenv("LIVEREC_MLFLOW_TRACKING_URI", "sqlite:///service.db")
    assert ServiceSettings().mlflow_tracking_uri == "sqlite:///service.db"


def test_inconsistent_thresholds_are_refused() -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(segment_high_potential=0.5, segment_high_conversion=0.2)
    with pytest.raises(ValidationError):
        ServiceSettings(top_k_default=50, top_k_max=10)
