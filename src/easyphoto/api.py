"""The HTTP API (FastAPI) and the one server that also carries the web UI.

``create_app()`` builds a single app: the API under ``/v1`` (jobs, users, generation), EasyPhoto's own
endpoints under ``/easyphoto`` (so its ``api_test/post_train.py`` and ``post_infer.py`` work
unchanged), OpenAPI at ``/docs`` and — unless ``ui=False`` — the Gradio UI mounted at ``/`` (after
every API route: a route declared after the mount would answer 404). Training and generation never
run in a request: they are jobs (:mod:`easyphoto.jobs`) run by a worker process the server starts.

Security: once ``EASYPHOTO_API_TOKEN`` is set, every request needs ``Authorization: Bearer <token>``
(the browser UI logs in once at ``/login`` and gets a cookie); :func:`check_bind` refuses a
non-loopback address without a token. Request bodies, files and image pixels are limited
(:class:`ServerSettings`); user ids are validated; files are only ever served by names this server
chose, never by a path from a request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import DEFAULT_MAX_PIXELS, easyphoto_home
from .errors import (
    BadImageError,
    ConfigError,
    EasyPhotoError,
    InvalidUserIdError,
    ModelNotFoundError,
    NoFaceError,
    NotEnoughPhotosError,
    UnknownUserError,
    UserBusyError,
)
from .jobs import (
    FINISHED,
    SUCCEEDED,
    JobNotFoundError,
    JobService,
    JobStateError,
    Limits,
    Upload,
    UploadTooLargeError,
    WorkerSupervisor,
    config_dict,
)

log = logging.getLogger("easyphoto.api")

MB = 1024 * 1024
TOKEN_COOKIE = "easyphoto_token"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


@dataclass
class ServerSettings:
    """Everything the server needs to know; :meth:`from_env` reads the ``EASYPHOTO_*`` variables.

    ``token``: ``EASYPHOTO_API_TOKEN`` (required on every request once set). ``max_file_mb``
    (``EASYPHOTO_MAX_UPLOAD_MB``, 32) per uploaded photo; ``max_request_mb``
    (``EASYPHOTO_MAX_REQUEST_MB``, 512) per request (a JSON body with base64 photos included);
    ``max_pixels`` (``EASYPHOTO_MAX_PIXELS``, 40 MP) per image, checked from the header before
    decoding. ``workers`` (``EASYPHOTO_WORKERS``, 1): worker processes, i.e. how many GPU-heavy jobs
    run at once. ``ui_lang`` (``EASYPHOTO_UI_LANG``): ``auto`` (the browser's language), ``en`` or
    ``zh-CN``. ``compat_timeout_s``: how long the EasyPhoto-compatible endpoints wait for their job.
    """

    home: Path = field(default_factory=easyphoto_home)
    token: str | None = None
    max_file_mb: float = 32
    max_request_mb: float = 512
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_photos: int = 50
    max_templates: int = 20
    workers: int = 1
    start_workers: bool = True
    ui: bool = True
    ui_lang: str = "auto"
    compat_timeout_s: float = 6 * 3600.0

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerSettings:
        """Settings from the environment; keyword arguments win."""
        values: dict[str, Any] = {
            "home": easyphoto_home(),
            "token": os.environ.get("EASYPHOTO_API_TOKEN") or None,
            "max_file_mb": float(_env_int("EASYPHOTO_MAX_UPLOAD_MB", 32)),
            "max_request_mb": float(_env_int("EASYPHOTO_MAX_REQUEST_MB", 512)),
            "max_pixels": _env_int("EASYPHOTO_MAX_PIXELS", DEFAULT_MAX_PIXELS),
            "workers": _env_int("EASYPHOTO_WORKERS", 1),
            "ui_lang": os.environ.get("EASYPHOTO_UI_LANG", "auto") or "auto",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def limits(self) -> Limits:
        return Limits(
            max_file_bytes=int(self.max_file_mb * MB),
            max_pixels=int(self.max_pixels),
            max_photos=int(self.max_photos),
            max_templates=int(self.max_templates),
        )

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * MB)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, share: bool = False) -> None:
    """Refuse to serve beyond this machine without a token (:class:`ConfigError`)."""
    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a token: anyone on the network could train and "
            "generate. Set EASYPHOTO_API_TOKEN (every request then needs 'Authorization: Bearer <token>') "
            "or listen on 127.0.0.1"
        )
    if share and not token:
        raise ConfigError("--share makes the server public: set EASYPHOTO_API_TOKEN first")


# -------------------------------------------------------------------------------------- middleware


def _send_json(status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None):
    payload = json.dumps(body).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        + (headers or []),
    }
    return start, {"type": "http.response.body", "body": payload}


class TokenAuthMiddleware:
    """Every HTTP/websocket request needs the bearer token (or the UI's login cookie) once one is set."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _ok(self, scope: dict[str, Any]) -> bool:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer " and hmac.compare_digest(auth[7:].strip(), self.token):
            return True
        cookie = headers.get(b"cookie", b"").decode("latin-1")
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and hmac.compare_digest(value.encode(), self.token):
                return True
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._ok(scope) or scope.get("path") == "/login":
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = dict(scope.get("headers") or [])
        if scope.get("method") == "GET" and b"text/html" in headers.get(b"accept", b""):
            await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login")]})
            await send({"type": "http.response.body", "body": b""})
            return
        start, body = _send_json(
            401,
            {"detail": "authentication required: send 'Authorization: Bearer <EASYPHOTO_API_TOKEN>'"},
            [(b"www-authenticate", b"Bearer")],
        )
        await send(start)
        await send(body)


class SameOriginMiddleware:
    """Refuse state-changing requests a web page on another site makes through the user's browser.

    A browser sends ``Origin`` with cross-site POST/PUT/DELETE requests; when it names another host
    than the one the request is addressed to, the request is refused (403). Scripts and the API
    clients send no ``Origin`` and are not affected.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin", b"").decode("latin-1").strip()
            host = headers.get(b"host", b"").decode("latin-1").strip().lower()
            if origin and origin != "null":
                from urllib.parse import urlsplit

                if urlsplit(origin).netloc.lower() != host:
                    start, body = _send_json(403, {"detail": f"cross-site request from {origin} refused"})
                    await send(start)
                    await send(body)
                    return
        await self.app(scope, receive, send)


class RequestTooLarge(HTTPException):
    """The request body is over the server's limit (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request too large (limit {limit / MB:.0f} MB)")


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes: from Content-Length at once, else while reading."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            start, body = _send_json(413, {"detail": RequestTooLarge(self.limit).detail})
            await send(start)
            await send(body)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise RequestTooLarge(self.limit)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except RequestTooLarge as exc:
            if started:
                raise
            start, body = _send_json(413, {"detail": exc.detail})
            await send(start)
            await send(body)


# ------------------------------------------------------------------------------------------ errors


def status_for(exc: Exception) -> int:
    """HTTP status of one of our errors."""
    if isinstance(exc, UploadTooLargeError):
        return 413
    if isinstance(exc, (JobNotFoundError, UnknownUserError)):
        return 404
    if isinstance(exc, (UserBusyError, JobStateError)):
        return 409
    if isinstance(exc, ModelNotFoundError):
        return 503
    if isinstance(
        exc,
        (BadImageError, NoFaceError, InvalidUserIdError, ConfigError, NotEnoughPhotosError, EasyPhotoError),
    ):
        return 400
    return 500


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "form")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EasyPhotoError)
    async def _our_error(request: Request, exc: EasyPhotoError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "message": str(exc), "error": type(exc).__name__},
            status_code=status_for(exc),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()
        ]  # no echo of the (possibly huge) input
        message = _validation_message(errors)
        return JSONResponse({"detail": errors, "message": message}, status_code=422)


