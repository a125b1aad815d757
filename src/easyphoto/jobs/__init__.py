"""Training and generation as jobs: a SQLite queue under ``EASYPHOTO_HOME`` and worker processes.

The web server never trains or generates inside a request. :mod:`.service` turns a request into a job
(inputs validated and stored, one row queued); :mod:`.worker` claims jobs one at a time and runs them
through :mod:`easyphoto.workflows`; :mod:`.supervisor` starts and restarts the worker processes;
:mod:`.store` is the SQLite table with every job's state and events. With ``EASYPHOTO_QUEUE`` the same
service runs on a fleet instead: :mod:`.redis_store` (the job table in Redis) and :mod:`.fleet` (Celery
workers on any number of machines); neither Celery nor Redis is imported until a fleet is used.
"""

from __future__ import annotations

from .redis_store import QueueUnavailableError
from .service import JobService, Limits, Upload, UploadTooLargeError, check_image, safe_label
from .store import (
    CANCELLED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    KINDS,
    QUEUED,
    RUNNING,
    STATES,
    SUCCEEDED,
    Job,
    JobNotFoundError,
    JobStateError,
    JobStore,
    log_tail,
    validate_job_id,
)
from .supervisor import WorkerSupervisor, worker_main
from .worker import JobCancelled, Worker

__all__ = [
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "KINDS",
    "QUEUED",
    "QueueUnavailableError",
    "RUNNING",
    "STATES",
    "SUCCEEDED",
    "Job",
    "JobCancelled",
    "JobNotFoundError",
    "JobService",
    "JobStateError",
    "JobStore",
    "Limits",
    "Upload",
    "UploadTooLargeError",
    "Worker",
    "WorkerSupervisor",
    "check_image",
    "log_tail",
    "safe_label",
    "validate_job_id",
    "worker_main",
]
