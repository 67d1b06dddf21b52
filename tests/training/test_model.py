"""Behaviour guaranteed by monotone constraints, checked on the served (ONNX) models."""

from __future__ import annotations

import numpy as np
import pytest

from features.schema import REGIONS
from features.served_model import ServedModel
from features.vector import CONVERSION, NEXT_PRODUCT, ModelSpec
from tests.training.conftest import Trained
from training import data
from training.train import train_model


def _served(trained: Trained, model: str, tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    from features.served_model import download_served
    from training import register

    tmp = tmp_path_factory.mktemp(model)
    path = download_served(register.REGISTERED[model], "champion", tmp, trained.tracking_uri)
    return ServedModel.load(path)


def test_monotone_constraints_declared_in_the_spec() -> None:
    up = dict(zip(CONVERSION.columns, CONVERSION.monotone_constraints(), strict=True))
    assert up["carts"] == up["funnel_step"] == up["cart_size"] == 1
    np_c = dict(zip(NEXT_PRODUCT.columns, NEXT_PRODUCT.monotone_constraints(), strict=True))
    assert np_c["noncompliant_for_mena"] == -1 and np_c["mena_compliant"] == 1


def test_adding_to_cart_raises_the_conversion_score(
    trained: Trained,
    conversion_set: data.TrainingSet,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model = _served(trained, "conversion", tmp_path_factory)
    X = conversion_set.matrix()
    col = {c: i for i, c in enumerate(CONVERSION.columns)}
    arrived = X[(X[:, col["carts"]] == 0) & (X[:, col["funnel_step"]] == 0)]
    assert len(arrived) > 100
    carted = arrived.copy()
    carted[:, col["carts"]] = 1
    carted[:, col["cart_size"]] = 1
    carted[:, col["funnel_step"]] = 2
    p_arrived, p_carted = model.predict(arrived), model.predict(carted)
    assert np.all(p_carted >= p_arrived), "monotone constraint on the funnel broken"
    assert p_carted.mean() > p_arrived.mean() * 1.5, "adding to cart should matter a lot"


class _Unconstrained(ModelSpec):
    def monotone_constraints(self) -> list[int]:
        return [0] * len(self.columns)


def _mena_pairs(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MENA viewers' rows with the product made compliant, and made non-compliant."""
    col = {c: i for i, c in enumerate(NEXT_PRODUCT.columns)}
    mena = X[X[:, col["region"]] == REGIONS.index("MENA")]
    compliant, noncompliant = mena.copy(), mena.copy()
    compliant[:, col["mena_compliant"]] = 1
    compliant[:, col["noncompliant_for_mena"]] = 0
    noncompliant[:, col["mena_compliant"]] = 0
    noncompliant[:, col["noncompliant_for_mena"]] = 1
    return compliant, noncompliant


def test_mena_viewer_never_scores_a_noncompliant_product_higher(
    trained: Trained,
    next_product_set: data.TrainingSet,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model = _served(trained, "next_product", tmp_path_factory)
    compliant, noncompliant = _mena_pairs(next_product_set.matrix())
    assert len(compliant) > 100
    assert np.all(model.predict(noncompliant) <= model.predict(compliant))


def test_compliance_constraint_holds_even_against_the_data(
    next_product_set: data.TrainingSet,
) -> None:
    """Labels that reward non-compliant products for MENA viewers cannot flip the order.

    The same labels without the constraints do flip it, so this check has teeth.
    """
    ts = next_product_set
    X = ts.matrix()
    col = {c: i for i, c in enumerate(NEXT_PRODUCT.columns)}
    rng = np.random.default_rng(3)
    lure = X[:, col["noncompliant_for_mena"]] == 1
    assert lure.sum() >= 20, "the tiny world needs MENA exposures to non-compliant products"
    labels = np.where(lure & (rng.random(len(X)) < 0.5), 1.0, ts.y)
    constrained = train_model(ts, NEXT_PRODUCT, label=labels)
    free = train_model(
        ts,
        _Unconstrained("free", NEXT_PRODUCT.feature_service, NEXT_PRODUCT.columns),
        label=labels,
    )
    compliant, noncompliant = _mena_pairs(X)
    assert np.all(constrained.predict(noncompliant) <= constrained.predict(compliant) + 1e-12)
    assert np.mean(free.predict(noncompliant) > free.predict(compliant)) > 0.5
