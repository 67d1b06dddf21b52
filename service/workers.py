"""``liverec serve --workers N``: one aggregator process and N workers sharing a port.

The parent decides the public port (reserving it with an SO_REUSEPORT socket of
its own when ``--port 0``), starts the aggregator on a unix socket in a private
run directory and the workers with ``grpc.so_reuseport`` on that port (the
kernel spreads connections over them), and writes its ready file once all of
them are SERVING.
Workers hold no live state: events and RecommendNextProduct go to the
aggregator (DESIGN §4).

Metrics: one ``/metrics`` port per process (not prometheus multiprocess mode:
``feast.metrics`` switches prometheus_client into it for its own use, which
makes one shared directory fragile). The ready file lists every process's
port under ``metrics_ports``; ``metrics_port`` is the aggregator's. With a fixed
``--metrics-port P`` the aggregator uses P and worker i uses P + i.

SIGTERM (or SIGINT) to the parent stops the workers first (they drain their
calls, some of which are forwarded events), then the aggregator (which flushes
and compacts its log), and exits 0. If a child dies, the others are stopped and
the parent exits 1: a supervisor above it (systemd, Kubernetes) restarts the set.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from service.settings import ServiceSettings

log = logging.getLogger(__name__)

#: Seconds a child gets to become ready (it loads models and warms caches).
START_TIMEOUT_S = 180.0


def _child(
    settings: ServiceSettings, role: str, ready: Path, metrics_port: int, *extra: str
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "--role",
        role,
        "--workers",
        str(settings.workers),
        "--data-dir",
        str(settings.data_dir),
        "--host",
        settings.grpc_host,
        "--metrics-port",
        str(metrics_port),
        "--ready-file",
        str(ready),
        *extra,
    ]
    return subprocess.Popen(cmd)


def _wait_ready(path: Path, proc: subprocess.Popen[bytes], stop: list[int]) -> dict | None:
    """The child's ready-file contents, or ``None`` if it died, timed out or we were stopped."""
    give_up = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if proc.poll() is not None or stop or time.monotonic() > give_up:
            return None
        time.sleep(0.05)  # a child process has no other readiness signal to block on
    info: dict = json.loads(path.read_text())
    return info


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock, int(sock.getsockname()[1])


def _terminate(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop in %.0f s; killing it", p.pid, timeout)
            p.kill()
            p.wait()


def supervise(settings: ServiceSettings, ready_file: Path | None) -> int:
    """Run the aggregator and the workers until SIGTERM; the exit code."""
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    # Short path: a unix socket path must stay under ~100 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="liverec-"))
    reserved, port = _reserve_port(settings.grpc_host, settings.grpc_port)
    address = f"unix:{run_dir / 'aggregator.sock'}"
    grace = settings.shutdown_grace_s + 5.0
    workers: list[subprocess.Popen[bytes]] = []
    aggregator: subprocess.Popen[bytes] | None = None
    try:
        base = settings.metrics_port
        aggregator = _child(
            settings, "aggregator", run_dir / "aggregator.json", base, "--bind", address
        )
        # Workers start alongside: they only need the address (their channel connects
        # when the first call is forwarded), and start-up is mostly imports and models.
        for i in range(1, settings.workers + 1):
            workers.append(
                _child(
                    settings,
                    "worker",
                    run_dir / f"worker-{i}.json",
                    base + i if base else 0,
                    "--port",
                    str(port),
                    "--aggregator",
                    address,
                )
            )
        infos = []
        for name, proc in [("aggregator", aggregator)] + [
            (f"worker-{i}", w) for i, w in enumerate(workers, start=1)
        ]:
            info = _wait_ready(run_dir / f"{name}.json", proc, stop)
            if info is None:
                log.error("%s did not become ready", name)
                return 0 if stop else 1
            infos.append(info)
        agg_info = infos[0]
        reserved.close()  # the workers hold the port now
        if ready_file is not None:
            tmp = ready_file.with_name(f".{ready_file.name}.tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "grpc_port": port,
                        "metrics_port": agg_info["metrics_port"],
                        "metrics_ports": [i["metrics_port"] for i in infos],
                        "pid": os.getpid(),
                        "pids": [i["pid"] for i in infos],
                        "aggregator": address,
                    }
                )
                + "\n"
            )
            tmp.replace(ready_file)
        log.info("serving on port %d with %d workers and one aggregator", port, len(workers))
        while not stop:
            dead = [p for p in [aggregator, *workers] if p.poll() is not None]
            if dead:
                log.error("process %d exited with %s; stopping", dead[0].pid, dead[0].returncode)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        reserved.close()
        _terminate(workers, grace)  # workers first: they forward to the aggregator
        if aggregator is not None:
            _terminate([aggregator], grace)
        shutil.rmtree(run_dir, ignore_errors=True)
        for sig, handler in old.items():
            signal.signal(sig, handler)
