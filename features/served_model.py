"""A trained model as serving runs it: one ONNX session, calibrated probabilities (and,
for a room's grid, the same trees in groups: :class:`TreeGroups`).

Training writes, and serving loads, a *served artifact directory*:

================  ===============================================================
``model.onnx``    the whole model: LightGBM trees -> margin -> Platt calibration
                  (``sigmoid(a * margin + b)``), input ``input`` float32 (n, d),
                  output ``probability`` float32 (n,)
``calibrator.json``  ``{"kind": "platt", "a", "b", "in_graph": true}``; applied by
                  :func:`apply_calibrator` to a LightGBM margin (reasons, checks)
``spec.json``     model name, feature service, column order, exposure window, ...
``parity.npz``    ``X`` (float32 rows, some with NaN) and ``expected`` (calibrated
                  LightGBM output, float64): checked before a version is swapped in
``booster.txt``   the LightGBM model text, for per-feature reasons (``pred_contrib``)
================  ===============================================================

The calibrator lives in the graph so the parity gate checks exactly what is
served; the JSON copy is for the LightGBM side of that check and for reasons.
This module is shared by training and serving and never imports ``training``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

MODEL_FILE = "model.onnx"
CALIBRATOR_FILE = "calibrator.json"
SPEC_FILE = "spec.json"
PARITY_FILE = "parity.npz"
BOOSTER_FILE = "booster.txt"
INPUT_NAME = "input"
OUTPUT_NAME = "probability"
#: Largest |ONNX - LightGBM| calibrated difference a served model may show.
PARITY_TOLERANCE = 1e-5


#: Batches at least this large are split in BULK_THREADS parts run at once through the
#: one-thread session (measured ~20% faster than ONNX Runtime's own two intra-op threads on
#: a 60,000-row grid, and the same bits: each row is scored alone). A room's grid is not
#: one batch: RecommendNextProduct submits it part by part (:meth:`TreeGroups.submit`, or
#: :meth:`ServedModel.submit` for a model not grouped).
BULK_ROWS = 8192
BULK_THREADS = min(2, os.cpu_count() or 1)
#: Rows from which a leaf prediction (a room's reasons: ~2,000 rows) is split the same way.
BULK_LEAF_ROWS = 1024
_bulk: cf.ThreadPoolExecutor | None = None
_bulk_lock = threading.Lock()


def bulk_pool() -> cf.ThreadPoolExecutor:
    """The ``BULK_THREADS`` threads a room's rows are scored on, made on first use and
    shared by the process's models. A caller that waits for a part no thread has started
    runs it itself (:func:`collect`): a call never waits behind another call's parts."""
    global _bulk
    with _bulk_lock:
        if _bulk is None:
            _bulk = cf.ThreadPoolExecutor(BULK_THREADS, thread_name_prefix="onnx")
        return _bulk


def _in_parts(run: Callable[[np.ndarray], np.ndarray], X: np.ndarray, rows: int) -> np.ndarray:
    """``run(X)``; from ``rows`` rows on, in ``BULK_THREADS`` row blocks run at once (this
    thread runs the first). Each row is computed alone: the same bits either way."""
    if len(X) < rows or BULK_THREADS < 2:
        return run(X)
    parts = np.array_split(X, BULK_THREADS)  # row blocks of a C-ordered array: views
    rest = [(bulk_pool().submit(run, part), part) for part in parts[1:]]
    first = run(parts[0])
    return np.concatenate([first, *(collect(f, run, part) for f, part in rest)])


def collect(
    future: cf.Future[np.ndarray], run: Callable[[np.ndarray], np.ndarray], X: np.ndarray
) -> np.ndarray:
    """The answer of ``run(X)`` submitted as ``future``: computed on this thread if no
    thread has started it yet (taken back from the queue), else awaited."""
    return run(X) if future.cancel() else future.result()


class ParityError(RuntimeError):
    """The ONNX graph does not reproduce the LightGBM model (+ calibrator)."""


def apply_calibrator(calibrator: dict[str, Any], margin: np.ndarray) -> np.ndarray:
    """Calibrated probability from a LightGBM raw margin (log-odds), in float64."""
    if calibrator.get("kind") != "platt":
        raise ValueError(f"unknown calibrator kind {calibrator.get('kind')!r}")
    z = float(calibrator["a"]) * np.asarray(margin, dtype=np.float64) + float(calibrator["b"])
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class Reason:
    """One feature's contribution (log-odds, before calibration) to a score."""

    feature: str
    value: float
    contribution: float


