"""Training and generation as jobs: a SQLite queue under ``EASYPHOTO_HOME`` and a worker process.

The web server never trains or generates inside a request. It stores the inputs under
``EASYPHOTO_HOME/jobs/<job_id>/inputs/`` (file names chosen here, never taken from a request), writes
one row into ``EASYPHOTO_HOME/jobs.db`` and answers with the job id. A worker process
(``python -m easyphoto.jobs worker``) claims queued jobs one at a time, holds one model cache, face
analyzer and portrait generator for its whole life (a second generation does not reload anything),
and records progress events, the log file and the result::

    EASYPHOTO_HOME/
      jobs.db                  jobs (state, params, progress, result, error, times) + events
      jobs/<job_id>/
        inputs/                uploaded photos / templates (validated images)
        files/                 what the job produced and the UI / API serve: portraits, contact sheet,
                               validation images (each written atomically)
        dataset/               the prepared training set of a training job
        job.log                the job's log

States: ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled`` | ``interrupted``. A
training that was cancelled or interrupted (worker killed, server stopped) keeps its checkpoints and
can be put back in the queue with :meth:`JobStore.resume`; it continues from its last checkpoint.
When a server starts, every job still marked ``running`` is marked ``interrupted`` (its worker is
gone). A result is recorded only after every file of it is on disk.

:class:`JobService` is what the HTTP API and the web UI both call: submit, inspect, cancel, resume
jobs and list or delete user models. It holds no pipeline logic — the worker calls
:func:`easyphoto.prepare.prepare`, :func:`easyphoto.train.train` and
:class:`easyphoto.generate.PortraitGenerator` with the job's settings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .config import DEFAULT_MAX_PIXELS, GenerateConfig, PrepareConfig, TrainConfig, easyphoto_home
from .errors import (
    BadImageError,
    ConfigError,
    EasyPhotoError,
    UnknownUserError,
    UserBusyError,
)
from .store import user_dir, users_dir, validate_user_id

log = logging.getLogger("easyphoto.jobs")

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
DEFAULTS_ENV = {
    "train": "EASYPHOTO_TRAIN_DEFAULTS",
    "prepare": "EASYPHOTO_PREPARE_DEFAULTS",
    "generate": "EASYPHOTO_GENERATE_DEFAULTS",
}
CONFIG_CLASSES: dict[str, type] = {"train": TrainConfig, "prepare": PrepareConfig, "generate": GenerateConfig}

_JOB_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")
_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}

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


class JobCancelled(EasyPhotoError):
    """Raised inside the worker when a job's cancellation was requested."""


# -------------------------------------------------------------------------------------------- config


