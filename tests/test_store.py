"""User ids, output paths, atomic writes and crash recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import easyphoto.store as store
from easyphoto import InvalidUserIdError
from easyphoto.errors import ConfigError
from easyphoto.store import (
    atomic_dir,
    check_output_dir,
    check_output_file,
    dataset_dir,
    lowercase_user_dirs,
    recover_stale,
    user_dir,
    user_lock,
    validate_user_id,
    write_json_atomic,
)


@pytest.mark.parametrize("good", ["alice", "Bob_2", "a", "x.y-z", "0" * 64, "A" * 64])
def test_valid_user_ids(good: str) -> None:
    assert validate_user_id(good) == good.lower()  # canonical: lower case


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../etc",
        "..",
        ".",
        "a/b",
        "a\\b",
        "/abs",
        "ümlaut",
        "a b",
        "-lead",
        "x" * 65,
        "none",
        "trail.",
        "a..b",
        "nul",
        "\x00x",
    ],
)
def test_invalid_user_ids(bad: str) -> None:
    with pytest.raises(InvalidUserIdError) as info:
        validate_user_id(bad)
    assert "invalid user id" in str(info.value)


def test_user_dir_is_inside_home(tmp_path: Path) -> None:
    assert user_dir("alice", tmp_path) == tmp_path / "users" / "alice"
    with pytest.raises(InvalidUserIdError):
        user_dir("../../etc", tmp_path)


def test_atomic_json_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"v": object()})  # not serialisable: fails mid-way
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_atomic_dir_replaces_whole_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    with atomic_dir(target) as stage:
        (stage / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_dir(target) as stage:
        (stage / "b.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # untouched
    with atomic_dir(target) as stage:
        (stage / "c.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # replaced cleanly
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # no staging or old folders left


# --- user ids: whole match, reserved names, one case -----------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "alice\n",
        "alice\r\n",
        "\nalice",
        "con",
        "CON",
        "CON.txt",
        "con.tar.gz",
        "com1",
        "COM0",
        "Lpt9.json",
        "lpt1",
        "aux.png",
        "Nul",
        "prn.x",
        "None",
        "NONE.json",
        "conin$",
        "CONOUT$",
        "clock$",
        "com\u00b9",
    ],
)
def test_more_invalid_user_ids(bad: str) -> None:
    with pytest.raises(InvalidUserIdError) as info:
        validate_user_id(bad)
    message = str(info.value)
    assert message.startswith("invalid user id") and "\n" not in message.replace(repr(bad), "")


@pytest.mark.parametrize(
    "ok", ["console", "com10", "lpt", "auxiliary", "nullable", "con_1", "my.con", "nonexistent"]
)
def test_names_that_only_contain_a_reserved_word_are_fine(ok: str) -> None:
    assert validate_user_id(ok) == ok


def test_reserved_set_covers_every_windows_device_name() -> None:
    from easyphoto.store import RESERVED_USER_IDS

    for n in [*"0123456789", "\u00b9", "\u00b2", "\u00b3"]:
        assert f"com{n}" in RESERVED_USER_IDS and f"lpt{n}" in RESERVED_USER_IDS
    assert {"con", "prn", "aux", "nul", "conin$", "conout$", "clock$", "none"} <= RESERVED_USER_IDS


def test_ids_differing_in_case_are_one_user(tmp_path: Path) -> None:
    assert validate_user_id("Alice") == "alice"
    assert user_dir("Alice", tmp_path) == user_dir("alice", tmp_path) == tmp_path / "users" / "alice"
    assert dataset_dir("ALICE", tmp_path) == dataset_dir("alice", tmp_path)


def test_lock_on_one_case_blocks_the_other(tmp_path: Path) -> None:
    from easyphoto.errors import UserBusyError

    with user_lock("Alice", tmp_path, what="training"):
        with pytest.raises(UserBusyError) as info, user_lock("alice", tmp_path):
            pass
        assert "training" in str(info.value)
    with user_lock("alice", tmp_path):  # released
        pass
    assert [p.name for p in (tmp_path / "locks").iterdir()] == ["alice.lock"]


def test_lowercase_user_dirs_migrates_legacy_folders(tmp_path: Path) -> None:
    root = tmp_path / "users"
    (root / "Bob_2").mkdir(parents=True)
    (root / "Bob_2" / "lora.safetensors").write_bytes(b"x")
    (root / "Carol").mkdir()
    (root / "carol").mkdir()
    (root / ".hidden.1.old").mkdir()
    done = lowercase_user_dirs(root)
    assert "renamed Bob_2 to bob_2" in done
    assert any(line.startswith("conflict: Carol") for line in done)
    assert (user_dir("Bob_2", tmp_path) / "lora.safetensors").read_bytes() == b"x"
    assert lowercase_user_dirs(root) == [d for d in done if d.startswith("conflict")]


# --- output paths ----------------------------------------------------------------------------------


def test_check_output_file(tmp_path: Path) -> None:
    (tmp_path / "out.png").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError) as info:
        check_output_file(tmp_path / "out.png", field="out")
    assert str(info.value) == f"{tmp_path / 'out.png'}: is a folder, expected a file path"
    assert info.value.fields == ["out"]
    with pytest.raises(ConfigError, match="afile is a file, expected a folder"):
        check_output_file(tmp_path / "afile" / "sub" / "x.png")
    with pytest.raises(ConfigError, match="is a device, expected a file path"):
        check_output_file("/dev/null")
    assert check_output_file(tmp_path / "afile") == tmp_path / "afile"  # overwriting a file is fine
    assert check_output_file(tmp_path / "new" / "deeper" / "x.png") == tmp_path / "new" / "deeper" / "x.png"


def test_check_output_dir(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError) as info:
        check_output_dir(tmp_path / "afile")
    assert str(info.value) == f"{tmp_path / 'afile'}: is a file, expected a folder"
    with pytest.raises(ConfigError, match="afile is a file, expected a folder"):
        check_output_dir(tmp_path / "afile" / "out")
    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_dir(tmp_path / "new" / "out") == tmp_path / "new" / "out"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_refuses_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="permission denied"):
            check_output_file(ro / "x.png")
    finally:
        ro.chmod(0o700)


def test_atomic_dir_refuses_a_file_where_the_folder_goes(tmp_path: Path) -> None:
    (tmp_path / "dataset").write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file, expected a folder"), atomic_dir(tmp_path / "dataset"):
        pass
    assert (tmp_path / "dataset").read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


# --- atomic_dir: durability, the swap, and crashes at each step -------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has exited (reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _make(target: Path, name: str, text: str) -> None:
    with atomic_dir(target) as stage:
        (stage / name).write_text(text)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fds via /proc")
def test_atomic_dir_fsyncs_every_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    target = tmp_path / "model"
    _make(target, "old.txt", "old")
    synced.clear()
    with atomic_dir(target) as stage:
        (stage / "a.txt").write_text("a")
        (stage / "sub").mkdir()
        (stage / "sub" / "b.txt").write_text("b")
        stage_name = stage.name
    staged = [s.replace(stage_name, "<stage>") for s in synced]
    for expected in ("<stage>/a.txt", "<stage>/sub/b.txt", "<stage>/sub"):
        assert any(s.endswith(expected) for s in staged), staged
    assert any(s.endswith("/<stage>") for s in staged), staged  # the staging folder itself
    assert staged[-1] == str(tmp_path), staged  # the parent, after the swap
    assert _listing(target) == ["a.txt", "sub"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fds via /proc")
def test_atomic_path_fsyncs_the_parent_after_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    write_json_atomic(tmp_path / "meta.json", {"v": 1})
    assert synced[-1] == str(tmp_path) and synced[0].startswith(str(tmp_path / ".meta.json."))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux-only")
def test_atomic_dir_uses_one_exchange_when_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import easyphoto.store as store

    target = tmp_path / "model"
    _make(target, "old.txt", "old")
    calls: list[str] = []

    def no_replace(*args, **kwargs):  # the exchange path never renames target aside
        calls.append("replace")
        raise AssertionError("os.replace called")

    seen_target_missing = []
    real_exchange = store._exchange

    def exchange(a: Path, b: Path) -> bool:
        ok = real_exchange(a, b)
        seen_target_missing.append(not target.is_dir())
        calls.append(f"exchange:{ok}")
        return ok

    monkeypatch.setattr(store, "_exchange", exchange)
    monkeypatch.setattr(os, "replace", no_replace)
    with atomic_dir(target) as stage:
        (stage / "new.txt").write_text("new")
    assert calls == ["exchange:True"] and seen_target_missing == [False]
    assert _listing(target) == ["new.txt"] and _listing(tmp_path) == ["model"]


def test_atomic_dir_falls_back_to_two_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import easyphoto.store as store

    monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    target = tmp_path / "model"
    _make(target, "old.txt", "old")
    _make(target, "new.txt", "new")
    assert _listing(target) == ["new.txt"] and _listing(tmp_path) == ["model"]


def test_exception_after_staging_written_keeps_previous(tmp_path: Path) -> None:
    target = tmp_path / "model"
    _make(target, "old.txt", "old")
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as stage:
        (stage / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert _listing(target) == ["old.txt"] and _listing(tmp_path) == ["model"]


def test_fsync_failure_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import easyphoto.store as store

    target = tmp_path / "model"
    _make(target, "old.txt", "old")

    def broken(root: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store, "_fsync_tree", broken)
    with pytest.raises(OSError, match="Input/output"):
        _make(target, "new.txt", "new")
    assert _listing(target) == ["old.txt"] and _listing(tmp_path) == ["model"]


def test_failed_exchange_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import easyphoto.store as store

    target = tmp_path / "model"
    _make(target, "old.txt", "old")

    def broken(a: Path, b: Path) -> bool:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store, "_exchange", broken)
    with pytest.raises(OSError):
        _make(target, "new.txt", "new")
    assert _listing(target) == ["old.txt"] and _listing(tmp_path) == ["model"]


def test_second_rename_failing_restores_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import easyphoto.store as store

    monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    target = tmp_path / "model"
    _make(target, "old.txt", "old")
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(".staging"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        _make(target, "new.txt", "new")
    assert _listing(target) == ["old.txt"] and _listing(tmp_path) == ["model"]


def test_crash_between_the_two_renames_is_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process killed after ``target -> .old`` and before ``staging -> target``: target is missing;
    recover_stale (once the owner is gone) puts the previous folder back and drops the staging one."""
    import easyphoto.store as store

    monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    target = tmp_path / "model"
    _make(target, "old.txt", "old")
    real_replace = os.replace

    class Killed(BaseException):
        pass

    killed = []

    def replace(src, dst):
        if killed or str(src).endswith(".staging"):
            killed.append(src)
            raise Killed  # nothing after this point runs in a real kill -9
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(store, "_remove", lambda path: None)  # a kill runs no clean-up
    with pytest.raises(Killed):
        _make(target, "new.txt", "new")
    monkeypatch.undo()
    assert not target.exists()
    # Rename the leftovers as if they belonged to a process that has exited.
    dead = _dead_pid()
    for p in tmp_path.iterdir():
        p.rename(tmp_path / p.name.replace(f".{os.getpid()}-", f".{dead}-"))
    staging = next(p.name for p in tmp_path.iterdir() if p.name.endswith(".staging"))
    tag = store.host_tag()
    assert recover_stale(tmp_path) == [f"removed {staging}", f"restored model from .model.{dead}-{tag}.old"]
    assert _listing(target) == ["old.txt"] and _listing(tmp_path) == ["model"]
    assert recover_stale(tmp_path) == []