class ServedModel:
    """Run a served artifact directory: ``load`` then ``predict`` (one ONNX session)."""

    def __init__(self, directory: Path, session: Any, spec: dict[str, Any], calibrator: dict):
        self.directory = directory
        self.spec = spec
        self.calibrator = calibrator
        self._session = session
        self._booster: Any = None
        self._explainer: PathExplainer | None = None
        self._branch_keys: BranchKeys | None = None
        self._branch_keys_read = False  # None is an answer too: a graph not keyed

    @classmethod
    def load(cls, directory: str | Path, intra_op_threads: int = 1) -> ServedModel:
        """Open ``model.onnx`` with ``intra_op_threads`` threads (one: scoring is per call)."""

        directory = Path(directory)
        session = _session(directory / MODEL_FILE, intra_op_threads)
        spec = json.loads((directory / SPEC_FILE).read_text())
        calibrator = json.loads((directory / CALIBRATOR_FILE).read_text())
        return cls(directory, session, spec, calibrator)

    @property
    def name(self) -> str:
        return str(self.spec["model"])

    @property
    def feature_service(self) -> str:
        return str(self.spec["feature_service"])

    @property
    def columns(self) -> list[str]:
        return list(self.spec["columns"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, float32 (n,), for float32 rows in :attr:`columns` order."""
        # A large batch uses the cores (a room's grid comes in parts: submit).
        return _in_parts(self._run, self._checked(X), BULK_ROWS)

    def submit(self, X: np.ndarray) -> cf.Future[np.ndarray]:
        """The scores of ``X`` (as :meth:`predict`, in one piece) on one of the
        :func:`bulk_pool` threads. A caller that builds a room's grid in parts submits each
        as it is built, so the trees score one part while it builds the next (each row is
        scored alone: the same bits as one call), then takes each with :meth:`collect`."""
        return bulk_pool().submit(self._run, self._checked(X))

    def collect(self, future: cf.Future[np.ndarray], X: np.ndarray) -> np.ndarray:
        """The scores :meth:`submit` of ``X`` gave ``future``; computed here if no thread
        has started them yet."""
        return collect(future, self._run, X)

    def _checked(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.columns):
            raise ValueError(f"expected (n, {len(self.columns)}) features, got {X.shape}")
        return X

    def _run(self, X: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: X})
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def booster(self) -> Any:
        """The LightGBM booster (loaded on first use; only reasons and checks need it)."""
        if self._booster is None:
            import lightgbm as lgb

            self._booster = lgb.Booster(model_file=str(self.directory / BOOSTER_FILE))
        return self._booster

    def reference(self, X: np.ndarray) -> np.ndarray:
        """LightGBM + calibrator in float64: what the ONNX graph must reproduce."""
        margin = self.booster().predict(np.asarray(X, dtype=np.float32), raw_score=True)
        return apply_calibrator(self.calibrator, margin)

    def explainer(self) -> PathExplainer:
        """Per-feature contributions by decision path, precomputed per leaf (cheap per row)."""
        if self._explainer is None:
            explainer = PathExplainer(self.booster())
            with np.load(self.directory / PARITY_FILE) as parity:
                X = np.asarray(parity["X"], dtype=np.float32)
            if len(X) and not np.array_equal(
                explainer.leaves(X), self.booster().predict(X, pred_leaf=True)
            ):
                raise ParityError(
                    f"{self.name}: the leaf graph and LightGBM reach different leaves "
                    "on the parity sample"
                )
            self._explainer = explainer
        return self._explainer

    def branch_keys(self) -> BranchKeys | None:
        """Keys under every split of the served graph and of the explainer's leaf graph
        (:class:`BranchKeys`): rows with equal keys get the same score and the same
        contributions. ``None`` if the graph reads its input other than by splits."""
        if not self._branch_keys_read:
            import onnx

            graphs = [onnx.load(str(self.directory / MODEL_FILE)), self.explainer().leaf_graph]
            self._branch_keys = BranchKeys.of_graphs(graphs, len(self.columns))
            self._branch_keys_read = True
        return self._branch_keys

    def tree_groups(self, size: int) -> TreeGroups:
        """The served trees in groups of ``size`` (:class:`TreeGroups`), checked against
        LightGBM on the parity sample as the graph itself is (:class:`ParityError`)."""
        import onnx

        groups = TreeGroups(onnx.load(str(self.directory / MODEL_FILE)), len(self.columns), size)
        self._parity(groups.predict, f"the model in groups of {size} trees", PARITY_TOLERANCE)
        return groups

    def contributions(self, X: np.ndarray, top: int = 3) -> list[list[Reason]]:
        """Per row, the ``top`` features that pushed the score up most (SHAP, log-odds)."""
        X = np.asarray(X, dtype=np.float32)
        contrib = self.explainer().contributions(X)
        cols = self.columns
        out: list[list[Reason]] = []
        for i in range(len(X)):
            order = np.argsort(-contrib[i], kind="stable")[:top]
            out.append([Reason(cols[j], float(X[i, j]), float(contrib[i, j])) for j in order])
        return out

    def check_parity(self, tolerance: float = PARITY_TOLERANCE) -> float:
        """Run ``parity.npz`` through the graph; raise :class:`ParityError` beyond tolerance."""
        return self._parity(self.predict, "ONNX", tolerance)

    def _parity(
        self, predict: Callable[[np.ndarray], np.ndarray], what: str, tolerance: float
    ) -> float:
        """The largest difference of ``predict`` from LightGBM + calibrator on
        ``parity.npz``; :class:`ParityError` (naming ``what``) beyond ``tolerance``."""
        with np.load(self.directory / PARITY_FILE) as parity:
            X, expected = parity["X"], parity["expected"]
        got = np.asarray(predict(X), dtype=np.float64)
        diff = float(np.max(np.abs(got - expected))) if len(X) else 0.0
        if not np.isfinite(diff) or diff > tolerance:
            raise ParityError(
                f"{self.name}: {what} differs from LightGBM+calibrator by {diff:.3g} "
                f"(> {tolerance:g}) on the parity sample"
            )
        return diff


def download_served(
    registered_name: str, alias: str, dest: str | Path, tracking_uri: str | None = None
) -> Path:
    """Fetch the served directory of ``registered_name@alias`` from the MLflow registry.

    The logged LightGBM model carries the served files as its ``extra_files``. The
    version is resolved with a client bound to ``tracking_uri`` (MLflow's own
    ``models:/`` resolution only reads the process-wide registry URI).
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version_by_alias(registered_name, alias)
    location = client.get_model_version_download_uri(registered_name, str(version.version))
    Path(dest).mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location.rstrip('/')}/extra_files",
        dst_path=str(dest),
        tracking_uri=tracking_uri,
    )
    return Path(local)


