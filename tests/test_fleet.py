"""The job fleet (``EASYPHOTO_QUEUE``): Celery workers on Redis, with a real ``redis-server``.

Fast tests drive :class:`RedisJobStore` directly (one training per user across servers, stale and
duplicate deliveries, a dead worker's job queued again once, clear errors when Redis is away). The slow
test starts Redis, one API server and two ``easyphoto worker`` processes, runs two tiny trainings and
eight tiny generations over both workers, kills one worker with SIGKILL in the middle of a training
(it finishes on the other from its checkpoint), cancels across processes, restarts the API server and
Redis itself, and checks that nothing is lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import TINY_PREPARE, TINY_TRAIN

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(not Path(REDIS_SERVER).is_file(), reason="redis-server is not installed")
pytest.importorskip("celery")
pytest.importorskip("redis")

from easyphoto.errors import ConfigError, UserBusyError  # noqa: E402
from easyphoto.jobs.fleet import Reaper  # noqa: E402
from easyphoto.jobs.redis_store import QueueUnavailableError, RedisJobStore  # noqa: E402

TINY_GENERATE = {"short_side": 64, "first_steps": 2, "second_steps": 2, "seed": 7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A ``redis-server`` on a free loopback port, data in ``folder`` (append-only file on)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        cmd += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis.from_url(self.url).ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes its append-only file and exits
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def _store(redis_server: RedisProcess, home: Path, **kw: Any) -> RedisJobStore:
    sent: list[tuple[str, str]] = []
    store = RedisJobStore(redis_server.url, home, prefix=f"t{time.monotonic_ns()}", **kw)
    store.send = lambda job, token: sent.append((job.id, token))
    store.sent = sent  # type: ignore[attr-defined]
    return store


def _submit(store: RedisJobStore, kind: str = "train", user: str = "alice") -> str:
    job_id, _ = store.new_job_dir()
    store.submit(job_id, kind, {"user_id": user, "photos": []}, user_id=user)
    return job_id


# ------------------------------------------------------------------------------------------ fast


def test_one_training_per_user_across_servers_and_stale_deliveries(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    a = _store(redis_server, tmp_path)
    b = RedisJobStore(redis_server.url, tmp_path, prefix=a.prefix)  # a second API server
    b.send = a.send
    outcomes: list[Any] = []

    def submit(store: RedisJobStore) -> None:
        try:
            outcomes.append(_submit(store))
        except UserBusyError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit, args=(s,)) for s in [a, b] * 5]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queued = [o for o in outcomes if isinstance(o, str)]
    assert len(queued) == 1 and all(e.job_id == queued[0] for e in outcomes if isinstance(e, UserBusyError))
    job_id = queued[0]
    assert b.active_for_user("alice")[0].id == job_id and b.state_counts() == {"queued": 1}

    token = dict(a.sent)[job_id]
    assert b.claim(job_id, "0" * 16, 101) is None, "a message with another token is stale"
    job = b.claim(job_id, token, 101)
    assert job is not None and job.state == "running" and job.worker == {"host": b.host, "pid": 101}
    assert a.claim(job_id, token, 202) is None, "a message delivered twice runs once"
    b.add_event(job_id, {"type": "step", "step": 1}, {"step": 1, "rejected_photos": []})
    assert a.get(job_id).progress == {"step": 1, "rejected_photos": []}
    assert [e["type"] for e in a.events(job_id)] == ["queued", "running", "step"]
    assert [e["seq"] for e in a.events(job_id, since=1)] == [2, 3]

    assert a.request_cancel(job_id).cancel_requested and b.cancel_requested(job_id)
    assert not a.finish(job_id, 202, "cancelled"), "only the worker running it records its end"
    assert b.finish(job_id, 101, "cancelled", error="cancelled")
    assert a.get(job_id).to_dict()["worker"]["pid"] == 101
    assert a.active_for_user("alice") == [], "the user's lock goes with the job's end"
    again = _submit(b)  # the user is free again
    assert a.request_cancel(again).state == "cancelled" and a.claim(again, dict(a.sent)[again], 5) is None
    assert a.state_counts() == {"cancelled": 2}
    assert {j.id for j in a.list()} == {job_id, again}
    resumed = a.resume(job_id)
    assert resumed.state == "queued" and resumed.params["resume"] is False and a.sent[-1][0] == job_id
    assert a.purge(time.time() + 1) == [again] and not (tmp_path / "jobs" / again).exists()


def test_dead_worker_job_is_queued_again_once_and_fenced(redis_server: RedisProcess, tmp_path: Path) -> None:
    TTL = 1.0  # s; the first sweep must come within it of the heartbeat (a loaded CI stalls for 0.3 s)
    store = _store(redis_server, tmp_path, heartbeat_ttl_s=TTL, max_attempts=2)
    old = RedisJobStore(redis_server.url, tmp_path, prefix=store.prefix, heartbeat_ttl_s=TTL)
    old.fence_pid = 11
    job_id = _submit(store, "generate", user="bob")
    old.heartbeat(11, {"job": job_id})
    assert old.claim(job_id, store.sent[0][1], 11) is not None
    reaper = Reaper(store, grace_s=TTL)
    assert reaper.sweep() == [] and not old.cancel_requested(job_id), "the worker is alive"
    time.sleep(TTL * 1.3)  # its heartbeat expires …
    assert reaper.sweep() == [], "… and the reaper waits a grace period before believing it"
    time.sleep(TTL * 1.1)
    assert reaper.sweep() == [job_id]
    job = store.get(job_id)
    assert job.state == "queued" and len(store.sent) == 2 and store.sent[1][1] != store.sent[0][1]
    assert old.cancel_requested(job_id), "the old worker, if it was only cut off, stops at its next check"
    assert store.claim(job_id, store.sent[0][1], 12) is None, "the dead worker's message is stale"
    assert store.claim(job_id, store.sent[1][1], 12) is not None
    assert not old.finish(job_id, 11, "succeeded", result={}), "a superseded worker records nothing"
    assert [e["type"] for e in store.events(job_id)] == ["queued", "running", "requeued", "running"]
    time.sleep(0.1)  # worker 12 never beat: after max_attempts the job is given up, not looped forever
    reaper.sweep()
    time.sleep(TTL * 1.1)
    reaper.sweep()
    job = store.get(job_id)
    assert job.state == "interrupted" and "given up after 2 attempts" in job.error


def test_a_stopping_worker_hands_its_job_back(redis_server: RedisProcess, tmp_path: Path) -> None:
    """What ``easyphoto worker`` does on SIGTERM once the job stopped at a checkpoint: queue it again
    (with ``resume`` when the training has one), keeping the user's training lock."""
    from easyphoto.users import work_dir

    store = _store(redis_server, tmp_path)
    job_id = _submit(store, user="carol")
    assert store.claim(job_id, store.sent[0][1], 21) is not None
    work_dir("carol", tmp_path).mkdir(parents=True)
    (work_dir("carol", tmp_path) / "state.json").write_text('{"step": 3}')
    assert store.finish(job_id, 21, "interrupted", error="interrupted", resumable=True)
    assert store.active_for_user("carol") == []
    job = store.requeue_stopped(job_id)
    assert job.state == "queued" and job.params["resume"] is True and job.error is None
    assert store.sent[-1] == (job_id, store.r.hget(store.key("job", job_id), "token"))
    assert [j.id for j in store.active_for_user("carol")] == [job_id], "the lock is held again"
    with pytest.raises(UserBusyError):
        _submit(store, user="carol")


