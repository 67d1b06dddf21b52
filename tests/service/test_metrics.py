"""The per-call metrics: counted and timed by label values, children kept between calls.

The method names are this file's own: once ``feast.metrics`` has been imported,
prometheus_client keeps values in per-process files shared by every registry of the
process, so another test's calls of a real method would add to these counts.
"""

from __future__ import annotations

from service.domain import Flags
from service.metrics import Metrics


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_answered_calls_are_counted_and_timed_per_method_and_code() -> None:
    m = Metrics()
    m.answered("MetricsTestRank", "OK", 0.0012)
    m.answered("MetricsTestRank", "OK", 0.0030)
    m.answered("MetricsTestRank", "RESOURCE_EXHAUSTED")  # refused: counted, not timed
    m.answered("MetricsTestScore", "OK", 0.011)
    assert _value(m, "liverec_requests_total", method="MetricsTestRank", code="OK") == 2.0
    assert (
        _value(m, "liverec_requests_total", method="MetricsTestRank", code="RESOURCE_EXHAUSTED")
        == 1.0
    )
    assert _value(m, "liverec_request_seconds_count", method="MetricsTestRank") == 2.0
    assert _value(m, "liverec_request_seconds_sum", method="MetricsTestRank") == 0.0042
    assert _value(m, "liverec_request_seconds_bucket", method="MetricsTestRank", le="0.002") == 1.0
    assert _value(m, "liverec_request_seconds_count", method="MetricsTestScore") == 1.0
    # The kept children are the registry's own: labels() hands back the same objects.
    kept = m._children
    assert kept[m.requests, ("MetricsTestRank", "OK")] is m.requests.labels("MetricsTestRank", "OK")
    assert kept[m.latency, ("MetricsTestRank",)] is m.latency.labels("MetricsTestRank")


def test_degraded_answers_are_counted_per_flag() -> None:
    m = Metrics()
    m.flags("MetricsTestRank", Flags(cold_start=True, stale_features=True))
    m.flags("MetricsTestRank", Flags(cold_start=True))
    m.flags("MetricsTestRank", Flags())
    count = "liverec_degraded_answers_total"
    assert _value(m, count, method="MetricsTestRank", flag="cold_start") == 2.0
    assert _value(m, count, method="MetricsTestRank", flag="stale_features") == 1.0
    assert _value(m, count, method="MetricsTestRank", flag="fallback") is None
