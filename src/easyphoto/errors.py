"""Exception types of EasyPhoto.

Every error a user can cause carries a message that names the input and the reason, so the CLI, the
API and the web UI can show it as one readable line.

The messages people meet most have a stable **code** (``image.too_small``, ``face.none_in_template``…)
and the **params** that fill them: :data:`MESSAGES` holds their English text, the web UI translates the
same codes (``server/error_text.py``), API answers and failed jobs carry them (:func:`error_info`), so a
client can show its own words. ``str(error)`` is always the English line.
"""

from __future__ import annotations

from typing import Any

#: English text of every coded message; ``{name}`` fields are filled from the error's params. (A
#: :class:`ConfigError` from the settings schema has code ``config.fields``: its params list each
#: refused field with pydantic's error type and limits, see ``config.base.config_error``.)
MESSAGES: dict[str, str] = {
    "image.not_found": "file not found",
    "image.broken_link": "broken symbolic link (points to {target}, which does not exist)",
    "image.link_loop": "symbolic link loop (too many levels of symbolic links)",
    "image.permission": "permission denied: this file cannot be read",
    "image.not_dir": "file not found (a folder in this path is a file)",
    "image.is_dir": "is a folder, not an image file",
    "image.char_device": "is a character device, not an image file",
    "image.block_device": "is a block device, not an image file",
    "image.fifo": "is a named pipe (FIFO), not an image file",
    "image.socket": "is a socket, not an image file",
    "image.not_regular": "is not a regular file",
    "image.name_too_long": "file name too long",
    "image.no_device": "no such device or address",
    "image.read_failed": "cannot read file ({detail})",
    "image.stream_failed": "cannot read stream ({detail})",
    "image.empty": "empty file (0 bytes)",
    "image.file_too_large": "file too large ({size}, limit {limit})",
    "image.stream_too_large": "file too large (over {limit})",
    "image.mode": "unsupported image mode {mode!r}",
    "image.bomb": "image too large (limit {max_pixels:,} pixels)",
    "image.not_image": "not an image, or a format we cannot read",
    "image.corrupt_header": "corrupt image header ({detail})",
    "image.invalid_size": "invalid image size {width}×{height}",
    "image.too_many_pixels": "image too large: {width}×{height} = {mp:.1f} MP (limit {limit_mp:.1f} MP)",
    "image.too_small": "image too small: {width}×{height}, at least {min_side} px on each side",
    "image.truncated": "truncated or incomplete image file",
    "image.decode_failed": "cannot decode image ({detail})",
    "upload.too_large": "file too large ({size_mb:.1f} MB, limit {limit_mb:.1f} MB)",
    "upload.none": "no files were uploaded",
    "upload.too_many": "too many {what}: {n} (limit {limit})",
    "upload.empty": "empty image data",
    "upload.base64": "not valid base64 image data",
    "face.none": "no face found",
    "face.none_in_photo": "no face found in this photo (a clear, front-facing photo works best)",
    "face.none_in_template": "no face found in the template",
    "face.none_in_reference": "no face in the reference image ref.png",
    "face.none_in_validation": "no face found in this validation template",
    "face.index": "no face #{index} (found {found}, numbered from 0)",
    "user_id.invalid": (
        "invalid user id {user_id!r}: use 1-64 letters, digits, '_', '-' or '.', "
        "starting with a letter or digit"
    ),
    "user_id.dotdot": "invalid user id {user_id!r}: '..' is not allowed",
    "user_id.reserved": "invalid user id {user_id!r}: reserved name",
    "user.unknown": "no trained model for user {user_id!r}: train it first",
    "user.busy_job": "user {user_id!r} is busy: its training job {job_id} is queued or running",
    "user.busy_training": "user {user_id!r} is busy: another training of this user is queued or running",
    "user.busy_lock": "user {user_id!r} is busy: {holder} is running for this user",
    "photos.not_enough": "only {n} usable photo(s), at least {minimum} needed (5–20 recommended)",
    "job.cancelled": "cancelled",
    "job.interrupted": "interrupted: {detail}",
    "job.interrupted_resumable": "interrupted: {detail}; resume it to continue",
    "job.cancelled_resumable": "cancelled; resume it to continue",
    "job.internal": "internal error (details in the job log)",
}


def message(code: str, **params: Any) -> str:
    """The English text of ``code`` filled with ``params``."""
    return MESSAGES[code].format(**params)


class EasyPhotoError(Exception):
    """Base class of every error EasyPhoto raises on purpose.

    ``code`` / ``params``: the stable message code and its values when the message has one (see
    :data:`MESSAGES`); ``None`` / ``{}`` for messages that are English only (operators' matters).
    """

    code: str | None = None
    params: dict[str, Any] = {}

    @classmethod
    def coded(cls, code: str, **params: Any) -> EasyPhotoError:
        """An error of this class with the message of ``code`` (for classes taking one message)."""
        err = cls(message(code, **params))
        err.code, err.params = code, params
        return err


class _SourcedError(EasyPhotoError, ValueError):
    """An error about one input (``source``: a file name or a label) and why: ``"<source>: <reason>"``."""

    default_code: str | None = None

    def __init__(self, source: str, reason: str | None = None, *, code: str | None = None, **params: Any):
        if reason is None:
            code = code or self.default_code
            reason = message(code, **params) if code else "invalid input"
        self.source, self.reason = source, reason
        self.code, self.params = code, params
        super().__init__(f"{source}: {reason}")


class BadImageError(_SourcedError):
    """A photo could not be used: unreadable, truncated, too large, unsupported mode…"""


class NoFaceError(_SourcedError):
    """A photo holds no detectable face where one is needed."""

    default_code = "face.none"


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

    @classmethod
    def coded(cls, code: str, **params: Any) -> UserBusyError:
        err = super().coded(code, **params)
        err.job_id = params.get("job_id")  # type: ignore[attr-defined]
        return err  # type: ignore[return-value]


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


def error_info(exc: BaseException) -> dict[str, Any]:
    """What a client needs to show ``exc`` in its own language: ``message`` (English), ``code`` and
    ``params`` (``None`` / ``{}`` when the message has no code), ``source`` (the input it is about),
    ``kind`` (the error's class name)."""
    return {
        "message": str(exc),
        "kind": getattr(exc, "kind", None) or type(exc).__name__,
        "code": getattr(exc, "code", None),
        "params": dict(getattr(exc, "params", {}) or {}),
        "source": getattr(exc, "source", None),
    }
