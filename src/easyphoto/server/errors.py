"""How our errors reach an HTTP client: one status per error type and a readable message.

Settings refused by the schema are 422 naming the field; bad photos 400; unknown users and jobs 404;
a busy user 409 (with the id of the job that holds it); a missing model 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import ConfigError, EasyPhotoError, ModelNotFoundError, UnknownUserError, UserBusyError
from ..jobs import JobNotFoundError, JobStateError, UploadTooLargeError


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
    if isinstance(exc, ModelNotFoundError):
        return 503
    if isinstance(exc, EasyPhotoError):  # bad photo, no face, invalid id, too few photos, broken model…
        return 400
    return 500


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "form")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EasyPhotoError)
    async def _our_error(request: Request, exc: EasyPhotoError) -> JSONResponse:
        body = {"detail": str(exc), "message": str(exc), "error": type(exc).__name__}
        if isinstance(exc, ConfigError) and exc.fields:
            body["fields"] = exc.fields
        if isinstance(exc, UserBusyError) and exc.job_id:
            body["job_id"] = exc.job_id
        return JSONResponse(body, status_code=status_for(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()
        ]  # no echo of the (possibly huge) input
        message = _validation_message(errors)
        return JSONResponse({"detail": errors, "message": message}, status_code=422)


__all__ = ["install_error_handlers", "status_for"]