# ------------------------------------------------------------------------------------------ models


class JobAccepted(BaseModel):
    """A job was queued."""

    job_id: str
    kind: str
    state: str
    url: str


class EasyPhotoTrainRequest(BaseModel):
    """Body of EasyPhoto's ``/easyphoto/easyphoto_train_forward`` (``api_test/post_train.py``).

    Unknown fields are accepted and reported back in ``message``.
    """

    model_config = ConfigDict(extra="allow")

    user_id: str = Field(description="Id of the user model to train.")
    instance_images: list[str] = Field(description="Photos of the user, base64 encoded.")
    sd_model_checkpoint: str | None = None
    id_task: str | None = None
    train_mode_choose: str | None = Field(None, description="Only 'Train Human Lora' is implemented.")
    resolution: int | None = None
    val_and_checkpointing_steps: int | None = None
    max_train_steps: int | None = None
    steps_per_photos: int | None = None
    train_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    dataloader_num_workers: int | None = None
    learning_rate: float | None = None
    rank: int | None = None
    network_alpha: float | None = None
    validation: bool | None = None
    skin_retouching_bool: bool | None = None
    enable_rl: bool | None = None
    max_rl_time: float | None = None
    timestep_fraction: float | None = None
    args: list[Any] | None = None


class EasyPhotoInferRequest(BaseModel):
    """Body of EasyPhoto's ``/easyphoto/easyphoto_infer_forward`` (``api_test/post_infer.py``).

    ``tabs``: 0 = ``selected_template_images``, 1 = ``init_image`` (default), 2 =
    ``uploaded_template_images``. Unknown fields are accepted and reported back in ``message``.
    """

    model_config = ConfigDict(extra="allow")

    user_ids: list[str] | str
    init_image: str | None = None
    selected_template_images: list[str] | None = None
    uploaded_template_images: list[str] | None = None
    tabs: int = 1
    sd_model_checkpoint: str | None = None
    additional_prompt: str | None = None
    seed: int | None = None
    first_diffusion_steps: int | None = None
    first_denoising_strength: float | None = None
    second_diffusion_steps: int | None = None
    second_denoising_strength: float | None = None
    before_face_fusion_ratio: float | None = None
    after_face_fusion_ratio: float | None = None
    apply_face_fusion_before: bool | None = None
    apply_face_fusion_after: bool | None = None
    color_shift_middle: bool | None = None
    color_shift_last: bool | None = None
    crop_face_preprocess: bool | None = None
    super_resolution: bool | None = None
    skin_retouching_bool: bool | None = None
    display_score: bool | None = None
    background_restore: bool | None = None
    background_restore_denoising_strength: float | None = None
    lcm_accelerate: bool | None = None
    ipa_control: bool | None = None
    ipa_weight: float | None = None
    ipa_image: str | None = None
    makeup_transfer: bool | None = None
    face_shape_match: bool | None = None