def test_a_job_that_ran_before_is_served_before_new_ones(redis_server: RedisProcess, tmp_path: Path) -> None:
    """Real Celery messages on the Redis broker: two new trainings, then one handed back by a stopping
    worker; a consumer receives the handed-back one first, then the new ones in their order."""
    from easyphoto.jobs.fleet import QUEUES, broker_keys, celery_app, celery_sender

    url = redis_server.url.rsplit("/", 1)[0] + "/3"  # a database of its own: no fleet worker reads it
    store = RedisJobStore(url, tmp_path, prefix="prio", send=celery_sender(url))
    store.r.flushdb()
    first, second, again = (_submit(store, user=u) for u in ("ann", "ben", "cat"))
    app = celery_app(url)
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue(QUEUES["train"])
        taken = []
        for _ in range(3):
            message = queue.get(timeout=10)
            taken.append(message.decode()[0])  # Celery's message body: [args, kwargs, embed]
            message.ack()
        order = [job_id for job_id, _ in taken]
        assert order == [first, second, again], "new jobs in the order they came"
        assert store.claim(again, taken[2][1], 31) is not None
        assert store.finish(again, 31, "interrupted", error="interrupted", resumable=True)
        later = _submit(store, user="dan")  # a new job waits …
        store.requeue_stopped(again)  # … when the stopped one is handed back
        assert sum(store.r.llen(k) for k in broker_keys(QUEUES["train"])) == 2
        served = queue.get(timeout=10)
        served.ack()
        assert served.decode()[0][0] == again, "a job that ran before goes first"
        served = queue.get(timeout=10)
        served.ack()
        assert served.decode()[0][0] == later
        queue.close()


