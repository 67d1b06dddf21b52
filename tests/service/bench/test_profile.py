"""The stage profile's timing of stages where they stand in a call."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.bench import profile


def test_each_stage_is_timed_in_its_place_in_the_sequence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    ran: list[str] = []
    monkeypatch.setattr(profile.time, "perf_counter", lambda: now[0])

    def step(name: str, cost_s: float) -> Callable[[], None]:
        def run() -> None:
            ran.append(name)
            now[0] += cost_s

        return run

    steps = [("a", step("a", 10e-6)), ("b", step("b", 30e-6)), ("c", step("c", 5e-6))]
    out = profile._in_sequence(steps, 20)
    assert out["a"]["seq_p50_us"] == pytest.approx(10.0)
    assert out["b"]["seq_p50_us"] == pytest.approx(30.0)
    assert out["c"]["seq_p50_us"] == pytest.approx(5.0)
    assert out[profile.SEQUENCE_SUM]["seq_p50_us"] == pytest.approx(45.0)
    # Every call runs the steps in order; the warm-up calls are run but not counted.
    assert ran[:6] == ["a", "b", "c", "a", "b", "c"]
    assert len(ran) == 3 * (20 + 5)


def test_the_sequence_is_the_served_calls_stages() -> None:
    # Stage 4 of the sequence reads in place, as the served path does, not through the pool.
    assert all(not name.startswith("4 ") for name in profile.SEQUENCE)
    assert [name.split()[0] for name in profile.SEQUENCE] == [
        "2", "3", "4d", "5", "6", "7", "8", "9", "10", "11",
    ]  # fmt: skip
