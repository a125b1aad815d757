"""Portability: the user lock, the user-model swap and a job run as they would on Windows and macOS.

Windows has no ``fcntl`` and no ``renameat2``; Windows and macOS start processes with ``spawn``, never
``fork``. The Windows-like tests run in processes where ``import fcntl`` fails, renameat2 is off (the
two-rename swap) and multiprocessing's start method is ``spawn``: a ``sitecustomize`` on ``PYTHONPATH``
does this in every Python process they start, job workers included, so a break only Windows would see
shows up on Linux CI. Device choice (CUDA > MPS > CPU, float32 where float16 is unsafe) is checked with
torch's view of the hardware monkeypatched.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from easyphoto.errors import ConfigError, UserBusyError

#: Makes a Python process Windows-like (see the module docstring) and records its pid.
SITECUSTOMIZE = """
import multiprocessing, os, sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
multiprocessing.set_start_method("spawn", force=True)
import easyphoto.store
easyphoto.store._renameat2 = False  # no renameat2 exchange: the portable two-rename swap
with open(os.environ["WINLIKE_PIDS"], "a") as fh:
    fh.write(f"{os.getpid()}\\n")
"""

#: Holds alice's lock until killed.
HOLDER = """
import sys, time
from pathlib import Path
from easyphoto.store import user_lock
with user_lock(sys.argv[1], Path(sys.argv[2]), what="training"):
    print("locked", flush=True)
    time.sleep(120)
"""

#: The lock and the swap, checked inside a Windows-like process.
WINLIKE_CHECKS = """
import multiprocessing, os, subprocess, sys
from pathlib import Path
import numpy as np, torch
import filelock
import easyphoto.store as store
from easyphoto.errors import UserBusyError
from easyphoto.store import atomic_dir, user_lock
from easyphoto.users import UserMeta, UserModel, save_user_model

home, holder = Path(sys.argv[1]), sys.argv[2]
try:
    import fcntl  # noqa: F401
    raise SystemExit("fcntl is importable")
except ImportError:
    pass
assert multiprocessing.get_start_method() == "spawn"
assert not filelock.has_fcntl and store._exchange(home, home) is False

def busy(holder_text):
    try:
        with user_lock("alice", home):
            pass
    except UserBusyError as exc:
        assert holder_text in str(exc), str(exc)
    else:
        raise AssertionError("a second lock was granted")

with user_lock("Alice", home, what="training"):
    busy(f"training (pid {os.getpid()})")
with user_lock("alice", home):
    pass
cmd = [sys.executable, "-c", holder, "alice", str(home)]
child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
try:
    assert child.stdout.readline().strip() == "locked"
    busy(f"training (pid {child.pid})")
finally:
    child.kill()
    child.wait()
with user_lock("alice", home, what="deletion"):  # released by the holder's death
    pass

target = home / "users" / "alice"
with atomic_dir(target) as stage:
    (stage / "old.txt").write_text("old")
state = {"lora_unet_x.lora_down.weight": torch.ones(2, 3), "lora_unet_x.lora_up.weight": torch.ones(3, 2)}
save_user_model("alice", lora_state=state, lora_metadata={}, meta=UserMeta(user_id="alice", steps=2),
                ref_image=np.full((32, 32, 3), 200, np.uint8), embedding=np.ones(128, np.float32),
                face_id=None, home=home)
