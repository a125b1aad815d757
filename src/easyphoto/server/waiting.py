"""Waiting for a job without blocking the event loop (the EasyPhoto-compatible routes answer when
their job has finished; ``GET /v1/jobs/{id}/wait`` answers at the end or after a timeout)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..jobs import FINISHED, JobService


async def wait_for_job(
    service: JobService, job_id: str, timeout: float, poll: float = 0.25
) -> dict[str, Any]:
    """The job's view once it has finished, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        view = service.job_view(job_id, log_lines=0)
        if view["state"] in FINISHED or time.monotonic() >= deadline:
            return view
        await asyncio.sleep(poll)


__all__ = ["wait_for_job"]
