"""The Feast repo: definitions, both profiles' configuration, apply, materialize, retrieval."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import Entity, FileSource, ValueType
from feast.repo_config import RepoConfig, load_repo_config
from feast.repo_operations import get_repo_files
from feast.types import Float64, Int64, String

from features.definitions import ENTITIES, FEATURE_SERVICES
from features.online_store import WalSqliteOnlineStore
from features.registry_store import DataDirRegistryStore
from features.settings import FeatureSettings
from features.store import REPO_DIR, apply, open_store, repo_config
from features.tables import ALL_TABLES, BY_NAME, TIMESTAMP, FeatureTable
from features.vector import CONVERSION, NEXT_PRODUCT
from tests.features.conftest import TinyRepo
from tests.features.tiny_tables import KEY_VALUES, entity_rows, latest, write_tiny_tables

FEAST_TYPES = {"float": Float64, "int": Int64, "string": String}


def _feature_refs(table: FeatureTable) -> list[str]:
    return [f"{table.name}:{col}" for col in table.columns]


# --- definitions and apply -------------------------------------------------------------


def test_apply_registers_every_table_as_a_view(tiny_repo: TinyRepo) -> None:
    store = tiny_repo.store
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == {t.name for t in ALL_TABLES}
    entity_by_key = {key: name for key, (name, _) in ENTITIES.items()}
    for table in ALL_TABLES:
        view = views[table.name]
        assert view.entities == [entity_by_key[k] for k in table.keys]
        assert view.ttl == table.ttl
        assert {f.name: f.dtype for f in view.features} == {
            col: FEAST_TYPES[kind] for col, kind in table.columns.items()
        }
        assert isinstance(view.batch_source, FileSource)
        assert view.batch_source.path == str(tiny_repo.settings.offline_dir / table.file)
        assert view.batch_source.timestamp_field == TIMESTAMP
        if table.kind == "push":
            assert view.stream_source is not None
            assert view.stream_source.name == f"{table.name}_push"
        else:
            assert view.stream_source is None
    assert {e.name for e in store.list_entities()} == {"viewer", "product", "room"}


def test_apply_registers_the_versioned_feature_services(tiny_repo: TinyRepo) -> None:
    services = {s.name: s for s in tiny_repo.store.list_feature_services()}
    assert set(services) == {"conversion_v1", "conversion_v2", "next_product_v1", "next_product_v2"}
    for name, views in FEATURE_SERVICES.items():
        assert [p.name for p in services[name].feature_view_projections] == list(views)
    for version in ("v1", "v2"):
        assert set(FEATURE_SERVICES[f"conversion_{version}"]) == {
            "viewer_demographics",
            "viewer_profile",
            "viewer_live",
            "room_state",
        }
        assert set(FEATURE_SERVICES[f"next_product_{version}"]) == {t.name for t in ALL_TABLES}
    # The models read the newest version.
    assert {CONVERSION.feature_service, NEXT_PRODUCT.feature_service} <= set(services)


def test_apply_deletes_objects_no_longer_defined(tiny_repo: TinyRepo) -> None:
    store = open_store(tiny_repo.settings)
    store.apply(Entity(name="ghost", join_keys=["ghost_id"], value_type=ValueType.STRING))
    assert "ghost" in {e.name for e in store.list_entities()}
    apply(tiny_repo.settings)
    assert {e.name for e in open_store(tiny_repo.settings).list_entities()} == {
        "viewer",
        "product",
        "room",
    }


# --- the yaml files and open_store describe the same store -----------------------------


def _describe(config: RepoConfig) -> dict[str, object]:
    """What a RepoConfig points at, with paths resolved the way the stores resolve them."""
    registry = config.registry
    online = config.online_store
    if registry.registry_type == "file":
        registry_at = str(DataDirRegistryStore(registry, REPO_DIR)._filepath)
    else:
        registry_at = registry.path
    online_at = (
        WalSqliteOnlineStore._get_db_path(config)
        if online.type.endswith("SqliteOnlineStore")
        else online.connection_string
    )
    return {
        "project": config.project,
        "provider": config.provider,
        "registry_type": registry.registry_type,
        "registry_store_type": getattr(registry, "registry_store_type", None),
        "registry_at": registry_at,
        "online_type": online.type,
        "online_at": online_at,
        "offline_type": config.offline_store.type,
        "entity_key_serialization_version": config.entity_key_serialization_version,
    }


@pytest.mark.parametrize(
    ("yaml_name", "profile", "data_dir_set"),
    [
        ("feature_store.yaml", "embedded", True),
        ("feature_store.yaml", "embedded", False),
        ("feature_store.production.yaml", "production", True),
    ],
)
def test_yaml_describes_what_open_store_opens(
    yaml_name: str,
    profile: str,
    data_dir_set: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if data_dir_set:
        monkeypatch.setenv("LIVEREC_DATA_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("LIVEREC_DATA_DIR", raising=False)
    monkeypatch.setenv("LIVEREC_PROFILE", profile)
    monkeypatch.setenv("LIVEREC_REDIS_URL", "redis://:secret@redis.internal:6380/2")
    monkeypatch.setenv("LIVEREC_REGISTRY_URL", "postgresql+psycopg://feast@pg.internal:5432/reg")
    monkeypatch.delenv("LIVEREC_PROJECT", raising=False)

    from_yaml = load_repo_config(REPO_DIR, REPO_DIR / yaml_name)
    from_code = repo_config(FeatureSettings())
    assert _describe(from_yaml) == _describe(from_code)
    if profile == "embedded":
        expected_dir = tmp_path if data_dir_set else FeatureSettings().data_dir
        assert _describe(from_yaml)["registry_at"] == str(expected_dir / "feast/registry.db")
        assert _describe(from_yaml)["online_at"] == str(expected_dir / "feast/online.db")
    else:
        online_at = _describe(from_yaml)["online_at"]
        assert online_at == "redis.internal:6380,db=2,password=secret"


def test_feast_imports_only_the_definitions_module() -> None:
    """Every other module in features/ must be in .feastignore, or `feast apply` imports it."""
    imported = [p.name for p in get_repo_files(REPO_DIR)]
    assert imported == ["definitions.py"], f"add to features/.feastignore: {imported}"


# --- materialize and online reads ------------------------------------------------------


@pytest.mark.parametrize("table", ALL_TABLES, ids=lambda t: t.name)
def test_online_values_are_the_latest_offline_rows(
    tiny_repo: TinyRepo, table: FeatureTable
) -> None:
    expected = latest(tiny_repo.frames[table.name], table)
    assert len(expected) > 1
    got = tiny_repo.store.get_online_features(
        features=_feature_refs(table), entity_rows=entity_rows(expected, table)
    ).to_df()
    columns = list(table.keys) + list(table.columns)
    pd.testing.assert_frame_equal(
        got[columns].reset_index(drop=True), expected[columns], check_dtype=False
    )


def test_push_source_writes_the_online_view(tiny_repo: TinyRepo) -> None:
    """The live aggregator's path: a row pushed to `<table>_push` is read back online."""
    table = BY_NAME["viewer_live"]
    row = tiny_repo.frames[table.name].iloc[[0]].copy().reset_index(drop=True)
    row["viewer_id"], row["room_id"] = "pushed-viewer", "pushed-room"
    row["funnel_step"] = 3.0
    row[TIMESTAMP] = pd.Timestamp(tiny_repo.now)
    tiny_repo.store.push("viewer_live_push", row)
    got = tiny_repo.store.get_online_features(
        features=["viewer_live:funnel_step", "viewer_live:last_product_id"],
        entity_rows=[{"viewer_id": "pushed-viewer", "room_id": "pushed-room"}],
    ).to_dict()
    assert got["funnel_step"] == [3.0]
    assert got["last_product_id"] == [row.loc[0, "last_product_id"]]


