"""Worker processes: the server starts them, restarts one that dies, and marks its job interrupted.

``python -m easyphoto.jobs worker`` runs :func:`worker_main` (one :class:`~easyphoto.jobs.worker.Worker`
until its stop file appears, SIGTERM/SIGINT/SIGBREAK, or its parent server is gone).

Portable by construction: each worker is a fresh interpreter (``subprocess``, the ``spawn`` model on
every OS: nothing is inherited by ``fork``), and inside it :mod:`multiprocessing` is set to ``spawn``
too, so Linux runs what Windows and macOS run. A worker is asked to stop by a file (Windows has no
SIGTERM a process can catch; on POSIX SIGTERM is sent as well) and killed after ``grace_s`` with
:meth:`subprocess.Popen.kill` (``TerminateProcess`` on Windows). No process groups or sessions are used.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .store import JobStore
from .worker import Worker

log = logging.getLogger("easyphoto.jobs")


@dataclass
class WorkerSupervisor:
    """Starts worker processes, restarts one that dies, and marks its running job ``interrupted``.

    Used by the server: ``start()`` marks every job still ``running`` from a previous server as
    interrupted (nothing runs them any more), then spawns ``workers`` processes
    (``python -m easyphoto.jobs worker``). ``stop()`` asks them to stop (a stop file, plus SIGTERM where
    ``signals``, default: not on Windows; a training saves a checkpoint and becomes resumable) and
    kills them after ``grace_s``. Every ``purge_every_s`` (and at start) the jobs that finished more
    than ``retention_days`` ago are deleted (0: never).
    """

    home: Path
    workers: int = 1
    retention_days: float = 0.0
    purge_every_s: float = 6 * 3600.0
    env: dict[str, str] | None = None
    grace_s: float = 20.0
    restart_delay_s: float = 1.0
    procs: list[subprocess.Popen] = field(default_factory=list)
    signals: bool = os.name != "nt"
    _stop_files: dict[int, Path] = field(default_factory=dict, init=False, repr=False)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def _spawn(self) -> subprocess.Popen:
        stop_file = Path(self.home) / "locks" / f"worker-{uuid.uuid4().hex[:12]}.stop"
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "easyphoto.jobs",
            "worker",
            "--home",
            str(self.home),
            "--parent-pid",
            str(os.getpid()),
            "--stop-file",
            str(stop_file),
        ]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        self._stop_files[proc.pid] = stop_file
        log.info("started worker %d", proc.pid)
        return proc

    def _forget(self, proc: subprocess.Popen) -> None:
        """Remove an exited worker's stop file."""
        stop_file = self._stop_files.pop(proc.pid, None)
        if stop_file is not None:
            with contextlib.suppress(OSError):
                stop_file.unlink()

    def start(self) -> None:
        from ..users import recover

        for line in recover(self.home):
            log.warning("start-up repair: %s", line)
        store = JobStore(self.home)
        stale = store.mark_interrupted(reason="interrupted: the server stopped while the job was running")
        if stale:
            log.warning(
                "marked %d job(s) from a previous run as interrupted: %s", len(stale), ", ".join(stale)
            )
        self.purge(store)
        self.procs = [self._spawn() for _ in range(max(1, self.workers))]
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="easyphoto-worker-watch", daemon=True)
        self._thread.start()

    def purge(self, store: JobStore) -> list[str]:
        """Delete the jobs past their retention (none when ``retention_days`` is 0)."""
        if self.retention_days <= 0:
            return []
        ids = store.purge(time.time() - self.retention_days * 86400)
        if ids:
            log.info("deleted %d job(s) older than %g days", len(ids), self.retention_days)
        return ids

    def _watch(self) -> None:
        store = JobStore(self.home)
        failures = 0
        last_purge = time.monotonic()
        while not self._stop.wait(0.5):
            if time.monotonic() - last_purge > self.purge_every_s:
                last_purge = time.monotonic()
                self.purge(store)
            for i, proc in enumerate(list(self.procs)):
                code = proc.poll()
                if code is None or self._stop.is_set():
                    continue
                ids = store.mark_interrupted(
                    proc.pid, reason=f"interrupted: the worker process exited (status {code})"
                )
                log.warning(
                    "worker %d exited with status %s; interrupted jobs: %s", proc.pid, code, ids or "none"
                )
                failures += 1
                self._forget(proc)
                time.sleep(min(30.0, self.restart_delay_s * failures))
                if self._stop.is_set():
                    return
                self.procs[i] = self._spawn()

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        self._stop.set()
        for proc in self.procs:
            if proc.poll() is None:
                if (stop_file := self._stop_files.get(proc.pid)) is not None:
                    with contextlib.suppress(OSError):
                        stop_file.touch()
                if self.signals:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._forget(proc)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        store = JobStore(self.home)
        store.mark_interrupted(reason="interrupted: the server stopped while the job was running")


# -------------------------------------------------------------------------------------------- main


def worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m easyphoto.jobs", description="EasyPhoto job worker.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="Run queued jobs until stopped.")
    w.add_argument("--home", type=Path, default=None, help="EASYPHOTO_HOME (default: environment).")
    w.add_argument("--parent-pid", type=int, default=None, help="Exit when this process is gone.")
    w.add_argument("--poll", type=float, default=0.1, help="Seconds between queue checks when idle.")
    w.add_argument("--stop-file", type=Path, default=None, help="Stop once this file exists.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    multiprocessing.set_start_method("spawn", force=True)  # as on Windows and macOS: no fork here
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    if args.home is not None:
        os.environ["EASYPHOTO_HOME"] = str(args.home)
    worker = Worker(args.home, parent_pid=args.parent_pid, poll=args.poll, stop_file=args.stop_file)

    def _stop(signum: int, _frame: Any) -> None:
        worker.stopping = True

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):  # SIGBREAK: Ctrl+Break, Windows only
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _stop)
    worker.run_forever()
    return 0


__all__ = ["WorkerSupervisor", "worker_main"]
