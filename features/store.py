"""Open, apply and materialize the Feast store of either profile, from settings.

The ``feature_store.yaml`` files beside this module are for people running the
``feast`` CLI; code builds the same configuration here from a
:class:`~features.settings.FeatureSettings`, so tests and services can point at
any data dir without a yaml file (``tests/features/test_feast_repo.py`` checks
that both describe the same store).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureStore, FeatureView, RepoConfig
from feast.data_source import DataSource

from features.online_store import REDIS_URL_TYPE, WAL_SQLITE_TYPE
from features.registry_store import DATA_DIR_REGISTRY_STORE
from features.settings import FeatureSettings

log = logging.getLogger(__name__)

#: The Feast repo: definitions and the feature_store*.yaml files.
REPO_DIR = Path(__file__).resolve().parent
#: Entity key serialization: 3 is the only version Feast 0.67 does not deprecate.
ENTITY_KEY_SERIALIZATION_VERSION = 3


def repo_config(settings: FeatureSettings) -> RepoConfig:
    """The Feast configuration of ``settings.profile`` (the yaml files, with paths resolved)."""
    registry: dict[str, Any]
    online_store: dict[str, Any]
    if settings.profile == "embedded":
        registry = {
            "registry_type": "file",
            "registry_store_type": DATA_DIR_REGISTRY_STORE,
            "path": str(settings.feast_dir / "registry.db"),
        }
        online_store = {"type": WAL_SQLITE_TYPE, "path": str(settings.feast_dir / "online.db")}
    else:
        registry = {"registry_type": "sql", "path": settings.registry_url}
        online_store = {"type": REDIS_URL_TYPE, "connection_string": settings.redis_url}
    return RepoConfig(
        project=settings.project,
        provider="local",
        registry=registry,
        online_store=online_store,
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
        repo_path=REPO_DIR,
    )


def open_store(settings: FeatureSettings) -> FeatureStore:
    """A Feast store for ``settings``.

    The SQL registry (production) connects, and creates its tables, right here; the
    embedded files and Redis are opened on first use.
    """
    return FeatureStore(config=repo_config(settings))


def apply(settings: FeatureSettings) -> FeatureStore:
    """Register :func:`~features.definitions.definitions` and create the online tables.

    Like ``feast apply``, objects of the project that are no longer defined are
    deleted (with their online tables). The offline tables need not exist yet.
    """
    settings.offline_dir.mkdir(parents=True, exist_ok=True)
    if settings.profile == "embedded":
        settings.feast_dir.mkdir(parents=True, exist_ok=True)
    # Imported here: importing features.definitions builds the objects for `feast apply`
    # from the environment, work that opening a store for reads does not need.
    from features.definitions import definitions

    store = open_store(settings)
    objects = definitions(settings)
    stale = _stale(store, objects)
    store.apply(objects, objects_to_delete=stale, partial=False)
    log.info(
        "applied %d Feast objects to project %s (%s profile), deleted %d stale",
        len(objects),
        settings.project,
        settings.profile,
        len(stale),
    )
    return store


def materialize(settings: FeatureSettings, end: datetime | None = None) -> FeatureStore:
    """Load offline rows newer than the last run (or than each view's TTL) up to ``end``.

    ``end`` defaults to now; Feast prints what it does and draws a progress bar per
    feature view.
    """
    end = end or datetime.now(UTC)
    store = open_store(settings)
    log.info(
        "materializing project %s up to %s into the %s online store",
        settings.project,
        end.isoformat(),
        settings.profile,
    )
    store.materialize_incremental(end_date=end)
    return store


def _stale(store: FeatureStore, objects: list[Any]) -> list[Any]:
    """Objects registered in the project that ``objects`` no longer defines."""
    kinds = (Entity, DataSource, FeatureView, FeatureService)
    wanted = {(kind, o.name) for o in objects for kind in kinds if isinstance(o, kind)}
    registered: list[Any] = [
        *store.list_entities(),
        *store.list_data_sources(),
        *store.list_feature_views(),
        *store.list_feature_services(),
    ]
    return [
        o
        for o in registered
        if not any(isinstance(o, kind) and (kind, o.name) in wanted for kind in kinds)
    ]
