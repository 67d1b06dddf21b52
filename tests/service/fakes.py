"""Test doubles for the server plumbing: a linear model, a model source, store readers.

The real path (``features.served_model.ServedModel`` over ONNX artifacts from
MLflow) is what ``liverec serve`` composes; these doubles implement the same
small interfaces so the server can be tested before (and independently of) a
trained model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.feast_reader import OnlineReader, Row
from service.models import SPECS
from service.settings import CONVERSION_MODEL, NEXT_PRODUCT_MODEL

WEIGHTS: dict[str, dict[str, float]] = {
    CONVERSION_MODEL: {
        "carts": 1.5,
        "checkouts": 2.0,
        "chat_shipping": 0.4,
        "dwell_min": 0.02,
        "order_count": 0.3,
    },
    NEXT_PRODUCT_MODEL: {
        "purchase_rate": 20.0,
        "in_cart": 2.0,
        "affinity_to_category": 1.0,
        "discount_x_sea": 2.0,
        "carts": 1.0,
    },
}


class LinearModel:
    """Logistic model over a few named columns; NaN counts as 0."""

    def __init__(self, columns: Sequence[str], weights: dict[str, float], bias: float) -> None:
        self.w = np.array([weights.get(c, 0.0) for c in columns])
        self.bias = bias

    @classmethod
    def load(cls, directory: Path) -> LinearModel:
        spec = json.loads((directory / "fake.json").read_text())
        if spec.get("broken_load"):
            raise RuntimeError("corrupt model file")
        return cls(spec["columns"], spec["weights"], spec["bias"])

    def _contrib(self, X: np.ndarray) -> np.ndarray:
        return np.nan_to_num(X.astype(np.float64)) * self.w

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.bias + self._contrib(X).sum(axis=1)
        return 1.0 / (1.0 + np.exp(-z))

    def explainer(self) -> _Explainer:
        """Like ``ServedModel.explainer()``: exact per-feature contributions (log-odds)."""
        return _Explainer(self)


class _Explainer:
    def __init__(self, model: LinearModel) -> None:
        self.model = model
        self.bias = model.bias
        # Like PathExplainer.splits: how much the model tests each column (here its weight).
        self.splits = np.round(np.abs(model.w) * 100).astype(np.int64)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        return self.model._contrib(X)


def write_artifact(
    directory: Path, name: str, bias: float = -3.0, broken: str | None = None
) -> Path:
    """An artifact folder in the served layout; ``broken`` = "parity" or "load"."""
    directory.mkdir(parents=True, exist_ok=True)
    columns = list(SPECS[name].columns)
    spec = {"columns": columns, "weights": WEIGHTS[name], "bias": bias}
    (directory / "fake.json").write_text(json.dumps({**spec, "broken_load": broken == "load"}))
    (directory / "spec.json").write_text(json.dumps({"columns": columns}))
    (directory / "model.onnx").write_bytes(b"not a real onnx graph: see fake.json")
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 3, size=(16, len(columns))).astype(np.float32)
    X[0, :5] = np.nan
    expected = LinearModel(columns, WEIGHTS[name], bias).predict(X)
    if broken == "parity":
        expected = expected + 0.1
    np.savez(directory / "parity.npz", X=X, expected=expected)
    return directory


class FakeSource:
    """An in-memory registry: alias -> version -> artifact folder."""

    def __init__(self) -> None:
        self.alias: dict[str, str] = {}
        self.folders: dict[tuple[str, str], Path] = {}
        self.reachable = True

    def add(self, name: str, version: str, folder: Path, champion: bool = True) -> None:
        self.folders[(name, version)] = folder
        if champion:
            self.alias[name] = version

    def champion_version(self, name: str) -> str:
        if not self.reachable:
            raise ConnectionError("registry unreachable")
        return self.alias[name]

    def download(self, name: str, version: str, dst: Path) -> Path:
        if not self.reachable:
            raise ConnectionError("registry unreachable")
        return self.folders[(name, version)]


class GatedReader:
    """Wraps a reader; while ``gate`` is clear every read blocks (a slow or dead store)."""

    def __init__(self, inner: OnlineReader) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Semaphore(0)

    def read(self, view: str, keys: Sequence[tuple[str, ...]]) -> list[Row | None]:
        if not self.gate.is_set():
            self.waiting.release()
            self.gate.wait(30)
        return self.inner.read(view, keys)

    def present_viewers(self) -> dict[str, list[str]]:
        return self.inner.present_viewers()