def test_redis_unreachable_is_one_clear_error(tmp_path: Path) -> None:
    from easyphoto.cli import main
    from easyphoto.config import ServerSettings

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(QueueUnavailableError, match=r"job queue at redis://:\*\*\*@127.0.0.1:\d+/0") as err:
        RedisJobStore(url, tmp_path).ping()
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="expected a Redis URL"):
        ServerSettings(queue="http://example.com")
    assert ServerSettings(queue=" ").queue is None
    assert main(["doctor", "--queue", url]) == 2
    assert main(["worker", "--queue", url]) == 2
    assert main(["worker", "--queue", "http://example.com"]) == 2
    assert main(["worker", "--queue", url, "--kinds", "paint"]) == 2


def test_embedded_default_never_imports_celery_or_redis(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from easyphoto.config import ServerSettings\n"
        "from easyphoto.server.app import create_app\n"
        f"app = create_app(ServerSettings(home={str(tmp_path)!r}, ui=False, start_workers=False))\n"
        "print(type(app.state.service.store).__name__)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'redis')]\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EASYPHOTO_QUEUE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "JobStore"


# ------------------------------------------------------------------------------------------ fleet


def _env(home: Path, model_dir: Path, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "EASYPHOTO_HOME": str(home),
            "EASYPHOTO_BASE_MODEL": str(model_dir),
            "EASYPHOTO_DEVICE": "cpu",
            "EASYPHOTO_QUEUE": url,
            "EASYPHOTO_TRAIN_DEFAULTS": json.dumps(TINY_TRAIN),
            "EASYPHOTO_PREPARE_DEFAULTS": json.dumps(TINY_PREPARE),
            "EASYPHOTO_GENERATE_DEFAULTS": json.dumps(TINY_GENERATE),
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.pop("EASYPHOTO_API_TOKEN", None)
    return env


class Fleet:
    """One API server and two workers, each its own process, on one Redis and one EASYPHOTO_HOME."""

    def __init__(self, home: Path, model_dir: Path, redis_server: RedisProcess) -> None:
        self.home, self.redis = home, redis_server
        self.env = _env(home, model_dir, redis_server.url)
        self.api: subprocess.Popen | None = None
        self.url = ""
        self.workers: list[subprocess.Popen] = []

    def _spawn(self, code: str, log: str) -> subprocess.Popen:
        out = open(self.home / log, "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-c", code], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def start_worker(self) -> subprocess.Popen:
        n = len(self.workers)
        args = ["worker", "--heartbeat", "2", "--preload"]
        code = f"import sys; from easyphoto.cli import main; sys.exit(main({args!r}))"
        proc = self._spawn(code, f"worker{n}.log")
        self.workers.append(proc)
        return proc

    def start_api(self) -> None:
        import requests

        port = free_port()
        code = (
            "from easyphoto.cli.serve import serve_command; "
            f"serve_command(host='127.0.0.1', port={port}, no_ui=True)"
        )
        self.api = self._spawn(code, "api.log")
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.api.poll() is None, (self.home / "api.log").read_text()[-3000:]
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("the API server did not start")

    def stop_api(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.send_signal(signal.SIGINT)
            try:
                self.api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait()

    def stop(self) -> None:
        self.stop_api()
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def job(self, job_id: str, **params: Any) -> dict[str, Any]:
        import requests

        return requests.get(f"{self.url}/v1/jobs/{job_id}", params=params, timeout=10).json()

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        import requests

        r = requests.get(
            f"{self.url}/v1/jobs/{job_id}/wait", params={"timeout": timeout}, timeout=timeout + 10
        )
        assert r.status_code == 200, r.text
        return r.json()

    def wait_until(self, job_id: str, ok: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id, log_lines=0)
            if ok(job):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never got there: {job}")


def _photos(folder: Path) -> tuple[list[tuple[str, bytes]], bytes]:
    """Four ≥ 512 px photos of the astronaut (faces ≥ 128 px) and a template, encoded."""
    import io

    import cv2
    from PIL import Image
    from skimage import data

    a = data.astronaut()
    variants = [a, a[10:, 30:], a[:, ::-1].copy(), a[0:420, 40:460]]
    out = []
    for i, img in enumerate(variants):
        big = cv2.resize(img, None, fx=1.7, fy=1.7, interpolation=cv2.INTER_CUBIC)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(big)).save(buf, format="JPEG", quality=92)
        out.append((f"astronaut_{i}.jpg", buf.getvalue()))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return out, buf.getvalue()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_server: RedisProcess
) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("fleet_home"), tiny_model_dir, redis_server)
    fleet.start_worker()
    fleet.start_worker()
    try:
        fleet.start_api()
        yield fleet
    finally:
        fleet.stop()


