"""HTTP API benchmark on loopback with the tiny random SD1.5 (CPU).

Starts ``easyphoto serve`` (web UI included, like the default) on a free port with tiny training and
generation defaults, trains one user through the API, then measures:

* requests/second of ``GET /v1/jobs/{id}`` (``--threads`` clients, ``--seconds`` each run, keep-alive);
* latency of a queued tiny generation (submit → finished) with ``--clients`` concurrent clients, each
  submitting one job and waiting for it (one worker: the jobs queue, so latency grows with the queue);
* resident memory of the idle server and its worker process, before the first job (nothing loaded)
  and after the jobs (models loaded in the worker);
* server memory growth (peak RSS of the server process − RSS before, sampled every 2 ms) while it
  takes one maximum-size EasyPhoto JSON body (``--big-mb``, the server's request limit for the run):
  photos of random bytes, base64 encoded, so the server decodes them all and refuses the first as
  "not an image" — the figure is the body handling, no job is queued (target ≤ 2× the body);
* p50/p95 latency of ``GET /v1/jobs/{id}`` alone, then while 10 clients upload back to back for
  ``--seconds`` (``--upload-kinds``: 6 multipart trainings to ``/v1``, 4 EasyPhoto JSON bodies,
  ``--upload-mb`` each, all refused after they were read: random bytes; the clients run in another
  process so they do not slow the measuring one down).

Usage::

    python benchmarks/api.py [--clients 20] [--threads 1 4 16] [--seconds 5] [--no-ui]
                             [--big-mb 512] [--upload-mb 20] [--upload-kinds vvvvvvcccc]
                             [--hardening-only]
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
from typing import Any

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


def compat_memory(url: str, pid: int, body_mb: float) -> dict[str, float]:
    """Server RSS growth while it takes one EasyPhoto training body of ``body_mb`` MB (MiB)."""
    import base64
    import math

    import psutil
    import requests

    limit = int(body_mb * 1024**2) - 4096
    photo = 24 * 1024**2  # decoded bytes per photo: under the 32 MB file limit, few photos
    n = max(1, math.ceil(limit * 3 / 4 / photo))
    per = (limit - 64) // n * 3 // 4 // 3 * 3  # decoded bytes per photo so that the body fits
    rng = os.urandom
    parts = [b'{"user_id": "bench-big", "instance_images": ["']
    for i in range(n):
        parts.append(base64.b64encode(rng(per)))
        parts.append(b'", "' if i < n - 1 else b'"]}')
    body = b"".join(parts)
    del parts
    proc = psutil.Process(pid)
    time.sleep(1.0)
    before = proc.memory_info().rss
    peak = before
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    r = requests.post(f"{url}/easyphoto/easyphoto_train_forward", data=body, timeout=600)
    took = time.perf_counter() - t0
    time.sleep(0.5)
    stop.set()
    sampler.join()
    time.sleep(2.0)
    after = proc.memory_info().rss
    answer = r.json().get("message", r.text[:200])
    return {
        "body_mb": len(body) / 1024**2,
        "photos": n,
        "status": r.status_code,
        "answer": answer,
        "seconds": took,
        "growth_mb": (peak - before) / 1024**2,
        "ratio": (peak - before) / len(body),
        "after_mb": (after - before) / 1024**2,
    }


def _upload_loop(url: str, until: float, upload_mb: float, kinds: str, out: Any) -> None:
    """Child process: one thread per letter of ``kinds`` (v: multipart to /v1, c: EasyPhoto JSON)
    uploading back to back until ``until`` (time.time()); puts the number of uploads on ``out``."""
    import base64

    import requests

    size = int(upload_mb * 1024**2)
    photos = [("photos", (f"p{i}.jpg", os.urandom(size // 5), "image/jpeg")) for i in range(5)]
    images = [base64.b64encode(os.urandom(size // 5 * 3 // 4)).decode() for _ in range(5)]
    compat_body = json.dumps({"user_id": "bench-up", "instance_images": images}).encode()
    counts = [0] * len(kinds)

    def uploader(i: int) -> None:
        s = requests.Session()
        while time.time() < until:
            if kinds[i] == "v":
                r = s.post(f"{url}/v1/users/bench-up{i}/train", files=photos, timeout=120)
            else:
                r = s.post(f"{url}/easyphoto/easyphoto_train_forward", data=compat_body, timeout=120)
            assert r.status_code in (400, 429), r.text[:200]
            counts[i] += 1

    ths = [threading.Thread(target=uploader, args=(i,)) for i in range(len(kinds))]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    out.put(sum(counts))


def latency_under_uploads(
    url: str, job_id: str, seconds: float, upload_mb: float, kinds: str = "vvvvvvcccc"
) -> dict[str, Any]:
    """p50/p95/max of GET /v1/jobs/{id} (ms) alone, then while ``len(kinds)`` clients upload back to
    back (in another process, so the clients do not slow the measuring one down)."""
    import multiprocessing

    import requests

    def poll(until: float) -> list[float]:
        s = requests.Session()
        lat = []
        while time.time() < until:
            t0 = time.perf_counter()
            s.get(f"{url}/v1/jobs/{job_id}", params={"log_lines": 0}, timeout=30).raise_for_status()
            lat.append((time.perf_counter() - t0) * 1000)
        return lat

    def summary(lat: list[float]) -> dict[str, float]:
        lat = sorted(lat)
        return {
            "n": len(lat),
            "p50_ms": statistics.median(lat),
            "p95_ms": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))],
            "max_ms": lat[-1],
        }

    alone = summary(poll(time.time() + min(seconds, 5.0)))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 3.0  # the child's start and payloads are not measured
    child = ctx.Process(target=_upload_loop, args=(url, start + seconds, upload_mb, kinds, out))
    child.start()
    time.sleep(max(0.0, start - time.time()) + 0.5)
    loaded = summary(poll(start + seconds))
    uploads = out.get(timeout=300)
    child.join()
    return {"alone": alone, "uploading": loaded, "uploads": uploads, "upload_mb": upload_mb, "kinds": kinds}


def report_hardening(url: str, pid: int, job_id: str, args: argparse.Namespace) -> dict[str, Any]:
    mem = compat_memory(url, pid, args.big_mb)
    print(
        f"max-size EasyPhoto body ({mem['body_mb']:.0f} MB, {mem['photos']} photos): server RSS "
        f"+{mem['growth_mb']:.0f} MB at peak = {mem['ratio']:.2f}× the body (target ≤ 2×), "
        f"+{mem['after_mb']:.0f} MB 2 s after; answered {mem['status']} in {mem['seconds']:.1f}s "
        f"({mem['answer'][:60]})"
    )
    lat = latency_under_uploads(url, job_id, args.seconds, args.upload_mb, args.upload_kinds)
    a, u = lat["alone"], lat["uploading"]
    print(
        f"GET /v1/jobs/{{id}} alone: p50 {a['p50_ms']:.1f} ms, p95 {a['p95_ms']:.1f} ms, "
        f"max {a['max_ms']:.1f} ms ({a['n']} requests)"
    )
    print(
        f"GET /v1/jobs/{{id}} while {len(lat['kinds'])} clients upload ({lat['kinds']}, "
        f"{lat['upload_mb']:.0f} MB each, "
        f"{lat['uploads']} uploads in {args.seconds:.0f}s): p50 {u['p50_ms']:.1f} ms, "
        f"p95 {u['p95_ms']:.1f} ms, max {u['max_ms']:.1f} ms ({u['n']} requests)"
    )
    return {"big_body": mem, "latency": lat}


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
    parser.add_argument("--big-mb", type=float, default=512, help="Request limit and big body, MB.")
    parser.add_argument("--upload-mb", type=float, default=20, help="Size of each concurrent upload, MB.")
    parser.add_argument(
        "--upload-kinds",
        default="vvvvvvcccc",
        help="One letter per uploading client: v = multipart to /v1, c = EasyPhoto JSON.",
    )
    parser.add_argument(
        "--hardening-only", action="store_true", help="Train once, then only the memory and latency runs."
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="easyphoto-bench-"))
    model = build_tiny_model(tmp / "tiny", seed=0)
    photos, template = make_photos(tmp / "photos")
    home = tmp / "home"
    home.mkdir()
    t0 = time.perf_counter()
    extra = {"EASYPHOTO_MAX_REQUEST_MB": str(args.big_mb)}
    proc, url = start_server(home, model, ui=not args.no_ui, extra_env=extra)
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

        if args.hardening_only:
            print(json.dumps(report_hardening(url, proc.pid, job["job_id"], args)))
            return
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
        hardening = report_hardening(url, proc.pid, job["job_id"], args)
        print(json.dumps({"idle_before": idle, "idle_after": after, **hardening}))
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
