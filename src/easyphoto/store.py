"""Where user models live, safe user ids, output paths, atomic writes and crash recovery.

User models are folders under ``EASYPHOTO_HOME/users/<id>/``. A user id becomes a folder name, so it
is validated strictly and made canonical (lower case) by :func:`validate_user_id`; nothing here ever
joins an unvalidated string to a path.

* :func:`check_output_file` / :func:`check_output_dir`: a clear :class:`ConfigError` before any work
  when a folder is where a file goes, a file where a folder goes, or a parent is a file.
* :func:`atomic_path` / :func:`write_bytes_atomic` / :func:`write_json_atomic` (one file) and
  :func:`atomic_dir` (a whole folder): all or nothing, fsynced, even when the process is killed.
* :func:`recover_stale`: at start-up, repair and clean what killed writers left behind.
* :func:`user_lock`: one job changes a user's model at a time (an OS lock on Linux, macOS, Windows).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import easyphoto_home
from .errors import ConfigError, InvalidUserIdError

_USER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: Names no user id may take, alone or followed by an extension (``con.txt`` is ``CON`` on Windows),
#: in any case. ``none`` means "skip this face" in multi-person generation; the rest are Windows
#: device names (including the superscript-digit ports and the ``$`` devices, already refused by
#: the character set but listed so the rule stands on its own). Linux and macOS reserve only ``.``
#: and ``..``, which the character set and the ``..`` rule refuse.
RESERVED_USER_IDS = frozenset(
    {"none", "con", "prn", "aux", "nul", "conin$", "conout$", "clock$"}
    | {f"{port}{n}" for port in ("com", "lpt") for n in "0123456789¹²³"}
)


def validate_user_id(user_id: str) -> str:
    """Return the canonical (lower-case) form of ``user_id``, or raise :class:`InvalidUserIdError`.

    Allowed: 1–64 characters of ASCII letters, digits, ``_``, ``-`` and ``.``, starting with a letter
    or digit, not ending with ``.``, no ``..``, and not a reserved name (:data:`RESERVED_USER_IDS`,
    with or without an extension, in any case). The whole string must match: ``"alice\\n"`` is refused.

    Ids are case-insensitive: ``"Alice"`` and ``"alice"`` are the same user, with one folder
    (``users/alice``) and one lock, on case-sensitive and case-insensitive disks alike. Use the
    returned id for every path.
    """
    if not isinstance(user_id, str) or not _USER_ID_RE.fullmatch(user_id) or user_id.endswith("."):
        raise InvalidUserIdError.coded("user_id.invalid", user_id=user_id)
    canonical = user_id.lower()
    if ".." in canonical:
        raise InvalidUserIdError.coded("user_id.dotdot", user_id=user_id)
    if canonical.split(".", 1)[0] in RESERVED_USER_IDS:
        raise InvalidUserIdError.coded("user_id.reserved", user_id=user_id)
    return canonical


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


# --------------------------------------------------------------------------- output paths


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _config_error(message: str, field: str | None) -> ConfigError:
    error = ConfigError(message)
    if field:
        error.fields = [field]
    return error


def _check_parents(path: Path, field: str | None, *, writable: bool = True) -> None:
    """Every existing ancestor of ``path`` must be a folder we may write in (missing ones are made)."""
    for parent in path.parents:
        try:
            mode = os.stat(parent).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise _config_error(f"{path}: cannot use {parent} ({exc.strerror or exc})", field) from None
        if not stat.S_ISDIR(mode):
            raise _config_error(f"{path}: {parent} is {_kind(mode)}, expected a folder", field)
        if writable and not os.access(parent, os.W_OK | os.X_OK):
            raise _config_error(f"{path}: cannot write in {parent} (permission denied)", field)
        return


def _mode(target: Path, field: str | None) -> int | None:
    """``st_mode`` of ``target``; ``None`` when it is missing or below a file (checked by the caller)."""
    try:
        return os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _config_error(f"{target}: cannot use this path ({exc.strerror or exc})", field) from None


def check_output_file(path: str | os.PathLike, *, field: str | None = None) -> Path:
    """Check that ``path`` can be written as a file; return it as a :class:`~pathlib.Path`.

    Refused with a :class:`~easyphoto.errors.ConfigError` (one line naming the path): a folder or
    anything but a regular file where the file goes (an atomic write would replace a device node or
    a pipe), an ancestor that is a file, or a folder we may not write in. Missing folders are fine
    (they are made on write). ``field`` names the setting for ``ConfigError.fields`` (e.g. ``"out"``).
    """
    target = Path(path)
    mode = _mode(target, field)
    if mode is not None and stat.S_ISDIR(mode):
        raise _config_error(f"{target}: is a folder, expected a file path", field)
    if mode is not None and not stat.S_ISREG(mode):
        raise _config_error(f"{target}: is {_kind(mode)}, expected a file path", field)
    _check_parents(target, field)
    return target


def check_output_dir(path: str | os.PathLike, *, field: str | None = None, writable: bool = True) -> Path:
    """Check that ``path`` can be used as an output folder; return it as a :class:`~pathlib.Path`.

    Refused with a :class:`~easyphoto.errors.ConfigError`: a file (or anything but a folder) at
    ``path``, an ancestor that is a file, or (with ``writable``) a folder we may not write in. A
    missing folder is fine.
    """
    target = Path(path)
    mode = _mode(target, field)
    if mode is not None and not stat.S_ISDIR(mode):
        raise _config_error(f"{target}: is {_kind(mode)}, expected a folder", field)
    if mode is not None:
        if writable and not os.access(target, os.W_OK | os.X_OK):
            raise _config_error(f"{target}: cannot write in this folder (permission denied)", field)
        return target
    _check_parents(target, field, writable=writable)
    return target


# --------------------------------------------------------------------------- durable, atomic writes


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new, renamed, removed names) to disk. No-op where folders cannot be
    opened (Windows) or the file system does not support it (EINVAL)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


#: Windows flushes a file (``FlushFileBuffers``) only through a handle opened for writing.
_FSYNC_FLAGS = (os.O_RDWR | getattr(os, "O_BINARY", 0)) if os.name == "nt" else os.O_RDONLY


def _fsync_tree(root: Path) -> None:
    """fsync every regular file under ``root``, then every folder (deepest first), then ``root``."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue  # symbolic links and the like hold no data of their own
            fd = os.open(path, _FSYNC_FLAGS)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _remove(path: Path) -> None:
    """Delete a folder tree, a file or a link; never follows a link into its target."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_renameat2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically with Linux's ``renameat2(RENAME_EXCHANGE)``.

    Returns False (having changed nothing) where that is not available: not Linux, no ``ctypes``, a
    libc without ``renameat2`` (glibc before 2.28, some musl builds), or a file system that refuses the
    flag (EINVAL). Setting ``_renameat2 = False`` forces the portable two-rename path of :func:`_swap_in`.
    """
    global _renameat2
    if not sys.platform.startswith("linux") or _renameat2 is False:
        return False
    if _renameat2 is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).renameat2
        except (ImportError, OSError, AttributeError):
            fn = False
        else:
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
        _renameat2 = fn
    if _renameat2 is False:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"{os.strerror(code)}: cannot swap {a} and {b}")