# --- point-in-time retrieval -----------------------------------------------------------


def _candidates(frame: pd.DataFrame, table: FeatureTable, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Each (entity row, offline row of that entity) pair; the row's time is feature_ts."""
    rows = frame.rename(columns={TIMESTAMP: "feature_ts"})
    return entity_df.merge(rows, on=list(table.keys), how="inner")


def _expected_as_of(
    frame: pd.DataFrame, table: FeatureTable, entity_df: pd.DataFrame
) -> pd.DataFrame:
    """The textbook answer: per entity row, the newest row at or before it, within the TTL."""
    pairs = _candidates(frame, table, entity_df)
    valid = pairs[
        (pairs["feature_ts"] <= pairs[TIMESTAMP])
        & (pairs["feature_ts"] >= pairs[TIMESTAMP] - table.ttl)
    ]
    newest = valid.sort_values("feature_ts").groupby("row_id").tail(1).set_index("row_id")
    return newest[list(table.columns)].reindex(entity_df["row_id"])


def _historical(tiny_repo: TinyRepo, entity_df: pd.DataFrame) -> pd.DataFrame:
    service = tiny_repo.store.get_feature_service(NEXT_PRODUCT.feature_service)
    # Several views share feature names (likes, clicks, stage_start_ts...): a service
    # over all of them needs full feature names (view__feature).
    job = tiny_repo.store.get_historical_features(
        entity_df=entity_df, features=service, full_feature_names=True
    )
    return job.to_df().set_index("row_id").sort_index()


def test_historical_retrieval_is_point_in_time_and_respects_ttl(tiny_repo: TinyRepo) -> None:
    rng = np.random.default_rng(11)
    now = tiny_repo.now
    # Exact row times (a row at the entity's time counts), times between rows (a later
    # row exists and must not leak), before any row, and far enough after the last row
    # that the 12 h views have expired while the long-TTL views have not.
    fixed = [timedelta(hours=h) for h in (-7, -6, -5, -4, -3, -2, -1, 9, 10.5, 11, 13)]
    n = 400
    offsets = [fixed[i % len(fixed)] for i in range(n // 2)] + [
        timedelta(seconds=int(s)) for s in rng.integers(-8 * 3600, 14 * 3600, n - n // 2)
    ]
    entity_df = pd.DataFrame(
        {
            "row_id": range(n),
            **{key: rng.choice(values, n) for key, values in KEY_VALUES.items()},
            TIMESTAMP: pd.to_datetime([now + o for o in offsets], utc=True),
        }
    )
    got = _historical(tiny_repo, entity_df)
    assert len(got) == n

    leaks_possible = expired = 0
    for table in ALL_TABLES:
        frame = tiny_repo.frames[table.name]
        expected = _expected_as_of(frame, table, entity_df).sort_index()
        for col in table.columns:
            actual = got[f"{table.name}__{col}"]
            pd.testing.assert_series_equal(
                actual.astype(object).where(actual.notna(), None),
                expected[col].astype(object).where(expected[col].notna(), None),
                check_names=False,
                check_index=True,
            )
        # The data must make this test able to fail: entity rows with a later row of the
        # same entity present, and rows whose only earlier values have expired.
        pairs = _candidates(frame, table, entity_df)
        pairs["later"] = pairs["feature_ts"] > pairs[TIMESTAMP]
        pairs["earlier_ts"] = pairs["feature_ts"].where(~pairs["later"])
        per_row = pairs.groupby("row_id").agg(
            later=("later", "any"), last_earlier=("earlier_ts", "max"), ts=(TIMESTAMP, "first")
        )
        has_earlier = per_row["last_earlier"].notna()
        leaks_possible += int((per_row["later"] & has_earlier).sum())
        expired += int((has_earlier & (per_row["last_earlier"] < per_row["ts"] - table.ttl)).sum())
    assert leaks_possible > 100
    assert expired > 20


def test_historical_retrieval_keeps_every_entity_row(tiny_repo: TinyRepo) -> None:
    """One row out per row in, matched or not (the `file` store drops unmatched rows)."""
    rng = np.random.default_rng(3)
    n, n_known = 20_000, 200
    known = {key: rng.choice(values, n_known) for key, values in KEY_VALUES.items()}
    entity_df = pd.DataFrame(
        {
            "row_id": range(n),
            **{
                key: np.concatenate([known[key], [f"ghost-{key}-{i}" for i in range(n - n_known)]])
                for key in KEY_VALUES
            },
            TIMESTAMP: tiny_repo.now - timedelta(hours=1),
        }
    )
    # Repeated entity rows are rows too.
    entity_df.loc[n - 10 :, list(KEY_VALUES)] = entity_df.loc[
        n - 20 : n - 11, list(KEY_VALUES)
    ].values

    got = _historical(tiny_repo, entity_df)
    assert len(got) == n
    assert list(got.index) == list(range(n))
    feature_cols = [f"{t.name}__{c}" for t in ALL_TABLES for c in t.columns]
    assert got.loc[n_known:, feature_cols].isna().all().all()
    assert got.loc[: n_known - 1, feature_cols].notna().all().all()
    # The known rows carry each entity's latest values (all rows are before now - 1 h).
    profile = BY_NAME["viewer_profile"]
    last = latest(tiny_repo.frames[profile.name], profile).set_index("viewer_id")
    expected = last.loc[got.loc[: n_known - 1, "viewer_id"], "order_count"].to_numpy()
    np.testing.assert_array_equal(got.loc[: n_known - 1, "viewer_profile__order_count"], expected)


# --- the feast CLI, as a data scientist runs it ---------------------------------------


# `feast apply` then `feast materialize-incremental`, run by the `feast` console script's
# own entry point (feast.cli.cli:cli) in one interpreter: importing Feast takes ~8 s.
_FEAST_CLI = """
import sys
from feast.cli.cli import cli
cli.main(["apply"], standalone_mode=False)
cli.main(["materialize-incremental", sys.argv[1]], standalone_mode=False)
"""


def test_feast_cli_applies_and_materializes_from_the_features_dir(
    tiny_repo: TinyRepo, tmp_path: Path
) -> None:
    write_tiny_tables(tmp_path / "features", tiny_repo.now)
    env = {**os.environ, "LIVEREC_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _FEAST_CLI, tiny_repo.now.isoformat()],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"feast failed:\n{done.stdout}\n{done.stderr}"

    settings = FeatureSettings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert (settings.feast_dir / "registry.db").is_file()
    store = open_store(settings)
    assert {v.name for v in store.list_feature_views()} == {t.name for t in ALL_TABLES}
    table = BY_NAME["room_state"]
    expected = latest(tiny_repo.frames[table.name], table)
    got = store.get_online_features(
        features=_feature_refs(table), entity_rows=entity_rows(expected, table)
    ).to_df()
    pd.testing.assert_frame_equal(
        got[list(table.columns)], expected[list(table.columns)], check_dtype=False
    )
