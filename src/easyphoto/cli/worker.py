"""``easyphoto worker``: one job worker of a fleet (Celery on Redis), for one GPU, on any machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .app import app


@app.command("worker")
def worker_command(
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue", help="Redis URL of the fleet, redis://HOST:6379/0 (default: EASYPHOTO_QUEUE)."
        ),
    ] = None,
    gpu: Annotated[
        int | None,
        typer.Option("--gpu", min=0, help="The GPU this worker uses (CUDA index); one worker per GPU."),
    ] = None,
    kinds: Annotated[
        str,
        typer.Option("--kinds", help="Jobs this worker takes, e.g. generate or train (default: every kind)."),
    ] = "",
    home: Annotated[
        Path | None,
        typer.Option(
            "--home", help="EASYPHOTO_HOME: user models and job files, on storage every machine shares."
        ),
    ] = None,
    heartbeat: Annotated[
        float,
        typer.Option(
            "--heartbeat", min=1.0, max=3600.0, help="Seconds of silence after which a worker counts as dead."
        ),
    ] = 30.0,
    preload: Annotated[
        bool,
        typer.Option("--preload", help="Load the base model and face models before taking the first job."),
    ] = False,
) -> None:
    """Run jobs from the fleet's queue until stopped (Ctrl+C / SIGTERM: a training saves a checkpoint and
    goes back to the queue)."""
    from ..errors import ConfigError
    from ..jobs import KINDS
    from ..jobs.fleet import worker_main

    url = queue or os.environ.get("EASYPHOTO_QUEUE", "").strip()
    if not url:
        raise ConfigError("--queue: give the fleet's Redis URL (redis://HOST:6379/0) or set EASYPHOTO_QUEUE")
    if home is not None:
        home = home.expanduser().resolve()
    wanted = [k.strip() for k in kinds.split(",") if k.strip()] or list(KINDS)
    worker_main(url, home=home, gpu=gpu, kinds=wanted, heartbeat_s=heartbeat, preload=preload)


__all__ = ["worker_command"]
