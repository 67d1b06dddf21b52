"""The open-loop generator's scheduling and statistics (no clocks, no timing assertions)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from service.bench import grpcbench, loadgen, procstat
from service.bench.procstat import CpuWindow


def test_the_schedule_is_fixed_by_rate_and_duration_alone() -> None:
    due = loadgen.schedule(500, 2.0)
    assert len(due) == 1000
    assert due[0] == 0.0 and due[1] == pytest.approx(0.002)
    assert np.allclose(np.diff(due), 1 / 500)
    assert due[-1] < 2.0
    assert len(loadgen.schedule(3, 1.0)) == 3 and len(loadgen.schedule(3, 1.01)) == 4
    assert len(loadgen.schedule(0, 5.0)) == 0


def test_requests_go_round_robin_over_the_channels() -> None:
    assert [loadgen.channel_of(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_a_generator_that_fell_behind_sends_everything_overdue_never_skips() -> None:
    due = loadgen.schedule(100, 1.0)  # 0.00, 0.01, ...
    assert loadgen.due_now(due, 0, 0.0) == 1  # only the first is due at t=0
    assert loadgen.due_now(due, 1, 0.0095) == 1  # nothing new yet
    assert loadgen.due_now(due, 1, 0.0505) == 6  # a 40 ms stall: five at once
    assert loadgen.due_now(due, 100, 5.0) == 100  # done


def test_latency_counts_from_the_due_time_so_a_stall_shows() -> None:
    """A fake call that blocks the whole generator once: every request due during the stall
    is late, and the lateness is in its latency (no clock: a scripted perf_counter)."""

    now = [0.0]
    stalled = [False]

    async def call(channel: int) -> None:
        return None

    async def sleep(s: float) -> None:
        await asyncio.sleep(0)  # first let the calls just sent run (and stamp their latency)
        now[0] += s
        if now[0] >= 0.045 and not stalled[0]:  # at t=0.05 the generator stalls 100 ms
            stalled[0] = True
            now[0] += 0.1

    run = asyncio.run(
        loadgen.run_open_loop(call, 100, 0.5, channels=2, clock=lambda: now[0], sleep=sleep)
    )
    assert run.sent == 50 and not run.errors
    lat = np.sort(run.latencies_s)
    # Due at 0.05 .. 0.15, all sent at 0.15: late by 100 ms down to 0 ms.
    assert lat[-1] == pytest.approx(0.1, abs=1e-6), lat[-12:]
    assert int(np.sum(lat > 1e-6)) == 10


def test_percentiles_hold_back_p999_below_100k_samples() -> None:
    small = loadgen.percentiles(np.full(1000, 0.001))
    assert small.p50_ms == pytest.approx(1.0) and small.p999_ms is None
    big = loadgen.percentiles(np.linspace(0, 0.1, loadgen.P999_MIN_SAMPLES))
    assert big.p999_ms is not None and big.p999_ms > big.p99_ms
    assert loadgen.percentiles([]).n == 0


def test_a_saturated_machine_means_the_generator_and_server_shared_a_core() -> None:
    assert CpuWindow(10, 9, 9, 19, cores=2).shared_core
    assert not CpuWindow(10, 3, 4, 8, cores=2).shared_core
    busy = CpuWindow(10, 3, 4, 18, cores=2)  # others used 1.1 cores meanwhile
    assert busy.other_cores == pytest.approx(1.1) and busy.shared_core


def test_time_the_hypervisor_took_is_told_apart_from_other_processes() -> None:
    """Steal is part of the machine's busy time: it is not another process's use."""
    w = CpuWindow(10, 3, 4, 18, cores=2, stolen_s=6)
    assert w.stolen_cores == pytest.approx(0.6) and w.other_cores == pytest.approx(0.5)
    assert w.shared_core and w.as_dict()["stolen_cores"] == pytest.approx(0.6)
    assert not CpuWindow(10, 3, 4, 8, cores=2, stolen_s=1).shared_core


def test_machine_times_read_steal_from_proc_stat() -> None:
    a = procstat.machine_times()
    b = procstat.machine_times()
    d = b - a
    assert 0.0 <= b.steal <= b.busy <= b.total and d.total >= 0.0
    assert 0.0 <= b.stolen_share <= 1.0
    assert procstat.MachineTimes(5, 10, 2).stolen_share == pytest.approx(0.2)


def test_bench_coroutines_run_on_a_loop_with_microsecond_timers() -> None:
    """epoll rounds timeouts up to whole milliseconds, which a generator's sleeps would
    add to every latency counted from the due time; select() keeps microseconds."""
    import selectors

    from service.bench import grpcbench

    async def which() -> type:
        loop = asyncio.get_running_loop()
        return type(loop._selector)  # type: ignore[attr-defined]

    assert grpcbench.run(which()) is selectors.SelectSelector


def test_rank_in_turn_asks_for_each_viewer_in_turn() -> None:
    from types import SimpleNamespace

    from service.bench import grpcbench
    from service.generated.livecommerce.v1 import live_recommender_pb2 as pb

    asked: list[tuple[int, str]] = []

    class Stub:
        def __init__(self, channel: int) -> None:
            self.channel = channel

        def RankProducts(self, req: pb.RankProductsRequest, timeout: float) -> str:
            asked.append((self.channel, req.viewer_id))
            return req.viewer_id

    reqs = [pb.RankProductsRequest(room_id="r", viewer_id=v) for v in ("a", "b", "c")]
    client = SimpleNamespace(stubs=[Stub(0), Stub(1)])
    call = grpcbench.Client.rank_in_turn(client, reqs)  # type: ignore[arg-type]
    for i in range(7):
        call(i % 2)
    assert asked == [(0, "a"), (1, "b"), (0, "c"), (1, "a"), (0, "b"), (1, "c"), (0, "a")]


def _machine(limit: float) -> tuple[Any, list[float]]:
    """A fake ``at(rate)``: p99 under 10 ms up to ``limit`` calls/s, a queue beyond."""
    tried: list[float] = []

    async def at(rate: float) -> dict[str, Any]:
        tried.append(rate)
        ok = rate <= limit
        return {"latency": {"p99_ms": 5.0 if ok else 900.0}, "errors": {} if ok else {"X": 1}}

    return at, tried


def _highest(limit: float, refine: int, search: list[float] | None = None) -> tuple[Any, Any]:
    at, tried = _machine(limit)
    best = asyncio.run(
        grpcbench.highest_rate_under(at, [100, 500, 1000], search or [1500, 2000], 10.0, refine)
    )
    return best, tried


def test_the_highest_rate_counts_the_fixed_rates_and_searches_up_only_past_them() -> None:
    assert _highest(1700, refine=3) == (1500, [100, 500, 1000, 1500, 2000])
    # A fixed rate that keeps up is the answer even with no search above it.
    assert _highest(700, refine=0) == (500, [100, 500, 1000])


def test_a_slow_day_halves_between_the_last_rate_kept_up_and_the_first_not() -> None:
    best, tried = _highest(320, refine=3)
    assert tried == [100, 500, 300, 400, 350] and best == 300
    best, tried = _highest(50, refine=2)  # not even the lowest fixed rate
    assert tried == [100, 50, 80] and best == 50
    assert _highest(50, refine=0) == (None, [100])