assert not (target / "old.txt").exists() and UserModel.load("alice", home).meta.steps == 2
assert sorted(p.name for p in target.parent.iterdir()) == ["alice"], "no staging or .old left"
print("windows-like checks passed")
"""


@pytest.fixture
def winlike_env(tmp_path: Path) -> dict[str, str]:
    """Environment whose Python processes are Windows-like; their pids go to ``winlike-pids``."""
    site = tmp_path / "winlike-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths), "WINLIKE_PIDS": str(tmp_path / "winlike-pids")}


def _winlike_pids(tmp_path: Path) -> set[int]:
    return {int(line) for line in (tmp_path / "winlike-pids").read_text().split()}


# --------------------------------------------------------------------------- the lock


def test_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    """A real holder process killed with SIGKILL (TerminateProcess on Windows) frees the user; while it
    lives, the busy message names it."""
    from easyphoto.store import user_lock

    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "alice", str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        busy = rf"busy: training \(pid {child.pid}\) is running"
        with pytest.raises(UserBusyError, match=busy), user_lock("ALICE", tmp_path):
            pass
    finally:
        child.kill()
        child.wait()
    with user_lock("alice", tmp_path, what="deletion") as path:
        assert (tmp_path / "locks" / "alice.holder").read_text() == f"deletion (pid {os.getpid()})"
    assert path.name == "alice.lock" and not (tmp_path / "locks" / "alice.holder").exists()


def test_busy_message_ignores_a_dead_holders_note(tmp_path: Path) -> None:
    """A holder killed before it could remove its note is not named as running."""
    from easyphoto.store import _lock_holder, pid_alive

    note = tmp_path / "alice.holder"
    assert _lock_holder(note) == "another process"
    note.write_text(f"training (pid {os.getpid()})")
    assert _lock_holder(note) == f"training (pid {os.getpid()})"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_alive(dead.pid) and pid_alive(os.getpid())
    note.write_text(f"training (pid {dead.pid})")
    assert _lock_holder(note) == "another process"


# --------------------------------------------------------------------------- the swap without renameat2


def test_atomic_dir_without_ctypes_takes_the_two_rename_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``ctypes`` (or no renameat2 in libc): the exchange reports False and the swap still works."""
    import easyphoto.store as store

    monkeypatch.setattr(store, "_renameat2", None)
    monkeypatch.setitem(sys.modules, "ctypes", None)
    target = tmp_path / "users" / "alice"
    for text in ("old", "new"):
        with store.atomic_dir(target) as stage:
            (stage / "lora.safetensors").write_text(text)
    assert store._renameat2 is False and store._exchange(target, target) is False
    assert (target / "lora.safetensors").read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["alice"]


def test_windows_like_lock_and_user_model_swap(tmp_path: Path, winlike_env: dict[str, str]) -> None:
    """No fcntl, no renameat2, spawn: the lock (same process, and a holder killed with SIGKILL) and
    save_user_model over an existing model behave as on Linux."""
    home = tmp_path / "home"
    out = subprocess.run(
        [sys.executable, "-c", WINLIKE_CHECKS, str(home), HOLDER],
        env=winlike_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "windows-like checks passed" in out.stdout
    assert len(_winlike_pids(tmp_path)) == 2, "the checks and the lock holder both ran Windows-like"


# --------------------------------------------------------------------------- a job in a spawned worker


@pytest.mark.slow
def test_windows_like_training_job_in_a_worker_process(
    tmp_path: Path, winlike_env: dict[str, str], tiny_model_dir: Path, astronaut
) -> None:
    """A training job runs in a real worker process started by the supervisor, Windows-like, over an
    existing model of the same user; the worker stops through its stop file (no signal), exit status 0."""
    from PIL import Image

    from easyphoto.jobs import SUCCEEDED, JobService, Upload, WorkerSupervisor

    home = tmp_path / "home"
    old = home / "users" / "alice"
    old.mkdir(parents=True)
    (old / "old.txt").write_text("previous model")
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="PNG")
    train = {"resolution": 64, "max_steps": 2, "grad_accum": 1, "rank": 4, "alpha": 4}
    train |= {"validate_every": 2, "validation_size": 64, "validation_steps": 1, "validation_seeds": [1]}
    prepare = {"grabcut": False, "min_photos": 1, "min_face_size": 64}
    job = JobService(home).submit_train("alice", [Upload("me.png", buf.getvalue())], train, prepare)
    env = winlike_env | {
        "EASYPHOTO_HOME": str(home),
        "EASYPHOTO_BASE_MODEL": str(tiny_model_dir),
        "EASYPHOTO_DEVICE": "cpu",
    }
    sup = WorkerSupervisor(home, workers=1, env=env, grace_s=60, signals=False)
    sup.start()
    try:
        deadline = time.monotonic() + 400
        while (done := _store(home).get(job.id)).state not in ("succeeded", "failed", "interrupted"):
            assert time.monotonic() < deadline, "the job did not finish"
            assert sup.pids, "the worker died"
            time.sleep(0.5)
        worker_pid = sup.procs[0].pid
    finally:
        sup.stop()
    assert done.state == SUCCEEDED, done.error
    assert sup.procs[0].returncode == 0, "stopped through its stop file, not killed"
    assert worker_pid in _winlike_pids(tmp_path), "the worker ran Windows-like"
    assert (old / "lora.safetensors").is_file() and not (old / "old.txt").exists()
    assert sorted(p.name for p in (home / "users").iterdir()) == ["alice"], "no staging or .old left"
    assert not list((home / "locks").glob("*.stop")) and not list((home / "locks").glob("*.holder"))


