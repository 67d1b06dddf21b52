"""CPU time per thread of a process tree, from /proc."""

from __future__ import annotations

import os
import threading
import time

from service.bench import procstat


def test_every_thread_is_counted_and_the_main_one_is_named() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        time.sleep(0.3)
        threads = procstat.thread_cpu_seconds(os.getpid())
    finally:
        stop.set()
        worker.join()
    labels = {label for label, _ in threads.values()}
    tid = worker.native_id
    assert tid is not None
    assert procstat.MAIN_THREAD in labels
    assert threads[os.getpid(), threading.get_native_id()][0] == procstat.MAIN_THREAD
    # The spinning thread is there, counted, and labelled as a thread Python started.
    assert threads[os.getpid(), tid][0] == procstat.PYTHON_THREADS
    assert threads[os.getpid(), tid][1] > 0.0
    # Live threads add up to no more than the process, which also keeps the time of the
    # threads that ended (both read in ticks, read one after the other).
    total = sum(t for _, t in threads.values())
    assert 0.0 < total <= procstat.cpu_seconds(os.getpid()) + 0.05


def test_cpu_by_label_over_a_window() -> None:
    start = {(1, 1): ("main", 2.0), (1, 2): ("event_engine", 1.0), (1, 3): ("python", 0.5)}
    end = {
        (1, 1): ("main", 3.5),
        (1, 2): ("event_engine", 1.125),
        (1, 4): ("python", 0.25),  # started in the window: counted from zero
        (2, 2): ("main", 0.5),  # a worker process's main thread joins the main label
    }  # (1, 3) ended in the window: its time is not seen
    assert procstat.by_label(start, end) == {"main": 2.0, "python": 0.25, "event_engine": 0.125}
    assert list(procstat.by_label(start, end)) == ["main", "python", "event_engine"]
