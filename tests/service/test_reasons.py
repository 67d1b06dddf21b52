"""The formatted-reason cache of :mod:`service.reasons`: what it keeps, and what it costs
the cyclic garbage collector (scoring's other reason tests are in ``test_scoring``)."""

from __future__ import annotations

import gc
from collections.abc import Sequence

import numpy as np
import pytest

from features.vector import CONVERSION
from service import reasons
from service.generations import Generations
from service.reasons import explain_rows


def _rows(columns: Sequence[str], values: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    n = len(next(iter(values.values())))
    X = np.zeros((n, len(columns)), dtype=np.float32)
    contrib = np.zeros((n, len(columns)))
    for k, (feature, vs) in enumerate(values.items()):
        X[:, columns.index(feature)] = vs
        contrib[:, columns.index(feature)] = 1.0 - 0.1 * k
    return X, contrib


@pytest.fixture
def empty_cache() -> None:
    reasons._DESCRIBED.clear()
    reasons._ARGS.clear()


def test_missing_values_are_described_without_growing_the_cache(empty_cache: None) -> None:
    columns = CONVERSION.columns
    # NaN never equals itself: a cache keyed by it would add an entry on every call.
    X, contrib = _rows(columns, {"since_click_min": [np.nan] * 50, "carts": [1.0] * 50})
    for _ in range(3):
        got = explain_rows(columns, X, contrib, 2)
    assert len(reasons._DESCRIBED.young) == 1  # carts = 1, once
    assert [r.code for r in got[0]] == ["NO_CLICK_YET", "ADDED_TO_CART"]
    assert got[0][0].args == {} and got[0][1].args == {"count": "1"}


def test_kept_descriptions_are_not_tracked_by_the_garbage_collector(empty_cache: None) -> None:
    columns = CONVERSION.columns
    X, contrib = _rows(
        columns,
        {"avg_dwell_min": [float(i) + 0.5 for i in range(200)], "carts": [2.0] * 200},
    )
    first = explain_rows(columns, X, contrib, 2)
    gc.collect()
    assert len(reasons._DESCRIBED.young) == len(reasons._ARGS.young) == 201
    kept = [*reasons._DESCRIBED.young.items(), *reasons._ARGS.young.items()]
    assert [k for k, v in kept if gc.is_tracked(k) or gc.is_tracked(v)] == []
    assert explain_rows(columns, X, contrib, 2) == first  # and answered from them


def test_the_cache_forgets_the_oldest_beyond_its_size(
    empty_cache: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reasons, "_DESCRIBED", Generations(8))
    monkeypatch.setattr(reasons, "_ARGS", Generations(8))
    columns = CONVERSION.columns
    X, contrib = _rows(columns, {"avg_dwell_min": [float(i) for i in range(20)]})
    explain_rows(columns, X, contrib, 1)
    # Two generations of four: the last eight values, the older four in the old one.
    assert [v for _, v in reasons._DESCRIBED.old] == [12.0, 13.0, 14.0, 15.0]
    assert [v for _, v in reasons._DESCRIBED.young] == [16.0, 17.0, 18.0, 19.0]
    assert reasons._ARGS.young.keys() == reasons._DESCRIBED.young.keys()
    assert reasons._ARGS.old.keys() == reasons._DESCRIBED.old.keys()
    # A value of the old generation is not described again: it moves to the young one
    # (which, full, turns: the old generation is now what was young).
    calls: list[tuple[str, float]] = []
    describe = reasons._describe

    def counted(feature: str, value: float) -> tuple[str, dict[str, str], str]:
        calls.append((feature, value))
        return describe(feature, value)

    monkeypatch.setattr(reasons, "_describe", counted)
    again = _rows(columns, {"avg_dwell_min": [13.0]})
    assert explain_rows(columns, *again, 1)[0][0].args == {
        "feature": "avg_dwell_min",
        "value": "13",
    }
    assert calls == []
    assert [v for _, v in reasons._DESCRIBED.young] == [13.0]
    assert [v for _, v in reasons._DESCRIBED.old] == [16.0, 17.0, 18.0, 19.0]


def test_a_rooms_reasons_read_each_column_over_the_viewers_present() -> None:
    """explain_room reads only the columns it gives reasons of (one value per viewer
    present): counts for count-like features, means for the others, strongest first."""
    columns = ["carts", "price_usd", "tenure_days", "likes"]
    values = {
        "carts": np.array([1.0, 0.0, 2.0, np.nan], dtype=np.float32),
        "price_usd": np.full(4, 20.0, dtype=np.float32),
        "tenure_days": np.array([10.0, 30.0, np.nan, 20.0], dtype=np.float32),
        "likes": np.zeros(4, dtype=np.float32),
    }
    read: list[int] = []

    def column(j: int) -> np.ndarray:
        read.append(j)
        return values[columns[j]]

    contrib = np.array([[0.5, -2.0, 0.25, 0.0]])
    got = reasons.explain_room(columns, column, 4, contrib, 3)
    assert [r.weight for r in got] == [-2.0, 0.5, 0.25]
    assert sorted(read) == [0, 1, 2]  # the column that gives no reason is not read
    carts = got[1]
    assert carts.code == "MANY_ADDED_TO_CART" and carts.args == {"viewers": "2", "present": "4"}
    assert got[0].text.startswith("on average: ") and got[2].text.startswith("on average: ")
    assert reasons.explain_room(columns, column, 0, contrib, 3) == []
    assert reasons.explain_room(columns, column, 4, None, 3) == []
