"""One GPU check (issue #18): every CUDA path of the studio run once, the H100 targets measured.

Usage (benchmarks/README.md, "GPU check")::

    bash benchmarks/gpu_check.sh             # the GPU machine: installs .gpu_wheels/, then runs this
    bash benchmarks/gpu_check.sh --dry-run   # a CPU: the tiny model, small sizes, < 2 min (CI runs it)

Each path prints ``PASS``/``FAIL``/``SKIP``, its seconds and one line (what was checked and measured;
for FAIL the error line and where; for SKIP the reason); ``METRIC`` lines give the figures against
their targets. Everything, plus the training benchmark's report and FAIL tracebacks, goes to
``gpu_check.txt`` in ``--out`` (``$OUT``, else ``./gpu_check_out``), written as it goes, so a run cut
short still leaves its results. Exit code 1 when a path failed.

Paths, in order (a path whose prerequisite did not pass is skipped; ``--only`` picks some):

* ``env`` versions and the device; ``build`` SD1.5's real architecture with random weights (+ the four
  ControlNets and the IP-Adapter; the tiny one in the dry run), an LCM-LoRA of the real shapes, a
  synthetic dataset and template; face analysis is a stub (no dlib there: see gpu_check_setup.py);
* ``train_benchmark`` (benchmarks/train.py: s per optimizer step, 800-step time, ratio to a bare UNet
  step, peak memory); ``train_workflow`` (fp16 mixed precision, validation renders under autocast,
  checkpoints, exact fusion, user model); ``fused_adamw``; ``adam_8bit`` (if bitsandbytes is there);
* ``portrait`` at the default steps (both passes, all controls), ``ip_adapter``, ``fast_lcm``,
  ``finishing`` (background restore, a face crop brought back by Real-ESRGAN, ×2 super-resolution,
  GFPGAN, then a painted background replacement: ``gpu_check_finishing.py``), ``vae_tiling``,
  ``cpu_offload``; ``sdxl`` (text-to-photo: SDXL template at 1024 px / 30 steps, then the portrait;
  time against the 10 s target, peak memory with the offload and keep policies); ``sdxl_user`` (an SDXL
  user's portrait on the template at the default 1024 px crop and steps, cold and warm); ``sdxl_train``
  (SDXL LoRA training at 1024 px, rank 128: s/step against a bare UNet, peak memory, with and without
  gradient checkpointing).

The GPU run keeps training short (4 optimizer steps) and extrapolates; it takes a few minutes on an
H100 and stops starting paths after ``--budget-s``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

RESULTS = "gpu_check.txt"
GPU_TRAIN = {"max_steps": 4, "validate_every": 2, "seed": 1}
DRY_TRAIN = {
    "resolution": 64, "max_steps": 2, "grad_accum": 2, "rank": 8, "alpha": 4.0, "validate_every": 1,
    "validation_size": 64, "validation_steps": 2, "validation_seeds": (1,), "seed": 1,
}  # fmt: skip
GPU_GENERATE = {"seed": 7}
DRY_GENERATE = {"short_side": 96, "first_steps": 4, "second_steps": 3, "seed": 7}
GPU_MODEL_DIR = Path("/tmp/easyphoto-gpu-check/sd15-random")


class Recorder:
    """Runs the paths, prints and appends their result lines, metrics and tracebacks to one file."""

    def __init__(self, path: Path, budget_s: float) -> None:
        self.path, self.budget_s = path, budget_s
        self.start = time.perf_counter()
        self.status: dict[str, str] = {}
        self.traces: list[tuple[str, str]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text + "\n")

    def run(self, name: str, fn: Callable[[], str | None], needs: tuple[str, ...] = ()) -> None:
        """Run one path: PASS with its detail, SKIP (gpu_check_paths.Skip or an unmet need), or FAIL."""
        from gpu_check_paths import Skip, free_memory

        missing = [n for n in needs if self.status.get(n) != "PASS"]
        elapsed = time.perf_counter() - self.start
        t0 = time.perf_counter()
        if missing:
            status, detail = "SKIP", f"needs {', '.join(missing)} to pass"
        elif elapsed > self.budget_s:
            status, detail = "SKIP", f"time budget of {self.budget_s:.0f} s spent ({elapsed:.0f} s)"
        else:
            try:
                status, detail = "PASS", fn() or ""
            except Skip as exc:
                status, detail = "SKIP", str(exc)
            except Exception as exc:  # any failure is reported, then the next path runs
                status, detail = "FAIL", error_line(exc)
                self.traces.append((name, traceback.format_exc()))
            free_memory()
        self.status[name] = status
        self.line(f"{status:4s}  {name:16s}{time.perf_counter() - t0:7.1f} s  {detail}")

    def skip(self, name: str, reason: str) -> None:
        self.status[name] = "SKIP"
        self.line(f"SKIP  {name:16s}{0:7.1f} s  {reason}")

    def metric(
        self, name: str, value: float | None, unit: str = "", *, target: float | None = None, note: str = ""
    ) -> None:
        """A ``METRIC`` line; with a target, whether it was met (targets are upper bounds)."""
        if value is None:
            text = "n/a (CPU)"
        else:
            text = f"{value:.4g}{(' ' + unit) if unit else ''}"
            if target is not None:
                met = "met" if value <= target else "NOT MET"
                text += f"  (target ≤ {target:g}{(' ' + unit) if unit else ''}: {met})"
        self.line(f"METRIC {name} = {text}{f'  [{note}]' if note else ''}")

    def finish(self, details: list[tuple[str, str]]) -> int:
        counts = {s: sum(1 for v in self.status.values() if v == s) for s in ("PASS", "FAIL", "SKIP")}
        wall = time.perf_counter() - self.start
        self.line(
            f"SUMMARY {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP in {wall:.1f} s"
        )
        for title, text in details:
            self.line(f"\n## {title}\n{text.rstrip()}")
        for name, trace in self.traces:
            self.line(f"\n## traceback of {name}\n{trace.rstrip()}")
        return 1 if counts["FAIL"] else 0


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message (at file:line)``, the frame being the innermost of ours."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "easyphoto" in f.filename or "benchmarks" in f.filename] or frames
    where = f" (at {Path(ours[-1].filename).name}:{ours[-1].lineno})" if ours else ""
    return f"{type(exc).__name__}: {message[:300]}{where}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, small sizes (< 2 min)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    parser.add_argument("--model-dir", type=Path, default=None, help=f"model folder (GPU: {GPU_MODEL_DIR})")
    parser.add_argument("--budget-s", type=float, default=None, help="start no path after (GPU 360, dry 150)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (GPU: all, dry run: 1)")
    parser.add_argument("--only", default="", help="comma-separated paths to run (env and build always run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads or (1 if args.dry_run else os.cpu_count() or 1))
    import gpu_check_finishing as finishing
    import gpu_check_paths as paths
    import gpu_check_portrait as portrait

    rec = Recorder(args.out / RESULTS, args.budget_s or (150.0 if args.dry_run else 360.0))
    tmp = tempfile.TemporaryDirectory(prefix="easyphoto-gpu-check-")
    work = Path(tmp.name)
    model_dir = args.model_dir or (work / "tiny" if args.dry_run else GPU_MODEL_DIR)
    details: list[tuple[str, str]] = []
    ctx = paths.Ctx(
        dry_run=args.dry_run, device="cpu" if args.dry_run else "cuda", model_dir=model_dir, work=work,
        train_config=DRY_TRAIN if args.dry_run else GPU_TRAIN,
        generate_config=DRY_GENERATE if args.dry_run else GPU_GENERATE,
        bench={"steps": 2, "warmup": 1} if args.dry_run else {"steps": 5, "warmup": 2},
        template_size=192 if args.dry_run else 1024, metric=rec.metric, details=details,
    )  # fmt: skip
    os.environ["EASYPHOTO_HOME"] = str(ctx.home)
    mode = "dry run (CPU, tiny model)" if args.dry_run else "GPU (full-size SD1.5, random weights)"
    rec.line(f"# EasyPhoto GPU check — {mode}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    rec.line(
        f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    )
    rec.line("# face analysis is stubbed (one centred face, fixed identity): dlib is not on the GPU machine")
    steps: list[tuple[str, Callable[[], Any], tuple[str, ...]]] = [
        ("env", lambda: paths.env(ctx), ()),
        ("build", lambda: paths.build(ctx), ("env",)),
        ("train_benchmark", lambda: paths.train_benchmark(ctx), ("build",)),
        ("train_workflow", lambda: paths.train_workflow(ctx), ("build",)),
        ("fused_adamw", lambda: paths.optimizer(ctx, eight_bit=False), ("build",)),
        ("adam_8bit", lambda: paths.optimizer(ctx, eight_bit=True), ("build",)),
        ("portrait", lambda: portrait.portrait(ctx), ("build",)),
        ("ip_adapter", lambda: portrait.ip_adapter(ctx), ("portrait",)),
        ("fast_lcm", lambda: portrait.fast(ctx), ("portrait",)),
        ("finishing", lambda: finishing.finishing(ctx), ("portrait",)),
        ("vae_tiling", lambda: portrait.vae_tiling(ctx), ("build",)),
        ("cpu_offload", lambda: portrait.cpu_offload(ctx), ("build",)),
        ("sdxl", lambda: portrait.sdxl(ctx), ()),
        ("sdxl_user", lambda: portrait.sdxl_user(ctx), ()),
        ("sdxl_train", lambda: portrait.sdxl_train(ctx), ()),
    ]
    only = {n.strip() for n in args.only.split(",") if n.strip()} | {"env", "build"} if args.only else None
    try:
        for name, fn, needs in steps:
            if only is not None and name not in only:
                rec.skip(name, "not in --only")
            else:
                rec.run(name, fn, needs)
        code = rec.finish(details)
        print(f"results: {rec.path}")
        return code
    finally:
        ctx.cache = ctx.gen = ctx.probe = None
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
