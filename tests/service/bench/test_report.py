"""The report's verdicts and derived rows, from a hand-made result."""

from __future__ import annotations

from typing import Any

from service.bench import report
from service.bench.calibrate import machine_speed


def _run(p50: float, p99: float, cpu_ms: float, rate: int) -> dict[str, Any]:
    return {
        "rate": rate,
        "channels": 4,
        "errors": {},
        "latency": {"n": 1000, "p50_ms": p50, "p99_ms": p99, "p999_ms": None},
        "cpu": {"client_cores": 0.1, "server_cores": 0.5, "other_cores": 0.0, "shared_core": False},
        "server_cpu_ms_per_call": cpu_ms,
    }


def _result() -> dict[str, Any]:
    return {
        "config": {"budget_rate": 500},
        "rank": {
            "1": {
                "rates": {"100": _run(1.2, 3.0, 1.4, 100), "500": _run(1.4, 3.5, 1.1, 500)},
                "floor": {"100": _run(0.5, 1.0, 0.6, 100), "500": _run(0.45, 1.0, 0.5, 500)},
                "max_rate_p99_under_ms": {"ceiling_ms": 10.0, "rate": None},
            }
        },
        "machine": {
            "start": {"python_loop_ms": 17.0, "numpy_small_us": 5.0},
            "end": {"python_loop_ms": 19.0, "numpy_small_us": 5.5},
        },
    }


def _by_name(rows: list[report.Row]) -> dict[str, report.Row]:
    return {r.name: r for r in rows}


def test_budget_verdicts_and_the_cpu_floor() -> None:
    rows = _by_name(report.rows(_result()))
    assert rows["RankProducts(50) p50 @500/s"].verdict == "PASS"
    assert rows["RankProducts(50) p99 @500/s"].verdict == "PASS"
    assert rows["LiveRec / floor (p50, same rate)"].value == "3.11x"
    assert rows["LiveRec / floor (p50, same rate)"].verdict == "FAIL"
    # CPU is judged where the server keeps up (the lowest rate), beside the floor there.
    cpu = rows["server CPU per RankProducts call"]
    assert cpu.value.startswith("1.400 ms") and cpu.verdict == "FAIL"
    floor = rows["server CPU per empty call (floor)"]
    assert floor.value == "0.600 ms"
    assert "RankProducts over the floor: 0.800 ms" in floor.note


def test_a_search_below_the_fixed_rates_does_not_move_the_cpu_verdict() -> None:
    """On a slow day the rate search tries rates below the lowest fixed one; CPU per call
    is still judged at the lowest fixed rate, beside the floor measured there."""
    r = _result()
    r["rank"]["1"]["rates"]["50"] = _run(5.0, 12.0, 2.9, 50)
    rows = _by_name(report.rows(r))
    cpu = rows["server CPU per RankProducts call"]
    assert cpu.value.startswith("1.400 ms") and "measured @100/s" in cpu.note
    assert rows["server CPU per empty call (floor)"].value == "0.600 ms"


def test_machine_speed_is_reported_from_start_to_end() -> None:
    row = _by_name(report.rows(_result()))["machine speed (calibration, lower is faster)"]
    assert row.value == (
        "python loop 17.0 ms, numpy step 5.00 µs -> python loop 19.0 ms, numpy step 5.50 µs"
    )


def test_the_hypervisors_share_of_the_run_is_reported_beside_the_speed() -> None:
    r = _result()
    row = _by_name(report.rows(r))["machine speed (calibration, lower is faster)"]
    assert "steal" not in row.note  # runs from before it was measured
    r["machine"]["stolen_share"] = 0.23
    row = _by_name(report.rows(r))["machine speed (calibration, lower is faster)"]
    assert "the hypervisor took 23% of all CPU time during the run (steal)" in row.note


def test_machine_speed_measures_both_workloads() -> None:
    speed = machine_speed(repeat=1)
    assert set(speed) == {"python_loop_ms", "numpy_small_us"}
    assert all(v > 0 for v in speed.values())


def test_the_viewers_in_turn_run_has_its_row() -> None:
    r = _result()
    r["rank"]["1"]["viewers_in_turn"] = {**_run(2.0, 6.0, 1.3, 500), "viewers": 2000}
    row = _by_name(report.rows(r))["RankProducts(50) 1w @500/s, 2,000 viewers in turn"]
    assert row.value.startswith("p50 2.00 ms p99 6.00 ms")
    assert "server CPU per call 1.30 ms" in row.note
    assert row.verdict == ""  # information beside the budget rows, which stay as they were


def _room_run(p50: float, p99: float, scored: float, looked_up: float) -> dict[str, Any]:
    return {
        "errors": {},
        "latency": {"n": 100, "p50_ms": p50, "p99_ms": p99, "max_ms": p99 + 1},
        "cpu": {"server_cores": 1.5, "wall_s": 4.0},
        "rows": {
            "liverec-next-product/room/scored": scored,
            "liverec-next-product/room/looked_up": looked_up,
            "liverec-next-product/rows/scored": 7.0,  # RankProducts' rows: not these
        },
    }