class PathExplainer:
    """Per-feature contributions of a LightGBM model, by decision path (Saabas).

    Each step of a row's path from a tree's root to its leaf moves the tree's
    expected value; the move is credited to the feature split on. Summed over
    the path, that is one short vector per leaf (the few features its path splits
    on), so it is computed once at load: explaining a row is then one leaf lookup
    per tree and a sum of those few entries, instead of TreeSHAP's cost per row
    (measured ~0.43 ms a row on the served models, half of a RankProducts call).
    Contributions plus :attr:`bias` add up to the raw margin exactly, like SHAP
    values do; the attribution per feature is the path one rather than the
    Shapley average, which is what reasons need.
    """

    def __init__(self, booster: Any) -> None:
        self._booster = booster
        dump = booster.dump_model()
        n_features = int(booster.num_feature())
        trees = dump["tree_info"]
        width = max(int(t["num_leaves"]) for t in trees)
        #: (trees, leaves, features): every leaf's whole vector, for sums by leaf counts.
        self.table = np.zeros((len(trees), width, n_features), dtype=np.float64)
        self.bias = 0.0
        #: How many splits of the whole model test each feature.
        self.splits = np.zeros(n_features, dtype=np.int64)
        for t, tree in enumerate(trees):
            root = tree["tree_structure"]
            self.bias += _node_value(root)
            stack = [(root, np.zeros(n_features))]
            while stack:
                node, acc = stack.pop()
                if "leaf_index" in node or "split_feature" not in node:
                    self.table[t, int(node.get("leaf_index", 0))] = acc
                    continue
                self.splits[int(node["split_feature"])] += 1
                value = _node_value(node)
                for side in ("left_child", "right_child"):
                    child = node[side]
                    step = acc.copy()
                    step[int(node["split_feature"])] += _node_value(child) - value
                    stack.append((child, step))
        self._trees = np.arange(len(trees))
        self._n_features = n_features
        # The same table kept sparse: leaf k = tree * width + leaf owns the entries
        # _start[k] : _start[k] + _len[k] of (_feature, _value), in feature order.
        flat = self.table.reshape(len(trees) * width, n_features)
        leaf, feature = np.nonzero(flat)
        self._len = np.bincount(leaf, minlength=len(flat)).astype(np.int64)
        self._start = np.concatenate([[0], np.cumsum(self._len)[:-1]]).astype(np.int64)
        self._feature = feature.astype(np.int64)
        self._value = flat[leaf, feature]
        self._leaf_base = self._trees * width
        self._leaves = _LeafReader(booster, len(trees), n_features)

    @property
    def leaf_graph(self) -> Any:
        """The ONNX graph :meth:`leaves` runs."""
        return self._leaves.graph

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """(rows, trees) leaf index of each row in each tree."""
        return self._leaves(X)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(rows, features) contributions in log-odds; ``.sum(1) + bias`` is the margin.

        Only the entries on each row's paths are added (a few per tree), by one
        ``bincount``: each cell sums its entries tree by tree whatever the number of
        rows, so a row gets the same bits alone or in a batch.
        """
        X = np.asarray(X, dtype=np.float32)
        n, f = len(X), self._n_features
        if n == 0:
            return np.zeros((0, f))
        lens, at = self._entries((self.leaves(X) + self._leaf_base[None, :]).ravel())
        cell = (np.arange(n) * f).repeat(len(self._trees)).repeat(lens) + self._feature[at]
        return np.bincount(cell, weights=self._value[at], minlength=n * f).reshape(n, f)

    def _entries(self, leaves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For flat leaf numbers: how many path entries each has, and the positions of
        all their entries, concatenated in the order of ``leaves`` (array methods:
        numpy's module functions add a wrapper call each)."""
        lens = self._len[leaves]
        ends = lens.cumsum()
        return lens, np.arange(int(ends[-1])) + (self._start[leaves] - (ends - lens)).repeat(lens)

    def total(self, X: np.ndarray) -> np.ndarray:
        """(features,) contributions summed over the rows of ``X``.

        Counts how many rows reach each leaf and weighs the leaf vectors by
        them, so the cost grows with trees x leaves, not with rows x trees x
        features: what explaining one candidate over a whole room needs.
        """
        return self.totals(X, np.zeros(len(X), dtype=np.int64), 1)[0]

    def totals(self, X: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
        """(groups, features): :meth:`total` of the rows of each group (``group[i]`` is row
        i's), with one leaf prediction for all of them.

        Each leaf reached is weighed by how many of a group's rows reach it, over its few
        path entries (no matrix product: a BLAS call leaves its worker threads spinning
        on the other core for a while, which a 2-core server cannot spare).
        """
        X = np.asarray(X, dtype=np.float32)
        n_features = self._n_features
        if len(X) == 0:
            return np.zeros((groups, n_features))
        size = self.table.shape[0] * self.table.shape[1]
        cells = np.asarray(group, dtype=np.int64)[:, None] * size
        flat = (cells + self._leaf_base[None, :] + self.leaves(X)).ravel()
        counts = np.bincount(flat, minlength=groups * size)
        reached = np.flatnonzero(counts)
        lens, at = self._entries(reached % size)
        cell = (reached // size * n_features).repeat(lens) + self._feature[at]
        weights = self._value[at] * counts[reached].repeat(lens)
        return np.bincount(cell, weights=weights, minlength=groups * n_features).reshape(
            groups, n_features
        )


#: The ONNX split rules :class:`BranchKeys` stands for: each compares a value with a threshold.
BRANCH_MODES = frozenset(
    {"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"}
)
_TREE_OPS = frozenset({"TreeEnsembleRegressor", "TreeEnsembleClassifier"})


class BranchKeys:
    """Which side of every split of a tree ensemble each value of a row falls on: one key
    per row, equal for two rows only if they take the same branch at every node.

    A tree compares a value with its split's threshold (``<=``, ``<``, ``==``, ...) or
    finds it missing (NaN) and nothing else, so what decides a row's leaves is, per
    feature, where its value stands among that feature's thresholds: below all, equal to
    the k-th, strictly between the k-th and the next, above all, or NaN: ``2 *
    (thresholds strictly below it) + (1 if it equals one)``. All features' thresholds
    stand in one sorted array, so one search places a whole matrix; a value's key is its
    place in that array modulo 256 (65,536 for a model with over 125 thresholds on a
    feature), which keeps one feature's places apart: a byte a feature. Two rows with
    equal keys reach the same leaf of every tree, so the served
    graph gives them the same score bit for bit and the path explainer the same
    contributions: what :class:`service.models.KeptScores` relies on to score a row once.

    Exact by construction, for float32 values as the graph reads them: ``-0.0`` is
    read as ``0.0`` (they compare equal); every feature gets ``-inf`` and ``+inf`` as
    thresholds too, so infinities have their own keys and NaN (whose bits order
    outside them) never shares a key with a number.
    """

    def __init__(
        self,
        thresholds: list[np.ndarray],
        owners: list[np.ndarray] | None = None,
        groups: int | None = None,
    ) -> None:
        """``thresholds[j]``: what feature ``j`` is compared with (repeats allowed);
        ``owners[j]`` (optional, alike): the group of trees (:class:`TreeGroups`) whose
        split each of them is, for :meth:`moved` per group, of ``groups`` groups (by
        default one past the highest owner; a group whose trees do not split counts too);
        one group without owners."""
        #: Per feature, its sorted thresholds as ordered integers, offset by the feature
        #: (``j << 34``): one sorted array and one ``searchsorted`` for a whole matrix.
        self.n_features = len(thresholds)
        if owners is None:
            owners = [np.zeros(len(t), dtype=np.int64) for t in thresholds]
        if len(owners) != self.n_features:
            raise ValueError(f"{len(owners)} owner lists for {self.n_features} features")
        owners = [np.asarray(o, dtype=np.int64) for o in owners]
        #: How many groups of trees :meth:`moved` answers for.
        highest = max((int(o.max()) + 1 for o in owners if len(o)), default=1)
        self.groups = highest if groups is None else groups
        if self.groups < highest or any(len(o) and int(o.min()) < 0 for o in owners):
            raise ValueError(f"owners outside groups 0..{self.groups - 1}")
        self._offset = np.arange(self.n_features, dtype=np.int64) << 34
        codes = []
        owned = []  # per code, the groups whose thresholds it stands for
        #: (features, groups): which groups split on each feature (NaN moves all of them).
        self._users = np.zeros((self.n_features, self.groups), dtype=bool)
        for j, (t, o) in enumerate(zip(thresholds, owners, strict=True)):
            t = np.asarray(t, dtype=np.float32) + np.float32(0.0)
            if o.shape != t.shape:
                raise ValueError(f"feature {j}: {len(o)} owners for {len(t)} thresholds")
            real = t == t
            t, o = t[real], o[real]
            both = np.concatenate([t, np.array([-np.inf, np.inf], dtype=np.float32)])
            t, at = np.unique(both, return_inverse=True)
            mine = np.zeros((len(t), self.groups), dtype=bool)
            mine[at[: len(o)], o] = True
            self._users[j] = mine.any(axis=0)
            twice = _ordered(t) << 1
            codes.append(self._offset[j] + np.stack([twice, twice + 1], axis=1).ravel())
            owned.append(np.repeat(mine, 2, axis=0))
        self._codes = np.concatenate(codes)
        #: (codes + 1, groups): how many codes of each group's thresholds stand below each
        #: place; a value moved between two places crossed a split of group ``g`` if the
        #: counts differ.
        flags = np.concatenate(owned) if owned else np.zeros((0, self.groups), dtype=bool)
        self._below = np.zeros((len(self._codes) + 1, self.groups), dtype=np.int32)
        np.cumsum(flags, axis=0, out=self._below[1:])
        #: A feature's places span its codes and one past them: kept modulo a byte (or
        #: two) they stay apart, so the cast that wraps them is the key.
        widest = max(len(c) for c in codes) if codes else 0
        self._dtype = np.dtype(
            np.uint8 if widest < 0x100 else np.uint16 if widest < 0x10000 else np.int64
        )
        #: (rows, the columns that vary) -> the offsets of one search of such a matrix
        #: (its first row whole, then the columns that vary, row by row).
        self._layouts: dict[tuple[int, bytes], np.ndarray] = {}

    @classmethod
    def of_graphs(cls, models: list[Any], n_features: int) -> BranchKeys | None:
        """Keys under the splits of all of ``models`` (ONNX graphs) at once, for graphs
        whose only readers of their input are tree ensembles that compare values with
        thresholds; ``None`` if any graph reads it otherwise (nothing to key)."""
        per_feature: list[list[float]] = [[] for _ in range(n_features)]
        for model in models:
            if not cls._thresholds(model.graph, per_feature):
                return None
        return cls([np.asarray(v, dtype=np.float32) for v in per_feature])

    @classmethod
    def split_thresholds(cls, graph: Any, n_features: int) -> list[np.ndarray] | None:
        """Per feature, the thresholds the splits of ``graph`` (an ONNX ``GraphProto``)
        compare it with, as float32 (repeats kept); ``None`` if the graph reads its input
        other than by such splits."""
        per_feature: list[list[float]] = [[] for _ in range(n_features)]
        if not cls._thresholds(graph, per_feature):
            return None
        return [np.asarray(v, dtype=np.float32) for v in per_feature]

    @staticmethod
    def _thresholds(graph: Any, per_feature: list[list[float]]) -> bool:
        """Add ``graph``'s split thresholds to ``per_feature``; ``False`` if it reads its
        input other than by splits."""
        n_features = len(per_feature)
        (source,) = [i.name for i in graph.input]
        for node in graph.node:
            if source not in node.input:
                continue
            if node.op_type not in _TREE_OPS:
                return False  # the input reaches the output by another way than splits
            attrs = {a.name: a for a in node.attribute}
            if "nodes_values" not in attrs:
                return False  # thresholds as a tensor (double): not read here
            modes = [m.decode() for m in attrs["nodes_modes"].strings]
            features = attrs["nodes_featureids"].ints
            values = attrs["nodes_values"].floats
            for mode, j, value in zip(modes, features, values, strict=True):
                if mode == "LEAF":
                    continue
                if mode not in BRANCH_MODES or not 0 <= j < n_features:
                    return False
                per_feature[j].append(value)
        return True

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """(rows, features) integers: each value's place among all features' thresholds
        (with the infinities), modulo 256 or 65,536."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected (n, {self.n_features}) features, got {X.shape}")
        n, f = X.shape
        if n < 2:
            return self._search(X, self._offset)
        # A column with one value in every row (one viewer's columns over the candidates)
        # is searched once, with the first row: the search is most of the cost.
        bits = X.view(np.uint32)
        varies = np.flatnonzero((bits != bits[0]).any(axis=0))
        if 2 * len(varies) > f:
            return self._search(X, self._offset)
        layout = (n, varies.tobytes())
        offset = self._layouts.get(layout)
        if offset is None:
            if len(self._layouts) >= 64:
                self._layouts.clear()
            offset = np.concatenate([self._offset, np.tile(self._offset[varies], n)])
            self._layouts[layout] = offset
        keys = self._search(np.concatenate([X[0], X[:, varies].ravel()]), offset)
        out = np.empty(X.shape, dtype=self._dtype)
        out[:] = keys[:f]
        out[:, varies] = keys[f:].reshape(n, len(varies))
        return out

    def _search(self, X: np.ndarray, offset: np.ndarray) -> np.ndarray:
        return self._places(X, offset).astype(self._dtype)

    def _places(self, X: np.ndarray, offset: np.ndarray) -> np.ndarray:
        code = np.left_shift(_ordered(X + np.float32(0.0)), 1) + offset
        return self._codes.searchsorted(code, side="right")

    def moved(self, new: np.ndarray, old: np.ndarray, features: int | np.ndarray = 0) -> np.ndarray:
        """Per row of ``new`` (every axis but the last) and per group of trees, whether any
        of its values stands on another side of a split of that group's trees than the
        same value of ``old``: ``(..., groups)`` booleans (one group unless built with
        owners). A value that became NaN, or stopped being one, moves every group that
        splits on its feature. The last axis holds the features ``features`` (their
        indices, or the first of a run: ``features``, ``features + 1``, ...); only the
        values whose bits differ are searched, so rows that mostly repeat an earlier
        call's cost a comparison (what lets a room's grid keep what the trees said of the
        rows that did not move: ``service.room_scores``)."""
        new = np.ascontiguousarray(new, dtype=np.float32)
        old = np.ascontiguousarray(old, dtype=np.float32)
        if new.shape != old.shape or new.ndim < 1:
            raise ValueError(f"new {new.shape} and old {old.shape} must be alike")
        k = new.shape[-1]
        at = (
            np.arange(features, features + k)
            if isinstance(features, int | np.integer)
            else np.asarray(features, dtype=np.intp)
        )
        if at.shape != (k,) or (k and not (at.min() >= 0 and at.max() < self.n_features)):
            raise ValueError(f"features {at.tolist()} for {k} columns of {self.n_features}")
        lead = new.shape[:-1]
        out = np.zeros((int(np.prod(lead)), self.groups), dtype=bool)
        if k:
            a, b = new.reshape(-1, k), old.reshape(-1, k)
            r, c = np.nonzero(a.view(np.uint32) != b.view(np.uint32))
            if len(r):
                va, vb = a[r, c], b[r, c]
                j = at[c]
                pa = self._places(va, self._offset[j])
                pb = self._places(vb, self._offset[j])
                na, nb = np.isnan(va), np.isnan(vb)
                nan = na != nb
                go = np.flatnonzero(((pa != pb) & ~(na & nb)) | nan)
                if len(go):
                    hit = self._below[pa[go]] != self._below[pb[go]]
                    hit[nan[go]] = self._users[j[go][nan[go]]]
                    rows = r[go]  # ascending (np.nonzero's order): one run per row
                    starts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
                    out[rows[starts]] = np.logical_or.reduceat(hit, starts, axis=0)
        return out.reshape(*lead, self.groups)

    def rows(self, X: np.ndarray) -> list[bytes]:
        """One key per row of ``X`` (its positions' bytes), for a dict."""
        keys = np.ascontiguousarray(self(X))
        rows = keys.view(np.dtype((np.void, keys.strides[0]))).ravel().tolist()
        return cast(list[bytes], rows)  # a void row's item is its bytes


class TreeGroups:
    """The served model's trees in groups of consecutive trees, each group's margin on
    its own: what lets a room's grid re-walk, for a row whose value crossed a split, only
    the groups that split there (:mod:`service.room_scores`).

    The margin is the sum of the groups' margins, added in group order in float32 (plus
    the ensemble's base value), then calibrated as the served graph does (``sigmoid(a *
    margin + b)``). Each group is one ONNX Runtime session over its trees alone, whose sum
    runs tree by tree in float32: a row gets the same bits alone, in any batch, and
    whichever groups are run again. The total differs from the one-ensemble graph's only
    by where float32 rounds (checked against LightGBM on the parity sample at load, like
    any served graph). Measured on the bench's next-product champion (156 trees, a room's
    60,000 rows, one thread): groups of 12 trees cost what the whole ensemble does (85 ms
    both), and the room's likes per viewer crossing a split moves one or two groups
    instead of every tree.
    """

    def __init__(self, model: Any, n_features: int, size: int) -> None:
        """From the served ``model`` (an ONNX ``ModelProto`` as ``training.export``
        writes it: a tree ensemble, then ``Mul``/``Add``/``Sigmoid``), ``size`` trees a
        group; :class:`ValueError` for a graph of another shape."""
        if size < 1:
            raise ValueError(f"trees per group must be at least 1, not {size}")
        ensemble, self._a, self._b = _calibrated_ensemble(model)
        attrs = {a.name: a for a in ensemble.attribute}
        if any(k.endswith("_as_tensor") for k in attrs):
            raise ValueError("tree ensemble with tensor attributes: not grouped")
        tree = np.asarray(attrs["nodes_treeids"].ints, dtype=np.int64)
        trees = np.unique(tree)
        if not len(trees):
            raise ValueError("tree ensemble without trees")
        base = list(attrs["base_values"].floats) if "base_values" in attrs else []
        if len(base) > 1 or attrs["n_targets"].i != 1:
            raise ValueError("tree ensemble with more than one target: not grouped")
        self._base = np.float32(base[0] if base else 0.0)
        #: Tree ``t`` (in the ensemble's order) is in group ``group_of[t]``.
        self.group_of = np.arange(len(trees)) // size
        self.groups = int(self.group_of[-1]) + 1
        self.n_features = n_features
        self._sessions = []
        thresholds: list[list[np.ndarray]] = [[] for _ in range(n_features)]
        owners: list[list[np.ndarray]] = [[] for _ in range(n_features)]
        for g in range(self.groups):
            graph = _sub_ensemble(model, ensemble, trees[self.group_of == g], n_features)
            found = BranchKeys.split_thresholds(graph.graph, n_features)
            if found is None:
                raise ValueError("tree ensemble that reads its input other than by splits")
            for j, t in enumerate(found):
                thresholds[j].append(t)
                owners[j].append(np.full(len(t), g, dtype=np.int64))
            self._sessions.append(_session(graph.SerializeToString(), 1))
        #: Which groups each value's move crosses a split of (:meth:`BranchKeys.moved`).
        self.keys = BranchKeys(
            [np.concatenate(t) for t in thresholds],
            [np.concatenate(o) for o in owners],
            self.groups,
        )

    def margins(self, X: np.ndarray, group: int) -> np.ndarray:
        """float32 (rows,): group ``group``'s margin of each row of ``X``."""
        (out,) = self._sessions[group].run(None, {INPUT_NAME: X})
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def walk(self, X: np.ndarray, need: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        """Walk rows of ``X`` through the groups ``need`` (rows x groups booleans; ``None``:
        every row through every group) says, writing their margins into ``out`` (rows x
        groups float32, the rest left as they are); returns ``out``."""
        if need is None:
            for g in range(self.groups):
                out[:, g] = self.margins(X, g)
            return out
        by_group = np.ascontiguousarray(need.T)  # one group's rows contiguous
        counts = by_group.sum(axis=1)
        for g in np.flatnonzero(counts).tolist():
            if counts[g] == len(X):
                out[:, g] = self.margins(X, g)
            else:
                rows = np.flatnonzero(by_group[g])
                out[rows, g] = self.margins(X[rows], g)
        return out

    def submit(
        self, X: np.ndarray, need: np.ndarray | None, out: np.ndarray
    ) -> cf.Future[np.ndarray]:
        """:meth:`walk` on one of the :func:`bulk_pool` threads (one job for all the
        groups: a room's part wakes one thread, not one per group); take ``out`` with
        :meth:`collect`. ``out`` is the job's until then."""
        X = self._checked(X)
        if out.shape != (len(X), self.groups) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 ({len(X)}, {self.groups}), got {out.shape}")
        return bulk_pool().submit(self.walk, X, need, out)

    def collect(
        self,
        future: cf.Future[np.ndarray],
        X: np.ndarray,
        need: np.ndarray | None,
        out: np.ndarray,
    ) -> np.ndarray:
        """What :meth:`submit` of the same arguments gave ``future``; walked here if no
        thread has started it yet."""
        return collect(future, lambda rows: self.walk(rows, need, out), self._checked(X))

    def all_margins(self, X: np.ndarray) -> np.ndarray:
        """float32 (rows, groups): every group's margins of ``X``, here."""
        X = self._checked(X)
        return self.walk(X, None, np.empty((len(X), self.groups), dtype=np.float32))

    def probability(self, margins: np.ndarray) -> np.ndarray:
        """float64 (rows,): the calibrated probability of rows whose groups' margins are
        ``margins`` (rows, groups), their sum taken group after group in float32."""
        margins = np.asarray(margins, dtype=np.float32)
        if margins.ndim != 2 or margins.shape[1] != self.groups:
            raise ValueError(f"expected (n, {self.groups}) margins, got {margins.shape}")
        total = margins[:, 0].copy()
        for g in range(1, self.groups):
            total += margins[:, g]
        total += self._base
        z = total * self._a + self._b  # float32, as the served graph's Mul and Add
        return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """float64 (rows,): :meth:`probability` of :meth:`all_margins`."""
        return self.probability(self.all_margins(X))

    def _checked(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected (n, {self.n_features}) features, got {X.shape}")
        return X


def _calibrated_ensemble(model: Any) -> tuple[Any, np.float32, np.float32]:
    """The margin ensemble of a served graph and its Platt ``a``, ``b`` (float32), if the
    graph is ``training.export``'s: a summing tree ensemble -> ``Mul`` a -> ``Add`` b ->
    ``Sigmoid`` (``Identity`` and a final ``Reshape`` between or after them);
    :class:`ValueError` otherwise."""
    from onnx import numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    (source,) = [i.name for i in graph.input]
    chain = readers.get(source, [])
    if len(chain) != 1 or chain[0].op_type != "TreeEnsembleRegressor":
        raise ValueError("served graph: its input is not read by one tree ensemble alone")
    ensemble = chain[0]
    attrs = {a.name: _attr(a) for a in ensemble.attribute}
    if attrs.get("aggregate_function", b"SUM") not in (b"SUM", "SUM") or attrs.get(
        "post_transform", b"NONE"
    ) not in (b"NONE", "NONE"):
        raise ValueError("served graph: the tree ensemble does not output its plain sum")
    steps = []
    value = ensemble.output[0]
    while True:
        nxt = readers.get(value, [])
        if len(nxt) != 1:
            break
        node = nxt[0]
        if node.op_type != "Identity":
            steps.append(node)
        value = node.output[0]
    kinds = [n.op_type for n in steps]
    if kinds not in (["Mul", "Add", "Sigmoid"], ["Mul", "Add", "Sigmoid", "Reshape"]):
        raise ValueError(f"served graph {kinds} after the trees: not a Platt calibration")
    mul, add = steps[0], steps[1]
    a, b = (consts.get(n.input[1]) for n in (mul, add))
    if a is None or b is None or a.size != 1 or b.size != 1:
        raise ValueError("served graph: the calibration's constants are not scalars")
    return ensemble, np.float32(a.reshape(-1)[0]), np.float32(b.reshape(-1)[0])


def _attr(attr: Any) -> Any:
    """An ONNX attribute's value."""
    from onnx import helper

    return helper.get_attribute_value(attr)


def _sub_ensemble(model: Any, ensemble: Any, trees: np.ndarray, n_features: int) -> Any:
    """A graph of ``ensemble``'s ``trees`` alone (in their order), output their margin."""
    from onnx import TensorProto, helper

    attrs = {a.name: a for a in ensemble.attribute}
    node_tree = np.asarray(attrs["nodes_treeids"].ints, dtype=np.int64)
    leaf_tree = np.asarray(attrs["target_treeids"].ints, dtype=np.int64)
    kept: dict[str, Any] = {}
    for name, attr in attrs.items():
        if name.startswith("nodes_"):
            mask = np.isin(node_tree, trees)
        elif name.startswith("target_"):
            mask = np.isin(leaf_tree, trees)
        else:
            continue
        values = _attr(attr)
        kept[name] = [v for v, m in zip(values, mask.tolist(), strict=True) if m]
    node = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT_NAME],
        ["margin"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        **kept,
    )
    graph = helper.make_graph(
        [node],
        "liverec_tree_group",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("margin", TensorProto.FLOAT, [None, 1])],
    )
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    return sub


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 values as integers in the same order (IEEE bits, signed, with a negative
    value's other bits flipped), NaN outside the infinities."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.int32)
    # The usual trick on the signed bits: a negative float's other 31 bits flipped.
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)


def as_regression(model_text: str) -> str:
    """A LightGBM model text read as a regression: the same trees, whose converted ONNX
    ensemble then yields the raw sum of leaf values (the margin) with no link function."""
    text = re.sub(r"^objective=.*$", "objective=regression", model_text, count=1, flags=re.M)
    return re.sub(r"^\[objective: .*\]$", "[objective: regression]", text, flags=re.M)


class _LeafReader:
    """Leaf indices by ONNX Runtime: what ``Booster.predict(pred_leaf=True)`` returns.

    The booster's trees are converted as the served graph is (``training.export``), with
    every leaf's value replaced by its index and each tree given its own output: one
    ``TreeEnsembleRegressor`` whose output ``t`` is the leaf row reaches in tree ``t``.
    It takes the served graph's branches (the same float32 thresholds and missing-value
    rules; :meth:`ServedModel.explainer` checks it against LightGBM on the parity
    sample) and, measured in a RankProducts call, costs about half of LightGBM's own
    leaf prediction, whose per-call set-up dominates on ten rows. Safe from several
    threads, like any ONNX Runtime session.
    """

    def __init__(self, booster: Any, n_trees: int, n_features: int) -> None:
        import lightgbm as lgb
        from onnx import TensorProto, helper
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        def indices(match: re.Match[str]) -> str:
            return "leaf_value=" + " ".join(f"{i}.0" for i in range(len(match.group(1).split())))

        text = re.sub(
            r"^leaf_value=(.*)$", indices, as_regression(booster.model_to_string()), flags=re.M
        )
        # Leaf values changed length in text; without the index LightGBM reads in sequence.
        text = re.sub(r"^tree_sizes=.*\n", "", text, count=1, flags=re.M)
        model = convert_lightgbm(
            lgb.Booster(model_str=text),
            name="liverec_leaves",
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            zipmap=False,
        )
        (ensemble,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor"]
        attrs = {a.name: a for a in ensemble.attribute}
        trees = list(attrs["target_treeids"].ints)
        del attrs["target_ids"].ints[:]
        attrs["target_ids"].ints.extend(trees)  # each tree adds to its own output
        attrs["n_targets"].i = n_trees
        if set(trees) != set(range(n_trees)):
            raise ValueError(f"leaf graph has {len(set(trees))} trees, the booster {n_trees}")
        del model.graph.node[:]
        model.graph.node.append(ensemble)
        del model.graph.output[:]
        model.graph.output.append(
            helper.make_tensor_value_info(ensemble.output[0], TensorProto.FLOAT, [None, n_trees])
        )
        self._output = ensemble.output[0]
        #: The graph run, whose splits :class:`BranchKeys` must key too.
        self.graph = model
        self._session = _session(model.SerializeToString(), 1)
        self._n_features = n_features

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self._n_features:
            raise ValueError(f"expected (n, {self._n_features}) features, got {X.shape}")
        return _in_parts(self._run, X, BULK_LEAF_ROWS)

    def _run(self, X: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([self._output], {INPUT_NAME: X})
        return np.asarray(out).astype(np.int64)  # indices < 2**24: exact in float32


def _session(model: Path | bytes, threads: int) -> Any:
    """An ONNX Runtime session on the CPU, from a file or a serialized graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )


def _node_value(node: dict[str, Any]) -> float:
    return float(node["leaf_value"] if "leaf_value" in node else node["internal_value"])
