"""CPU time and memory of processes, read from ``/proc`` (Linux).

Used to tell whether the load generator and the server had to share a core
during a measurement window, to give the server's CPU cost per call, and its
peak resident memory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _children(pid: int) -> list[int]:
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a server with workers is a process tree)."""
    seen = [pid]
    i = 0
    while i < len(seen):
        seen.extend(c for c in _children(seen[i]) if c not in seen)
        i += 1
    return seen


def _stat_cpu(stat: Path) -> float:
    """User + system CPU seconds from a ``/proc/.../stat`` file (a process's or a thread's).
    Raises OSError when it is gone."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    # After the ")": state is field 3, utime 14 and stime 15 (1-based) -> index 11, 12.
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads); 0 if it is gone."""
    try:
        return _stat_cpu(Path(f"/proc/{pid}/stat"))
    except OSError:
        return 0.0


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree(pid))


#: The label of each process's main thread (its event loop, in a server).
MAIN_THREAD = "main"
#: The label of the other threads that carry the process's own name: the ones Python
#: starts (thread pools, the write-ahead log's writer, cache refreshes) keep it.
PYTHON_THREADS = "other python threads"


def thread_cpu_seconds(pid: int) -> dict[tuple[int, int], tuple[str, float]]:
    """CPU seconds of every thread of a process tree, by ``(pid, tid)``: its label and
    time. The label is :data:`MAIN_THREAD` for a process's main thread,
    :data:`PYTHON_THREADS` for the others that carry the process's name, else the name
    a library gave its thread (gRPC's ``event_engine``, ...)."""
    out: dict[tuple[int, int], tuple[str, float]] = {}
    for p in tree(pid):
        try:
            own = Path(f"/proc/{p}/comm").read_text().strip()
            tids = [int(t.name) for t in Path(f"/proc/{p}/task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            task = Path(f"/proc/{p}/task/{tid}")
            try:
                name = (task / "comm").read_text().strip()
                spent = _stat_cpu(task / "stat")
            except OSError:  # the thread ended meanwhile
                continue
            label = MAIN_THREAD if tid == p else PYTHON_THREADS if name == own else name
            out[p, tid] = (label, spent)
    return out


def by_label(
    start: dict[tuple[int, int], tuple[str, float]],
    end: dict[tuple[int, int], tuple[str, float]],
) -> dict[str, float]:
    """CPU seconds per thread label between two :func:`thread_cpu_seconds` samples (a
    thread that started in between counts from zero; one that ended is not seen)."""
    out: dict[str, float] = {}
    for key, (label, t) in end.items():
        spent = t - start.get(key, (label, 0.0))[1]
        out[label] = out.get(label, 0.0) + spent
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass(frozen=True)
class MachineTimes:
    """CPU seconds of the whole machine since boot, all cores summed (``/proc/stat``).

    ``steal``: time a virtual CPU was ready to run but the hypervisor ran another guest
    instead. It is part of ``busy``: on a shared host it is the other tenants' share,
    which slows this machine's work without showing in any process's CPU time.
    """

    busy: float
    total: float
    steal: float

    def __sub__(self, other: MachineTimes) -> MachineTimes:
        return MachineTimes(
            self.busy - other.busy, self.total - other.total, self.steal - other.steal
        )

    @property
    def stolen_share(self) -> float:
        """Of all the CPU time (of every core), the share the hypervisor took."""
        return self.steal / self.total if self.total > 0 else 0.0


def machine_times() -> MachineTimes:
    """The machine's :class:`MachineTimes` now."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(x) for x in parts[:8]]  # user nice system idle iowait irq softirq steal
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals)
    return MachineTimes((total - idle) / _TICK, total / _TICK, vals[7] / _TICK)


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a process tree, MiB (summed over its processes)."""
    total = 0.0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024.0
        except OSError:
            continue
    return total


@dataclass
class CpuWindow:
    """CPU use of the generator, the server and everyone else over one window."""

    wall_s: float
    client_cpu_s: float
    server_cpu_s: float
    machine_busy_s: float
    cores: int
    #: Of ``machine_busy_s``, what the hypervisor took for other guests.
    stolen_s: float = 0.0
    #: The server's CPU seconds per thread label (:func:`by_label`).
    server_threads_s: dict[str, float] = field(default_factory=dict)

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.wall_s if self.wall_s else 0.0

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.wall_s if self.wall_s else 0.0

    @property
    def stolen_cores(self) -> float:
        """Cores' worth of time the hypervisor gave other guests while ours waited."""
        return self.stolen_s / self.wall_s if self.wall_s else 0.0

    @property
    def other_cores(self) -> float:
        """Cores used by this machine's other processes."""
        if not self.wall_s:
            return 0.0
        busy = self.machine_busy_s / self.wall_s
        return max(0.0, busy - self.client_cores - self.server_cores - self.stolen_cores)

    @property
    def shared_core(self) -> bool:
        """True when the CPUs were (nearly) saturated: generator, server, the machine's
        other processes and the host's other guests (steal) needed about every core, so
        they took turns on them."""
        used = self.client_cores + self.server_cores + self.other_cores + self.stolen_cores
        return used >= 0.9 * self.cores

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "wall_s": self.wall_s,
            "client_cores": round(self.client_cores, 3),
            "server_cores": round(self.server_cores, 3),
            "other_cores": round(self.other_cores, 3),
            "stolen_cores": round(self.stolen_cores, 3),
            "cores": self.cores,
            "shared_core": self.shared_core,
        }


class CpuMeter:
    """``with CpuMeter(server_pid) as m: ...`` then ``m.window``."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.window: CpuWindow | None = None

    def _sample(self) -> tuple[float, float, float, float, float]:
        server = tree_cpu_seconds(self.server_pid) if self.server_pid else 0.0
        m = machine_times()
        return time.perf_counter(), cpu_seconds(os.getpid()), server, m.busy, m.steal

    def _threads(self) -> dict[tuple[int, int], tuple[str, float]]:
        return thread_cpu_seconds(self.server_pid) if self.server_pid else {}

    def __enter__(self) -> CpuMeter:
        self._start_threads = self._threads()
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        threads = by_label(self._start_threads, self._threads())
        d = [b - a for a, b in zip(self._start, end, strict=True)]
        self.window = CpuWindow(
            d[0], d[1], d[2], d[3], cores(), stolen_s=d[4], server_threads_s=threads
        )