#: Pauses (s) between tries of a rename that Windows refused (about 2 s in all).
_REPLACE_RETRIES = (0.02, 0.05, 0.1, 0.2, 0.4, 0.5, 0.75)


def replace_path(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """:func:`os.replace`, retried for a moment on Windows, where a file or folder that another
    process holds open (a reader of the previous version, an antivirus or indexer) cannot be replaced
    or renamed (PermissionError) until it is closed. Elsewhere a single call: POSIX renames over open
    files."""
    for pause in _REPLACE_RETRIES if os.name == "nt" else ():
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            time.sleep(pause)
    os.replace(src, dst)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    The new file is fsynced before the rename and its folder after it, so a power cut leaves the old
    file or the new one, whole. On error the temporary file is removed and ``target`` is left as it
    was. The temporary name holds our pid (``.<name>.<pid>.<random>.tmp``): :func:`recover_stale`
    removes it if we die before the rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{owner_tag()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        replace_path(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``target`` atomically and durably (file and folder fsynced)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | os.PathLike, obj: Any) -> Path:
    """Write JSON (UTF-8, indented) to ``target`` atomically."""
    return write_bytes_atomic(target, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def _swap_in(staging: Path, target: Path) -> None:
    """Put the finished ``staging`` folder at ``target`` and delete what was there before.

    With an existing ``target`` on Linux, one ``renameat2(RENAME_EXCHANGE)``: ``target`` is never
    missing, and the old content, now at ``staging``, is deleted. Elsewhere (macOS, Windows, no
    ``ctypes``, a file system without the flag) two renames (old aside to ``.<name>.<pid>.old``, new in
    place; each retried on Windows while another process holds a file open): a crash between them
    leaves ``target`` missing, which :func:`recover_stale` repairs from the ``.old`` folder.
    """
    if not os.path.lexists(target):
        os.rename(staging, target)
        _fsync_dir(target.parent)
        return
    if _exchange(staging, target):
        _fsync_dir(target.parent)
        _remove(staging)  # now the previous content
        return
    old = target.parent / f".{target.name}.{owner_tag()}.old"
    if os.path.lexists(old):
        _remove(old)
    replace_path(target, old)
    try:
        replace_path(staging, target)
    except BaseException:
        replace_path(old, target)
        raise
    _fsync_dir(target.parent)
    _remove(old)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces the folder ``target`` as a whole.

    A failure leaves ``target`` untouched (old content kept, no half-written folder). Before the swap
    every file and folder in the staging folder is fsynced; the parent folder is fsynced after it, so
    the new folder survives a power cut whole. The swap itself is atomic on Linux (see
    :func:`_swap_in`); a process killed at any point leaves the previous ``target`` in place, or
    restorable, and stray ``.<name>.<pid>.*`` folders that :func:`recover_stale` removes.

    Raises:
        ConfigError: ``target`` is a file, or one of its parents is.
    """
    target = check_output_dir(target, writable=False)  # kinds only: let the OS judge permissions
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.{owner_tag()}.", suffix=".staging", dir=target.parent)
    )
    try:
        yield staging
        _fsync_tree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        _swap_in(staging, target)
    except BaseException:
        if os.path.lexists(staging):
            _remove(staging)
        raise


# --------------------------------------------------------------------------- crash recovery

_STALE_RE = re.compile(
    r"\.(?P<name>.+)\.(?P<pid>[0-9]+)(?:-(?P<host>[0-9a-f]{8}))?"
    r"\.(?:(?P<old>old)|[A-Za-z0-9_]+\.(?P<kind>staging|tmp))"
)


def host_tag() -> str:
    """8 hex digits naming this machine (a hash of its host name) in temporary file names."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def owner_tag() -> str:
    """``<pid>-<host tag>``: who owns a temporary file or folder. With ``EASYPHOTO_HOME`` on storage
    several machines share, a pid alone would let one machine's repair delete another's live files."""
    return f"{os.getpid()}-{host_tag()}"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a reused pid counts as alive: we then leave its files).

    POSIX: ``kill(pid, 0)``. Windows: ``OpenProcess`` and a zero-timeout wait on its handle, never
    ``os.kill`` (which there sends Ctrl+C to the console or terminates the process). When it cannot
    tell, it answers True (keep what the process may own).
    """
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return _win_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: exists, owned by someone else; anything else: cannot tell
        return True
    return True


def _win_pid_alive(pid: int) -> bool:
    """Windows: a process handle we can open and whose wait times out is a live process."""
    try:
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    except (ImportError, OSError, AttributeError):
        return True
    synchronize, wait_object_0, error_invalid_parameter = 0x00100000, 0, 87
    kernel32.OpenProcess.restype = ctypes.c_void_p
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return ctypes.get_last_error() != error_invalid_parameter  # 87: no such process
    try:
        return kernel32.WaitForSingleObject(ctypes.c_void_p(handle), 0) != wait_object_0
    finally:
        kernel32.CloseHandle(ctypes.c_void_p(handle))


def recover_stale(parent: str | os.PathLike) -> list[str]:
    """Repair what processes killed inside :func:`atomic_dir` / :func:`atomic_path` left in ``parent``.

    Only names whose owner process (the pid in the name) is gone are touched, and only names written on
    this machine (their ``<pid>-<host tag>``, :func:`owner_tag`; names with a bare pid are older
    ones, taken as this machine's): another machine's leftovers on shared storage are its to repair.

    * ``.<name>.<pid>.old`` with ``<name>`` missing (killed between the two renames of the fallback
      swap): renamed back to ``<name>``; with several, the most recently renamed one.
    * other ``.<name>.<pid>.old``, ``.<name>.<pid>.<random>.staging`` (killed while writing, or after an
      exchange before deleting the old copy) and ``.<name>.<pid>.<random>.tmp``: deleted.

    Call it at start-up, before any job runs, on each folder whose children are written with
    :func:`atomic_dir` (``users/``, ``datasets/``). Returns one line per action, e.g.
    ``"restored alice from .alice.4242.old"``; an empty list when there was nothing to do.
    """
    root = Path(parent)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    done: list[str] = []
    olds: dict[str, list[os.DirEntry]] = {}
    here = host_tag()
    for entry in entries:
        match = _STALE_RE.fullmatch(entry.name)
        if not match or (match["host"] or here) != here or pid_alive(int(match["pid"])):
            continue  # not ours to judge: another machine's (shared storage), or a live process
        if match["old"]:
            olds.setdefault(match["name"], []).append(entry)
            continue
        _remove(Path(entry.path))
        done.append(f"removed {entry.name}")
    for name, candidates in olds.items():
        target = root / name
        if not os.path.lexists(target):
            newest = max(candidates, key=lambda e: e.stat(follow_symlinks=False).st_ctime_ns)
            os.rename(newest.path, target)
            done.append(f"restored {name} from {newest.name}")
            candidates = [e for e in candidates if e is not newest]
        for entry in candidates:
            _remove(Path(entry.path))
            done.append(f"removed {entry.name}")
    if done:
        _fsync_dir(root)
    return done


def lowercase_user_dirs(parent: str | os.PathLike) -> list[str]:
    """Rename folders named by a mixed-case user id (written before ids were case-insensitive) to
    the canonical lower-case name, so ``users/Alice`` is found as ``alice``.

    A folder whose lower-case name is already taken is left alone and reported as a conflict. Hidden
    names and names that are not valid user ids are skipped. Returns one line per rename or conflict.
    """
    root = Path(parent)
    if not root.is_dir():
        return []
    done: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        name = entry.name
        if name.startswith(".") or name == name.lower() or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            canonical = validate_user_id(name)
        except InvalidUserIdError:
            continue
        target = root / canonical
        # On a case-insensitive disk ``alice`` *is* ``Alice``: a rename then only changes the case.
        if os.path.lexists(target) and not os.path.samefile(entry.path, target):
            done.append(f"conflict: {name} and {canonical} both exist; kept both, {name} is unused")
            continue
        os.rename(entry.path, target)
        done.append(f"renamed {name} to {canonical}")
    if done:
        _fsync_dir(root)
    return done


@contextlib.contextmanager
def user_lock(user_id: str, home: Path | None = None, what: str = "a job") -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on one user while a job changes their model.

    A second holder (another process, or another ``user_lock`` in this one) gets
    :class:`~easyphoto.errors.UserBusyError` at once, naming the holder (``"training (pid 4242)"``).
    The lock is ``filelock``'s OS lock on ``locks/<id>.lock`` (``flock`` on Linux and macOS,
    ``LockFileEx`` on Windows), so it is released when the process dies: a crash never leaves a user
    locked forever. Where neither exists, ``filelock`` falls back to a marker file that a later
    holder takes over once the recorded process is gone. Who holds it is written beside the lock,
    in ``locks/<id>.holder`` (Windows forbids reading a locked byte range), and removed on release.
    """
    from filelock import FileLock, Timeout

    from .errors import UserBusyError

    canonical = validate_user_id(user_id)
    lock_dir = (home or easyphoto_home()) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{canonical}.lock"
    holder = lock_dir / f"{canonical}.holder"
    lock = FileLock(str(path))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise UserBusyError.coded("user.busy_lock", user_id=user_id, holder=_lock_holder(holder)) from None
    try:
        with contextlib.suppress(OSError):
            holder.write_text(f"{what} (pid {os.getpid()})", encoding="utf-8")
        yield path
    finally:
        with contextlib.suppress(OSError):  # before the release: the next holder's name stays
            holder.unlink()
        lock.release()


def _lock_holder(holder: Path) -> str:
    """What the holder file says (``"training (pid 4242)"``); "another process" when it is missing,
    unreadable, or names a process that is gone (killed before it could remove it)."""
    try:
        text = holder.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return "another process"
    match = re.search(r"\(pid ([0-9]+)\)$", text)
    if not text or (match and not pid_alive(int(match[1]))):
        return "another process"
    return text