def _lora_hash(home: Path, user: str) -> str:
    return hashlib.sha256((home / "users" / user / "lora.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_fleet_spreads_jobs_survives_a_killed_worker_cancels_and_restarts(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    import requests

    from easyphoto.cli import main

    url, home = fleet.url, fleet.home
    photos, template = _photos(home / "photos")
    files = [("photos", (name, data, "image/jpeg")) for name, data in photos]
    first = requests.post(f"{url}/v1/users/astro/train", files=files, timeout=60).json()["job_id"]
    busy = requests.post(f"{url}/v1/users/astro/train", files=files, timeout=60)
    assert busy.status_code == 409 and busy.json()["job_id"] == first, "one training per user"
    done = fleet.wait(first)
    assert done["state"] == "succeeded", done
    assert done["worker"]["pid"] in [w.pid for w in fleet.workers]
    before = _lora_hash(home, "astro")

    def generate(templates: int = 1, **options: Any) -> str:
        data = {"user_ids": "astro", "options": json.dumps(options)} if options else {"user_ids": "astro"}
        tpl = [("templates", (f"t{i}.png", template, "image/png")) for i in range(templates)]
        r = requests.post(f"{url}/v1/generate", data=data, files=tpl, timeout=30)
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    gens = [generate() for _ in range(4)]
    options = json.dumps({"max_steps": 16, "validate_every": 3})
    second = requests.post(f"{url}/v1/users/astro/train", files=files, data={"options": options}, timeout=60)
    second_id = second.json()["job_id"]
    gens += [generate() for _ in range(4)]
    job = fleet.wait_until(second_id, lambda j: j["progress"].get("step", 0) >= 4, timeout=90)
    victim = job["worker"]["pid"]
    capsys.readouterr()
    assert main(["doctor", "--queue", fleet.redis.url, "--json"]) == 0
    doctor = json.loads(capsys.readouterr().out)
    assert sorted(w["pid"] for w in doctor["workers"]) == sorted(w.pid for w in fleet.workers)
    assert second_id in [j["id"] for j in doctor["in_flight"]] and doctor["queued"]["train"] == 0
    os.kill(victim, signal.SIGKILL)
    assert _lora_hash(home, "astro") == before, "the old user model stays whole until the new one is done"

    done = fleet.wait(second_id)
    assert done["state"] == "succeeded", done
    assert done["worker"]["pid"] != victim and done["attempts"] == 2 and done["result"]["steps"] == 16
    events = fleet.job(second_id, events_since=0)["events"]
    assert "requeued" in [e["type"] for e in events]
    starts = [e["step"] for e in events if e["type"] == "start"]
    assert starts[0] == 0 and starts[-1] >= 3, f"the second run continued from a checkpoint: {starts}"
    assert _lora_hash(home, "astro") != before
    results = [fleet.wait(g) for g in gens]
    assert [r["state"] for r in results] == ["succeeded"] * 8, [r.get("error") for r in results]
    assert all(r["result"]["images"] for r in results)
    assert len({r["worker"]["pid"] for r in results}) == 2, "the generations ran on both workers"

    # cancel across processes: the API server asks, the surviving worker stops before its next template
    slow = generate(templates=8)
    fleet.wait_until(slow, lambda j: j["state"] == "running")
    assert requests.delete(f"{url}/v1/jobs/{slow}", timeout=10).status_code == 202
    cancelled = fleet.wait(slow, timeout=60)
    # a fast cancel lands before the first template reports progress: no "template" key yet
    assert cancelled["state"] == "cancelled" and cancelled["progress"].get("template", 0) < 8, cancelled

    # Redis restarts (append-only file) while a job runs: the job finishes, nothing is lost
    during = generate(templates=3)
    fleet.wait_until(during, lambda j: j["state"] == "running")
    fleet.redis.stop()
    down = requests.get(f"{url}/v1/jobs", timeout=30)
    assert down.status_code == 503 and fleet.redis.url in down.json()["message"]
    fleet.redis.start()
    assert fleet.wait(during, timeout=90)["state"] == "succeeded"

    # the API server restarts: every job is still there
    before_ids = {j["id"]: j["state"] for j in requests.get(f"{url}/v1/jobs?limit=100", timeout=10).json()}
    fleet.stop_api()
    fleet.start_api()
    url = fleet.url  # a new port (generate() reads it)
    after = {j["id"]: j["state"] for j in requests.get(f"{url}/v1/jobs?limit=100", timeout=10).json()}
    assert after == before_ids and len(after) == 12
    health = requests.get(f"{url}/v1/health", timeout=10).json()
    assert health["jobs"] == {"succeeded": 11, "cancelled": 1}
    assert len(health["workers"]) == 1, health

    # SIGTERM to the last worker while it paints: the job stops before its next template and goes back
    # to the queue for the next worker; the worker process ends cleanly
    handed = generate(templates=8)
    fleet.wait_until(handed, lambda j: j["state"] == "running")
    (survivor,) = [w for w in fleet.workers if w.poll() is None]
    survivor.send_signal(signal.SIGTERM)
    log = fleet.home / f"worker{fleet.workers.index(survivor)}.log"
    assert survivor.wait(timeout=60) == 0, log.read_text()[-3000:]
    job = fleet.job(handed, events_since=0)
    assert job["state"] == "queued" and job["attempts"] == 1, job
    assert [e["type"] for e in job["events"]][-1] == "queued", "handed back after it ran"
    assert "handed back to the queue" in log.read_text()
