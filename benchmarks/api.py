"""HTTP API benchmark on loopback with the tiny random SD1.5 (CPU).

Starts ``easyphoto serve`` (web UI included, like the default) on a free port with tiny training and
generation defaults, trains one user through the API, then measures:

* requests/second of ``GET /v1/jobs/{id}`` (``--threads`` clients, ``--seconds`` each run, keep-alive);
* latency of a queued tiny generation (submit → finished) with ``--clients`` concurrent clients, each
  submitting one job and waiting for it (one worker: the jobs queue, so latency grows with the queue);
* resident memory of the idle server and its worker process, before the first job (nothing loaded)
  and after the jobs (models loaded in the worker).

Usage::

    python benchmarks/api.py [--clients 20] [--threads 1 4 16] [--seconds 5] [--no-ui]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 1024**2


def worker_pids(url: str) -> list[int]:
    import requests

    return requests.get(f"{url}/v1/health", timeout=10).json()["workers"]


def rps(url: str, job_id: str, threads: int, seconds: float) -> float:
    import requests

    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def client(i: int) -> None:
        s = requests.Session()
        while time.perf_counter() < stop:
            r = s.get(f"{url}/v1/jobs/{job_id}", timeout=10)
            r.raise_for_status()
            counts[i] += 1

    ths = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    import requests
    from test_api import make_photos, start_server, stop_server

    from easyphoto.diffusion.tiny import build_tiny_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-ui", action="store_true", help="Serve the API only.")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="easyphoto-bench-"))
    model = build_tiny_model(tmp / "tiny", seed=0)
    photos, template = make_photos(tmp / "photos")
    home = tmp / "home"
    home.mkdir()
    t0 = time.perf_counter()
    proc, url = start_server(home, model, ui=not args.no_ui)
    print(f"server up in {time.perf_counter() - t0:.1f}s at {url} (ui={'off' if args.no_ui else 'on'})")
    try:
        time.sleep(2.0)
        idle = {"server_mb": rss_mb(proc.pid), "worker_mb": sum(rss_mb(p) for p in worker_pids(url))}
        print(
            f"idle memory before any job: server {idle['server_mb']:.0f} MB, "
            f"worker {idle['worker_mb']:.0f} MB"
        )

        files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
        t0 = time.perf_counter()
        job = requests.post(f"{url}/v1/users/bench/train", files=files, timeout=60).json()
        done = requests.get(
            f"{url}/v1/jobs/{job['job_id']}/wait", params={"timeout": 600}, timeout=620
        ).json()
        assert done["state"] == "succeeded", done
        print(
            "tiny training (prepare 5 photos + 4 steps, first job: loads models): "
            f"{time.perf_counter() - t0:.1f}s"
        )

        for n in args.threads:
            print(
                f"GET /v1/jobs/{{id}}: {rps(url, job['job_id'], n, args.seconds):.0f} requests/s "
                f"with {n} client(s)"
            )

        tpl = template.read_bytes()

        def one(_: int) -> float:
            start = time.perf_counter()
            r = requests.post(
                f"{url}/v1/generate",
                data={"user_ids": "bench"},
                files=[("templates", ("t.png", tpl, "image/png"))],
                timeout=60,
            )
            jid = r.json()["job_id"]
            d = requests.get(f"{url}/v1/jobs/{jid}/wait", params={"timeout": 900}, timeout=920).json()
            assert d["state"] == "succeeded", d
            return time.perf_counter() - start

        one(0)  # warm: first generation builds the pipelines
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            lat = sorted(pool.map(one, range(args.clients)))
        wall = time.perf_counter() - t0
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
        print(
            f"{args.clients} concurrent tiny generations: latency min {lat[0]:.2f}s, median "
            f"{statistics.median(lat):.2f}s, p95 {p95:.2f}s, max {lat[-1]:.2f}s; all done in {wall:.1f}s "
            f"({args.clients / wall:.2f} jobs/s, one worker)"
        )
        single = [one(0) for _ in range(3)]
        print(f"one tiny generation alone (submit → done): median {statistics.median(single):.2f}s")
        time.sleep(2.0)
        after = {"server_mb": rss_mb(proc.pid), "worker_mb": sum(rss_mb(p) for p in worker_pids(url))}
        print(
            f"idle memory after the jobs: server {after['server_mb']:.0f} MB, "
            f"worker {after['worker_mb']:.0f} MB (models loaded)"
        )
        print(json.dumps({"idle_before": idle, "idle_after": after}))
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