def test_recommend_next_product_is_judged_with_the_room_acting_beside_nothing_kept() -> None:
    r = _result()
    warm = {**_room_run(40.0, 80.0, 9_000.0, 171_000.0), "viewers_present": 2000}
    warm |= {"fallback": False, "events": {"events": 8000, "events_per_s": 1998.7}}
    # The (row, group of trees) pairs, from liverec_model_row_groups_total.
    warm["rows"] |= {
        "liverec-next-product/room_groups/scored": 26_000.0,
        "liverec-next-product/room_groups/looked_up": 2_314_000.0,
    }
    warm["nothing_kept"] = _room_run(90.0, 120.0, 1_800_000.0, 0.0)
    r["room"] = {"next_product": warm}
    rows = _by_name(report.rows(r))
    row = rows["RecommendNextProduct(2000 x 30) p99, one at a time, the room's viewers acting"]
    assert row.verdict == "PASS" and row.value.startswith("80.00 ms (p50 40.00 ms")
    assert "1,999 events/s into the room" in row.note
    assert "5.0% of its rows scored (1.1% of its (row, group of trees) pairs), the rest" in (
        row.note
    )
    assert "server CPU 60.0 ms a call (the events' ingestion included)" in row.note
    cold = rows["  the same, nothing kept (candidates reordered every call)"]
    assert cold.value.startswith("120 ms (p50 90.00 ms") and cold.verdict == ""
    assert "every row scored" in cold.note
    # Without a room grid kept (keeping off), it says so; a slow p99 fails the budget.
    warm |= _room_run(60.0, 130.0, 0.0, 0.0)
    row = _by_name(report.rows(r))[
        "RecommendNextProduct(2000 x 30) p99, one at a time, the room's viewers acting"
    ]
    assert row.verdict == "FAIL" and "no room grid kept" in row.note
    # The events that failed, and counts that could not be read, are said.
    warm["events"] = {"error": "RpcError(UNAVAILABLE)"}
    del warm["rows"]
    row = _by_name(report.rows(r))[
        "RecommendNextProduct(2000 x 30) p99, one at a time, the room's viewers acting"
    ]
    assert "the events failed: RpcError(UNAVAILABLE)" in row.note
    assert "rows unknown (/metrics not read)" in row.note


def test_ingestion_and_scoring_together_have_a_row_per_deployment() -> None:
    r = _result()
    r["ingest"] = {
        "combined": {"rank": _run(950.0, 1900.0, 1.5, 500), "ingest": {"events_per_s": 9000}},
        "combined_2_workers": {
            "rank": _run(3.0, 12.0, 1.6, 500),
            "ingest": {"events_per_s": 9800},
        },
    }
    rows = _by_name(report.rows(r))
    one = rows["ingest + RankProducts together, 1 worker (no verdict)"]
    two = rows["ingest + RankProducts together, 2 workers (no verdict)"]
    assert one.value == "rank p50 950 ms p99 1900 ms @500/s; ingest 9,000 ev/s"
    assert two.value == "rank p50 3.00 ms p99 12.00 ms @500/s; ingest 9,800 ev/s"
    assert "server 0.50" in two.note
    del r["ingest"]["combined_2_workers"]  # a run whose second server failed
    r["ingest"]["combined_2_workers_failed"] = "TimeoutError: no answer"
    rows = _by_name(report.rows(r))
    assert "ingest + RankProducts together, 2 workers (no verdict)" not in rows
    failed = rows["ingest + RankProducts together, 2 workers"]
    assert failed.value == "n/a (failed: TimeoutError: no answer)"


def test_the_stage_table_shows_each_stage_alone_and_in_sequence() -> None:
    r = _result()
    r["profile"] = {
        "7 ONNX predict (50 rows)": {"p50_us": 38.0, "p99_us": 56.0, "seq_p50_us": 115.0},
        "1 protobuf parse (request)": {"p50_us": 1.0, "p99_us": 1.0},
        "sum of stages 2-11 run in sequence, per call": {"seq_p50_us": 640.0},
    }
    lines = report.profile_markdown(r).splitlines()
    assert "| stage | p50 µs | p99 µs | p50 µs in a call's sequence |" in lines
    assert "| 7 ONNX predict (50 rows) | 38 | 56 | 115 |" in lines
    assert "| 1 protobuf parse (request) | 1 | 1 |  |" in lines
    assert "| sum of stages 2-11 run in sequence, per call |  |  | 640 |" in lines


def test_the_cpu_rows_say_which_threads_spent_it() -> None:
    r = _result()
    suite = r["rank"]["1"]
    suite["rates"]["100"]["server_cpu_ms_per_call_by_thread"] = {
        "main": 1.25,
        "event_engine": 0.125,
        "python": 0.001,  # under 0.005 ms: left out
    }
    suite["rates"]["500"]["server_cpu_ms_per_call_by_thread"] = {"main": 1.0, "event_engine": 0.1}
    suite["floor"]["100"]["server_cpu_ms_per_call_by_thread"] = {"main": 0.45, "event_engine": 0.15}
    rows = _by_name(report.rows(r))
    note = rows["server CPU per RankProducts call"].note
    assert note.endswith(
        "; by thread @100/s: main 1.25, event_engine 0.12 ms"
        " (@500/s: main 1.00, event_engine 0.10 ms)"
    )
    floor = rows["server CPU per empty call (floor)"].note
    assert floor.endswith("; by thread @100/s: main 0.45, event_engine 0.15 ms")
    # Results without the split (older runs) keep their notes as they were.
    plain = _by_name(report.rows(_result()))["server CPU per RankProducts call"].note
    assert "by thread" not in plain
