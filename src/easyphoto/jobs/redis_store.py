"""The job table in Redis: what every API server and worker of a fleet sees (``EASYPHOTO_QUEUE``).

:class:`RedisJobStore` has the methods of :class:`~easyphoto.jobs.store.JobStore` that the service, the
API, the web UI and :class:`~easyphoto.jobs.worker.Worker` call, so they run unchanged on either. Every
state change is one Lua script (atomic on the server), so two API servers never queue two trainings of
one user and two workers never run the same job. Keys, under ``prefix`` (default ``easyphoto``)::

    job:<id>            hash: the job's fields (params, progress, result as JSON), ``token`` of its
                        current delivery, ``worker_host`` / ``worker_pid`` of the worker running it
    events:<id>         list of the job's events (JSON); an event's ``seq`` is its position + 1
    jobs                sorted set of every job id by creation time (newest-first listing)
    queued              sorted set of queued ids by queue time (queue position)
    running             set of running ids (what the reaper checks)
    pending             sorted set of jobs whose delivery message may not have been sent yet
    counts              hash: number of jobs per state
    lock:train:<user>   the id of the user's queued or running training (one per user, across machines)
    worker:<host>:<pid> a worker's heartbeat (JSON, expires after ``heartbeat_ttl_s``)

Job files (inputs, outputs, logs) stay under ``EASYPHOTO_HOME/jobs/<id>/``, on storage every machine
reaches. Delivery (the Celery message) is not this module's business: ``send(job)`` is called after a
job is queued, and :mod:`.fleet` gives it.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..config import easyphoto_home
from ..errors import ConfigError, UserBusyError
from ..users import has_checkpoint
from . import redis_scripts as lua
from .store import (
    FINISHED,
    KINDS,
    QUEUED,
    RUNNING,
    Job,
    JobNotFoundError,
    JobStateError,
    JobStore,
    validate_job_id,
)

log = logging.getLogger("easyphoto.jobs")

#: Fields kept as JSON text in a job's hash.
_JSON_FIELDS = ("params", "progress", "result")


class QueueUnavailableError(ConfigError):
    """The job queue (Redis) cannot be reached or refused the request; the message names its URL."""


def redacted(url: str) -> str:
    """``url`` without its password (``redis://:secret@h:6379/0`` → ``redis://:***@h:6379/0``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_queue_url(url: str) -> str:
    """``url`` if it names a Redis server (``redis://``, ``rediss://`` or ``unix://``), else ConfigError."""
    scheme = urlsplit(str(url)).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"queue URL {redacted(str(url))!r}: expected redis://HOST:6379/0 (or rediss://, unix://)"
        )
    return str(url)


