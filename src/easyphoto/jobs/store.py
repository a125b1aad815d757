"""The job table: SQLite under ``EASYPHOTO_HOME`` (``jobs.db``), with every job's progress events.

States: ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled`` | ``interrupted``. A
training that was cancelled or interrupted (worker killed, server stopped) keeps its checkpoints and
can be put back in the queue with :meth:`JobStore.resume`; it continues from its last checkpoint.
When a server starts, every job still marked ``running`` is marked ``interrupted`` (its worker is
gone). A result is recorded only after every file of it is on disk::

    EASYPHOTO_HOME/
      jobs.db                  jobs (state, params, progress, result, error, times) + events
      jobs/<job_id>/
        inputs/                uploaded photos / templates (validated images, names chosen here)
        files/                 what the job produced and the UI / API serve (each written atomically)
        dataset/               the prepared training set of a training job
        job.log                the job's log
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import easyphoto_home
from ..errors import ConfigError, EasyPhotoError, UserBusyError
from ..users import has_checkpoint

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
)
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED})
KINDS = ("train", "generate")

#: Environment variables holding JSON objects of default settings (applied under request fields).
_JOB_ID_RE = re.compile(r"^[0-9a-f]{16}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    user_id TEXT,
    params TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    log_path TEXT NOT NULL,
    created REAL NOT NULL,
    queued_at REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    resumable INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, queued_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
"""


class JobNotFoundError(EasyPhotoError, LookupError):
    """No job with this id."""


class JobStateError(EasyPhotoError, RuntimeError):
    """The job is not in a state that allows the operation (e.g. resuming a finished generation)."""


# ----------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One row of the job table."""

    id: str
    kind: str
    state: str
    user_id: str | None
    params: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    log_path: str
    created: float
    queued_at: float
    started: float | None
    finished: float | None
    updated: float
    cancel_requested: bool
    worker_pid: int | None
    attempts: int
    resumable: bool
    #: the worker that runs or ran the job: ``{"host": …, "pid": …}`` (None before one took it)
    worker: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """Public view (no server paths)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("log_path", "params")}
        out["params"] = {k: v for k, v in self.params.items() if k not in ("photos", "templates")}
        return out

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        worker = {"host": socket.gethostname(), "pid": row["worker_pid"]} if row["worker_pid"] else None
        return cls(
            id=row["id"],
            kind=row["kind"],
            state=row["state"],
            user_id=row["user_id"],
            params=json.loads(row["params"]),
            progress=json.loads(row["progress"] or "{}"),
            result=json.loads(row["result"]) if row["result"] else None,
            error=row["error"],
            log_path=row["log_path"],
            created=row["created"],
            queued_at=row["queued_at"],
            started=row["started"],
            finished=row["finished"],
            updated=row["updated"],
            cancel_requested=bool(row["cancel_requested"]),
            worker_pid=row["worker_pid"],
            attempts=row["attempts"],
            resumable=bool(row["resumable"]),
            worker=worker,
        )


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` if it has the shape of our ids (16 hex digits), else raise JobNotFoundError."""
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise JobNotFoundError(f"no job {job_id!r}")
    return job_id


