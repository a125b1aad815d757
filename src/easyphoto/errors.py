"""Exception types of EasyPhoto.

Every error a user can cause carries a message that names the input and the reason, so the CLI, the
API and the web UI can show it as one readable line.
"""

from __future__ import annotations


class EasyPhotoError(Exception):
    """Base class of every error EasyPhoto raises on purpose."""


class BadImageError(EasyPhotoError, ValueError):
    """A photo could not be used: unreadable, truncated, too large, unsupported mode…"""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class NoFaceError(EasyPhotoError, ValueError):
    """A photo holds no detectable face where one is needed."""

    def __init__(self, source: str, reason: str = "no face found") -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class InvalidUserIdError(EasyPhotoError, ValueError):
    """A user id that is not safe to use as a folder name."""


class UnknownUserError(EasyPhotoError, LookupError):
    """No trained model exists for a user id."""


class UserBusyError(EasyPhotoError, RuntimeError):
    """Another job holds the lock of this user (e.g. a training already runs); ``job_id`` names it
    when it is a queued or running job."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class ModelNotFoundError(EasyPhotoError, FileNotFoundError):
    """A diffusion model, ControlNet or LoRA could not be found or downloaded."""


class ConfigError(EasyPhotoError, ValueError):
    """A setting has a value that cannot work. ``fields`` names the settings at fault, when known."""

    fields: list[str] = []


class NotEnoughPhotosError(EasyPhotoError, ValueError):
    """Preparation kept fewer usable photos than the minimum."""


class UserModelError(EasyPhotoError, ValueError):
    """A trained user model on disk is incomplete or corrupt (names the user and the file)."""

    def __init__(self, user_id: str, file: str, reason: str) -> None:
        self.user_id = user_id
        self.file = file
        self.reason = reason
        super().__init__(f"user {user_id!r}: {file}: {reason}")


class TrainingInterrupted(EasyPhotoError):
    """Training was stopped (cancelled or interrupted); its checkpoints allow resuming."""