def test_recover_stale_leaves_live_owners_alone(tmp_path: Path) -> None:
    mine = os.getpid()
    (tmp_path / f".model.{mine}.old").mkdir()  # we are alive and maybe between the renames
    (tmp_path / f".model.{mine}.abc123_x.staging").mkdir()
    (tmp_path / f".meta.json.{mine}.k2j3.tmp").write_text("{")
    (tmp_path / ".legacy.k2j3h4g5.staging").mkdir()  # no pid: cannot tell, kept
    (tmp_path / "x.5").mkdir()  # a user folder
    before = _listing(tmp_path)
    assert recover_stale(tmp_path) == []
    assert _listing(tmp_path) == before


def test_recover_stale_leaves_other_machines_leftovers_alone(tmp_path: Path) -> None:
    """EASYPHOTO_HOME on shared storage: a pid of another machine says nothing about its process here."""
    dead = _dead_pid()
    other = "0123abcd" if store.host_tag() != "0123abcd" else "fedc9876"
    (tmp_path / f".model.{dead}-{other}.q1w2.staging").mkdir()  # another machine, maybe writing now
    (tmp_path / f".model.{dead}-{store.host_tag()}.q1w2.staging").mkdir()  # ours, dead
    assert recover_stale(tmp_path) == [f"removed .model.{dead}-{store.host_tag()}.q1w2.staging"]
    assert _listing(tmp_path) == [f".model.{dead}-{other}.q1w2.staging"]


