"""``easyphoto tiny-model DIR``: a random SD1.5 folder with ControlNets and an IP-Adapter (``--sdxl``: a
random SDXL folder with its openpose ControlNet), built offline."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from .app import app


def folder_size(path: Path) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@app.command("tiny-model")
def tiny_model_command(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create.", show_default=False)],
    full_size: Annotated[
        bool, typer.Option("--full-size", help="SD1.5's real architecture with random weights (~10 GB).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
    sdxl: Annotated[
        bool,
        typer.Option("--sdxl", help="An SDXL model with an SDXL openpose ControlNet (for --template-model)."),
    ] = False,
) -> None:
    """A random SD1.5 folder with 4 ControlNets and an IP-Adapter, offline (for --base-model DIR);
    with --sdxl a random SDXL folder with an openpose ControlNet (for --template-model DIR).

    Refuses a non-empty ``DIR`` that is not already a model
    folder, so it never mixes files into unrelated data.
    """
    from easyphoto.diffusion.tiny import build_tiny_model
    from easyphoto.errors import ConfigError
    from easyphoto.store import check_output_dir

    out_dir = check_output_dir(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "model_index.json").is_file():
        raise ConfigError(f"{out_dir} exists and is not empty: choose a new folder for the model")
    if full_size:
        need = 11 if sdxl else 12  # SDXL is written in float16: ~9.5 GB
        free = shutil.disk_usage(out_dir.parent if not out_dir.exists() else out_dir).free
        if free < need * 1024**3:
            raise ConfigError(
                f"--full-size needs about {need - 1} GB free on disk, only {free / 1024**3:.1f} GB left"
            )
    from ..diffusion.sources import quiet_libraries

    quiet_libraries()  # no "Writing model shards" bars, no torchvision notices
    start = time.perf_counter()
    kind = "full-size" if full_size else "tiny"
    if sdxl:
        from easyphoto.diffusion.tiny_sdxl import build_tiny_sdxl

        build_tiny_sdxl(out_dir, seed=seed, full_size=full_size)
        size = folder_size(out_dir) / 1024**2
        took = time.perf_counter() - start
        print(
            f"built a {kind} random SDXL model with an openpose ControlNet in {out_dir} "
            f"({size:.0f} MB, {took:.1f} s)"
        )
        print(f"use it with: --template-model {out_dir}   (or EASYPHOTO_TEMPLATE_MODEL={out_dir})")
        return
    build_tiny_model(out_dir, seed=seed, full_size=full_size)
    size = folder_size(out_dir) / 1024**2
    print(
        f"built a {kind} random SD1.5 model with 4 ControlNets, an IP-Adapter"
        f"{'' if full_size else ' and ×2/×4 Real-ESRGAN upscalers'} in {out_dir} "
        f"({size:.0f} MB, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    print(f"use it with: --base-model {out_dir}   (or EASYPHOTO_BASE_MODEL={out_dir})")


__all__ = ["folder_size", "tiny_model_command"]
