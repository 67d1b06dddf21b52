"""The model registry of the service: load the champions, check them, hot-swap them.

For each registered model (``liverec-conversion``, ``liverec-next-product``) the
version behind the ``champion`` alias is downloaded from MLflow, loaded, checked
against its own parity sample (inputs and the calibrated outputs training
expected) and only then swapped in: one reference assignment, so a call in
flight keeps the model it started with and none is dropped. A version that fails
to load or to match its sample is refused and remembered; the old one keeps
serving. The last good copy is kept under ``models/<name>/`` and used at start
when the registry cannot be reached.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from features.served_model import BranchKeys, TreeGroups
from features.vector import CONVERSION, NEXT_PRODUCT, ModelSpec
from service.generations import Generations
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL, ServiceSettings

log = logging.getLogger(__name__)

#: Registered model name -> the feature-vector spec it reads.
SPECS: dict[str, ModelSpec] = {CONVERSION_MODEL: CONVERSION, NEXT_PRODUCT_MODEL: NEXT_PRODUCT}
VERSION_FILE = "version.json"
#: models/<name>/current: the version of the last good copy.
CURRENT_FILE = "current"
PARITY_FILE = "parity.npz"
MODEL_FILE = "model.onnx"


class ScoringModel(Protocol):
    """What serving needs of a model (``features.served_model.ServedModel``)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, one per row of a float32 matrix."""
        ...


class ModelSource(Protocol):
    """Where champions come from (MLflow; a fake in tests)."""

    def champion_version(self, name: str) -> str: ...

    def download(self, name: str, version: str, dst: Path) -> Path: ...


Loader = Callable[[Path], ScoringModel]


class KeptScores:
    """A model's scores and contributions of the rows it has already scored, by their
    :class:`~features.served_model.BranchKeys` key.

    Two rows with the same key reach the same leaf of every tree, so the served graph
    gives them the same score and the path explainer the same contributions, bit for
    bit (and the graph scores each row alone: the same bits in any batch). A viewer's
    overlay asked again, with only the time and the room's counts moved since, mostly
    crosses no split: its rows are then looked up instead of run through ONNX Runtime
    and the explainer, and only the rows whose key moved are scored. Scores and
    contributions are kept apart (contributions only for the rows a call explains), each
    in two generations (:class:`~service.generations.Generations`) of plain floats and
    read-only arrays, which the garbage collector does not walk.
    """

    def __init__(self, keys: BranchKeys, rows: int) -> None:
        self.keys = keys
        self._scores: Generations[bytes, float] = Generations(rows)
        # A row of contributions is ~0.9 KB (88 float64 and its array): only the explained
        # rows (10 a call), so an eighth of the scores (32,768 rows, ~30 MB by default).
        self._contrib: Generations[bytes, np.ndarray] = Generations(max(1, rows // 8))
        #: Rows whose score was looked up, and rows scored by the model (plain counts for
        #: the bench and tests: calls from several threads at once may lose an increment).
        self.looked_up = 0
        self.scored = 0

    def scores(
        self, X: np.ndarray, predict: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, list[bytes]]:
        """float64 (rows,): ``predict(X)``'s values, kept ones looked up; and the row keys."""
        keys = self.keys.rows(X)
        found, miss = self._scores.lookup(keys)
        self.looked_up += len(keys) - len(miss)
        self.scored += len(miss)
        if miss:
            got = np.asarray(predict(X if len(miss) == len(keys) else X[miss])).ravel()
            for i, value in zip(miss, got.tolist(), strict=True):
                found[i] = value
                self._scores.put(keys[i], value)
        return np.array(found, dtype=np.float64), keys

    def contributions(
        self, X: np.ndarray, keys: list[bytes], explain: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """(rows, features): ``explain(X)``'s rows, kept ones looked up (``keys`` are
        ``X``'s, from :meth:`scores`)."""
        found, miss = self._contrib.lookup(keys)
        if miss:
            got = np.asarray(explain(X if len(miss) == len(keys) else X[miss]), np.float64)
            for i, row in zip(miss, got, strict=True):
                row = row.copy()  # not a view that would keep the whole batch alive
                row.flags.writeable = False
                found[i] = row
                self._contrib.put(keys[i], row)
        if not found:
            return np.zeros((0, self.keys.n_features))
        return np.array(found, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    name: str
    version: str
    model: ScoringModel
    spec: ModelSpec
    #: Rows whose scores are kept by branch key (:class:`KeptScores`); 0 keeps none.
    kept_rows: int = 0
    #: Trees a group for a room's grid (:class:`~features.served_model.TreeGroups`); 0:
    #: none (the grid is scored by the whole graph and not kept).
    tree_group: int = 0
    _most_split: dict[tuple[tuple[str, ...], int], list[str]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _kept: KeptScores | None = field(default=None, init=False, compare=False, repr=False)
    _groups: TreeGroups | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        tree_groups = getattr(self.model, "tree_groups", None)
        if tree_groups is not None and self.tree_group > 0:
            try:
                object.__setattr__(self, "_groups", tree_groups(self.tree_group))
            except Exception:
                log.exception(
                    "model %s v%s: trees not grouped, rooms' grids scored whole",
                    self.name,
                    self.version,
                )
        branch_keys = getattr(self.model, "branch_keys", None)
        if branch_keys is None or self.kept_rows <= 0:
            return
        try:
            keys = branch_keys()
        except Exception:
            log.exception("model %s v%s: no branch keys, scores not kept", self.name, self.version)
            return
        if keys is not None:
            object.__setattr__(self, "_kept", KeptScores(keys, self.kept_rows))

    @property
    def kept(self) -> KeptScores | None:
        """What this model keeps of the rows it scored (``None``: nothing)."""
        return self._kept

    @property
    def groups(self) -> TreeGroups | None:
        """Its trees in groups, which score a room's grid (``None``: the whole graph)."""
        return self._groups

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)

    def submit(self, X: np.ndarray) -> cf.Future[np.ndarray]:
        """:meth:`predict` of ``X`` on the process's bulk threads if the model has them (a
        room's grid scored part by part while the next part is built); else here, now.
        Take the scores with :meth:`collect`."""
        submit = getattr(self.model, "submit", None)
        if submit is not None:
            return cast(cf.Future[np.ndarray], submit(X))
        done: cf.Future[np.ndarray] = cf.Future()
        done.set_result(np.asarray(self.model.predict(X)).ravel())
        return done

    def collect(self, future: cf.Future[np.ndarray], X: np.ndarray) -> np.ndarray:
        """The scores :meth:`submit` of ``X`` gave ``future``, computed on this thread if no
        thread has started them (a call does not wait behind another call's parts)."""
        collect = getattr(self.model, "collect", None)
        if collect is not None:
            return np.asarray(collect(future, X))
        return future.result()

    def predict_kept(self, X: np.ndarray) -> tuple[np.ndarray, list[bytes] | None]:
        """float64 scores of ``X``, as :meth:`predict`, with the scores of rows whose
        branch keys were scored before looked up (:class:`KeptScores`); and the rows'
        keys for :meth:`contributions_kept` (``None`` when this model keeps nothing)."""
        if self._kept is None:
            return np.asarray(self.model.predict(X), dtype=np.float64).ravel(), None
        return self._kept.scores(X, self.model.predict)

    def contributions_kept(self, X: np.ndarray, keys: list[bytes] | None) -> np.ndarray | None:
        """:meth:`contributions`, with kept rows looked up by their ``keys``."""
        if self._kept is None or keys is None:
            return self.contributions(X)
        explainer = getattr(self.model, "explainer", None)
        if explainer is None:
            return None
        return self._kept.contributions(X, keys, explainer().contributions)

    def contributions(self, X: np.ndarray) -> np.ndarray | None:
        """Per-feature contributions (rows, features), log-odds, signed; ``None`` if the
        model has no booster to explain it.

        ``ServedModel.contributions`` keeps only the top positive ones; reasons also
        report what pushed a score down, so this asks the path explainer for all of them.
        """
        explainer = getattr(self.model, "explainer", None)
        if explainer is None:
            return None
        return np.asarray(explainer().contributions(X), dtype=np.float64)

    def most_split(self, columns: Sequence[str], k: int) -> list[str]:
        """Of ``columns``, the ``k`` the trees split on most (most first, ties in column order;
        only columns split on at all); ``[]`` without an explainer that counts splits."""
        explainer = getattr(self.model, "explainer", None)
        if explainer is None:
            return []
        key = (tuple(columns), k)
        found = self._most_split.get(key)
        if found is None:
            splits = getattr(explainer(), "splits", None)
            if splits is None:
                return []
            at = {c: j for j, c in enumerate(self.spec.columns)}
            counted = [(-int(splits[at[c]]), i, c) for i, c in enumerate(columns) if c in at]
            found = [c for n, _, c in sorted(counted) if n < 0][:k]
            self._most_split[key] = found
        return found

    def total_contributions(
        self, X: np.ndarray, group: np.ndarray, groups: int
    ) -> np.ndarray | None:
        """(groups, features): contributions summed over the rows of each group (``group[i]``
        is row i's); ``None`` without an explainer."""
        explainer = getattr(self.model, "explainer", None)
        if explainer is None:
            return None
        ex = explainer()
        if hasattr(ex, "totals"):
            return np.asarray(ex.totals(X, group, groups), dtype=np.float64)
        contrib = np.asarray(ex.contributions(X), dtype=np.float64)
        out = np.zeros((groups, contrib.shape[1]))
        np.add.at(out, np.asarray(group, dtype=np.int64), contrib)
        return out


class ModelRejected(Exception):
    """A model version that must not serve (load failure, spec or parity mismatch)."""


class MlflowSource:
    """Champions from an MLflow registry (imported lazily: MLflow is slow to import)."""

    def __init__(self, tracking_uri: str, alias: str) -> None:
        self.tracking_uri = tracking_uri
        self.alias = alias
        # A server's log is no place for MLflow's download progress bars.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def champion_version(self, name: str) -> str:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return str(client.get_model_version_by_alias(name, self.alias).version)

    def download(self, name: str, version: str, dst: Path) -> Path:
        import mlflow
        from mlflow import MlflowClient

        # Resolved with a client bound to our URI: MLflow's own `models:/` resolution
        # reads only the process-wide registry URI (./mlflow.db when none is set).
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        location = client.get_model_version_download_uri(name, version)
        path = mlflow.artifacts.download_artifacts(  # no global MLflow state is touched
            artifact_uri=location, dst_path=str(dst), tracking_uri=self.tracking_uri
        )
        return Path(path)


def find_artifact_dir(root: Path) -> Path:
    """The folder holding ``model.onnx`` (artifacts may be nested one level or more)."""
    if (root / MODEL_FILE).exists():
        return root
    for found in sorted(root.rglob(MODEL_FILE)):
        return found.parent
    raise ModelRejected(f"no {MODEL_FILE} under {root}")


def check(name: str, directory: Path, loader: Loader) -> ScoringModel:
    """Load ``directory`` and check it against its spec and its parity sample."""
    spec = SPECS[name]
    spec_file = directory / "spec.json"
    if spec_file.exists():
        declared = json.loads(spec_file.read_text()).get("columns")
        if declared is not None and tuple(declared) != spec.columns:
            raise ModelRejected(
                f"{name}: spec.json columns differ from features.vector.{spec.name}"
            )
    try:
        model = loader(directory)
        explainer = getattr(model, "explainer", None)
        if explainer is not None:
            explainer()  # build the explainer now, not on the first call
    except Exception as exc:
        raise ModelRejected(f"{name}: load failed: {exc}") from exc
    parity = directory / PARITY_FILE
    if not parity.exists():
        raise ModelRejected(f"{name}: no {PARITY_FILE} to check against")
    own_check = getattr(model, "check_parity", None)
    if own_check is not None:  # ServedModel's gate: the same check training ran
        try:
            own_check()
        except Exception as exc:
            raise ModelRejected(f"{name}: {exc}") from exc
        return model
    X, expected = _parity_arrays(np.load(parity))
    if X.shape[1] != len(spec.columns):
        raise ModelRejected(
            f"{name}: parity inputs have {X.shape[1]} columns, spec {len(spec.columns)}"
        )
    try:
        got = np.asarray(model.predict(X.astype(np.float32)), dtype=np.float64).ravel()
    except Exception as exc:
        raise ModelRejected(f"{name}: predict failed on the parity sample: {exc}") from exc
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5, rtol=1e-4):
        worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else np.inf
        raise ModelRejected(f"{name}: parity check failed (max abs difference {worst:.3g})")
    return model


def _parity_arrays(npz: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    keys = set(npz.keys())
    x_key = next((k for k in ("X", "inputs", "x") if k in keys), None)
    y_key = next((k for k in ("expected", "y", "outputs", "proba", "p") if k in keys), None)
    if x_key is None or y_key is None:
        raise ModelRejected(f"{PARITY_FILE}: expected inputs and outputs, found {sorted(keys)}")
    return np.asarray(npz[x_key]), np.asarray(npz[y_key], dtype=np.float64).ravel()


class ModelRegistry:
    """The served version of each model, swapped atomically."""

    def __init__(
        self,
        settings: ServiceSettings,
        loader: Loader,
        source: ModelSource | None,
        names: tuple[str, ...] = (CONVERSION_MODEL, NEXT_PRODUCT_MODEL),
        registry_timeout_s: float = 20.0,
    ) -> None:
        self.models_dir = settings.models_dir
        self.loader = loader
        self.source = source
        self.names = names
        self._timeout = registry_timeout_s
        self._current: dict[str, LoadedModel] = {}
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()  # one load at a time; reads never take it
        self.kept_rows = settings.score_kept_rows
        self.tree_group = settings.room_tree_group
        self.on_swap: Callable[[LoadedModel], None] | None = None

    def get(self, name: str) -> LoadedModel | None:
        return self._current.get(name)

    @property
    def ready(self) -> bool:
        return all(n in self._current for n in self.names)

    def start(self) -> None:
        """Load every champion, from the registry or else from the last good copy."""
        for name in self.names:
            try:
                self._from_registry(name)
            except Exception as exc:
                log.warning(
                    "model %s: registry unavailable or refused (%s); trying %s",
                    name,
                    exc,
                    self.models_dir / name,
                )
                self._from_local(name)

    def poll(self) -> dict[str, str]:
        """Swap in any champion that moved; what happened per model (for logs and tests)."""
        outcome: dict[str, str] = {}
        for name in self.names:
            try:
                outcome[name] = self._from_registry(name)
            except Exception as exc:
                log.warning("model %s: poll failed: %s", name, exc)
                outcome[name] = f"error: {exc}"
        return outcome

    def _with_timeout(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` or TimeoutError after ``registry_timeout_s`` (MLflow retries for minutes)."""
        pool = cf.ThreadPoolExecutor(1, thread_name_prefix="registry")
        try:
            return pool.submit(fn).result(timeout=self._timeout)
        finally:
            pool.shutdown(wait=False)  # a hung registry call must not hold us

    def _from_registry(self, name: str) -> str:
        if self.source is None:
            raise ModelRejected("no registry configured")
        source = self.source
        version = str(self._with_timeout(lambda: source.champion_version(name)))
        current = self._current.get(name)
        if current is not None and current.version == version:
            return "unchanged"
        if self._refused.get(name) == version:
            return "refused earlier"
        with self._lock, tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
            root = self._with_timeout(lambda: source.download(name, version, Path(tmp)))
            # Loaded from its own folder under models/, never from the temp download: a
            # model may read files after load (ServedModel reads booster.txt lazily).
            directory = self._store(name, version, find_artifact_dir(Path(root)))
            try:
                model = check(name, directory, self.loader)
            except ModelRejected as exc:
                self._refused[name] = version
                shutil.rmtree(directory, ignore_errors=True)
                log.error(
                    "model %s version %s refused, %s keeps serving: %s",
                    name,
                    version,
                    current.version if current else "nothing",
                    exc,
                )
                return "refused"
            self._set_current(name, version)
            self._swap(self._loaded(name, version, model))
            self._prune(name)
        return "swapped"

    def _from_local(self, name: str) -> None:
        pointer = self.models_dir / name / CURRENT_FILE
        if not pointer.exists():
            log.error("model %s: no last good copy in %s; not serving it", name, pointer.parent)
            return
        version = pointer.read_text().strip()
        directory = self.models_dir / name / version
        try:
            model = check(name, directory, self.loader)
        except ModelRejected as exc:
            log.error("model %s: last good copy in %s refused: %s", name, directory, exc)
            return
        log.warning(
            "model %s: registry unreachable, serving last good copy v%s from %s",
            name,
            version,
            directory,
        )
        self._swap(self._loaded(name, version, model))

    def _loaded(self, name: str, version: str, model: ScoringModel) -> LoadedModel:
        # RankProducts' and ScoreConversion's rows are kept by branch key. RecommendNext-
        # Product's 60,000 rows would cost more to key than to score: its trees are grouped
        # and its rooms' last grids kept by group instead, compared value by value
        # (service.room_scores).
        group = self.tree_group if name == NEXT_PRODUCT_MODEL else 0
        return LoadedModel(name, version, model, SPECS[name], self.kept_rows, group)

    def _swap(self, loaded: LoadedModel) -> None:
        old = self._current.get(loaded.name)
        if old is not None and old.kept is not None and loaded.kept is not None:
            # The counts go on across versions (a Prometheus counter only resets with the
            # process); calls still on the old version may add a few it does not see.
            loaded.kept.looked_up += old.kept.looked_up
            loaded.kept.scored += old.kept.scored
        self._current[loaded.name] = loaded  # atomic: readers see old or new, never half
        log.info(
            "model %s: now serving version %s (was %s)",
            loaded.name,
            loaded.version,
            old.version if old else "none",
        )
        if self.on_swap is not None:
            try:
                self.on_swap(loaded)
            except Exception:
                log.exception("model %s: swap hook failed (the swap itself stands)", loaded.name)

    def _store(self, name: str, version: str, directory: Path) -> Path:
        """Copy a downloaded version to ``models/<name>/<version>/`` (renamed into place).

        The processes of ``--workers N`` share ``models/``: each stages its own copy, and a
        complete copy already in place (a registry version never changes) is kept, never
        replaced under a process that may be loading it.
        """
        target = self.models_dir / name / version
        if (target / VERSION_FILE).exists():
            return target
        staging = self.models_dir / name / f".{version}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(directory, staging)
            (staging / VERSION_FILE).write_text(
                json.dumps({"name": name, "version": version, "saved_at": time.time()}) + "\n"
            )
            if target.exists() and not (target / VERSION_FILE).exists():
                shutil.rmtree(target, ignore_errors=True)  # an incomplete copy of old
            try:
                staging.rename(target)
            except OSError:
                if not (target / VERSION_FILE).exists():
                    raise
                # Another process put the same version in place first: use its copy.
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _set_current(self, name: str, version: str) -> None:
        """Point ``models/<name>/current`` at a checked version (the last good copy)."""
        pointer = self.models_dir / name / CURRENT_FILE
        tmp = pointer.with_name(f".{CURRENT_FILE}.{os.getpid()}.tmp")
        tmp.write_text(version + "\n")
        tmp.replace(pointer)

    def _prune(self, name: str) -> None:
        """Keep the serving version and the one before it (still finishing calls)."""
        folder = self.models_dir / name
        keep = {v.version for v in (self._current.get(name),) if v is not None}
        versions = sorted(
            (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        for path in versions[:-2]:
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