def _env_defaults(kind: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    raw = env.get(DEFAULTS_ENV[kind], "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{DEFAULTS_ENV[kind]} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{DEFAULTS_ENV[kind]} must be a JSON object of {kind} settings")
    return data


def _coerce_field(cls: type, name: str, hint: Any, value: Any) -> Any:
    """Check and convert one settings value to its dataclass field type (clear message on failure)."""
    label = f"{cls.__name__}.{name}"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{label}: a value is required, got null")
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce_field(cls, name, inner[0], value)
    if origin is tuple:
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{label}: expected a list, got {value!r}")
        item_type = args[0] if args else str
        return tuple(
            _coerce_field(cls, name, item_type, v.strip() if isinstance(v, str) else v) for v in items
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{label}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{label}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{label}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{label}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{label}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label}: expected text, got {value!r}")
        return value
    return value


def build_config(cls: type, *layers: dict[str, Any] | None) -> Any:
    """A settings dataclass from its defaults plus ``layers`` of overrides (later layers win).

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the field.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in known:
                raise ConfigError(f"unknown {cls.__name__} setting {key!r}")
            values[key] = _coerce_field(cls, key, hints[key], value)
    return cls(**values)


def effective_defaults(kind: str, environ: dict[str, str] | None = None) -> Any:
    """The ``kind`` settings (``train``/``prepare``/``generate``) with the server's defaults applied
    (``EASYPHOTO_TRAIN_DEFAULTS`` etc., JSON objects)."""
    return build_config(CONFIG_CLASSES[kind], _env_defaults(kind, environ))


def config_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a settings dataclass (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


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
        """Take the oldest queued job (atomically) and mark it running for ``worker_pid``."""
        now = time.time()
        marks = ",".join("?" for _ in kinds)
        with self._tx(immediate=True) as db:
            row = db.execute(
                f"SELECT id FROM jobs WHERE state = ? AND kind IN ({marks})"
                " ORDER BY queued_at, created LIMIT 1",
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
                resumable = row["kind"] == "train" and _has_checkpoint(row["user_id"], self.home)
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
        if _busy_user_job(self, job.user_id, exclude=job_id):
            raise UserBusyError(
                f"user {job.user_id!r} is busy: another training of this user is queued or running"
            )
        params = dict(job.params)
        params["resume"] = _has_checkpoint(job.user_id, self.home)
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


def _has_checkpoint(user_id: str | None, home: Path) -> bool:
    if not user_id:
        return False
    from .train import work_dir

    try:
        return (work_dir(user_id, home) / "state.json").is_file()
    except EasyPhotoError:
        return False


def _busy_user_job(store: JobStore, user_id: str | None, exclude: str | None = None) -> bool:
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


# -------------------------------------------------------------------------------------------- service


@dataclass
class Upload:
    """An uploaded file: the name the client gave (used only as a label) and its bytes."""

    name: str
    data: bytes


@dataclass
class Limits:
    """What the server accepts. ``max_file_bytes`` per photo, ``max_pixels`` per image (checked from
    the header before decoding), at most ``max_photos`` training photos and ``max_templates`` templates."""

    max_file_bytes: int = 32 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_photos: int = 50
    max_templates: int = 20


class UploadTooLargeError(BadImageError):
    """An uploaded file is over the size limit (HTTP 413)."""


def safe_label(name: str | None, fallback: str) -> str:
    """A short, safe display name for an uploaded file (no folders, odd characters replaced)."""
    stem = Path(str(name or "")).name
    base, _, ext = stem.rpartition(".")
    stem = base or ext
    cleaned = _SAFE_NAME_RE.sub("_", stem).strip("_")[:40]
    return cleaned or fallback


def check_image(upload: Upload, limits: Limits) -> tuple[str, tuple[int, int]]:
    """Validate one uploaded image fully (decoded once); returns (extension, (width, height)).

    Raises :class:`BadImageError` (or :class:`UploadTooLargeError`) with a message naming the file.
    """
    from PIL import Image

    from .imageio import load_image

    label = Path(str(upload.name or "upload")).name[:80] or "upload"
    if len(upload.data) > limits.max_file_bytes:
        raise UploadTooLargeError(
            label,
            f"file too large ({len(upload.data) / 1e6:.1f} MB, limit {limits.max_file_bytes / 1e6:.1f} MB)",
        )
    image = load_image(upload.data, name=label, max_pixels=limits.max_pixels, max_bytes=limits.max_file_bytes)
    try:
        with Image.open(io.BytesIO(upload.data)) as im:
            fmt = im.format or ""
    except Exception:  # load_image succeeded, so this does not happen; keep a safe default
        fmt = ""
    return _FORMAT_EXT.get(fmt, "img"), (int(image.shape[1]), int(image.shape[0]))


def user_summary(user_id: str, home: Path) -> dict[str, Any]:
    """What the UI and API list about a trained user (from ``meta.json``)."""
    folder = user_dir(user_id, home)
    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((folder / "meta.json").read_text())
    lora = folder / "lora.safetensors"
    return {
        "user_id": user_id,
        "created": meta.get("created"),
        "best_score": meta.get("best_score"),
        "steps": meta.get("steps"),
        "photos": meta.get("photos"),
        "rank": meta.get("rank"),
        "base_model": meta.get("base_model"),
        "validations": [
            {"step": v.get("step"), "score": v.get("score")} for v in meta.get("validations", [])
        ],
        "lora_bytes": lora.stat().st_size if lora.is_file() else None,
    }


class JobService:
    """The operations the HTTP API and the web UI share: one object per server.

    ``home``: ``EASYPHOTO_HOME``. ``limits``: upload limits. Defaults of every setting come from
    :func:`effective_defaults` (the ``EASYPHOTO_*_DEFAULTS`` environment variables) and are resolved
    when a job is submitted, so the job row records exactly the settings it ran with.
    """

    def __init__(self, home: Path | None = None, limits: Limits | None = None) -> None:
        self.home = Path(home or easyphoto_home())
        self.limits = limits or Limits()
        self.store = JobStore(self.home)
        self.templates_dir = self.home / "templates"

    # ------------------------------------------------------------------ defaults
    def defaults(self, kind: str) -> Any:
        """Effective default settings of ``train``, ``prepare`` or ``generate``."""
        return effective_defaults(kind)

    # ------------------------------------------------------------------ submit
    def _store_uploads(
        self, folder: Path, uploads: Sequence[Upload], prefix: str, what: str, limit: int
    ) -> list[dict[str, Any]]:
        if not uploads:
            raise BadImageError(what, "no files were uploaded")
        if len(uploads) > limit:
            raise ConfigError(f"too many {what}: {len(uploads)} (limit {limit})")
        stored = []
        for i, up in enumerate(uploads):
            ext, size = check_image(up, self.limits)
            label = safe_label(up.name, f"{prefix}{i:02d}")
            name = f"{i:02d}_{label}.{ext}"
            (folder / "inputs" / name).write_bytes(up.data)
            stored.append({"file": name, "name": label, "width": size[0], "height": size[1]})
        return stored

    def submit_train(
        self,
        user_id: str,
        photos: Sequence[Upload],
        train: dict[str, Any] | None = None,
        prepare: dict[str, Any] | None = None,
        *,
        notes: Sequence[str] = (),
    ) -> Job:
        """Validate the user id, settings and photos, store the photos and queue a training."""
        validate_user_id(user_id)
        if train and train.get("validation_templates"):
            raise ConfigError(
                "validation_templates names files on the server: only the operator may set it "
                "(EASYPHOTO_TRAIN_DEFAULTS), not a request"
            )
        tcfg = build_config(TrainConfig, _env_defaults("train"), train)
        pcfg = build_config(PrepareConfig, _env_defaults("prepare"), prepare)
        if _busy_user_job(self.store, user_id):
            raise UserBusyError(
                f"user {user_id!r} is busy: a training of this user is already queued or running"
            )
        job_id, folder = self.store.new_job_dir()
        try:
            stored = self._store_uploads(folder, photos, "photo", "photos", self.limits.max_photos)
            params = {
                "user_id": user_id,
                "photos": stored,
                "train": config_dict(tcfg),
                "prepare": config_dict(pcfg),
                "resume": False,
                "notes": list(notes),
            }
            return self.store.submit(job_id, "train", params, user_id=user_id)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def list_templates(self) -> list[str]:
        """Image files in ``EASYPHOTO_HOME/templates`` (a folder the user can fill)."""
        if not self.templates_dir.is_dir():
            return []
        exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
        return sorted(
            p.name
            for p in self.templates_dir.iterdir()
            if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")
        )

    def template_path(self, name: str) -> Path:
        """A library template by name: only names in the folder's listing are accepted."""
        listing = self.list_templates()
        if name not in listing:
            raise ConfigError(f"no template named {name!r} in the templates folder")
        return self.templates_dir / listing[listing.index(name)]

    def submit_generate(
        self,
        user_ids: Sequence[str],
        templates: Sequence[Upload] = (),
        library_templates: Sequence[str] = (),
        generate: dict[str, Any] | None = None,
        *,
        notes: Sequence[str] = (),
    ) -> Job:
        """Validate user ids (trained), settings and templates, store the templates, queue a generation."""
        ids = [u.strip() for u in user_ids if u and u.strip()]
        if not ids:
            raise ConfigError("give at least one user id")
        for uid in ids:
            if uid.lower() == "none":
                continue
            validate_user_id(uid)
            if not (user_dir(uid, self.home) / "lora.safetensors").is_file():
                raise UnknownUserError(f"no trained model for user {uid!r}; train it first")
        gcfg = build_config(GenerateConfig, _env_defaults("generate"), generate)
        uploads = list(templates)
        for name in library_templates:
            uploads.append(Upload(name=name, data=self.template_path(name).read_bytes()))
        job_id, folder = self.store.new_job_dir()
        try:
            stored = self._store_uploads(folder, uploads, "template", "templates", self.limits.max_templates)
            params = {
                "user_ids": ids,
                "templates": stored,
                "generate": config_dict(gcfg),
                "notes": list(notes),
            }
            first = next((u for u in ids if u.lower() != "none"), None)
            return self.store.submit(job_id, "generate", params, user_id=first)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    # ------------------------------------------------------------------ inspect
    def job_view(
        self, job_id: str, *, events_since: int | None = None, log_lines: int = 40
    ) -> dict[str, Any]:
        """Everything a client shows about a job: state, progress, log tail, result, errors."""
        job = self.store.get(job_id)
        out = job.to_dict()
        out["queue_position"] = self.store.queue_position(job)
        out["log_tail"] = log_tail(job.log_path, log_lines) if log_lines else ""
        out["notes"] = job.params.get("notes", [])
        if events_since is not None:
            out["events"] = self.store.events(job_id, since=events_since)
        return out

    def job_file(self, job_id: str, name: str) -> Path:
        """A file a job produced, by name: only names in the job's ``files/`` listing are served."""
        folder = self.store.files_dir(job_id)
        self.store.get(job_id)
        listing = os.listdir(folder) if folder.is_dir() else []
        if name not in listing or name.startswith("."):
            raise JobNotFoundError(f"job {job_id} has no file {name!r}")
        return folder / listing[listing.index(name)]

    def cancel(self, job_id: str) -> Job:
        """Cancel (queued) or ask to stop (running)."""
        return self.store.request_cancel(job_id)

    def resume(self, job_id: str) -> Job:
        """Requeue an interrupted training (continues from its checkpoint)."""
        return self.store.resume(job_id)

    # ------------------------------------------------------------------ users
    def list_users(self) -> list[dict[str, Any]]:
        """Every trained user with their scores and dates, newest first."""
        root = users_dir(self.home)
        if not root.is_dir():
            return []
        out = []
        for p in root.iterdir():
            if p.is_dir() and not p.name.startswith(".") and (p / "lora.safetensors").is_file():
                with contextlib.suppress(EasyPhotoError):
                    out.append(user_summary(validate_user_id(p.name), self.home))
        return sorted(out, key=lambda u: (u.get("created") or "", u["user_id"]), reverse=True)

    def user_ids(self) -> list[str]:
        """Trained user ids, sorted."""
        return sorted(u["user_id"] for u in self.list_users())

    def user_file(self, user_id: str, name: str) -> Path:
        """``lora.safetensors`` / ``face_id.png`` / ``ref.png`` of a trained user."""
        if name not in ("lora.safetensors", "face_id.png", "ref.png"):
            raise ConfigError(f"no such user file {name!r}")
        path = user_dir(user_id, self.home) / name
        if not path.is_file():
            raise UnknownUserError(f"no trained model for user {user_id!r}")
        return path

    def delete_user(self, user_id: str) -> None:
        """Delete a user model (refused while a training of this user is queued or running)."""
        from .store import user_lock

        folder = user_dir(user_id, self.home)
        if not folder.is_dir():
            raise UnknownUserError(f"no trained model for user {user_id!r}")
        if _busy_user_job(self.store, user_id):
            raise UserBusyError(f"user {user_id!r} is busy: a training of this user is queued or running")
        with user_lock(user_id, self.home, what="deletion"):
            trash = folder.parent / f".{folder.name}.deleted-{secrets.token_hex(4)}"
            os.replace(folder, trash)  # one rename: the model disappears at once, never half
            shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------------------------- worker


class _JobLog:
    """Route the ``easyphoto`` loggers into the job's log file while it runs."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.logger = logging.getLogger("easyphoto")

    def __enter__(self) -> _JobLog:
        self.logger.addHandler(self.handler)
        if self.logger.level == logging.NOTSET or self.logger.level > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


class Worker:
    """Runs queued jobs one at a time with models kept loaded between jobs.

    ``model_config``: base model etc. (default: :class:`ModelConfig` with ``EASYPHOTO_*`` overrides).
    ``parent_pid``: exit (interrupting the running job at its next check) when this process is gone.
    """

    def __init__(
        self,
        home: Path | None = None,
        *,
        model_config: Any = None,
        parent_pid: int | None = None,
        poll: float = 0.1,
    ) -> None:
        self.home = Path(home or easyphoto_home())
        self.store = JobStore(self.home)
        self.model_config = model_config
        self.parent_pid = parent_pid
        self.poll = poll
        self.pid = os.getpid()
        self.stopping = False
        self._cache = None
        self._analyzer = None
        self._generator = None
        self._cancel_checked = 0.0
        self._cancel_flag = False

    # ------------------------------------------------------------------ lazily loaded models
    @property
    def cache(self) -> Any:
        if self._cache is None:
            from .config import ModelConfig, env_overrides
            from .diffusion.models import ModelCache

            self._cache = ModelCache(self.model_config or env_overrides(ModelConfig()))
        return self._cache

    @property
    def analyzer(self) -> Any:
        if self._analyzer is None:
            from .face.analyzer import FaceAnalyzer

            self._analyzer = FaceAnalyzer().load()
        return self._analyzer

    @property
    def generator(self) -> Any:
        if self._generator is None:
            from .generate import PortraitGenerator

            self._generator = PortraitGenerator(self.cache, self.analyzer, home=self.home)
        return self._generator

    # ------------------------------------------------------------------ loop
    def parent_alive(self) -> bool:
        if self.parent_pid is None:
            return True
        return os.getppid() == self.parent_pid

    def run_forever(self) -> None:
        """Claim and run jobs until stopped (SIGTERM/SIGINT) or the parent process is gone."""
        log.info("worker %d ready (home %s)", self.pid, self.home)
        while not self.stopping and self.parent_alive():
            job = self.store.claim_next(self.pid)
            if job is None:
                time.sleep(self.poll)
                continue
            self.run_job(job)
        log.info("worker %d stopping", self.pid)

    def should_stop(self, job_id: str) -> bool:
        """Polled by the running job: cancellation requested, worker stopping, or parent gone."""
        if self.stopping or not self.parent_alive():
            return True
        now = time.monotonic()
        if now - self._cancel_checked > 0.25:
            self._cancel_checked = now
            self._cancel_flag = self.store.cancel_requested(job_id)
        return self._cancel_flag

    def _stop_reason(self, job_id: str) -> str:
        return CANCELLED if self.store.cancel_requested(job_id) else INTERRUPTED

    def run_job(self, job: Job) -> None:
        """Run one claimed job and record its outcome (never raises for a job's own errors)."""
        from .train import TrainingInterrupted

        self._cancel_checked, self._cancel_flag = 0.0, False
        folder = self.store.job_dir(job.id)
        (folder / "files").mkdir(parents=True, exist_ok=True)
        with _JobLog(Path(job.log_path)):
            log.info("job %s (%s) started by worker %d, attempt %d", job.id, job.kind, self.pid, job.attempts)
            t0 = time.perf_counter()
            try:
                if job.kind == "train":
                    result = self._run_train(job, folder)
                else:
                    result = self._run_generate(job, folder)
            except (TrainingInterrupted, JobCancelled) as exc:
                state = self._stop_reason(job.id)
                resumable = job.kind == "train" and _has_checkpoint(job.user_id, self.home)
                msg = "cancelled" if state == CANCELLED else f"interrupted: {exc}"
                if job.kind == "train":
                    msg += "; resume it to continue" if resumable else ""
                log.warning("job %s %s", job.id, msg)
                self.store.finish(job.id, self.pid, state, error=msg, resumable=resumable)
            except EasyPhotoError as exc:
                log.error("job %s failed: %s", job.id, exc)
                resumable = job.kind == "train" and _has_checkpoint(job.user_id, self.home)
                self.store.finish(job.id, self.pid, FAILED, error=str(exc), resumable=resumable)
            except Exception as exc:
                log.exception("job %s failed with an unexpected error", job.id)
                msg = f"internal error: {type(exc).__name__}: {exc} (details in the job log)"
                self.store.finish(job.id, self.pid, FAILED, error=msg)
            else:
                log.info("job %s succeeded in %.1fs", job.id, time.perf_counter() - t0)
                self.store.finish(job.id, self.pid, SUCCEEDED, result=result)

    # ------------------------------------------------------------------ training
    def _run_train(self, job: Job, folder: Path) -> dict[str, Any]:
        from .prepare import PreparedSet, prepare, write_contact_sheet
        from .store import write_json_atomic
        from .train import train

        params = job.params
        user_id = validate_user_id(params["user_id"])
        tcfg = build_config(TrainConfig, params.get("train"))
        pcfg = build_config(PrepareConfig, params.get("prepare"))
        files = folder / "files"
        ds_out = folder / "dataset"
        resume = bool(params.get("resume"))
        emit = self.store.add_event

        if resume and (ds_out / "report.json").is_file():
            prepared = PreparedSet.load(ds_out)
            log.info("resuming training of %s from its checkpoint", user_id)
        else:
            resume = False
            photos = [folder / "inputs" / p["file"] for p in params["photos"]]
            emit(job.id, {"type": "stage", "stage": "prepare"}, {"stage": "prepare", "fraction": 0.0})

            def on_photo(i: int, total: int, source: str) -> None:
                emit(
                    job.id,
                    {"type": "prepare", "index": i, "total": total, "photo": Path(source).name},
                    {"stage": "prepare", "photo": i + 1, "photos": total},
                )
                if self.should_stop(job.id):
                    raise JobCancelled("stopped during preparation")

            try:
                prepared = prepare(
                    photos, ds_out, pcfg, analyzer=self.analyzer, user_id=user_id, progress=on_photo
                )
            except EasyPhotoError as exc:
                results = getattr(exc, "results", None)
                if results:
                    with contextlib.suppress(Exception):
                        sheet = PreparedSet(ds_out, results, None, pcfg, user_id)  # type: ignore[arg-type]
                        write_contact_sheet(sheet, files / "contact_sheet.png")
                        emit(job.id, {"type": "contact_sheet", "file": "contact_sheet.png"})
                raise
            write_contact_sheet(prepared, files / "contact_sheet.png")
            write_json_atomic(files / "prepare_report.json", prepared.report())
            kept = [p.source for p in prepared.kept]
            rejected = [{"photo": Path(p.source).name, "reason": p.reason} for p in prepared.rejected]
            log.info("prepared %d photo(s), rejected %d", len(kept), len(rejected))
            for r in rejected:
                log.info("  rejected %s: %s", r["photo"], r["reason"])
            emit(
                job.id,
                {
                    "type": "prepared",
                    "kept": len(kept),
                    "rejected": rejected,
                    "contact_sheet": "contact_sheet.png",
                },
                {
                    "stage": "train",
                    "kept": len(kept),
                    "rejected": len(rejected),
                    "contact_sheet": "contact_sheet.png",
                },
            )

        validations: list[dict[str, Any]] = []

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("type")
            if kind == "start":
                emit(
                    job.id,
                    event,
                    {
                        "stage": "train",
                        "step": event["step"],
                        "max_steps": event["max_steps"],
                        "fraction": 0.0,
                    },
                )
            elif kind == "step":
                frac = event["step"] / max(1, event["max_steps"])
                emit(
                    job.id,
                    event,
                    {
                        "stage": "train",
                        "step": event["step"],
                        "max_steps": event["max_steps"],
                        "loss": round(float(event["loss"]), 5),
                        "eta_s": event.get("eta_s"),
                        "fraction": round(frac, 4),
                    },
                )
            elif kind == "validation":
                names = []
                for src in event.get("images", []):
                    name = f"val_{Path(src).name}"
                    with contextlib.suppress(OSError):
                        _copy_atomic(Path(src), files / name)
                        names.append(name)
                entry = {"step": event["step"], "scores": event["scores"], "images": names}
                validations[:] = [v for v in validations if v["step"] != event["step"]] + [entry]
                emit(job.id, {"type": "validation", **entry}, {"validations": validations})
            elif kind == "done":
                emit(
                    job.id,
                    {k: v for k, v in event.items() if k != "path"},
                    {"stage": "done", "fraction": 1.0},
                )

        result = train(
            user_id,
            prepared.dataset_dir,
            tcfg,
            cache=self.cache,
            analyzer=self.analyzer,
            on_event=on_event,
            should_stop=lambda: self.should_stop(job.id),
            resume=resume,
            home=self.home,
        )
        if self._generator is not None:
            self._generator._users.pop(user_id, None)  # a retrained user's assets must reload
        for v in result.validations:
            if not any(x["step"] == v.step for x in validations):
                validations.append({"step": v.step, "scores": v.scores, "images": []})
        face = user_dir(user_id, self.home) / "face_id.png"
        if face.is_file():
            _copy_atomic(face, files / "face_id.png")
        return {
            "user_id": user_id,
            "steps": result.steps,
            "best_score": round(float(result.best_score), 4),
            "fused_steps": list(result.fused_steps),
            "validations": sorted(validations, key=lambda v: v["step"]),
            "contact_sheet": "contact_sheet.png" if (files / "contact_sheet.png").is_file() else None,
            "face_id": "face_id.png" if (files / "face_id.png").is_file() else None,
        }

    # ------------------------------------------------------------------ generation
    def _run_generate(self, job: Job, folder: Path) -> dict[str, Any]:
        from .errors import NoFaceError

        params = job.params
        gcfg = build_config(GenerateConfig, params.get("generate"))
        ids = list(params["user_ids"])
        files = folder / "files"
        images: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        templates = params["templates"]
        gen = self.generator
        for i, tpl in enumerate(templates):
            if self.should_stop(job.id):
                raise JobCancelled(f"stopped after {i} of {len(templates)} template(s)")
            self.store.add_event(
                job.id,
                {"type": "template", "index": i, "total": len(templates), "name": tpl["name"]},
                {
                    "stage": "generate",
                    "template": i + 1,
                    "templates": len(templates),
                    "fraction": i / len(templates),
                },
            )
            try:
                portrait = gen.generate(
                    folder / "inputs" / tpl["file"],
                    ids,
                    gcfg,
                    template_name=tpl["name"],
                    on_event=lambda e, i=i: self.store.add_event(job.id, {**e, "template": i}),
                )
            except (NoFaceError, BadImageError, ConfigError) as exc:
                log.warning("template %s: %s", tpl["name"], exc)
                errors.append({"template": tpl["name"], "error": str(exc)})
                continue
            name = f"portrait_{i:02d}_{tpl['name']}.png"
            portrait.save(files / name)
            scores = [asdict(s) for s in portrait.scores]
            entry = {
                "file": name,
                "template": tpl["name"],
                "scores": scores,
                "score": round(portrait.score, 4),
                "seed": portrait.params.get("seed"),
                "seconds": portrait.timings.get("total"),
            }
            images.append(entry)
            self.store.add_event(job.id, {"type": "portrait", "index": i, **entry})
            log.info(
                "portrait %s: %s in %.1fs",
                name,
                ", ".join(f"{s['user_id']} {s['similarity']:.3f}" for s in scores),
                portrait.timings.get("total", 0.0),
            )
        if not images:
            raise errors_to_exception(errors)
        for uid in dict.fromkeys(u for u in ids if u.lower() != "none"):
            face = user_dir(uid, self.home) / "face_id.png"
            if face.is_file():
                _copy_atomic(face, files / f"face_id_{uid}.png")
        self.store.add_event(job.id, {"type": "done"}, {"stage": "done", "fraction": 1.0})
        return {"images": images, "errors": errors, "user_ids": ids}


def errors_to_exception(errors: list[dict[str, Any]]) -> EasyPhotoError:
    """One readable error for a generation where every template failed."""
    if len(errors) == 1:
        return EasyPhotoError(errors[0]["error"])
    return EasyPhotoError("no portrait could be made:\n  " + "\n  ".join(e["error"] for e in errors))


def _copy_atomic(src: Path, dst: Path) -> None:
    from .store import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


# -------------------------------------------------------------------------------------- supervisor


@dataclass
class WorkerSupervisor:
    """Starts worker processes, restarts one that dies, and marks its running job ``interrupted``.

    Used by the server: ``start()`` marks every job still ``running`` from a previous server as
    interrupted (nothing runs them any more), then spawns ``workers`` processes
    (``python -m easyphoto.jobs worker``). ``stop()`` asks them to stop (SIGTERM: a training saves a
    checkpoint and becomes resumable) and kills them after ``grace_s``.
    """

    home: Path
    workers: int = 1
    env: dict[str, str] | None = None
    grace_s: float = 20.0
    restart_delay_s: float = 1.0
    procs: list[subprocess.Popen] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def _spawn(self) -> subprocess.Popen:
        cmd = [
            sys.executable,
            "-m",
            "easyphoto.jobs",
            "worker",
            "--home",
            str(self.home),
            "--parent-pid",
            str(os.getpid()),
        ]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        log.info("started worker %d", proc.pid)
        return proc

    def start(self) -> None:
        store = JobStore(self.home)
        stale = store.mark_interrupted(reason="interrupted: the server stopped while the job was running")
        if stale:
            log.warning(
                "marked %d job(s) from a previous run as interrupted: %s", len(stale), ", ".join(stale)
            )
        self.procs = [self._spawn() for _ in range(max(1, self.workers))]
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="easyphoto-worker-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        store = JobStore(self.home)
        failures = 0
        while not self._stop.wait(0.5):
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
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        store = JobStore(self.home)
        store.mark_interrupted(reason="interrupted: the server stopped while the job was running")


# -------------------------------------------------------------------------------------------- main


def _worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m easyphoto.jobs", description="EasyPhoto job worker.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="Run queued jobs until stopped.")
    w.add_argument("--home", type=Path, default=None, help="EASYPHOTO_HOME (default: environment).")
    w.add_argument("--parent-pid", type=int, default=None, help="Exit when this process is gone.")
    w.add_argument("--poll", type=float, default=0.1, help="Seconds between queue checks when idle.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    if args.home is not None:
        os.environ["EASYPHOTO_HOME"] = str(args.home)
    worker = Worker(args.home, parent_pid=args.parent_pid, poll=args.poll)

    def _stop(signum: int, _frame: Any) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run_forever()
    return 0


__all__ = [
    "CANCELLED",
    "FAILED",
    "INTERRUPTED",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "Job",
    "JobCancelled",
    "JobNotFoundError",
    "JobService",
    "JobStateError",
    "JobStore",
    "Limits",
    "Upload",
    "UploadTooLargeError",
    "Worker",
    "WorkerSupervisor",
    "build_config",
    "effective_defaults",
    "log_tail",
    "validate_job_id",
]

if __name__ == "__main__":
    sys.exit(_worker_main())
