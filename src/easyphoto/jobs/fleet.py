"""The job fleet: Celery delivers jobs to worker processes on any number of machines; Redis holds the
queue, the job records, progress and cancellation (``EASYPHOTO_QUEUE=redis://HOST:6379/0``).

* The API servers write a job into :class:`~easyphoto.jobs.redis_store.RedisJobStore` (the same
  :class:`~easyphoto.jobs.service.JobService` as on one machine) and send one Celery message
  ``easyphoto.run_job(job_id, token)`` to the queue of its kind (``easyphoto.train`` or
  ``easyphoto.generate``), so a worker that serves only generations is never stuck behind a training.
* ``easyphoto worker --queue URL [--gpu N]`` (:func:`worker_main`) runs one Celery worker with the
  ``solo`` pool: one job at a time in the process that keeps the models warm (one
  :class:`~easyphoto.jobs.worker.Worker` for its whole life), prefetch 1, the message acknowledged
  only after the job ends.
* A worker says it is alive every ``heartbeat_s / 3`` s. When one goes quiet for ``heartbeat_s`` (killed,
  machine lost), any other worker or API server queues its job again with a new delivery token
  (:meth:`~easyphoto.jobs.redis_store.RedisJobStore.requeue_dead`): a training continues from its last
  checkpoint wherever it lands. The dead worker's own message, if Redis ever redelivers it, carries the
  old token and is dropped, so a job never runs twice at once.

Importing this module imports neither Celery nor Redis: they load when a fleet is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import easyphoto_home
from .redis_store import QueueUnavailableError, RedisJobStore, check_queue_url, redacted
from .store import INTERRUPTED, KINDS, Job

log = logging.getLogger("easyphoto.jobs")

TASK = "easyphoto.run_job"
#: Celery queue of each job kind.
QUEUES = {kind: f"easyphoto.{kind}" for kind in KINDS}
#: Message priorities on the Redis broker (kombu's steps 0, 3, 6, 9; 0 is served first). A job that
#: already started once (its worker died or stopped, or a training is resumed) goes before every new
#: one: it waited its turn already. A job requeued after a kill -9 behind ~18 queued jobs restarted
#: 19.7 s after the kill before this, 5.2 s with it (benchmarks/fleet.py, heartbeat 2 s: 4 s of that
#: is noticing the death).
PRIORITY_AGAIN, PRIORITY_NEW = 0, 6
#: kombu's Redis transport keeps priority ``p`` of queue ``q`` in the list ``q + SEP + p`` (0: ``q``);
#: set explicitly (kombu's defaults) so :func:`broker_keys` stays true.
PRIORITY_STEPS, PRIORITY_SEP = (0, 3, 6, 9), "\x06\x16"
DEFAULT_HEARTBEAT_S = 30.0


def celery_app(url: str) -> Any:
    """The Celery app on the broker at ``url``: late acknowledgement, prefetch 1, no result backend
    (outcomes are job records), a 24 h visibility timeout (longer than any job: a dead worker's job is
    requeued by the heartbeat reaper long before Redis would redeliver its message)."""
    from celery import Celery

    app = Celery("easyphoto", broker=check_queue_url(url), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUES["generate"],
        broker_transport_options={
            "visibility_timeout": 24 * 3600,
            "priority_steps": list(PRIORITY_STEPS),
            "sep": PRIORITY_SEP,
        },  # fmt: skip
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=True,
    )
    return app


def celery_sender(url: str) -> Any:
    """``send(job, token)``: one ``easyphoto.run_job`` message on the queue of the job's kind, at
    :data:`PRIORITY_AGAIN` for a job that ran before, else :data:`PRIORITY_NEW` (the Celery app is made
    on first use)."""
    app: Any = None

    def send(job: Job, token: str) -> None:
        nonlocal app
        if app is None:
            app = celery_app(url)
        priority = PRIORITY_AGAIN if job.attempts else PRIORITY_NEW
        app.send_task(TASK, args=[job.id, token], queue=QUEUES[job.kind], priority=priority)

    return send


def broker_keys(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s messages, one per kombu priority step, served first first."""
    return [queue if p == 0 else f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


def open_store(url: str, home: Path | None = None, heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> RedisJobStore:
    """A Redis job store whose queued jobs are sent to the workers through Celery; checks that Redis
    answers (:class:`QueueUnavailableError` naming the URL otherwise)."""
    store = RedisJobStore(url, home, send=celery_sender(url), heartbeat_ttl_s=heartbeat_s)
    store.ping()
    return store


# ------------------------------------------------------------------------------------------ reaper


class Reaper:
    """Queues again the jobs of workers that went quiet, and resends messages that may be lost.

    A worker counts as gone when its heartbeat key has expired and stays missing for another
    ``grace_s`` (so a Redis restart that dropped the keys of live workers requeues nothing: they
    beat again within a third of their period)."""

    def __init__(self, store: RedisJobStore, grace_s: float | None = None) -> None:
        self.store = store
        self.grace_s = store.heartbeat_ttl_s if grace_s is None else grace_s
        self._missing: dict[tuple[str, str, int], float] = {}

    def sweep(self) -> list[str]:
        """One pass; returns the ids of the jobs queued again."""
        now = time.monotonic()
        seen, requeued = set(), []
        for job in self.store.running():
            host = (job.worker or {}).get("host")
            if job.worker_pid is None or self.store.worker_alive(host, job.worker_pid):
                continue
            mark = (job.id, str(host), job.worker_pid)
            seen.add(mark)
            first = self._missing.setdefault(mark, now)
            if now - first < self.grace_s:
                continue
            reason = f"the worker {host}:{job.worker_pid} stopped answering"
            state = self.store.requeue_dead(job, reason)
            if state:
                log.warning("job %s: %s; now %s", job.id, reason, state)
                requeued.append(job.id)
        self._missing = {m: t for m, t in self._missing.items() if m in seen}
        self.store.resend_pending(older_than_s=max(5.0, self.grace_s))
        return requeued


class _Beat:
    """A thread that runs ``tick`` every ``every_s`` seconds until stopped (errors are logged)."""

    def __init__(self, name: str, every_s: float, tick: Any) -> None:
        self.every_s, self.tick = every_s, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except QueueUnavailableError as exc:
                log.warning("%s", exc)
            except Exception:
                log.exception("%s failed", self._thread.name)
            self._stop.wait(self.every_s)

    def start(self) -> _Beat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


# ------------------------------------------------------------------------------------------ worker


class FleetWorker:
    """What a Celery worker process holds: its fenced store, one :class:`Worker` (models warm across
    jobs), the heartbeat and the reaper. :meth:`run` is the body of the ``easyphoto.run_job`` task."""

    def __init__(
        self,
        url: str,
        home: Path | None = None,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        gpu: int | None = None,
        kinds: Sequence[str] = KINDS,
    ) -> None:
        from .worker import Worker

        self.pid = os.getpid()
        self.store = open_store(url, home, heartbeat_s)
        self.store.fence_pid = self.pid
        self.worker = Worker(self.store.home, store=self.store)
        self.gpu, self.kinds = gpu, list(kinds)
        self.gpu_name = _gpu_name(gpu)
        self.current: str | None = None
        self.jobs_done = 0
        self.started = time.time()
        self.reaper = Reaper(self.store)
        self._beat: _Beat | None = None

    def info(self) -> dict[str, Any]:
        """What the heartbeat publishes (``easyphoto doctor --queue`` shows it)."""
        return {
            "gpu": self.gpu,
            "gpu_name": self.gpu_name,
            "queues": [QUEUES[k] for k in self.kinds],
            "job": self.current,
            "jobs_done": self.jobs_done,
            "started": self.started,
        }

    def start(self) -> None:
        """Beat once now (so the worker is listed at once), then every third of the period."""
        self.store.heartbeat(self.pid, self.info())

        def tick() -> None:
            self.store.heartbeat(self.pid, self.info())
            self.reaper.sweep()

        self._beat = _Beat("easyphoto-heartbeat", self.store.heartbeat_ttl_s / 3, tick).start()

    def stop(self) -> None:
        if self._beat is not None:
            self._beat.stop()

    def preload(self) -> None:
        """Load the base model and the face analyzer now, before the first job (a failure is logged:
        the first job then loads them, or says what is missing)."""
        t0 = time.perf_counter()
        try:
            _ = self.worker.cache.unet, self.worker.analyzer
        except Exception as exc:
            log.warning("could not preload the models (%s); the first job loads them", exc)
            return
        log.info("models preloaded in %.1fs", time.perf_counter() - t0)

    def run(self, job_id: str, token: str) -> str:
        """Claim and run one delivered job; a stale or cancelled message is dropped. Returns the state."""
        job = self._patient(lambda: self.store.claim(job_id, token, self.pid))
        if job is None:
            log.info("job %s: message dropped (already taken, cancelled or superseded)", job_id)
            return "dropped"
        self.current = job.id
        try:
            self.store.heartbeat(self.pid, self.info())
            self.worker.run_job(job)
        finally:
            self.current = None
            self.jobs_done += 1
        done = self._patient(lambda: self.store.get(job_id))
        if self.worker.stopping and done.state == INTERRUPTED and not done.cancel_requested:
            self._patient(lambda: self.store.requeue_stopped(job_id))  # another worker continues it
            log.info("job %s handed back to the queue (worker stopping)", job_id)
        return done.state

    def _patient(self, call: Any) -> Any:
        """``call()``, retried while Redis is away (up to the store's ``outage_wait_s``): a message
        received just before Redis went down is not dropped for want of its job record."""
        deadline = time.monotonic() + self.store.outage_wait_s
        while True:
            try:
                return call()
            except QueueUnavailableError as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("%s; retrying", exc)
                time.sleep(1.0)


def _gpu_name(index: int | None) -> str | None:
    if index is None:
        return None
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # no torch build with CUDA: the index is all we know
        return None


_FLEET: FleetWorker | None = None


def worker_main(
    url: str,
    *,
    home: Path | None = None,
    gpu: int | None = None,
    kinds: Sequence[str] = KINDS,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    loglevel: str = "INFO",
    preload: bool = False,
) -> int:
    """Run one fleet worker until it is stopped (SIGTERM / Ctrl+C: the running job stops at its next
    check; a training saves a checkpoint and goes back to the queue for another worker)."""
    global _FLEET
    import multiprocessing

    from celery import signals

    if gpu is not None:  # before torch is imported: this process sees one GPU, as cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if home is not None:
        os.environ["EASYPHOTO_HOME"] = str(home)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    multiprocessing.set_start_method("spawn", force=True)
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    bad = [k for k in kinds if k not in QUEUES]
    if bad or not kinds:
        from ..errors import ConfigError

        raise ConfigError(f"--kinds: expected some of {','.join(QUEUES)}, got {','.join(kinds) or 'nothing'}")
    _FLEET = FleetWorker(url, home or easyphoto_home(), heartbeat_s=heartbeat_s, gpu=gpu, kinds=kinds)
    app = celery_app(url)
    app.task(name=TASK, acks_late=True, reject_on_worker_lost=True)(_run_task)

    def _stopping(**_kw: Any) -> None:
        if _FLEET is not None:
            _FLEET.worker.stopping = True

    signals.worker_shutting_down.connect(_stopping, weak=False)
    _FLEET.start()
    if preload:
        _FLEET.preload()
    name = f"easyphoto-{os.getpid()}@{socket.gethostname()}"
    log.info("fleet worker %s on %s, queues %s", name, redacted(url), ", ".join(_FLEET.info()["queues"]))
    argv = ["worker", "--pool=solo", "--concurrency=1", f"--hostname={name}", f"--loglevel={loglevel}"]
    argv += [f"--queues={','.join(QUEUES[k] for k in kinds)}", "--prefetch-multiplier=1"]
    argv += ["--without-gossip", "--without-mingle"]
    try:
        app.worker_main(argv)
    finally:
        _FLEET.stop()
    return 0


def _run_task(job_id: str, token: str) -> str:
    """The ``easyphoto.run_job`` task: run a job in this worker process."""
    if _FLEET is None:  # pragma: no cover - only worker_main registers the task
        raise RuntimeError("easyphoto.run_job runs only in `easyphoto worker`")
    return _FLEET.run(job_id, token)


# ------------------------------------------------------------------------------------------ server side


class FleetMonitor:
    """What the API server runs instead of local workers: the reaper (a second pair of eyes on dead
    workers) and the retention purge. ``pids`` lists the live workers as ``host:pid``."""

    def __init__(self, store: RedisJobStore, retention_days: float = 0.0, purge_every_s: float = 6 * 3600):
        self.store = store
        self.retention_days, self.purge_every_s = retention_days, purge_every_s
        self.reaper = Reaper(store)
        self._last_purge = 0.0
        self._beat: _Beat | None = None

    def _tick(self) -> None:
        self.reaper.sweep()
        if self.retention_days > 0 and time.monotonic() - self._last_purge > self.purge_every_s:
            self._last_purge = time.monotonic()
            ids = self.store.purge(time.time() - self.retention_days * 86400)
            if ids:
                log.info("deleted %d job(s) older than %g days", len(ids), self.retention_days)

    def start(self) -> None:
        self._beat = _Beat("easyphoto-fleet-monitor", max(1.0, self.store.heartbeat_ttl_s / 3), self._tick)
        self._beat.start()

    def stop(self) -> None:
        if self._beat is not None:
            self._beat.stop()

    @property
    def pids(self) -> list[str]:
        try:
            return [f"{w['host']}:{w['pid']}" for w in self.store.workers()]
        except QueueUnavailableError:
            return []


def fleet_status(url: str, home: Path | None = None) -> dict[str, Any]:
    """What ``easyphoto doctor --queue`` shows: workers (host, pid, GPU, queues, current job), queued
    jobs per kind (ours and the broker's message counts) and the jobs in flight."""
    store = RedisJobStore(url, home)
    store.ping()
    in_flight = [
        {"id": j.id, "kind": j.kind, "user_id": j.user_id, "worker": j.worker, "progress": j.progress}
        for j in store.running()
    ]
    broker = {name: sum(int(store.r.llen(key)) for key in broker_keys(name)) for name in QUEUES.values()}
    return {
        "queue": redacted(url),
        "workers": store.workers(),
        "queued": store.queue_lengths(),
        "messages": broker,
        "in_flight": in_flight,
        "jobs": store.state_counts(),
    }


__all__ = [
    "QUEUES",
    "TASK",
    "FleetMonitor",
    "FleetWorker",
    "Reaper",
    "celery_app",
    "fleet_status",
    "open_store",
    "worker_main",
]