def _store(home: Path) -> Any:
    """The job store (a fresh connection each time is fine for polling)."""
    from easyphoto.jobs import JobStore

    return JobStore(home)


# --------------------------------------------------------------------------- device and precision


def _hardware(monkeypatch: pytest.MonkeyPatch, *, cuda: int = 0, mps: bool = False) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [
        (1, True, ("cuda", torch.float16)),
        (0, True, ("mps", torch.float32)),
        (0, False, ("cpu", torch.float32)),
    ],
)
def test_device_choice_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: int, mps: bool, expected: tuple[str, torch.dtype]
) -> None:
    from easyphoto.diffusion.sources import pick_device_dtype

    _hardware(monkeypatch, cuda=cuda, mps=mps)
    dev, dtype = pick_device_dtype()
    assert (dev.type, dtype) == expected
    assert pick_device_dtype("auto", "auto") == (dev, dtype)


def test_explicit_devices_are_checked_and_float16_off_cuda_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from easyphoto.diffusion.sources import pick_device_dtype

    _hardware(monkeypatch, cuda=0, mps=False)
    with pytest.raises(ConfigError, match="Apple MPS is not available"):
        pick_device_dtype("mps")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        pick_device_dtype("cuda")
    _hardware(monkeypatch, cuda=1, mps=True)
    with pytest.raises(ConfigError, match="sees 1 GPU"):
        pick_device_dtype("cuda:1")
    assert pick_device_dtype("cuda:0")[0] == torch.device("cuda:0")
    assert pick_device_dtype("mps", "bf16") == (torch.device("mps"), torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger="easyphoto.diffusion"):
        assert pick_device_dtype("mps", "float16")[1] == torch.float16  # explicit wins …
    assert "images may come out black" in caplog.text  # … with a warning


def test_training_precision_follows_device_and_weights() -> None:
    from easyphoto.diffusion.lora_trainer import _autocast_ok, mixed_precision

    cuda, mps, cpu = torch.device("cuda"), torch.device("mps"), torch.device("cpu")
    assert mixed_precision(None, cuda, torch.float16) == "fp16"
    assert mixed_precision(None, cuda, torch.float32) == "fp16"  # autocast over float32 weights
    assert mixed_precision(None, mps, torch.float32) == "no"  # float32 throughout on MPS
    assert mixed_precision(None, mps, torch.float16) == "fp16"  # half weights need autocast
    assert mixed_precision(None, cpu, torch.float32) == "no"
    assert mixed_precision(None, cpu, torch.float16) == "no"  # no fp16 autocast on the CPU
    assert mixed_precision(None, mps, torch.bfloat16) == "bf16"
    assert mixed_precision("bf16", cuda, torch.float16) == "bf16"  # the setting wins
    assert _autocast_ok("cuda", "fp16") and _autocast_ok("cpu", "bf16") and not _autocast_ok("cpu", "fp16")


def test_no_posix_only_calls_left_on_the_main_paths() -> None:
    """fcntl, os.kill as a liveness probe and fork-only process starts stay out of these modules."""
    src = Path(__file__).resolve().parents[1] / "src" / "easyphoto"
    for rel in ("store.py", "jobs/supervisor.py", "jobs/worker.py", "users.py", "workflows.py"):
        text = (src / rel).read_text()
        for call in ("import fcntl", "os.fork", "killpg", "setsid", "preexec_fn", "start_new_session"):
            assert call not in text, (rel, call)


def test_worker_asks_the_stop_file(tmp_path: Path) -> None:
    """The stop file works without any signal (how Windows stops a worker)."""
    from easyphoto.jobs import Worker

    stop = tmp_path / "w.stop"
    worker = Worker(tmp_path, parent_pid=os.getppid(), stop_file=stop, poll=0.01)
    assert worker.parent_alive() and not worker.stop_requested()
    stop.touch()
    worker.run_forever()  # returns at once
    assert worker.stopping and worker.should_stop("0123456789abcdef")
    orphan = Worker(tmp_path, parent_pid=_dead_pid())
    assert not orphan.parent_alive()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
