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
    """Another job holds the lock of this user (e.g. a training already runs)."""


class ModelNotFoundError(EasyPhotoError, FileNotFoundError):
    """A diffusion model, ControlNet or LoRA could not be found or downloaded."""


class ConfigError(EasyPhotoError, ValueError):
    """A setting has a value that cannot work."""


class NotEnoughPhotosError(EasyPhotoError, ValueError):
    """Preparation kept fewer usable photos than the minimum."""
