"""The embedded profile's file registry, kept under the data dir.

Feast expands ``${VAR}`` in ``feature_store.yaml`` but has no default for an unset
variable (it leaves ``${VAR}`` in the path), and resolves a relative registry path
against the Feast repo (``features/``). This store resolves a relative path
against :attr:`features.settings.FeatureSettings.data_dir` instead, so
``feast apply`` from ``features/`` works with ``LIVEREC_DATA_DIR`` set or with the
default ``<project>/data``, and writes where :func:`features.store.open_store`
reads. Selected in the yaml by
``registry_store_type: features.registry_store.DataDirRegistryStore``.
"""

from __future__ import annotations

from pathlib import Path

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.repo_config import RegistryConfig

DATA_DIR_REGISTRY_STORE = "features.registry_store.DataDirRegistryStore"


class DataDirRegistryStore(FileRegistryStore):
    """A file registry whose relative ``path`` is relative to the data dir."""

    def __init__(self, registry_config: RegistryConfig, repo_path: Path | None):
        from features.settings import FeatureSettings

        path = Path(registry_config.path)
        self._filepath = path if path.is_absolute() else FeatureSettings().data_dir / path

    def _write_registry(self, registry_proto: RegistryProto) -> None:
        # Feast creates only the last folder; a fresh data dir needs the parents too.
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        super()._write_registry(registry_proto)
