"""The Feast definitions, generated from the declared tables (:mod:`features.tables`).

Feast loads a repo by importing its modules and collecting the Feast objects it
finds among their attributes, so this module builds them once at import, with the
offline dir from :class:`features.settings.FeatureSettings` (``LIVEREC_DATA_DIR``):
that is the only thing it reads. Code that applies definitions itself calls
:func:`definitions` with its own settings instead of relying on that import-time
state.
"""

from __future__ import annotations

from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, PrimitiveFeastType, String

from features.settings import FeatureSettings
from features.tables import ALL_TABLES, TIMESTAMP, FeatureTable

#: Entity name and description by join key.
ENTITIES: dict[str, tuple[str, str]] = {
    "viewer_id": ("viewer", "A viewer of live streams, in any market."),
    "product_id": ("product", "A catalogue product that can go on stage or in the overlay."),
    "room_id": ("room", "A live room: one stream of one host."),
}

#: Feature services, named after the model that reads them and versioned with it.
#: v2 added the funnel-step times (viewer_live) and the planned end (room_state); v1 stays
#: so a champion trained on it is still scored through its own service by the gate.
FEATURE_SERVICES: dict[str, tuple[str, ...]] = {
    f"{model}_{version}": views
    for version in ("v1", "v2")
    for model, views in (
        ("conversion", ("viewer_demographics", "viewer_profile", "viewer_live", "room_state")),
        ("next_product", tuple(t.name for t in ALL_TABLES)),
    )
}

_FEAST_TYPES: dict[str, PrimitiveFeastType] = {"float": Float64, "int": Int64, "string": String}


def source_name(table: FeatureTable) -> str:
    """Name of the parquet FileSource behind a table."""
    return f"{table.name}_parquet"


def push_source_name(table: FeatureTable) -> str:
    """Name of the PushSource the live aggregator writes a push table through."""
    return f"{table.name}_push"


def _schema(table: FeatureTable) -> list[Field]:
    keys = [Field(name=key, dtype=String) for key in table.keys]
    return keys + [Field(name=col, dtype=_FEAST_TYPES[t]) for col, t in table.columns.items()]


def definitions(settings: FeatureSettings) -> list[Any]:
    """Every Feast object of the repo, over the offline tables under ``settings``."""
    entities = {
        key: Entity(name=name, join_keys=[key], value_type=ValueType.STRING, description=text)
        for key, (name, text) in ENTITIES.items()
    }
    objects: list[Any] = list(entities.values())
    views: dict[str, FeatureView] = {}
    for table in ALL_TABLES:
        batch_source = FileSource(
            name=source_name(table),
            path=str(settings.offline_dir / table.file),
            timestamp_field=TIMESTAMP,
            description=f"Offline table {table.file}.",
        )
        objects.append(batch_source)
        source: FileSource | PushSource
        if table.kind == "batch":
            source = batch_source
        elif table.kind == "push":
            source = PushSource(
                name=push_source_name(table),
                batch_source=batch_source,
                description=f"Live rows of {table.name}, written by the aggregator.",
            )
            objects.append(source)
        else:
            raise ValueError(f"table {table.name}: unknown kind {table.kind!r}")
        views[table.name] = FeatureView(
            name=table.name,
            entities=[entities[key] for key in table.keys],
            ttl=table.ttl,
            schema=_schema(table),
            source=source,
            online=True,
            description=table.description,
            tags={"kind": table.kind},
        )
    objects.extend(views.values())
    for name, view_names in FEATURE_SERVICES.items():
        objects.append(
            FeatureService(
                name=name,
                features=[views[v] for v in view_names],
                description=f"Features read by the {name.rsplit('_v', 1)[0]} model, {name}.",
            )
        )
    return objects


def _attributes(objects: list[Any]) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for obj in objects:
        # Entity, source, view and service names never collide in this repo; if one
        # ever did, a silently dropped definition would be worse than this error.
        if obj.name in names or obj.name in globals():
            raise ValueError(f"Feast object name {obj.name!r} is not unique in {__name__}")
        names[obj.name] = obj
    return names


# Feast's `feast apply` collects objects from module attributes (parse_repo), so each
# definition becomes an attribute named after it: viewer, viewer_live, conversion_v1...
globals().update(_attributes(definitions(FeatureSettings())))
