"""ONNX export of a calibrated LightGBM model, and the parity gate that guards it.

The graph is the whole served model: the trees are converted as a *regressor*
(so the ensemble outputs the raw margin rather than a sigmoid of it), then one
``Mul``/``Add`` pair and a ``Sigmoid`` apply the Platt calibrator. The gate runs
ONNX Runtime and LightGBM (+ the same calibrator) on a whole test set, NaN rows
included, and refuses the export when any probability differs by more than
:data:`~features.served_model.PARITY_TOLERANCE` or any group's ranking differs.

``python -m training.export --help`` re-checks a served directory against rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import onnx
import typer
from onnx import TensorProto, helper

from features.served_model import (
    BOOSTER_FILE,
    CALIBRATOR_FILE,
    INPUT_NAME,
    MODEL_FILE,
    OUTPUT_NAME,
    PARITY_FILE,
    PARITY_TOLERANCE,
    SPEC_FILE,
    ServedModel,
    apply_calibrator,
    as_regression,
)
from features.session_sim import EXPOSURE_WINDOW_MIN

#: Rows kept in parity.npz for serving's own pre-swap check.
PARITY_SAMPLE = 300


def float32_thresholds(booster: Any) -> Any:
    """The same booster with every split threshold rounded down to a float32 value.

    LightGBM compares in double against thresholds between two float32 feature
    values; ONNX's tree ensemble stores float32 thresholds, and rounding one *up*
    onto the next feature value sends that value the other way. For float32
    inputs, ``x <= t`` and ``x <= float32_floor(t)`` are the same test, so after
    this both runtimes take the same branch on every input LiveRec feeds them.
    """
    import lightgbm as lgb

    def floor32(match: re.Match[str]) -> str:
        values = np.array(match.group(1).split(), dtype=np.float64)
        f = values.astype(np.float32)
        up = f.astype(np.float64) > values
        f[up] = np.nextafter(f[up], np.float32(-np.inf))
        return "threshold=" + " ".join(repr(float(v)) for v in f.astype(np.float64))

    text = re.sub(r"^threshold=(.*)$", floor32, booster.model_to_string(), flags=re.M)
    # Tree byte sizes changed; without the index LightGBM reads the trees in sequence.
    text = re.sub(r"^tree_sizes=.*\n", "", text, count=1, flags=re.M)
    return lgb.Booster(model_str=text)


def to_onnx(booster: Any, calibrator: dict[str, Any], n_features: int) -> onnx.ModelProto:
    """Trees -> margin -> ``sigmoid(a * margin + b)``, input ``input``, output ``probability``."""
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    # Same trees, read as a regression: the converted ensemble then yields the margin.
    margin_model = lgb.Booster(model_str=as_regression(booster.model_to_string()))
    model = convert_lightgbm(
        margin_model,
        name="liverec",
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        zipmap=False,
    )
    graph = model.graph
    (margin_out,) = [o.name for o in graph.output]
    a = helper.make_tensor("platt_a", TensorProto.FLOAT, [], [float(calibrator["a"])])
    b = helper.make_tensor("platt_b", TensorProto.FLOAT, [], [float(calibrator["b"])])
    shape = helper.make_tensor("flat_shape", TensorProto.INT64, [1], [-1])
    graph.initializer.extend([a, b, shape])
    graph.node.extend(
        [
            helper.make_node("Mul", [margin_out, "platt_a"], ["platt_scaled"], name="platt_mul"),
            helper.make_node("Add", ["platt_scaled", "platt_b"], ["platt_z"], name="platt_add"),
            helper.make_node("Sigmoid", ["platt_z"], ["platt_p"], name="platt_sigmoid"),
            helper.make_node("Reshape", ["platt_p", "flat_shape"], [OUTPUT_NAME], name="flat"),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None]))
    onnx.checker.check_model(model)
    return model


@dataclass
class Parity:
    """What the gate found; ``ok`` decides whether the model may be registered."""

    ok: bool
    max_abs_diff: float
    rows: int
    nan_rows: int
    groups: int
    misordered_groups: int
    reason: str

    def as_metrics(self) -> dict[str, float]:
        return {
            "parity_max_abs_diff": self.max_abs_diff,
            "parity_rows": float(self.rows),
            "parity_nan_rows": float(self.nan_rows),
            "parity_misordered_groups": float(self.misordered_groups),
        }


def misordered_groups(
    got: np.ndarray,
    expected: np.ndarray,
    groups: np.ndarray,
    tie_keys: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> int:
    """Groups whose ONNX ranking differs from LightGBM's beyond near-ties.

    Rows are ranked by ONNX score, ties broken by ``tie_keys`` (product_id). A group
    is misordered when, along that ranking, some row has a LightGBM score above an
    earlier row's by more than ``tolerance``: that pair is truly swapped, not merely a
    float32 near-tie.
    """
    order = np.lexsort((tie_keys, -got.astype(np.float64), groups))
    g, ref = groups[order], expected[order]
    bad: set[Any] = set()
    start = 0
    n = len(order)
    while start < n:
        end = start
        while end < n and g[end] == g[start]:
            end += 1
        running_min = np.minimum.accumulate(ref[start:end])
        if end - start > 1 and np.any(ref[start + 1 : end] - running_min[:-1] > tolerance):
            bad.add(g[start])
        start = end
    return len(bad)


def parity_gate(
    model: ServedModel,
    X: np.ndarray,
    groups: np.ndarray,
    tie_keys: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> Parity:
    """Compare ONNX Runtime with LightGBM + calibrator on every row of ``X``."""
    got = model.predict(X).astype(np.float64)
    expected = model.reference(X)
    diff = float(np.max(np.abs(got - expected))) if len(X) else 0.0
    bad = misordered_groups(got, expected, groups, tie_keys, tolerance)
    nan_rows = int(np.isnan(X).any(axis=1).sum())
    reasons = []
    if not np.isfinite(diff) or diff > tolerance:
        reasons.append(f"max |ONNX - LightGBM| = {diff:.3g} > {tolerance:g}")
    if bad:
        reasons.append(f"{bad} group(s) ranked differently")
    if nan_rows == 0:
        reasons.append("no row with NaN was checked")
    return Parity(
        ok=not reasons,
        max_abs_diff=diff,
        rows=len(X),
        nan_rows=nan_rows,
        groups=len(np.unique(groups)),
        misordered_groups=bad,
        reason="; ".join(reasons) or "ok",
    )


def served_spec(trained: Any, ts: Any) -> dict[str, Any]:
    """spec.json: what serving needs to build the input and to know what it runs."""
    return {
        "model": trained.spec.name,
        "feature_service": trained.spec.feature_service,
        "columns": list(trained.spec.columns),
        "exposure_window_min": EXPOSURE_WINDOW_MIN,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "calibrated": True,
        "trees": trained.best_iteration,
        "fingerprint": ts.fingerprint(),
    }


def write_served(
    directory: Path,
    booster: Any,
    calibrator: dict[str, Any],
    spec: dict[str, Any],
    sample: np.ndarray,
) -> Path:
    """Write the served artifact directory (layout: :mod:`features.served_model`).

    Thresholds are snapped to float32 here too (idempotent), so a booster from
    anywhere gets an ONNX graph that takes the same branches as ``booster.txt``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    booster = float32_thresholds(booster)
    n_features = len(spec["columns"])
    onnx.save(to_onnx(booster, calibrator, n_features), directory / MODEL_FILE)
    (directory / CALIBRATOR_FILE).write_text(json.dumps(calibrator, indent=2))
    (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    booster.save_model(str(directory / BOOSTER_FILE))
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    expected = apply_calibrator(calibrator, booster.predict(sample, raw_score=True))
    np.savez_compressed(directory / PARITY_FILE, X=sample, expected=expected)
    return directory


def parity_sample(X: np.ndarray, rng: np.random.Generator, size: int = PARITY_SAMPLE) -> np.ndarray:
    """A few hundred rows, at least a third with NaN where such rows exist."""
    has_nan = np.flatnonzero(np.isnan(X).any(axis=1))
    no_nan = np.flatnonzero(~np.isnan(X).any(axis=1))
    k_nan = min(len(has_nan), max(size // 3, size - len(no_nan)))
    pick = np.concatenate(
        [
            rng.choice(has_nan, k_nan, replace=False) if k_nan else has_nan[:0],
            rng.choice(no_nan, min(len(no_nan), size - k_nan), replace=False),
        ]
    )
    out = X[np.sort(pick)].copy()
    if len(out) and not np.isnan(out).any():
        # Serving must see NaN handled too: blank one feature of a copy of a few rows.
        extra = out[: min(10, len(out))].copy()
        extra[:, 0] = np.nan
        out = np.vstack([out, extra])
    return out


app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


@app.command()
def check(
    directory: Annotated[Path, typer.Argument(help="A served artifact directory.")],
) -> None:
    """Re-run a served directory's parity sample through ONNX Runtime."""
    model = ServedModel.load(directory)
    diff = model.check_parity()
    typer.echo(f"{model.name}: parity ok, max abs diff {diff:.2e}")


if __name__ == "__main__":
    app()