class JobStore:
    """The job table in ``EASYPHOTO_HOME/jobs.db`` (SQLite, WAL mode, short transactions).

    Safe to use from several threads and processes: every thread gets its own connection, and the
    claim of a queued job is one ``BEGIN IMMEDIATE`` transaction, so two workers never take the same job.
    """

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home or easyphoto_home())
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "jobs.db"
        self.jobs_root = self.home / "jobs"
        self.jobs_root.mkdir(exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); executescript commits itself

    # ------------------------------------------------------------------ connections
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _tx(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------ folders
    def job_dir(self, job_id: str) -> Path:
        """``EASYPHOTO_HOME/jobs/<id>`` (the id is validated)."""
        return self.jobs_root / validate_job_id(job_id)

    def files_dir(self, job_id: str) -> Path:
        """Where a job's served outputs live."""
        return self.job_dir(job_id) / "files"

    def new_job_dir(self) -> tuple[str, Path]:
        """A fresh job id and its (created) folder with ``inputs/`` and ``files/``."""
        while True:
            job_id = secrets.token_hex(8)
            folder = self.jobs_root / job_id
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            (folder / "inputs").mkdir()
            (folder / "files").mkdir()
            return job_id, folder

    # ------------------------------------------------------------------ writes
    def submit(self, job_id: str, kind: str, params: dict[str, Any], user_id: str | None = None) -> Job:
        """Queue a job whose folder was made by :meth:`new_job_dir` (inputs already written)."""
        if kind not in KINDS:
            raise ConfigError(f"unknown job kind {kind!r}")
        now = time.time()
        log_path = str(self.job_dir(job_id) / "job.log")
        with self._tx(immediate=True) as db:
            if kind == "train" and user_id:  # checked inside the write transaction: no two can slip in
                row = db.execute(
                    "SELECT id FROM jobs WHERE user_id = ? AND kind = 'train' AND state IN (?, ?) LIMIT 1",
                    (user_id, QUEUED, RUNNING),
                ).fetchone()
                if row is not None:
                    raise UserBusyError.coded("user.busy_job", user_id=user_id, job_id=row["id"])
            db.execute(
                "INSERT INTO jobs (id, kind, state, user_id, params, log_path, created, queued_at, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, kind, QUEUED, user_id, json.dumps(params), log_path, now, now, now),
            )
            self._event(db, job_id, {"type": "queued"}, now)
        return self.get(job_id)

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, event: dict[str, Any], now: float) -> None:
        db.execute(
            "INSERT INTO events (job_id, ts, type, data) VALUES (?, ?, ?, ?)",
            (job_id, now, str(event.get("type", "")), json.dumps(event, default=str)),
        )

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """Merge ``progress`` into the job's progress without recording an event (per-step updates)."""
        with self._tx(immediate=True) as db:
            row = db.execute("SELECT progress FROM jobs WHERE id = ?", (job_id,)).fetchone()
            merged = {**(json.loads(row["progress"] or "{}") if row else {}), **progress}
            db.execute(
                "UPDATE jobs SET progress = ?, updated = ? WHERE id = ?",
                (json.dumps(merged, default=str), time.time(), job_id),
            )

    def add_event(self, job_id: str, event: dict[str, Any], progress: dict[str, Any] | None = None) -> None:
        """Record a progress event; ``progress`` (if given) is merged into the job's progress."""
        now = time.time()
        with self._tx(immediate=True) as db:
            self._event(db, job_id, event, now)
            if progress:
                row = db.execute("SELECT progress FROM jobs WHERE id = ?", (job_id,)).fetchone()
                merged = json.loads(row["progress"] or "{}") if row else {}
                merged.update(progress)
                db.execute(
                    "UPDATE jobs SET progress = ?, updated = ? WHERE id = ?",
                    (json.dumps(merged, default=str), now, job_id),
                )

    def claim_next(self, worker_pid: int, kinds: Sequence[str] = KINDS) -> Job | None:
        """Take the next queued job (atomically) and mark it running for ``worker_pid``: a job that ran
        before (a resumed training) first, as the fleet serves it, then the oldest."""
        now = time.time()
        marks = ",".join("?" for _ in kinds)
        with self._tx(immediate=True) as db:
            row = db.execute(
                f"SELECT id FROM jobs WHERE state = ? AND kind IN ({marks})"
                " ORDER BY attempts > 0 DESC, queued_at, created LIMIT 1",
                (QUEUED, *kinds),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = ?, started = ?, updated = ?, worker_pid = ?,"
                " attempts = attempts + 1, finished = NULL, error = NULL WHERE id = ?",
                (RUNNING, now, now, worker_pid, row["id"]),
            )
            self._event(db, row["id"], {"type": "running", "worker_pid": worker_pid}, now)
        return self.get(row["id"])

    def finish(
        self,
        job_id: str,
        worker_pid: int,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        resumable: bool = False,
    ) -> bool:
        """Record the end of a running job; False if the job is no longer this worker's (e.g. the
        server marked it interrupted meanwhile)."""
        if state not in FINISHED:
            raise ValueError(f"not a final state: {state}")
        now = time.time()
        with self._tx(immediate=True) as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, finished = ?, updated = ?, resumable = ?"
                " WHERE id = ? AND state = ? AND worker_pid = ?",
                (
                    state,
                    json.dumps(result, default=str) if result is not None else None,
                    error,
                    now,
                    now,
                    int(resumable),
                    job_id,
                    RUNNING,
                    worker_pid,
                ),
            )
            if cur.rowcount:
                self._event(db, job_id, {"type": state, "error": error}, now)
            return bool(cur.rowcount)

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once; ask the worker to stop a running one (it checks often)."""
        validate_job_id(job_id)
        now = time.time()
        with self._tx(immediate=True) as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job {job_id!r}")
            if row["state"] in (QUEUED, INTERRUPTED):
                db.execute(
                    "UPDATE jobs SET state = ?, finished = ?, updated = ?, cancel_requested = 1,"
                    " error = COALESCE(error, 'cancelled') WHERE id = ?",
                    (CANCELLED, now, now, job_id),
                )
                self._event(db, job_id, {"type": CANCELLED}, now)
            elif row["state"] == RUNNING:
                db.execute("UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ?", (now, job_id))
                self._event(db, job_id, {"type": "cancel_requested"}, now)
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel this job."""
        row = self._conn().execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def mark_interrupted(self, worker_pid: int | None = None, reason: str | None = None) -> list[str]:
        """Mark running jobs ``interrupted`` (all, or those of ``worker_pid``); returns their ids.

        A training is resumable when its checkpoint state is on disk.
        """
        now = time.time()
        with self._tx(immediate=True) as db:
            if worker_pid is None:
                rows = db.execute("SELECT id, kind, user_id FROM jobs WHERE state = ?", (RUNNING,)).fetchall()
            else:
                rows = db.execute(
                    "SELECT id, kind, user_id FROM jobs WHERE state = ? AND worker_pid = ?",
                    (RUNNING, worker_pid),
                ).fetchall()
            ids = []
            for row in rows:
                resumable = row["kind"] == "train" and has_checkpoint(row["user_id"], self.home)
                msg = reason or "interrupted: the worker stopped before the job finished"
                if row["kind"] == "train":
                    msg += "; resume it to continue" if resumable else "; no checkpoint yet, start it again"
                db.execute(
                    "UPDATE jobs SET state = ?, finished = ?, updated = ?, error = ?, resumable = ?"
                    " WHERE id = ?",
                    (INTERRUPTED, now, now, msg, int(resumable), row["id"]),
                )
                self._event(db, row["id"], {"type": INTERRUPTED, "resumable": resumable}, now)
                ids.append(row["id"])
        return ids

    def resume(self, job_id: str) -> Job:
        """Put an interrupted, cancelled or failed training back in the queue to continue from its
        last checkpoint (or, without one, to start over from its prepared photos)."""
        job = self.get(job_id)
        if job.kind != "train":
            raise JobStateError(f"job {job_id} is a {job.kind} job; only trainings can be resumed")
        if job.state not in (INTERRUPTED, CANCELLED, FAILED):
            raise JobStateError(
                f"job {job_id} is {job.state}; only interrupted or cancelled trainings resume"
            )
        if busy_user_job(self, job.user_id, exclude=job_id):
            raise UserBusyError.coded("user.busy_training", user_id=job.user_id)
        params = dict(job.params)
        params["resume"] = has_checkpoint(job.user_id, self.home)
        now = time.time()
        with self._tx(immediate=True) as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, params = ?, queued_at = ?, updated = ?, cancel_requested = 0,"
                " error = NULL, finished = NULL, resumable = 0 WHERE id = ? AND state = ?",
                (QUEUED, json.dumps(params), now, now, job_id, job.state),
            )
            if not cur.rowcount:
                raise JobStateError(f"job {job_id} changed state meanwhile; try again")
            self._event(db, job_id, {"type": "queued", "resume": params["resume"]}, now)
        return self.get(job_id)

    # ------------------------------------------------------------------ reads
    def get(self, job_id: str) -> Job:
        """The job with this id (:class:`JobNotFoundError` if none)."""
        validate_job_id(job_id)
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return Job.from_row(row)

    def list(self, *, state: str | None = None, kind: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if state:
            sql += " AND state = ?"
            args.append(state)
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY created DESC LIMIT ?"
        args.append(int(limit))
        return [Job.from_row(r) for r in self._conn().execute(sql, args).fetchall()]

    def events(self, job_id: str, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events of a job after sequence number ``since`` (each has ``seq``, ``ts`` and its data)."""
        rows = (
            self._conn()
            .execute(
                "SELECT seq, ts, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, int(since), int(limit)),
            )
            .fetchall()
        )
        return [{"seq": r["seq"], "ts": r["ts"], **json.loads(r["data"])} for r in rows]

    def queue_position(self, job: Job) -> int | None:
        """How many queued jobs are ahead of ``job`` (None unless it is queued)."""
        if job.state != QUEUED:
            return None
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) AS n FROM jobs WHERE state = ? AND queued_at < ?", (QUEUED, job.queued_at)
            )
            .fetchone()
        )
        return int(row["n"])

    def purge(self, finished_before: float) -> list[str]:
        """Delete the jobs that finished before ``finished_before`` (epoch seconds): their rows, events
        and folders (inputs, outputs, log). Queued and running jobs are never touched. Returns the ids."""
        with self._tx(immediate=True) as db:
            marks = ",".join("?" for _ in FINISHED)
            rows = db.execute(
                f"SELECT id FROM jobs WHERE state IN ({marks}) AND finished IS NOT NULL AND finished < ?",
                (*FINISHED, finished_before),
            ).fetchall()
            ids = [r["id"] for r in rows]
            for job_id in ids:
                db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        for job_id in ids:  # after the commit: a crash here leaves only an orphan folder, swept next time
            shutil.rmtree(self.jobs_root / job_id, ignore_errors=True)
        known = {r["id"] for r in self._conn().execute("SELECT id FROM jobs").fetchall()}
        for folder in self.jobs_root.iterdir():
            orphan = _JOB_ID_RE.match(folder.name) and folder.name not in known and folder.is_dir()
            if orphan and time.time() - folder.stat().st_mtime > 3600:  # not one being submitted now
                shutil.rmtree(folder, ignore_errors=True)
        return ids

    def state_counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        rows = self._conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        return {r["state"]: int(r["n"]) for r in rows}

    def active_for_user(self, user_id: str, kind: str = "train") -> list[Job]:
        """Queued or running jobs of ``kind`` for a user."""
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM jobs WHERE user_id = ? AND kind = ? AND state IN (?, ?)",
                (user_id, kind, QUEUED, RUNNING),
            )
            .fetchall()
        )
        return [Job.from_row(r) for r in rows]

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.2) -> Job:
        """Block until the job has finished (or ``timeout`` seconds passed); returns the job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.done or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(poll)


def busy_user_job(store: JobStore, user_id: str | None, exclude: str | None = None) -> bool:
    """Whether a training of ``user_id`` is queued or running (other than ``exclude``)."""
    return bool(user_id) and any(j.id != exclude for j in store.active_for_user(str(user_id)))


def log_tail(path: str | Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


__all__ = [
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "KINDS",
    "QUEUED",
    "RUNNING",
    "STATES",
    "SUCCEEDED",
    "Job",
    "JobNotFoundError",
    "JobStateError",
    "JobStore",
    "log_tail",
    "validate_job_id",
]
