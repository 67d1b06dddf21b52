"""Write-ahead log: Arrow IPC segments, group-committed with fsync.

An accepted event is in a segment and fsynced before its call returns. Callers
from many coroutines hand batches to one writer thread, which writes all that
is pending and fsyncs once (group commit), so durability costs one fsync per
group, not per event. Sealed segments are compacted into the parquet event
log (the simulator's schema) by atomic rename, so they feed the next feature
build; compaction is idempotent, so a crash in between never duplicates.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from features import schema

log = logging.getLogger(__name__)


def segment_files(directory: Path) -> list[Path]:
    """The segments of the write-ahead log in ``directory``, oldest first."""
    return sorted(Path(directory).glob("seg-*.arrow"))


def compacted_files(events_root: Path) -> list[Path]:
    """The event-log files that compaction wrote (live events: ``seg-<n>-<i>.parquet``),
    as opposed to those of a batch-built log."""
    return sorted(Path(events_root).rglob("seg-*.parquet"))


class WalLocked(RuntimeError):
    """Another live process owns this write-ahead log (one writer per log)."""


class WriteAheadLog:
    """Append-only segments ``seg-<n>.arrow`` under ``directory``."""

    def __init__(self, directory: Path, segment_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._queue: queue.Queue[tuple[pa.RecordBatch, Future[None]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._sink: pa.OSFile | None = None
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._owner: int | None = None  # fd of the LOCK file, held from open() to unlock()
        self.fsyncs = 0

    # -- life cycle -------------------------------------------------------------------
    def open(self) -> None:
        """Take ownership (an exclusive ``flock``, released by the kernel if we die) and
        start a new segment. Two aggregators on one data dir would interleave segments
        and race on compaction, so the second one is refused with :class:`WalLocked`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._owner is None:
            fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                os.close(fd)
                raise WalLocked(
                    f"another process owns the write-ahead log in {self.directory}"
                ) from exc
            self._owner = fd
        seqs = [int(p.stem.split("-")[1]) for p in self.directory.glob("seg-*.arrow")]
        self._seq = max(seqs, default=0)
        self._roll()
        self._thread = threading.Thread(target=self._run, name="wal-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._close_segment()

    def unlock(self) -> None:
        """Give up ownership (after close and compaction)."""
        if self._owner is not None:
            fcntl.flock(self._owner, fcntl.LOCK_UN)
            os.close(self._owner)
            self._owner = None

    # -- writing ----------------------------------------------------------------------
    def append(self, batch: pa.RecordBatch) -> Future[None]:
        """Queue a batch (raw-event schema); the future resolves once it is fsynced.

        Cancelling the future before the writer picks the batch up withdraws it (it is
        not written); after that, cancelling fails and the batch is made durable."""
        fut: Future[None] = Future()
        self._queue.put((batch, fut))
        return fut

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            pending = [item]
            while True:  # group commit: everything that queued meanwhile
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                pending.append(nxt)
            # A batch whose caller cancelled it before it was picked up is not written;
            # from here on the others can no longer be cancelled, only resolved (setting
            # the result of a cancelled future would raise and end this thread, and every
            # later append would wait forever).
            pending = [(b, fut) for b, fut in pending if fut.set_running_or_notify_cancel()]
            if not pending:
                continue
            try:
                with self._lock:
                    assert self._writer is not None and self._sink is not None
                    for batch, _ in pending:
                        self._writer.write_batch(batch)
                    self._sink.flush()
                    os.fsync(self._sink.fileno())
                    self.fsyncs += 1
                    if self._sink.tell() >= self.segment_bytes:
                        self._roll()
            except Exception as exc:  # the callers must learn that nothing was made durable
                log.exception("write-ahead log write failed")
                for _, fut in pending:
                    fut.set_exception(exc)
                continue
            for _, fut in pending:
                fut.set_result(None)

    def _roll(self) -> None:
        self._close_segment()
        self._seq += 1
        path = self.directory / f"seg-{self._seq:012d}.arrow"
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = ipc.new_stream(self._sink, schema.EVENTS)
        self._sink.flush()
        os.fsync(self._sink.fileno())
        # Make the new file's directory entry durable too.
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _close_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def seal(self) -> None:
        """Start a new segment, so every earlier one can be compacted."""
        with self._lock:
            self._roll()

    # -- reading ----------------------------------------------------------------------
    def segments(self) -> list[Path]:
        return segment_files(self.directory)

    def sealed(self) -> list[Path]:
        return [p for p in self.segments() if int(p.stem.split("-")[1]) < self._seq]

    @staticmethod
    def read_segment(path: Path) -> pa.Table:
        """All complete batches of a segment (a torn tail from a crash is ignored)."""
        batches = []
        if path.stat().st_size == 0:
            return pa.Table.from_batches([], schema=schema.EVENTS)
        try:
            with pa.OSFile(str(path), "rb") as f:
                reader = ipc.open_stream(f)
                while True:
                    try:
                        batches.append(reader.read_next_batch())
                    except StopIteration:
                        break
        except (pa.ArrowInvalid, OSError) as exc:
            log.warning("write-ahead log segment %s ends in a torn write: %s", path.name, exc)
        return pa.Table.from_batches(batches, schema=schema.EVENTS)

    def replay(self) -> Iterator[pa.Table]:
        for path in self.segments():
            table = self.read_segment(path)
            if table.num_rows:
                yield table

    # -- compaction -------------------------------------------------------------------
    def compact(self, events_root: Path) -> int:
        """Move sealed segments into the parquet event log; returns events moved."""
        moved = 0
        for path in self.sealed():
            table = self.read_segment(path)
            if table.num_rows:
                staging = events_root / f".staging-{path.stem}"
                schema.write_events(table, staging, basename=f"{path.stem}-{{i}}.parquet")
                for part in staging.rglob("*.parquet"):
                    target = events_root / part.relative_to(staging)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(part, target)  # atomic; same name again after a crash
                for d in sorted(staging.rglob("*"), reverse=True):
                    d.rmdir()
                staging.rmdir()
                moved += table.num_rows
            path.unlink()
        return moved
