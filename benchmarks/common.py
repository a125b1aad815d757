"""Shared pieces of the benchmark scripts: model folder options, building it, peak memory, a clock."""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def peak_rss_gb() -> float:
    """Peak resident memory of this process in GB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**3 if sys.platform == "darwin" else peak / 1024**2


def synced_clock(device: object) -> Callable[[], float]:
    """``time.perf_counter`` that first waits for ``device``'s queued CUDA work (a plain clock elsewhere),
    so a timed step includes its GPU time."""
    import torch

    dev = torch.device(device)  # type: ignore[arg-type]

    def now() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter()

    return now


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--full-size DIR`` and ``--tiny DIR``: which random SD1.5 folder to use (built when absent)."""
    parser.add_argument(
        "--full-size", metavar="DIR", type=Path, help="full-size random SD1.5 folder (built if absent)"
    )
    parser.add_argument(
        "--tiny", metavar="DIR", type=Path, help="tiny model folder (default: build in a temp dir)"
    )


def model_complete(folder: Path) -> bool:
    """A finished ``build_tiny_model`` folder: model_index.json, UNet, VAE, text encoder, ControlNets."""
    from easyphoto.diffusion.tiny import CONTROLNET_NAMES

    weights = "diffusion_pytorch_model.safetensors"
    return (
        (folder / "model_index.json").is_file()
        and (folder / "unet" / weights).is_file()
        and (folder / "text_encoder").is_dir()
        and (folder / "vae" / weights).is_file()
        and all((folder / "controlnet" / n / weights).is_file() for n in CONTROLNET_NAMES)
    )


def ensure_model(args: argparse.Namespace, workdir: Path | None = None) -> tuple[Path, float | None, object]:
    """The model folder the arguments ask for, built when missing.

    Returns ``(folder, build seconds or None, keep-alive)``: without ``--full-size``/``--tiny`` the tiny
    model goes to ``workdir`` or a temporary folder that lives as long as the keep-alive object.
    """
    from easyphoto.diffusion.tiny import build_tiny_model

    full = args.full_size is not None
    folder = args.full_size if full else args.tiny
    keep = None
    if folder is None:
        if workdir is None:
            keep = tempfile.TemporaryDirectory(prefix="easyphoto-bench-")
            workdir = Path(keep.name)
        folder = workdir / "tiny"
    build_s = None
    if not model_complete(folder):
        start = time.perf_counter()
        build_tiny_model(folder, seed=0, full_size=full)
        build_s = time.perf_counter() - start
    return folder, build_s, keep