#: EasyPhoto training fields → our TrainConfig fields.
_TRAIN_MAP = {
    "resolution": "resolution",
    "val_and_checkpointing_steps": "validate_every",
    "max_train_steps": "max_steps_cap",
    "steps_per_photos": "steps_per_photo",
    "train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "learning_rate": "learning_rate",
    "rank": "rank",
    "network_alpha": "alpha",
}
#: EasyPhoto inference fields → our GenerateConfig fields.
_INFER_MAP = {
    "first_diffusion_steps": "first_steps",
    "first_denoising_strength": "first_denoise",
    "second_diffusion_steps": "second_steps",
    "second_denoising_strength": "second_denoise",
    "before_face_fusion_ratio": "before_fusion_ratio",
    "after_face_fusion_ratio": "after_fusion_ratio",
    "apply_face_fusion_before": "apply_fusion_before",
    "apply_face_fusion_after": "apply_fusion_after",
    "color_shift_middle": "color_shift_middle",
    "color_shift_last": "color_shift_last",
}
_TRAIN_IGNORED = {
    "sd_model_checkpoint": "the server trains on its configured base model",
    "id_task": None,
    "dataloader_num_workers": None,
    "validation": "validation always runs: it selects the checkpoints",
    "enable_rl": "not implemented",
    "max_rl_time": "not implemented",
    "timestep_fraction": "not implemented",
    "args": None,
}
_INFER_FLAGS_NOT_IMPLEMENTED = (
    "super_resolution",
    "skin_retouching_bool",
    "background_restore",
    "lcm_accelerate",
    "ipa_control",
    "makeup_transfer",
    "face_shape_match",
)


