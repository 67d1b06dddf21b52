"""Feature settings: defaults, the LIVEREC_ prefix, and no work on construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.settings import PROJECT_ROOT, FeatureSettings


def _settings() -> FeatureSettings:
    return FeatureSettings(_env_file=None)  # type: ignore[call-arg]


def test_defaults_put_data_under_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATA_DIR", "PROFILE", "PROJECT", "REDIS_URL", "REGISTRY_URL"):
        monkeypatch.delenv(f"LIVEREC_{name}", raising=False)
    settings = _settings()
    assert Path(__file__).resolve().parents[2] == PROJECT_ROOT
    assert settings.data_dir == PROJECT_ROOT / "data"
    assert settings.raw_dir == settings.data_dir
    assert settings.offline_dir == PROJECT_ROOT / "data" / "features"
    assert settings.feast_dir == PROJECT_ROOT / "data" / "feast"
    assert settings.profile == "embedded"
    assert settings.project == "liverec"
    assert settings.registry_url.startswith("postgresql+psycopg://")


def test_environment_overrides_and_relative_dirs_become_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIVEREC_DATA_DIR", "some/data")
    monkeypatch.setenv("LIVEREC_PROFILE", "production")
    settings = _settings()
    assert settings.data_dir == tmp_path / "some" / "data"
    assert settings.profile == "production"
    assert not (tmp_path / "some").exists()  # building settings creates nothing


def test_unknown_profile_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEREC_PROFILE", "cloud")
    with pytest.raises(ValueError, match="profile"):
        _settings()


def test_every_field_is_documented() -> None:
    assert all(f.description for f in FeatureSettings.model_fields.values())
