"""A trained model as serving runs it: one ONNX session, calibrated probabilities.

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

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


#: Batches at least this large (a room's grid) run on a session with BULK_THREADS threads.
BULK_ROWS = 8192
BULK_THREADS = min(2, os.cpu_count() or 1)
#: Below this many rows, contributions gather all (rows, trees, features) values at once.
_GATHER_ROWS = 64


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
        self._bulk: Any = None

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
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.columns):
            raise ValueError(f"expected (n, {len(self.columns)}) features, got {X.shape}")
        session = self._session
        if len(X) >= BULK_ROWS and BULK_THREADS > 1:
            # A whole room (thousands of viewers x candidates): one call, so use the cores.
            if self._bulk is None:
                self._bulk = _session(self.directory / MODEL_FILE, BULK_THREADS, spin=False)
            session = self._bulk
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: X})
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
            self._explainer = PathExplainer(self.booster())
        return self._explainer

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
        with np.load(self.directory / PARITY_FILE) as parity:
            X, expected = parity["X"], parity["expected"]
        got = self.predict(X).astype(np.float64)
        diff = float(np.max(np.abs(got - expected))) if len(X) else 0.0
        if not np.isfinite(diff) or diff > tolerance:
            raise ParityError(
                f"{self.name}: ONNX differs from LightGBM+calibrator by {diff:.3g} "
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
    the path, that is one vector per leaf, so it is computed once at load:
    explaining a row is then one leaf lookup per tree and a sum, instead of
    TreeSHAP's cost per row (measured ~0.43 ms a row on the served models,
    half of a RankProducts call). Contributions plus :attr:`bias` add up to the
    raw margin exactly, like SHAP values do; the attribution per feature is the
    path one rather than the Shapley average, which is what reasons need.
    """

    def __init__(self, booster: Any) -> None:
        self._booster = booster
        dump = booster.dump_model()
        n_features = int(booster.num_feature())
        trees = dump["tree_info"]
        width = max(int(t["num_leaves"]) for t in trees)
        self.table = np.zeros((len(trees), width, n_features), dtype=np.float64)
        self.bias = 0.0
        for t, tree in enumerate(trees):
            root = tree["tree_structure"]
            self.bias += _node_value(root)
            stack = [(root, np.zeros(n_features))]
            while stack:
                node, acc = stack.pop()
                if "leaf_index" in node or "split_feature" not in node:
                    self.table[t, int(node.get("leaf_index", 0))] = acc
                    continue
                value = _node_value(node)
                for side in ("left_child", "right_child"):
                    child = node[side]
                    step = acc.copy()
                    step[int(node["split_feature"])] += _node_value(child) - value
                    stack.append((child, step))
        self._trees = np.arange(len(trees))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(rows, features) contributions in log-odds; ``.sum(1) + bias`` is the margin."""
        X = np.asarray(X, dtype=np.float32)
        leaves = self._booster.predict(X, pred_leaf=True, num_threads=1)
        leaves = np.asarray(leaves, dtype=np.int64).reshape(len(X), len(self._trees))
        if len(X) < _GATHER_ROWS:
            return self.table[self._trees[None, :], leaves].sum(axis=1)
        # Many rows: tree by tree into one (rows, features) sum instead of a (rows, trees,
        # features) gather; the same additions in the same order, so the same bits.
        out = self.table[0, leaves[:, 0]]
        for t in range(1, len(self._trees)):
            out += self.table[t, leaves[:, t]]
        return out

    def total(self, X: np.ndarray) -> np.ndarray:
        """(features,) contributions summed over the rows of ``X``.

        Counts how many rows reach each leaf and weighs the leaf vectors by
        them, so the cost grows with trees x leaves, not with rows x trees x
        features: what explaining one candidate over a whole room needs.
        """
        X = np.asarray(X, dtype=np.float32)
        if len(X) == 0:
            return np.zeros(self.table.shape[2])
        leaves = self._booster.predict(X, pred_leaf=True, num_threads=1)
        leaves = np.asarray(leaves, dtype=np.int64).reshape(len(X), len(self._trees))
        width = self.table.shape[1]
        flat = (self._trees[None, :] * width + leaves).ravel()
        counts = np.bincount(flat, minlength=len(self._trees) * width).astype(np.float64)
        return counts @ self.table.reshape(len(self._trees) * width, -1)


def _session(path: Path, threads: int, spin: bool = True) -> Any:
    """``spin=False`` for the bulk session: its threads sleep between calls instead of
    spinning, which on a shared machine (cores busy with other work) halved its speed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _node_value(node: dict[str, Any]) -> float:
    return float(node["leaf_value"] if "leaf_value" in node else node["internal_value"])
