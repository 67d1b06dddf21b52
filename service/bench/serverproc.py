"""The server under test: ``liverec serve`` in its own process.

A subprocess, so its CPU time and memory are separable from the load
generator's. It binds port 0 and writes a ready file; we then wait on the
health check (never on a sleep) and stop it with SIGTERM (graceful drain).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from features.settings import PROJECT_ROOT
from service.bench import procstat


class NotImplementedYet(RuntimeError):
    """The server refused the configuration as not implemented (e.g. ``--workers 2``)."""


@dataclass
class Target:
    data_dir: Path
    mlflow_uri: str
    models_dir: Path


class ServerProcess:
    """Start, probe and stop one ``liverec serve`` process tree."""

    def __init__(self, target: Target, workers: int = 1, start_timeout_s: float = 180.0) -> None:
        self.target = target
        self.workers = workers
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        #: The /metrics port of the process that answers (one worker) or of every one.
        self.metrics_ports: list[int] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="liverec-bench-")
        self._log = Path(self._tmp.name) / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        ready = Path(self._tmp.name) / "ready.json"
        env = {
            **os.environ,
            "LIVEREC_DATA_DIR": str(self.target.data_dir),
            "LIVEREC_MLFLOW_TRACKING_URI": self.target.mlflow_uri,
            # MlflowSource.download passes registry_uri, but MLflow resolves models:/ URIs
            # against the default registry (./mlflow.db in the server's cwd) regardless:
            # point MLflow's own variables at the same registry.
            "MLFLOW_TRACKING_URI": self.target.mlflow_uri,
            "MLFLOW_REGISTRY_URI": self.target.mlflow_uri,
            "LIVEREC_MODELS_DIR": str(self.target.models_dir),
            "LIVEREC_METRICS_PORT": "0",
        }
        cmd = [
            sys.executable,
            str(PROJECT_ROOT / "liverec.py"),
            "serve",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--workers",
            str(self.workers),
        ]
        with self._log.open("w") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=self._tmp.name, stdout=log, stderr=subprocess.STDOUT, text=True
            )
        give_up = time.monotonic() + self.start_timeout_s
        while not ready.exists():
            code = self.proc.poll()
            if code is not None:
                tail = self.log_tail()
                if code == 2 and "not implemented" in tail:
                    raise NotImplementedYet(tail.strip().splitlines()[-1])
                raise RuntimeError(f"liverec serve exited with {code}:\n{tail}")
            if time.monotonic() > give_up:
                self.stop()
                raise RuntimeError(f"no ready file after {self.start_timeout_s:.0f}s")
            # The ready file is the only signal a separate process can give before it
            # serves; once it exists we switch to the health check.
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        self.port = int(info["grpc_port"])
        self.metrics_ports = [int(p) for p in info.get("metrics_ports", [info["metrics_port"]])]
        self.wait_serving()
        return self

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            for reply in health.Watch(request, timeout=timeout_s):
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        raise RuntimeError("health never became SERVING")

    def cpu_seconds(self) -> float:
        return procstat.tree_cpu_seconds(self.pid)

    def peak_rss_mb(self) -> float:
        return procstat.peak_rss_mb(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self._log.read_text()[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait for the drain; kill only if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self._tmp.cleanup()
        return code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            # A run that failed against the server: what the server logged is the first
            # thing to read, and its directory goes away with it.
            sys.stderr.write(
                f"liverec serve's log, last lines (the run failed: {exc_type.__name__}):\n"
                f"{self.log_tail()}\n"
            )
        self.stop()
