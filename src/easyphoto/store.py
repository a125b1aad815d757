"""Where user models live, safe user ids, and atomic writes.

User models are folders under ``EASYPHOTO_HOME/users/<id>/``. A user id becomes a folder name, so it
is validated strictly (:func:`validate_user_id`); nothing here ever joins an unvalidated string to a path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import easyphoto_home
from .errors import InvalidUserIdError

_USER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RESERVED = {"none", "con", "prn", "aux", "nul"}


def validate_user_id(user_id: str) -> str:
    """Return ``user_id`` if it is safe as a folder name, else raise :class:`InvalidUserIdError`.

    Allowed: 1–64 characters of letters, digits, ``_``, ``-`` and ``.``, starting with a letter or
    digit, not ending with ``.``, and not a reserved word (``none`` means "skip this face" in
    multi-person generation).
    """
    if not isinstance(user_id, str) or not _USER_ID_RE.match(user_id) or user_id.endswith("."):
        raise InvalidUserIdError(
            f"invalid user id {user_id!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    if user_id.lower() in _RESERVED or ".." in user_id:
        raise InvalidUserIdError(f"invalid user id {user_id!r}: reserved name")
    return user_id


def users_dir(home: Path | None = None) -> Path:
    """Folder of all user models."""
    return (home or easyphoto_home()) / "users"


def user_dir(user_id: str, home: Path | None = None) -> Path:
    """Folder of one user's model (validated id; the folder may not exist yet)."""
    return users_dir(home) / validate_user_id(user_id)


def dataset_dir(user_id: str, home: Path | None = None) -> Path:
    """Default folder of a user's prepared training set (kept apart from the user model, which is
    replaced as a whole when training finishes)."""
    return (home or easyphoto_home()) / "datasets" / validate_user_id(user_id)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    On error the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | os.PathLike, obj: Any) -> Path:
    """Write JSON (UTF-8, indented) to ``target`` atomically."""
    return write_bytes_atomic(target, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces the folder ``target`` as a whole.

    A failure leaves ``target`` untouched (old content kept, no half-written folder). The swap is two
    renames (old aside, new in place); the old folder is deleted only after the new one is in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.{os.getpid()}.old"
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def user_lock(user_id: str, home: Path | None = None, what: str = "a job") -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on one user while a job changes their model.

    A second holder gets :class:`~easyphoto.errors.UserBusyError` at once. The lock is an OS file lock
    (``flock``), so it is released when the process dies: a crash never leaves a user locked forever.
    """
    import fcntl

    from .errors import UserBusyError

    lock_dir = (home or easyphoto_home()) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{validate_user_id(user_id)}.lock"
    fh = open(path, "a+")  # noqa: SIM115 - held for the duration of the context
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise UserBusyError(f"user {user_id!r} is busy: {holder} is running for this user") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{what} (pid {os.getpid()})")
        fh.flush()
        yield path
    finally:
        fh.close()