def _reachable(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a lost connection to Redis into a :class:`QueueUnavailableError` naming the URL."""

    @functools.wraps(method)
    def wrapper(self: RedisJobStore, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise QueueUnavailableError(
                f"the job queue at {redacted(self.url)} cannot be reached ({exc}); jobs go on once it is back"
            ) from None
        except redis.ResponseError as exc:
            raise QueueUnavailableError(f"the job queue at {redacted(self.url)} refused: {exc}") from None

    return wrapper


def _num(value: str | None, cast: Callable[[str], Any] = float) -> Any:
    return cast(value) if value not in (None, "") else None


class RedisJobStore:
    """Jobs and their events in Redis; files under ``home/jobs``.

    ``send``: called with each job that is (re)queued and its delivery token, to deliver it to a
    worker (Celery in a fleet).
    ``host``: this machine's name as recorded in a job's ``worker``. ``heartbeat_ttl_s``: a worker that
    has not been heard from for this long is taken for dead and its job is queued again.

    A worker sets ``fence_pid`` to its pid: its running job then counts as cancelled once the job is
    no longer its own, and Redis being away does not fail the job (progress updates are dropped, the
    outcome waits up to ``outage_wait_s`` for Redis to come back).
    """

    # the folder layout is JobStore's (the same on a shared EASYPHOTO_HOME)
    job_dir = JobStore.job_dir
    files_dir = JobStore.files_dir
    new_job_dir = JobStore.new_job_dir
    wait = JobStore.wait

    def __init__(
        self,
        url: str,
        home: Path | None = None,
        *,
        prefix: str = "easyphoto",
        send: Callable[[Job, str], None] | None = None,
        host: str | None = None,
        heartbeat_ttl_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        import redis

        self.url = check_queue_url(url)
        self.home = Path(home or easyphoto_home())
        self.home.mkdir(parents=True, exist_ok=True)
        self.jobs_root = self.home / "jobs"
        self.jobs_root.mkdir(exist_ok=True)
        self.prefix = prefix
        self.send = send
        self.host = host or socket.gethostname()
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.max_attempts = max_attempts
        self.fence_pid: int | None = None
        self.outage_wait_s = 600.0
        self._outage_logged = 0.0
        self.r = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15
        )
        self._scripts = {name: self.r.register_script(lua.PRELUDE + s) for name, s in lua.SCRIPTS.items()}

    # ------------------------------------------------------------------ helpers
    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _run(self, script: str, *args: Any) -> Any:
        return self._scripts[script](keys=[], args=[self.prefix, *args])

    @_reachable
    def ping(self) -> None:
        """Raise :class:`QueueUnavailableError` unless Redis answers."""
        self.r.ping()

    def _job(self, h: dict[str, str]) -> Job:
        worker_pid = _num(h.get("worker_pid"), int)
        return Job(
            id=h["id"],
            kind=h["kind"],
            state=h["state"],
            user_id=h.get("user_id") or None,
            params=json.loads(h.get("params") or "{}"),
            progress=json.loads(h.get("progress") or "{}"),
            result=json.loads(h["result"]) if h.get("result") else None,
            error=h.get("error") or None,
            log_path=h["log_path"],
            created=float(h["created"]),
            queued_at=float(h["queued_at"]),
            started=_num(h.get("started")),
            finished=_num(h.get("finished")),
            updated=float(h["updated"]),
            cancel_requested=h.get("cancel_requested") == "1",
            worker_pid=worker_pid,
            attempts=int(h.get("attempts") or 0),
            resumable=h.get("resumable") == "1",
            worker={"host": h.get("worker_host"), "pid": worker_pid} if worker_pid else None,
        )

    def _tolerate(self, exc: QueueUnavailableError) -> None:
        """In a worker, a lost progress update is logged (once a minute), never fatal to the job."""
        if self.fence_pid is None:
            raise exc
        if time.monotonic() - self._outage_logged > 60:
            self._outage_logged = time.monotonic()
            log.warning("%s (progress updates are dropped meanwhile)", exc)

    def _deliver(self, job: Job) -> None:
        """Hand a queued job to ``send``; a failure leaves it in ``pending`` for :meth:`resend_pending`."""
        if self.send is None:
            return
        try:
            self.send(job, str(self.r.hget(self.key("job", job.id), "token") or ""))
        except Exception as exc:  # Redis down between the write and the send: the reaper resends
            log.warning("job %s queued but not yet delivered (%s); it will be sent again", job.id, exc)
            return
        self.r.zrem(self.key("pending"), job.id)

    # ------------------------------------------------------------------ writes
    @_reachable
    def submit(self, job_id: str, kind: str, params: dict[str, Any], user_id: str | None = None) -> Job:
        """Queue a job whose folder was made by :meth:`new_job_dir`; a second training of one user is
        refused (:class:`UserBusyError`) whichever server it comes to."""
        if kind not in KINDS:
            raise ConfigError(f"unknown job kind {kind!r}")
        now = time.time()
        fields = {
            "id": job_id,
            "kind": kind,
            "state": QUEUED,
            "user_id": user_id or "",
            "params": json.dumps(params),
            "progress": "{}",
            "log_path": str(self.job_dir(job_id) / "job.log"),
            "created": repr(now),
            "queued_at": repr(now),
            "updated": repr(now),
            "attempts": "0",
            "token": secrets.token_hex(8),
        }
        out = self._run("submit", job_id, kind, user_id or "", json.dumps(fields), repr(now))
        if out[0] == "busy":
            raise UserBusyError.coded("user.busy_job", user_id=user_id, job_id=out[1])
        job = self.get(job_id)
        self._deliver(job)
        return job

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """Merge ``progress`` into the job's progress (no event)."""
        self.add_event(job_id, None, progress)

    def add_event(
        self, job_id: str, event: dict[str, Any] | None, progress: dict[str, Any] | None = None
    ) -> None:
        """Record an event (if any) and merge ``progress`` into the job's (only its worker writes it)."""
        try:
            self._add_event(job_id, event, progress)
        except QueueUnavailableError as exc:
            self._tolerate(exc)

    @_reachable
    def _add_event(
        self, job_id: str, event: dict[str, Any] | None, progress: dict[str, Any] | None = None
    ) -> None:
        now = time.time()
        pipe = self.r.pipeline()
        if event is not None:
            pipe.rpush(self.key("events", job_id), json.dumps({"ts": now, **event}, default=str))
        if progress:
            current = json.loads(self.r.hget(self.key("job", job_id), "progress") or "{}")
            merged = json.dumps({**current, **progress}, default=str)
            pipe.hset(self.key("job", job_id), mapping={"progress": merged, "updated": repr(now)})
        pipe.execute()

    @_reachable
    def claim(self, job_id: str, token: str, worker_pid: int) -> Job | None:
        """Take a delivered job: queued with this delivery ``token`` → running on this worker. None when
        the message is stale (cancelled meanwhile, delivered twice, already taken by another worker)."""
        out = self._run("claim", job_id, token, self.host, str(worker_pid), repr(time.time()))
        return self.get(job_id) if out == "ok" else None

    def finish(self, job_id: str, worker_pid: int, state: str, **outcome: Any) -> bool:
        """Record the end of a running job; False if it is no longer this worker's (requeued meanwhile).
        In a worker, waits up to ``outage_wait_s`` for a Redis that is away (the files are on disk)."""
        deadline = time.monotonic() + (self.outage_wait_s if self.fence_pid is not None else 0)
        while True:
            try:
                return self._finish(job_id, worker_pid, state, **outcome)
            except QueueUnavailableError as exc:
                if time.monotonic() >= deadline:
                    raise
                self._tolerate(exc)
                time.sleep(1.0)

    @_reachable
    def _finish(
        self,
        job_id: str,
        worker_pid: int,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        resumable: bool = False,
    ) -> bool:
        if state not in FINISHED:
            raise ValueError(f"not a final state: {state}")
        res = json.dumps(result, default=str) if result is not None else ""
        args = (job_id, self.host, str(worker_pid), state, res, error or "", "1" if resumable else "0")
        return bool(self._run("finish", *args, repr(time.time())))

    @_reachable
    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once; ask the worker running one to stop (seen at its next check)."""
        validate_job_id(job_id)
        if self._run("cancel", job_id, repr(time.time())) == "missing":
            raise JobNotFoundError(f"no job {job_id!r}")
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the job should stop: cancellation asked, or (with ``fence_pid``) the job is no
        longer running on this worker (it was queued again while this worker was out of touch)."""
        try:
            flag, state, host, pid = self._flags(job_id)
        except QueueUnavailableError as exc:
            self._tolerate(exc)
            return False
        if flag == "1":
            return True
        if self.fence_pid is None:
            return False
        return state != RUNNING or host != self.host or pid != str(self.fence_pid)

    @_reachable
    def _flags(self, job_id: str) -> list[str | None]:
        fields = ["cancel_requested", "state", "worker_host", "worker_pid"]
        return self.r.hmget(self.key("job", job_id), fields)

    @_reachable
    def resume(self, job_id: str) -> Job:
        """Queue an interrupted, cancelled or failed training again; it continues from its checkpoint."""
        job = self.get(job_id)
        if job.kind != "train":
            raise JobStateError(f"job {job_id} is a {job.kind} job; only trainings can be resumed")
        if job.state not in FINISHED - {"succeeded"}:
            raise JobStateError(
                f"job {job_id} is {job.state}; only interrupted or cancelled trainings resume"
            )
        return self._requeue(job)

    def _requeue(self, job: Job) -> Job:
        params = dict(job.params)
        if job.kind == "train":
            params["resume"] = has_checkpoint(job.user_id, self.home)
        out = self._run(
            "resume", job.id, job.state, json.dumps(params), secrets.token_hex(8), repr(time.time())
        )
        if out[0] == "busy":
            raise UserBusyError.coded("user.busy_training", user_id=job.user_id)
        if out[0] != "ok":
            raise JobStateError(f"job {job.id} changed state meanwhile; try again")
        job = self.get(job.id)
        self._deliver(job)
        return job

    @_reachable
    def requeue_stopped(self, job_id: str) -> Job:
        """Queue again a job that its worker stopped while shutting down (any kind; a training
        continues from its checkpoint)."""
        return self._requeue(self.get(job_id))

    @_reachable
    def requeue_dead(self, job: Job, reason: str) -> str:
        """Queue a running job again whose worker is gone (``interrupted`` after ``max_attempts``);
        a training continues from its last checkpoint. Returns the new state ('' if nothing changed)."""
        params = dict(job.params)
        if job.kind == "train":
            params["resume"] = has_checkpoint(job.user_id, self.home)
        host = (job.worker or {}).get("host")
        worker = self.key("worker", str(host), str(job.worker_pid))
        args = (job.id, worker, str(host), str(job.worker_pid), json.dumps(params))
        state = self._run(
            "requeue_dead", *args, secrets.token_hex(8), reason, str(self.max_attempts), repr(time.time())
        )
        if state == QUEUED:
            self._deliver(self.get(job.id))
        return state or ""

    @_reachable
    def resend_pending(self, older_than_s: float = 30.0) -> list[str]:
        """Deliver again the queued jobs whose message may never have been sent (a server died between
        writing the job and sending it, or Redis went away at that moment). A duplicate is harmless:
        only the message with the job's current token is run, and only once."""
        ids = self.r.zrangebyscore(self.key("pending"), "-inf", time.time() - older_than_s)
        sent = []
        for job_id in ids:
            try:
                job = self.get(job_id)
            except JobNotFoundError:
                self.r.zrem(self.key("pending"), job_id)
                continue
            if job.state == QUEUED:
                self._deliver(job)
                sent.append(job_id)
            else:
                self.r.zrem(self.key("pending"), job_id)
        return sent

    # ------------------------------------------------------------------ workers
    @_reachable
    def heartbeat(self, worker_pid: int, info: dict[str, Any]) -> None:
        """Say this worker is alive (and what it runs) for the next ``heartbeat_ttl_s`` seconds."""
        key = self.key("worker", self.host, str(worker_pid))
        payload = {"host": self.host, "pid": worker_pid, "seen": time.time(), **info}
        self.r.set(key, json.dumps(payload, default=str), px=int(self.heartbeat_ttl_s * 1000))

    @_reachable
    def workers(self) -> list[dict[str, Any]]:
        """Every worker heard from within ``heartbeat_ttl_s``."""
        keys = sorted(self.r.scan_iter(match=self.key("worker", "*"), count=500))
        values = self.r.mget(keys) if keys else []
        return [json.loads(v) for v in values if v]

    @_reachable
    def worker_alive(self, host: str | None, pid: int | None) -> bool:
        return bool(self.r.exists(self.key("worker", str(host), str(pid))))

    # ------------------------------------------------------------------ reads
    @_reachable
    def get(self, job_id: str) -> Job:
        """The job with this id (:class:`JobNotFoundError` if none)."""
        validate_job_id(job_id)
        h = self.r.hgetall(self.key("job", job_id))
        if not h:
            raise JobNotFoundError(f"no job {job_id!r}")
        return self._job(h)

    def _iter_jobs(self, ids_key: str, newest_first: bool = True) -> Iterator[Job]:
        start, chunk = 0, 200
        while True:
            rng = self.r.zrevrange if newest_first else self.r.zrange
            ids = rng(self.key(ids_key), start, start + chunk - 1)
            if not ids:
                return
            pipe = self.r.pipeline()
            for job_id in ids:
                pipe.hgetall(self.key("job", job_id))
            for h in pipe.execute():
                if h:
                    yield self._job(h)
            start += chunk

    @_reachable
    def list(self, *, state: str | None = None, kind: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first."""
        out: list[Job] = []
        source = "queued" if state == QUEUED else "jobs"
        for job in self._iter_jobs(source):
            if (state and job.state != state) or (kind and job.kind != kind):
                continue
            out.append(job)
            if len(out) >= limit:
                break
        if source == "queued":
            out.sort(key=lambda j: j.created, reverse=True)
        return out

    @_reachable
    def running(self) -> list[Job]:
        """Every job marked running, on any worker."""
        ids = sorted(self.r.smembers(self.key("running")))
        jobs = []
        for job_id in ids:
            try:
                jobs.append(self.get(job_id))
            except JobNotFoundError:
                continue
        return jobs

    @_reachable
    def events(self, job_id: str, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events of a job after sequence number ``since`` (each has ``seq``, ``ts`` and its data)."""
        since = max(0, int(since))
        raw = self.r.lrange(self.key("events", job_id), since, since + int(limit) - 1)
        return [{"seq": since + i + 1, **json.loads(text)} for i, text in enumerate(raw)]

    @_reachable
    def queue_position(self, job: Job) -> int | None:
        """How many queued jobs are ahead of ``job`` (None unless it is queued)."""
        if job.state != QUEUED:
            return None
        return int(self.r.zcount(self.key("queued"), "-inf", f"({job.queued_at!r}"))

    @_reachable
    def queue_lengths(self) -> dict[str, int]:
        """Queued jobs per kind."""
        counts = dict.fromkeys(KINDS, 0)
        for job in self._iter_jobs("queued", newest_first=False):
            counts[job.kind] = counts.get(job.kind, 0) + 1
        return counts

    @_reachable
    def state_counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        return {k: int(v) for k, v in self.r.hgetall(self.key("counts")).items() if int(v) > 0}

    @_reachable
    def active_for_user(self, user_id: str, kind: str = "train") -> list[Job]:
        """Queued or running jobs of ``kind`` for a user (a training: the holder of the user's lock)."""
        if kind == "train":
            holder = self.r.get(self.key("lock", "train", user_id))
            ids: Sequence[str] = [holder] if holder else []
        else:
            ids = [*self.r.zrange(self.key("queued"), 0, -1), *self.r.smembers(self.key("running"))]
        out = []
        for job_id in ids:
            try:
                job = self.get(job_id)
            except JobNotFoundError:
                continue
            if job.user_id == user_id and job.kind == kind and job.state in (QUEUED, RUNNING):
                out.append(job)
        return out

    @_reachable
    def purge(self, finished_before: float) -> list[str]:
        """Delete the jobs that finished before ``finished_before`` (records, events, folders)."""
        ids = [
            job.id
            for job in self._iter_jobs("jobs", newest_first=False)
            if job.done and job.finished is not None and job.finished < finished_before
        ]
        ids = [job_id for job_id in ids if self._run("purge", job_id) == 1]
        for job_id in ids:
            shutil.rmtree(self.jobs_root / job_id, ignore_errors=True)
        return ids

    def mark_interrupted(self, worker_pid: int | None = None, reason: str | None = None) -> list[str]:
        """Nothing to do in a fleet: a job of a worker that is gone is queued again by the reaper
        (:meth:`requeue_dead`), not by whoever starts next."""
        return []

    def close(self) -> None:
        """Close the connections to Redis."""
        self.r.close()


__all__ = ["QueueUnavailableError", "RedisJobStore", "check_queue_url", "redacted"]
