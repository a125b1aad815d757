"""The GPU check's dry run (benchmarks/gpu_check.sh --dry-run): the same script as on the GPU machine,
on this CPU with the tiny model, so it cannot rot between GPU runs (issue #18)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Paths that run on a CPU and must pass there.
CPU_PATHS = (
    "env", "build", "train_benchmark", "train_workflow", "portrait", "ip_adapter", "fast_lcm", "finishing",
    "vae_tiling", "sdxl", "sdxl_user", "sdxl_train",
)  # fmt: skip
#: CUDA-only paths: skipped on a CPU, each with its reason (their CPU-side checks ran).
CUDA_PATHS = ("fused_adamw", "adam_8bit", "cpu_offload")


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_cpu_path(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASYPHOTO_")}
    env.update(OUT=str(tmp_path), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    results = tmp_path / "gpu_check.txt"
    assert results.is_file(), log
    text = results.read_text(encoding="utf-8")
    status = dict((name, s) for s, name in re.findall(r"^(PASS|FAIL|SKIP)\s+(\S+)", text, re.MULTILINE))
    assert "FAIL" not in status.values(), text
    assert proc.returncode == 0, log
    for name in CPU_PATHS:
        assert status.get(name) == "PASS", f"{name}: {status.get(name)}\n{text}"
    for name in CUDA_PATHS:
        assert status.get(name) == "SKIP", f"{name}: {status.get(name)}"
        assert re.search(rf"^SKIP\s+{name}\s.*(CUDA|cuda)", text, re.MULTILINE), f"{name}: no reason given"
    assert re.search(r"^METRIC portrait_s = [\d.]+ s", text, re.MULTILINE)
    assert re.search(r"^METRIC train_s_per_optimizer_step = [\d.]+ s", text, re.MULTILINE)
    assert re.search(r"^METRIC finishing_upscale_s = [\d.]+ s", text, re.MULTILINE)
    assert re.search(r"^PASS\s+finishing\s.*replace: 1 painting pass", text, re.MULTILINE), "replace ran"
    assert re.search(r"^SUMMARY \d+ PASS, 0 FAIL", text, re.MULTILINE)
