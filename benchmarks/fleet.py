"""The job fleet on one machine: throughput of tiny generations with 1 vs 2 ``easyphoto worker``
processes, the time from submit to start, and no job lost when a worker is killed mid-run.

Usage:  python benchmarks/fleet.py [--jobs 100] [--kill-jobs 30] [--dispatch 20]

Starts its own ``redis-server`` (Debian package) on a free port, builds the tiny random SD1.5, trains
one tiny user through the fleet, then for 1 and 2 workers: warms each worker with one job, submits
``--jobs`` one-template generations at once and times them (throughput; submit→start per job, which in
a burst is mostly waiting in the queue). ``--dispatch`` jobs are then submitted one at a time to an
idle fleet: their submit→start is the pure delivery latency. Last, ``--kill-jobs`` jobs on 2 workers,
one worker killed with SIGKILL after a third of them: every job must still succeed.
Jobs are submitted through :class:`~easyphoto.jobs.JobService` in this process (what an API server does).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

TINY_TRAIN = {"resolution": 64, "max_steps": 2, "grad_accum": 1, "rank": 4, "alpha": 4, "validate_every": 2}
TINY_TRAIN |= {"validation_size": 64, "validation_steps": 1, "validation_seeds": [1]}
TINY_PREPARE = {"grabcut": False, "duplicate_correlation": 1.01}
TINY_GENERATE = {"short_side": 64, "first_steps": 2, "second_steps": 2, "seed": 7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    import redis

    port = free_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", ""]
    proc = subprocess.Popen(cmd + ["--appendonly", "yes"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            if redis.Redis.from_url(url).ping():
                return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def encoded(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format=fmt)
    return buf.getvalue()


class Bench:
    """A fleet home, its environment, the service that submits and the worker processes."""

    def __init__(self, root: Path, url: str, model: Path) -> None:
        from easyphoto.jobs import JobService
        from easyphoto.jobs.fleet import open_store

        self.root, self.url = root, url
        self.home = root / "home"
        env = {"EASYPHOTO_HOME": str(self.home), "EASYPHOTO_BASE_MODEL": str(model), "EASYPHOTO_QUEUE": url}
        env |= {"EASYPHOTO_DEVICE": "cpu", "EASYPHOTO_TRAIN_DEFAULTS": json.dumps(TINY_TRAIN)}
        env |= {"EASYPHOTO_PREPARE_DEFAULTS": json.dumps(TINY_PREPARE)}
        env |= {"EASYPHOTO_GENERATE_DEFAULTS": json.dumps(TINY_GENERATE)}
        os.environ.update(env)
        self.env = dict(os.environ)
        self.store = open_store(url, self.home, heartbeat_s=2.0)
        self.service = JobService(self.home, store=self.store)
        self.workers: list[subprocess.Popen] = []

    def start_workers(self, n: int) -> None:
        for _ in range(n):
            cmd = [sys.executable, "-m", "easyphoto", "worker", "--heartbeat", "2", "--preload"]
            log = open(self.root / f"worker{len(self.workers)}.log", "ab")  # noqa: SIM115
            self.workers.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        while len(self.store.workers()) < len([w for w in self.workers if w.poll() is None]):
            time.sleep(0.2)

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.terminate()
        for w in self.workers:
            w.wait(timeout=60)
        self.workers = []
        time.sleep(2.5)  # their heartbeats expire

    def wait(self, ids: list[str], timeout: float = 1800.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = [self.store.get(i) for i in ids]
            if all(j.done for j in jobs):
                return jobs
            time.sleep(0.2)
        raise RuntimeError("jobs did not finish in time")

    def generate(self, n: int, template: bytes) -> list[str]:
        from easyphoto.jobs import Upload

        return [self.service.submit_generate(["astro"], [Upload("t.png", template)]).id for _ in range(n)]


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def burst(bench: Bench, workers: int, jobs: int, template: bytes) -> dict:
    """Warm each worker with one job, then ``jobs`` at once: wall time, jobs/min, submit→start."""
    bench.start_workers(workers)
    bench.wait(bench.generate(workers, template))
    t0 = time.time()
    ids = bench.generate(jobs, template)
    done = bench.wait(ids)
    wall = max(j.finished for j in done) - t0
    waits = [j.started - j.created for j in done]
    ok = sum(j.state == "succeeded" for j in done)
    per_worker = {}
    for j in done:
        per_worker[j.worker["pid"]] = per_worker.get(j.worker["pid"], 0) + 1
    return {"workers": workers, "jobs": jobs, "succeeded": ok, "wall_s": round(wall, 1)} | {
        "jobs_per_min": round(60 * jobs / wall, 1),
        "submit_to_start_p50_s": round(statistics.median(waits), 2),
        "submit_to_start_p95_s": round(p95(waits), 2),
        "per_worker": sorted(per_worker.values()),
        "errors": sorted({str(j.error) for j in done if j.state != "succeeded"}),
    }


def dispatch(bench: Bench, jobs: int, template: bytes) -> dict:
    """Jobs submitted one at a time to idle workers: submit→start is the delivery latency alone."""
    waits = []
    for _ in range(jobs):
        (job,) = bench.wait(bench.generate(1, template))
        waits.append(job.started - job.created)
    return {"jobs": jobs, "p50_s": round(statistics.median(waits), 3), "p95_s": round(p95(waits), 3)}


def kill_run(bench: Bench, jobs: int, template: bytes) -> dict:
    """``jobs`` on two workers; one is killed (SIGKILL) while it runs a job after a third are done."""
    bench.start_workers(2)
    bench.wait(bench.generate(2, template))
    ids = bench.generate(jobs, template)
    while sum(bench.store.get(i).done for i in ids) < jobs // 3:
        time.sleep(0.1)
    running = [bench.store.get(i) for i in ids]
    victim = next(j.worker_pid for j in running if j.state == "running")
    os.kill(victim, signal.SIGKILL)
    t_kill = time.time()
    done = bench.wait(ids)
    again = [j for j in done if j.attempts > 1]
    return {
        "jobs": jobs,
        "killed_worker": victim,
        "succeeded": sum(j.state == "succeeded" for j in done),
        "lost": sum(j.state != "succeeded" for j in done),
        "requeued": len(again),
        "requeued_restart_after_kill_s": [round(j.started - t_kill, 1) for j in again],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--jobs", type=int, default=100, help="Tiny generations per throughput run (0: none).")
    add("--kill-jobs", type=int, default=30, help="Jobs in the run where a worker is killed (0: none).")
    add("--dispatch", type=int, default=20, help="Jobs submitted one at a time (0: none).")
    args = parser.parse_args()
    from skimage import data

    from easyphoto.diffusion.tiny import build_tiny_model
    from easyphoto.jobs import Upload

    root = Path(tempfile.mkdtemp(prefix="easyphoto-fleet-bench-"))
    redis_proc, url = start_redis(root)
    try:
        build_tiny_model(root / "tiny", seed=0)
        bench = Bench(root, url, root / "tiny")
        astro = data.astronaut()
        photos = [
            Upload(f"p{i}.jpg", encoded(np.kron(img, np.ones((2, 2, 1), np.uint8)), "JPEG"))
            for i, img in enumerate([astro, astro[10:, 30:], astro[:, ::-1], astro[0:420, 40:460]])
        ]
        template = encoded(astro)
        bench.start_workers(1)
        trained = bench.wait([bench.service.submit_train("astro", photos).id])[0]
        assert trained.state == "succeeded", trained.error
        bench.stop_workers()
        results: dict = {"cpu_cores": os.cpu_count()}
        if args.jobs:
            results["one"] = burst(bench, 1, args.jobs, template)
            bench.stop_workers()
            results["two"] = burst(bench, 2, args.jobs, template)
            results["speedup"] = round(results["two"]["jobs_per_min"] / results["one"]["jobs_per_min"], 2)
        if args.dispatch:
            results["dispatch_idle_2_workers"] = dispatch(bench, args.dispatch, template)
        bench.stop_workers()
        if args.kill_jobs:
            results["kill"] = kill_run(bench, args.kill_jobs, template)
            bench.stop_workers()
        print(json.dumps(results, indent=2))
    finally:
        redis_proc.terminate()
        redis_proc.wait()
        if os.environ.get("KEEP"):
            print("kept", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
