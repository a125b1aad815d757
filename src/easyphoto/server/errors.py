"""How our errors reach an HTTP client: one status per error type and a readable message.

Settings refused by the schema are 422 naming the field; bad photos 400; unknown users and jobs 404;
a busy user 409 (with the id of the job that holds it); a missing model or an unreachable job queue
(Redis, in a fleet) 503; anything unexpected 500
with "internal error (see the server log)" (the exception goes to the log, never to the client).
Every answer has ``message`` (what EasyPhoto's clients read) and ``detail`` (FastAPI's field); ``error``
is a stable code (``unknown_user``, ``bad_image``…), not a class name; ``code`` and ``params``, when
the message has them, name the exact message (``image.too_small`` with its width, height…: see
``easyphoto.errors.MESSAGES``), so a client can show it in its own language. Server paths in a message
are shortened to their last component (:func:`public_message`).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BadImageError,
    ConfigError,
    EasyPhotoError,
    InvalidUserIdError,
    ModelNotFoundError,
    NoFaceError,
    NotEnoughPhotosError,
    UnknownUserError,
    UserBusyError,
    UserModelError,
)
from ..jobs import JobNotFoundError, JobStateError, QueueUnavailableError, UploadTooLargeError

#: The answer to an unexpected exception (its text may hold paths and library internals: log only).
INTERNAL_ERROR = "internal error (see the server log)"
#: Longest piece of client input echoed in a validation message.
ECHO_CHARS = 120
#: Longest error message sent (ours are one line of < 300 characters; some quote the client's input).
MESSAGE_CHARS = 1000

#: Stable codes of the ``error`` field, most specific class first.
ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (UploadTooLargeError, "too_large"),
    (JobNotFoundError, "job_not_found"),
    (UnknownUserError, "unknown_user"),
    (UserBusyError, "user_busy"),
    (JobStateError, "job_state"),
    (QueueUnavailableError, "queue_unavailable"),
    (ModelNotFoundError, "model_not_found"),
    (InvalidUserIdError, "invalid_user_id"),
    (NoFaceError, "no_face"),
    (NotEnoughPhotosError, "not_enough_photos"),
    (BadImageError, "bad_image"),
    (UserModelError, "broken_model"),
    (ConfigError, "invalid_settings"),
    (EasyPhotoError, "bad_request"),
)

# An absolute path of two or more components (not part of a URL or a relative path): keep its last one.
# Our own URLs (/v1/…, /easyphoto/…) are left alone.
_PATH_RE = re.compile(r"(?<![\w:/.~-])~?/(?!v1/|easyphoto/)(?:[\w.@+~-]+/)+([\w.@+~-]*)")


def status_for(exc: Exception) -> int:
    """HTTP status of one of our errors."""
    if isinstance(exc, UploadTooLargeError):
        return 413
    if isinstance(exc, (JobNotFoundError, UnknownUserError)):
        return 404
    if isinstance(exc, (UserBusyError, JobStateError)):
        return 409
    if isinstance(exc, ConfigError) and exc.fields:
        return 422
    if isinstance(exc, (ModelNotFoundError, QueueUnavailableError)):
        return 503
    if isinstance(exc, EasyPhotoError):  # bad photo, no face, invalid id, too few photos, broken model…
        return 400
    return 500


def error_code(exc: Exception) -> str:
    """The stable code of an error (the ``error`` field)."""
    return next((code for cls, code in ERROR_CODES if isinstance(exc, cls)), "internal")


def public_message(text: str) -> str:
    """``text`` with every absolute server path cut to its last component (``…/lora.safetensors``)."""
    return _PATH_RE.sub(lambda m: "…/" + m.group(1), str(text))


def _short(text: Any, limit: int = ECHO_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:10]:
        loc = [_short(x, 40) for x in err.get("loc", ()) if x not in ("body", "query", "path", "form")]
        where = ".".join(loc) or ("body" if "body" in err.get("loc", ()) else "request")
        parts.append(f"{where}: {_short(err.get('msg', 'invalid value'))}")
    if len(errors) > 10:
        parts.append(f"and {len(errors) - 10} more")
    return "; ".join(parts) or "invalid request"


def public_params(value: Any) -> Any:
    """An error's params as sent to a client: server paths in texts cut like messages."""
    if isinstance(value, dict):
        return {k: public_params(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_params(v) for v in value]
    return public_message(_short(value, MESSAGE_CHARS)) if isinstance(value, str) else value


def install_error_handlers(app: FastAPI) -> None:
    """Our errors, validation errors, HTTP errors and unexpected exceptions as readable JSON answers."""

    @app.exception_handler(EasyPhotoError)
    async def _our_error(request: Request, exc: EasyPhotoError) -> JSONResponse:
        message = public_message(_short(str(exc), MESSAGE_CHARS))
        body: dict[str, Any] = {"detail": message, "message": message, "error": error_code(exc)}
        if isinstance(exc, ConfigError) and exc.fields:
            body["fields"] = exc.fields
        if isinstance(exc, UserBusyError) and exc.job_id:
            body["job_id"] = exc.job_id
        if exc.code:  # the message's stable code and values: a client may show it in its own words
            body["code"], body["params"] = exc.code, public_params(exc.params)
        return JSONResponse(body, status_code=status_for(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [_short(x, 40) for x in e.get("loc", ())],
                "msg": _short(e.get("msg", "")),
                "type": e.get("type"),
            }
            for e in exc.errors()[:10]
        ]  # no echo of the (possibly huge) input
        message = _validation_message(list(exc.errors()))
        return JSONResponse(
            {"detail": errors, "message": message, "error": "invalid_request"}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        if not isinstance(exc.detail, str):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        message = public_message(_short(exc.detail, 300))
        return JSONResponse(
            {"detail": message, "message": message}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer: the server log gets its traceback.
        return JSONResponse(
            {"detail": INTERNAL_ERROR, "message": INTERNAL_ERROR, "error": "internal"}, status_code=500
        )


__all__ = [
    "ERROR_CODES",
    "INTERNAL_ERROR",
    "error_code",
    "install_error_handlers",
    "public_message",
    "status_for",
]