def decode_base64_image(value: str, label: str) -> bytes:
    """Bytes of a base64 image (a ``data:image/...;base64,`` prefix is allowed)."""
    if not isinstance(value, str) or not value.strip():
        raise BadImageError(label, "empty image data")
    text = value.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImageError(label, "not valid base64 image data") from None


async def _json_body(request: Request, model: type[BaseModel]) -> Any:
    """Parse a JSON body whatever its Content-Type: EasyPhoto's clients send ``data=json.dumps(...)``
    with none, which FastAPI's strict body parsing would refuse."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"not valid JSON ({exc})", "type": "json_invalid"}]
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _ignored_note(fields_: list[str]) -> str | None:
    if not fields_:
        return None
    return "not implemented, ignored: " + ", ".join(fields_)


# --------------------------------------------------------------------------------------------- app


def _job_urls(view: dict[str, Any]) -> dict[str, Any]:
    """Add download URLs for the files a job produced."""
    jid = view["id"]

    def url(name: str | None) -> str | None:
        return f"/v1/jobs/{jid}/files/{name}" if name else None

    result = view.get("result") or {}
    for img in result.get("images", []) or []:
        img["url"] = url(img.get("file"))
    for v in result.get("validations", []) or []:
        v["urls"] = [url(n) for n in v.get("images", [])]
    for key in ("contact_sheet", "face_id"):
        if result.get(key):
            result[f"{key}_url"] = url(result[key])
    progress = view.get("progress") or {}
    if progress.get("contact_sheet"):
        progress["contact_sheet_url"] = url(progress["contact_sheet"])
    for v in progress.get("validations", []) or []:
        v["urls"] = [url(n) for n in v.get("images", [])]
    return view


async def _read_uploads(files: list[UploadFile] | None, limits: Limits, what: str) -> list[Upload]:
    uploads = []
    for i, f in enumerate(files or []):
        label = f.filename or f"{what}{i}"
        if f.size is not None and f.size > limits.max_file_bytes:
            raise UploadTooLargeError(
                Path(label).name,
                f"file too large ({f.size / 1e6:.1f} MB, limit {limits.max_file_bytes / 1e6:.1f} MB)",
            )
        data = await f.read(limits.max_file_bytes + 1)
        uploads.append(Upload(name=label, data=data))
    return uploads


def _parse_options(options: str | None) -> dict[str, Any]:
    if not options:
        return {}
    try:
        data = json.loads(options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"options: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("options: expected a JSON object of settings")
    return data


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app: API routes, then (if ``settings.ui``) the Gradio UI mounted at ``/``."""
    from . import __version__

    settings = settings or ServerSettings.from_env()
    service = JobService(settings.home, settings.limits)
    supervisor = WorkerSupervisor(settings.home, workers=settings.workers) if settings.start_workers else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if supervisor is not None:
            supervisor.start()
        try:
            yield
        finally:
            if supervisor is not None:
                await run_in_threadpool(supervisor.stop)

    app = FastAPI(
        title="EasyPhoto",
        version=__version__,
        description="Train a face LoRA from a few photos and paint yourself into template photos.",
        docs_url="/docs",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.supervisor = supervisor
    _install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(SameOriginMiddleware)
    if settings.token:
        app.add_middleware(TokenAuthMiddleware, token=settings.token)

    # ------------------------------------------------------------------ login (token + browser UI)
    @app.get("/login", include_in_schema=False)
    def login_form() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>EasyPhoto</title>"
            "<form method=post action=/login style='font-family:sans-serif;margin:4em'>"
            "<p>EasyPhoto API token / 访问令牌</p><input name=token type=password autofocus size=40>"
            "<button>OK</button></form>"
        )

    @app.post("/login", include_in_schema=False)
    def login(token: str = Form("")) -> Response:
        if not settings.token or not hmac.compare_digest(token.encode(), settings.token.encode()):
            return HTMLResponse("wrong token", status_code=401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        return resp

    # ------------------------------------------------------------------ v1: health and settings
    @app.get("/v1/health", tags=["server"])
    def health() -> dict[str, Any]:
        """Server status: version, worker processes, jobs per state."""
        counts = service.store.state_counts()
        return {
            "status": "ok",
            "version": __version__,
            "workers": supervisor.pids if supervisor is not None else [],
            "jobs": counts,
        }

    @app.get("/v1/defaults", tags=["server"])
    def defaults() -> dict[str, Any]:
        """The default settings of training, preparation and generation on this server."""
        return {k: config_dict(service.defaults(k)) for k in ("train", "prepare", "generate")}

    # ------------------------------------------------------------------ v1: jobs
    @app.post("/v1/users/{user_id}/train", status_code=202, response_model=JobAccepted, tags=["training"])
    async def train_user(
        user_id: str,
        photos: list[UploadFile] = File(..., description="5–20 photos of the user."),
        options: str | None = Form(
            None,
            description='JSON object of training settings, e.g. {"max_steps": 400, "rank": 64}; '
            'preparation settings under "prepare".',
        ),
    ) -> JobAccepted:
        """Queue a training of ``user_id`` from uploaded photos (prepared first); returns the job id."""
        opts = _parse_options(options)
        prep = opts.pop("prepare", None) or {}
        if not isinstance(prep, dict):
            raise ConfigError("options.prepare: expected a JSON object")
        uploads = await _read_uploads(photos, settings.limits, "photo")
        job = await run_in_threadpool(service.submit_train, user_id, uploads, opts, prep)
        return JobAccepted(job_id=job.id, kind=job.kind, state=job.state, url=f"/v1/jobs/{job.id}")

    @app.post("/v1/generate", status_code=202, response_model=JobAccepted, tags=["generation"])
    async def generate(
        user_ids: list[str] = Form(
            ..., description="User id per template face, left to right ('none' skips)."
        ),
        templates: list[UploadFile] | None = File(None, description="Template photos."),
        template_names: list[str] | None = Form(
            None, description="Templates from the server's templates folder."
        ),
        options: str | None = Form(None, description='JSON object of generation settings, e.g. {"seed": 1}.'),
    ) -> JobAccepted:
        """Queue a generation: templates × user ids; the job's result lists images and scores."""
        ids = [u.strip() for item in user_ids for u in item.split(",") if u.strip()]
        uploads = await _read_uploads(templates, settings.limits, "template")
        job = await run_in_threadpool(
            service.submit_generate, ids, uploads, list(template_names or []), _parse_options(options)
        )
        return JobAccepted(job_id=job.id, kind=job.kind, state=job.state, url=f"/v1/jobs/{job.id}")

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(
        state: str | None = None, kind: str | None = None, limit: int = Query(50, ge=1, le=500)
    ) -> list[dict[str, Any]]:
        """Recent jobs, newest first."""
        return [j.to_dict() for j in service.store.list(state=state, kind=kind, limit=limit)]

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(
        job_id: str,
        events_since: int | None = Query(
            None, ge=0, description="Include events after this sequence number."
        ),
        log_lines: int = Query(40, ge=0, le=2000, description="Lines of the job log to include."),
    ) -> dict[str, Any]:
        """State, progress, log tail and (when finished) result or error of a job."""
        return _job_urls(service.job_view(job_id, events_since=events_since, log_lines=log_lines))

    @app.get("/v1/jobs/{job_id}/wait", tags=["jobs"])
    async def wait_job(job_id: str, timeout: float = Query(60.0, ge=0, le=3600)) -> dict[str, Any]:
        """Like GET /v1/jobs/{id}, but answers when the job has finished or after ``timeout`` seconds."""
        await _wait(service, job_id, timeout)
        return _job_urls(service.job_view(job_id))

    @app.delete("/v1/jobs/{job_id}", status_code=202, tags=["jobs"])
    def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel a queued job, or ask a running one to stop (a training keeps its checkpoint)."""
        job = service.cancel(job_id)
        return {"job_id": job.id, "state": job.state, "cancel_requested": job.cancel_requested}

    @app.post("/v1/jobs/{job_id}/resume", status_code=202, response_model=JobAccepted, tags=["jobs"])
    def resume_job(job_id: str) -> JobAccepted:
        """Put an interrupted or cancelled training back in the queue; it continues from its checkpoint."""
        job = service.resume(job_id)
        return JobAccepted(job_id=job.id, kind=job.kind, state=job.state, url=f"/v1/jobs/{job.id}")

    @app.get("/v1/jobs/{job_id}/files/{name}", tags=["jobs"])
    def job_file(job_id: str, name: str) -> FileResponse:
        """A file the job produced (portraits, contact sheet, validation images), by its listed name."""
        return FileResponse(service.job_file(job_id, name))

    # ------------------------------------------------------------------ v1: users and templates
    @app.get("/v1/users", tags=["users"])
    def list_users() -> list[dict[str, Any]]:
        """Trained users with their scores and dates."""
        return service.list_users()

    @app.get("/v1/users/{user_id}", tags=["users"])
    def get_user(user_id: str) -> dict[str, Any]:
        """One trained user."""
        service.user_file(user_id, "lora.safetensors")
        from .jobs import user_summary

        return user_summary(user_id, settings.home)

    @app.delete("/v1/users/{user_id}", tags=["users"])
    def delete_user(user_id: str) -> dict[str, Any]:
        """Delete a user model (refused while it is being trained)."""
        service.delete_user(user_id)
        return {"deleted": user_id}

    @app.get("/v1/users/{user_id}/lora", tags=["users"])
    def user_lora(user_id: str) -> FileResponse:
        """The user's LoRA (kohya/A1111 format, loads in the SD webui and in diffusers)."""
        return FileResponse(
            service.user_file(user_id, "lora.safetensors"),
            media_type="application/octet-stream",
            filename=f"{user_id}.safetensors",
        )

    @app.get("/v1/users/{user_id}/face", tags=["users"])
    def user_face(user_id: str) -> FileResponse:
        """The user's best validation image (``face_id.png``)."""
        return FileResponse(service.user_file(user_id, "face_id.png"), media_type="image/png")

    @app.get("/v1/templates", tags=["generation"])
    def list_templates() -> list[str]:
        """Template photos in the server's templates folder (``EASYPHOTO_HOME/templates``)."""
        return service.list_templates()

    @app.get("/v1/templates/{name}", tags=["generation"])
    def template_file(name: str) -> FileResponse:
        """One template photo of the templates folder."""
        return FileResponse(service.template_path(name))

    # ------------------------------------------------------------------ EasyPhoto-compatible
    @app.post(
        "/easyphoto/easyphoto_train_forward",
        tags=["easyphoto-compatible"],
        openapi_extra=_json_body_doc(EasyPhotoTrainRequest),
    )
    async def easyphoto_train_forward(request: Request) -> JSONResponse:
        """EasyPhoto's training endpoint: answers when the training has finished."""
        body = await _json_body(request, EasyPhotoTrainRequest)
        notes: list[str] = []
        if body.train_mode_choose not in (None, "Train Human Lora"):
            raise ConfigError(
                f"train_mode_choose {body.train_mode_choose!r} is not implemented (only 'Train Human Lora')"
            )
        train: dict[str, Any] = {}
        given = body.model_dump(exclude_none=True)
        for src, dst in _TRAIN_MAP.items():
            if src in given:
                train[dst] = given[src]
        if "max_train_steps" in given or "steps_per_photos" in given:
            train["max_steps"] = None  # EasyPhoto: min(photos × steps_per_photos, max_train_steps)
        prepare: dict[str, Any] = {}  # EasyPhoto's resolution is the training one; crops stay 512 px
        if "skin_retouching_bool" in given:
            prepare["retouch"] = given["skin_retouching_bool"]
        ignored = [k for k in _TRAIN_IGNORED if k in given] + sorted(body.model_extra or {})
        note = _ignored_note(ignored)
        if note:
            notes.append(note)
        uploads = [
            Upload(name=f"instance_{i:02d}", data=decode_base64_image(img, f"instance_images[{i}]"))
            for i, img in enumerate(body.instance_images)
        ]
        job = await run_in_threadpool(
            service.submit_train, body.user_id, uploads, train, prepare, notes=notes
        )
        job_view = await _wait(service, job.id, settings.compat_timeout_s)
        if job_view["state"] == SUCCEEDED:
            res = job_view["result"] or {}
            message = (
                f"The training has been completed. User {body.user_id!r}: {res.get('steps')} steps, "
                f"best face-ID score {res.get('best_score')}."
            )
        else:
            message = f"Train error, error info: {job_view.get('error') or job_view['state']}"
        if notes:
            message += " (" + "; ".join(notes) + ")"
        return JSONResponse({"message": message, "job_id": job.id, "state": job_view["state"]})

    @app.post(
        "/easyphoto/easyphoto_infer_forward",
        tags=["easyphoto-compatible"],
        openapi_extra=_json_body_doc(EasyPhotoInferRequest),
    )
    async def easyphoto_infer_forward(request: Request) -> JSONResponse:
        """EasyPhoto's inference endpoint: answers with base64 PNG portraits when they are done."""
        body = await _json_body(request, EasyPhotoInferRequest)
        notes: list[str] = []
        given = body.model_dump(exclude_none=True)
        ids = [body.user_ids] if isinstance(body.user_ids, str) else list(body.user_ids)
        if body.tabs == 1:
            if not body.init_image:
                raise ConfigError("init_image is required with tabs=1 (an uploaded template)")
            raw = [("init_image", body.init_image)]
        elif body.tabs == 0:
            raw = [
                (f"selected_template_images[{i}]", v)
                for i, v in enumerate(body.selected_template_images or [])
            ]
        elif body.tabs == 2:
            raw = [
                (f"uploaded_template_images[{i}]", v)
                for i, v in enumerate(body.uploaded_template_images or [])
            ]
        else:
            raise ConfigError(
                f"tabs={body.tabs} is not implemented (0: template gallery, 1: upload, 2: batch)"
            )
        if not raw:
            raise ConfigError(f"no template images given for tabs={body.tabs}")
        gen: dict[str, Any] = {}
        for src, dst in _INFER_MAP.items():
            if src in given:
                gen[dst] = given[src]
        if "seed" in given:
            gen["seed"] = given["seed"] if given["seed"] >= 0 else None
        if body.additional_prompt:
            gen["prompt"] = service.defaults("generate").prompt + ", " + body.additional_prompt
        ignored = [k for k in _INFER_FLAGS_NOT_IMPLEMENTED if given.get(k)]
        if given.get("crop_face_preprocess") is False:
            ignored.append("crop_face_preprocess=false (we always work on a crop around each face)")
        if "sd_model_checkpoint" in given:
            ignored.append("sd_model_checkpoint (the server's base model is used)")
        ignored += sorted(body.model_extra or {})
        note = _ignored_note(ignored)
        if note:
            notes.append(note)
        uploads = [Upload(name=label.split("[")[0], data=decode_base64_image(v, label)) for label, v in raw]
        job = await run_in_threadpool(service.submit_generate, ids, uploads, (), gen, notes=notes)
        view = await _wait(service, job.id, settings.compat_timeout_s)
        outputs: list[str] = []
        face_ids: list[list[Any]] = []
        scores: list[dict[str, Any]] = []
        if view["state"] == SUCCEEDED:
            result = view["result"] or {}
            for img in result.get("images", []):
                path = service.job_file(job.id, img["file"])
                outputs.append(base64.b64encode(path.read_bytes()).decode())
                scores.append({"template": img["template"], "scores": img["scores"]})
                for s in img["scores"]:
                    with contextlib.suppress(EasyPhotoError):
                        face = service.job_file(job.id, f"face_id_{s['user_id']}.png")
                        face_ids.append(
                            [
                                base64.b64encode(face.read_bytes()).decode(),
                                f"{s['user_id']}: {s['similarity']:.4f}",
                            ]
                        )
            message = "Success"
            for err in result.get("errors", []):
                notes.append(err["error"])
        else:
            message = f"Infer error, error info: {view.get('error') or view['state']}"
        if notes:
            message += " (" + "; ".join(notes) + ")"
        return JSONResponse(
            {
                "message": message,
                "outputs": outputs,
                "face_id_outputs": face_ids,
                "scores": scores,
                "job_id": job.id,
                "state": view["state"],
            }
        )

    # ------------------------------------------------------------------ UI (must come last)
    if settings.ui:
        from .webui import mount_ui

        mount_ui(app, service, lang=settings.ui_lang)
    else:

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/docs")

    return app


async def _wait(service: JobService, job_id: str, timeout: float, poll: float = 0.25) -> dict[str, Any]:
    """Wait (without blocking the event loop) until the job finished or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        view = service.job_view(job_id, log_lines=0)
        if view["state"] in FINISHED or time.monotonic() >= deadline:
            return view
        await asyncio.sleep(poll)


# ------------------------------------------------------------------------------------------ running


def _share_tunnel(host: str, port: int) -> None:
    """Open a Gradio share link to the local server (needs internet; failures are logged)."""
    try:
        from gradio.networking import setup_tunnel

        url = setup_tunnel(
            "127.0.0.1" if host in ("0.0.0.0", "::") else host, port, secrets.token_urlsafe(32), None, None
        )
        log.warning("public share link: %s (protected by EASYPHOTO_API_TOKEN)", url)
        print(f"Public URL: {url}", flush=True)
    except Exception as exc:  # no internet, frpc missing…
        log.error("could not create a share link: %s", exc)
        print(f"could not create a share link: {exc}", flush=True)


def run_server(
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    ui: bool = True,
    share: bool = False,
    open_browser: bool = False,
    settings: ServerSettings | None = None,
    log_level: str = "info",
) -> None:
    """Serve the app with uvicorn until interrupted (Ctrl-C stops the worker cleanly)."""
    import uvicorn

    settings = settings or ServerSettings.from_env(ui=ui)
    settings.ui = ui
    check_bind(host, settings.token, share)
    if ui:
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{url_host}:{port}/"

    def after_start() -> None:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.1)
        else:
            return
        print(f"EasyPhoto is running at {url} (API docs: {url}docs)", flush=True)
        if share:
            _share_tunnel(host, port)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    threading.Thread(target=after_start, daemon=True).start()
    server.run()


__all__ = [
    "BodyLimitMiddleware",
    "EasyPhotoInferRequest",
    "EasyPhotoTrainRequest",
    "ServerSettings",
    "TokenAuthMiddleware",
    "check_bind",
    "create_app",
    "decode_base64_image",
    "is_loopback",
    "run_server",
    "status_for",
]