def test_recover_stale_removes_dead_leftovers_and_keeps_newer_target(tmp_path: Path) -> None:
    dead = _dead_pid()
    (tmp_path / "x.5").mkdir()
    (tmp_path / "x.5" / "new.txt").write_text("new")
    (tmp_path / f".x.5.{dead}.old").mkdir()  # target present: the old copy is garbage
    (tmp_path / f".x.5.{dead}.q1w2e3r4.staging").mkdir()
    (tmp_path / f".meta.json.{dead}.abcd.tmp").write_text("{")
    done = recover_stale(tmp_path)
    assert sorted(done) == sorted(
        [
            f"removed .x.5.{dead}.old",
            f"removed .x.5.{dead}.q1w2e3r4.staging",
            f"removed .meta.json.{dead}.abcd.tmp",
        ]
    )
    assert _listing(tmp_path) == ["x.5"] and _listing(tmp_path / "x.5") == ["new.txt"]
    assert recover_stale(tmp_path / "missing") == []


_CHILD = r"""
import os, sys, time
from pathlib import Path
import easyphoto.store as store
target, ready, phase = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def hang(*args, **kwargs):
    ready.write_text("ready")
    time.sleep(60)

if phase == "between-renames":
    store._exchange = lambda a, b: False
    real_replace = os.replace
    def replace(src, dst):
        if str(src).endswith(".staging"):
            hang()
        return real_replace(src, dst)
    os.replace = replace
if phase == "after-exchange":
    store._remove = hang  # the exchange has happened, the old copy is not deleted yet
with store.atomic_dir(target) as stage:
    (stage / "new.txt").write_text("new")
    (stage / "big.bin").write_bytes(os.urandom(1 << 20))
    if phase == "writing":
        hang()
"""


@pytest.mark.parametrize("phase", ["writing", "between-renames", "after-exchange"])
def test_kill_9_inside_atomic_dir(tmp_path: Path, phase: str) -> None:
    """A child killed with SIGKILL at each step: the previous folder is intact (or restored by
    recover_stale), the new one is whole when the swap happened, and recover_stale cleans up."""
    if phase == "after-exchange" and not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux-only")
    target = tmp_path / "data" / "model"
    _make(target, "old.txt", "old")
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(target), str(ready), phase])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, f"child exited early ({child.returncode})"
            assert time.monotonic() < deadline, "child never reached the kill point"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    parent = target.parent
    if phase == "between-renames":
        assert not target.exists()  # the window the exchange closes; recover_stale repairs it
    done = recover_stale(parent)
    assert done, "nothing to recover?"
    assert _listing(parent) == ["model"]
    if phase == "after-exchange":
        assert _listing(target) == ["big.bin", "new.txt"]  # the swap happened: the new folder, whole
    else:
        assert _listing(target) == ["old.txt"] and (target / "old.txt").read_text() == "old"
    assert recover_stale(parent) == []
