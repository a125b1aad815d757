"""The ``/v1`` API: health and defaults, training and generation jobs, users and templates.

Each route parses its request, calls one :class:`~easyphoto.jobs.JobService` method and renders the
answer. Settings arrive as a JSON ``options`` form field next to the uploaded files; OpenAPI shows its
schema (every field with its type, range and description), and a bad value is a 422 naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel

from .. import __version__
from ..config import GenerateConfig, PrepareConfig, ServerSettings, Text2PhotoConfig, TrainConfig
from ..errors import ConfigError
from ..jobs import JobService, Limits, Upload, UploadTooLargeError
from .errors import public_message, public_params
from .security import MAX_JSON_DEPTH, json_too_deep
from .waiting import wait_for_job


class JobAccepted(BaseModel):
    """A job was queued."""

    job_id: str
    kind: str
    state: str
    url: str


def _options_schema(cls: type, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = cls.model_json_schema()
    schema["properties"] = {**schema["properties"], **(extra or {})}
    schema.pop("required", None)
    return {"contentMediaType": "application/json", "contentSchema": schema}


TRAIN_OPTIONS = _options_schema(
    TrainConfig, {"prepare": {**PrepareConfig.model_json_schema(), "description": "Preparation settings."}}
)
GENERATE_OPTIONS = _options_schema(GenerateConfig)
TEXT2PHOTO_OPTIONS = _options_schema(Text2PhotoConfig)


def job_urls(view: dict[str, Any]) -> dict[str, Any]:
    """Add download URLs for the files a job produced (and keep server paths out of its errors)."""
    jid = view["id"]

    def url(name: str | None) -> str | None:
        return f"/v1/jobs/{jid}/files/{name}" if name else None

    result = view.get("result") or {}
    if view.get("error"):  # the worker's message: server paths cut to their last component
        view["error"] = public_message(view["error"])
    for err in result.get("errors", []) or []:
        if isinstance(err, dict) and isinstance(err.get("error"), str):
            err.update(public_params(err))  # message, source and params alike
    if isinstance(result.get("error"), dict):
        result["error"] = public_params(result["error"])
    for img in result.get("images", []) or []:
        img["url"] = url(img.get("file"))
        if img.get("template_file"):  # text-to-photo: the SDXL template beside the portrait
            img["template_url"] = url(img["template_file"])
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


async def read_uploads(files: list[UploadFile] | None, limits: Limits, what: str) -> list[Upload]:
    """The uploaded files' bytes, each refused beyond the size limit (read at most limit + 1 bytes)."""
    uploads = []
    for i, f in enumerate(files or []):
        label = f.filename or f"{what}{i}"
        if f.size is not None and f.size > limits.max_file_bytes:
            raise UploadTooLargeError(
                Path(label).name,
                code="upload.too_large",
                size_mb=f.size / 1e6,
                limit_mb=limits.max_file_bytes / 1e6,
            )
        data = await f.read(limits.max_file_bytes + 1)
        uploads.append(Upload(name=label, data=data))
    return uploads


#: Longest ``options`` field: every setting with the longest prompts allowed (2 × 2,000 characters,
#: the preparation settings included) is < 8 KB of JSON; the worst 64 KiB (~21,000 empty objects)
#: parses in ~4 ms.
MAX_OPTIONS_CHARS = 64 * 1024


def parse_options(options: str | None) -> dict[str, Any]:
    """The ``options`` form field: a JSON object of settings (validated later by the schema)."""
    if not options:
        return {}
    if len(options) > MAX_OPTIONS_CHARS:
        limit = MAX_OPTIONS_CHARS // 1024
        raise ConfigError(f"options: too long ({len(options) // 1024} KB, limit {limit} KB)")
    if json_too_deep(options.encode(errors="replace"), MAX_JSON_DEPTH):
        raise ConfigError(f"options: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"options: not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ConfigError("options: expected a JSON object of settings")
    return data


def build_router(service: JobService, settings: ServerSettings, supervisor: Any = None) -> APIRouter:
    """Every ``/v1`` route over ``service``."""
    router = APIRouter()
    _server_routes(router, service, supervisor)
    _submit_routes(router, service)
    _text2photo_routes(router, service)
    _job_routes(router, service)
    _user_routes(router, service)
    return router


def _server_routes(router: APIRouter, service: JobService, supervisor: Any) -> None:
    @router.get("/v1/health", tags=["server"])
    def health() -> dict[str, Any]:
        """Server status: version, worker processes, jobs per state."""
        return {
            "status": "ok",
            "version": __version__,
            "workers": supervisor.pids if supervisor is not None else [],
            "jobs": service.store.state_counts(),
        }

    @router.get("/v1/defaults", tags=["server"])
    def defaults() -> dict[str, Any]:
        """The default settings of training, preparation and generation on this server, and the base
        models a request may name (``base_models``, the default first)."""
        out: dict[str, Any] = {k: service.defaults(k).to_dict() for k in ("train", "prepare", "generate")}
        return out | {"base_models": service.base_models()}


BASE_MODEL_HELP = "Base model by name, one of GET /v1/defaults → base_models (default: the server's)."


def _submit_routes(router: APIRouter, service: JobService) -> None:
    limits = service.limits

    @router.post("/v1/users/{user_id}/train", status_code=202, response_model=JobAccepted, tags=["training"])
    async def train_user(
        user_id: str,
        photos: list[UploadFile] = File(..., description="5–20 photos of the user."),
        options: str | None = Form(
            None,
            description='JSON object of training settings, e.g. {"max_steps": 400, "rank": 64}; '
            'preparation settings under "prepare".',
            json_schema_extra=TRAIN_OPTIONS,
        ),
        base_model: str | None = Form(None, description=BASE_MODEL_HELP),
    ) -> JobAccepted:
        """Queue a training of ``user_id`` from uploaded photos (prepared first); returns the job id."""
        opts = parse_options(options)
        prep = opts.pop("prepare", None) or {}
        if not isinstance(prep, dict):
            raise ConfigError("options.prepare: expected a JSON object")
        uploads = await read_uploads(photos, limits, "photo")
        job = await run_in_threadpool(
            lambda: service.submit_train(user_id, uploads, opts, prep, base_model=base_model)
        )
        return JobAccepted(job_id=job.id, kind=job.kind, state=job.state, url=f"/v1/jobs/{job.id}")

    @router.post("/v1/generate", status_code=202, response_model=JobAccepted, tags=["generation"])
    async def generate(
        user_ids: list[str] | None = Form(
            None, description="User id per template face, left to right ('none' skips); with photos: 'photo'."
        ),
        templates: list[UploadFile] | None = File(None, description="Template photos."),
        photos: list[UploadFile] | None = File(
            None, description="No training: photos of the person, painted in as user 'photo' (IP-Adapter)."
        ),
        base_model: str | None = Form(None, description=BASE_MODEL_HELP),
        ip_image: UploadFile | None = File(
            None, description="A face the IP-Adapter sees instead of each user's own (ip_adapter_scale > 0)."
        ),
        template_names: list[str] | None = Form(
            None, description="Templates from the server's templates folder."
        ),
        background_image: UploadFile | None = File(
            None, description='A picture to put behind the people (sets "background": "replace").'
        ),
        options: str | None = Form(
            None,
            description='JSON object of generation settings, e.g. {"seed": 1}.',
            json_schema_extra=GENERATE_OPTIONS,
        ),
    ) -> JobAccepted:
        """Queue a generation: templates × user ids (or × photos of a person, no training); the job's
        result lists images and scores."""
        ids = [u.strip() for item in user_ids or [] for u in item.split(",") if u.strip()]
        uploads = await read_uploads(templates, limits, "template")
        people, ip, behind = await _read_people(photos, ip_image, background_image, limits)
        job = await run_in_threadpool(
            lambda: service.submit_generate(
                ids,
                uploads,
                list(template_names or []),
                parse_options(options),
                photos=people,
                ip_image=ip,
                base_model=base_model,
                background_image=behind,
            )
        )
        return JobAccepted(job_id=job.id, kind=job.kind, state=job.state, url=f"/v1/jobs/{job.id}")


async def _read_people(
    photos: list[UploadFile] | None, ip_image: UploadFile | None, background: UploadFile | None, limits: Any
) -> tuple[list[Any], Any, Any]:
    """A generation's uploads besides its templates: photos of a person, the IP-Adapter's face, the
    picture behind the people (each checked against the limits, named in errors by its field)."""
    people = await read_uploads(photos, limits, "photo") if photos else []
    ip = (await read_uploads([ip_image], limits, "ip_image"))[0] if ip_image is not None else None
    behind = (
        (await read_uploads([background], limits, "background_image"))[0] if background is not None else None
    )
    return people, ip, behind


def _text2photo_routes(router: APIRouter, service: JobService) -> None:
    limits = service.limits

    @router.post("/v1/text2photo", status_code=202, response_model=JobAccepted, tags=["generation"])
    async def text2photo(
        user_ids: list[str] | None = Form(
            None, description="User id per template face, left to right; with photos: 'photo'."
        ),
        photos: list[UploadFile] | None = File(
            None, description="No training: photos of the person, painted in as user 'photo' (IP-Adapter)."
        ),
        ip_image: UploadFile | None = File(
            None, description="A face the IP-Adapter sees instead of each user's own (ip_adapter_scale > 0)."
        ),
        background_image: UploadFile | None = File(
            None, description='A picture to put behind the people (sets "background": "replace").'
        ),
        prompt: str | None = Form(None, description="What the template shows (SDXL draws it)."),
        pose: UploadFile | None = File(None, description="An OpenPose image the template follows."),
        pose_name: str | None = Form(
            None, description="A shipped pose instead (GET /v1/text2photo/presets)."
        ),
        base_model: str | None = Form(None, description=BASE_MODEL_HELP),
        options: str | None = Form(
            None,
            description='JSON object of template settings, e.g. {"width": 768}.',
            json_schema_extra=TEXT2PHOTO_OPTIONS,
        ),
        generate_options: str | None = Form(
            None, description="JSON object of the portrait's settings.", json_schema_extra=GENERATE_OPTIONS
        ),
    ) -> JobAccepted:
        """Queue a text-to-photo generation: SDXL draws a template from the prompt (held to a pose when
        given), then the users are painted in; the result lists the portrait and its template."""
        ids = [u.strip() for item in user_ids or [] for u in item.split(",") if u.strip()]
        t2p = parse_options(options) | ({"prompt": prompt} if prompt is not None else {})
        gen = parse_options(generate_options)
        up = (await read_uploads([pose], limits, "pose"))[0] if pose is not None else None
        people, ip, behind = await _read_people(photos, ip_image, background_image, limits)
        job = await run_in_threadpool(
            lambda: service.submit_text2photo(
                ids,
                t2p,
                gen,
                pose=up,
                pose_name=pose_name,
                base_model=base_model,
                photos=people,
                ip_image=ip,
                background_image=behind,
            )
        )
        return JobAccepted(job_id=job.id, kind=job.kind, state=job.state, url=f"/v1/jobs/{job.id}")

    @router.get("/v1/text2photo/presets", tags=["generation"])
    def text2photo_presets() -> dict[str, Any]:
        """The shipped prompts (by name) and pose names, and this server's scene LoRAs."""
        from ..text_to_photo import scene_loras_dir, text2photo_presets

        folder = scene_loras_dir()
        loras = sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []
        data = text2photo_presets()
        return {"prompts": data["prompts"], "poses": sorted(data["poses"]), "scene_loras": loras}


def _job_routes(router: APIRouter, service: JobService) -> None:
    @router.get("/v1/jobs", tags=["jobs"])
    def list_jobs(
        state: str | None = None, kind: str | None = None, limit: int = Query(50, ge=1, le=500)
    ) -> list[dict[str, Any]]:
        """Recent jobs, newest first."""
        return [j.to_dict() for j in service.store.list(state=state, kind=kind, limit=limit)]

    @router.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(
        job_id: str,
        events_since: int | None = Query(
            None, ge=0, description="Include events after this sequence number."
        ),
        log_lines: int = Query(40, ge=0, le=2000, description="Lines of the job log to include."),
    ) -> dict[str, Any]:
        """State, progress, log tail and (when finished) result or error of a job."""
        return job_urls(service.job_view(job_id, events_since=events_since, log_lines=log_lines))

    @router.get("/v1/jobs/{job_id}/wait", tags=["jobs"])
    async def wait_job(job_id: str, timeout: float = Query(60.0, ge=0, le=3600)) -> dict[str, Any]:
        """Like GET /v1/jobs/{id}, but answers when the job has finished or after ``timeout`` seconds."""
        await wait_for_job(service, job_id, timeout)
        return job_urls(service.job_view(job_id))

    @router.delete("/v1/jobs/{job_id}", status_code=202, tags=["jobs"])
    def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel a queued job, or ask a running one to stop (a training keeps its checkpoint)."""
        job = service.cancel(job_id)
        return {"job_id": job.id, "state": job.state, "cancel_requested": job.cancel_requested}

    @router.post("/v1/jobs/{job_id}/resume", status_code=202, response_model=JobAccepted, tags=["jobs"])
    def resume_job(job_id: str) -> JobAccepted:
        """Put an interrupted or cancelled training back in the queue; it continues from its checkpoint."""
        job = service.resume(job_id)
        return JobAccepted(job_id=job.id, kind=job.kind, state=job.state, url=f"/v1/jobs/{job.id}")

    @router.get("/v1/jobs/{job_id}/files/{name}", tags=["jobs"])
    def job_file(job_id: str, name: str) -> FileResponse:
        """A file the job produced (portraits, contact sheet, validation images), by its listed name."""
        return FileResponse(service.job_file(job_id, name))

    # ------------------------------------------------------------------ v1: users and templates


def _user_routes(router: APIRouter, service: JobService) -> None:
    @router.get("/v1/users", tags=["users"])
    def list_users() -> list[dict[str, Any]]:
        """Trained users with their scores and dates."""
        return service.list_users()

    @router.get("/v1/users/{user_id}", tags=["users"])
    def get_user(user_id: str) -> dict[str, Any]:
        """One trained user."""
        return service.user(user_id)

    @router.delete("/v1/users/{user_id}", tags=["users"])
    def delete_user(user_id: str) -> dict[str, Any]:
        """Delete a user model (refused while it is being trained)."""
        service.delete_user(user_id)
        return {"deleted": user_id}

    @router.get("/v1/users/{user_id}/lora", tags=["users"])
    def user_lora(user_id: str) -> FileResponse:
        """The user's LoRA (kohya/A1111 format, loads in the SD webui and in diffusers)."""
        return FileResponse(
            service.user_file(user_id, "lora.safetensors"),
            media_type="application/octet-stream",
            filename=f"{user_id}.safetensors",
        )

    @router.get("/v1/users/{user_id}/face", tags=["users"])
    def user_face(user_id: str) -> FileResponse:
        """The user's face image (``face_id.png``): the best validation render, or the reference photo
        when no render showed a face (``face_id_source`` in ``GET /v1/users/{user_id}``)."""
        return FileResponse(service.user_file(user_id, "face_id.png"), media_type="image/png")

    @router.get("/v1/templates", tags=["generation"])
    def list_templates() -> list[str]:
        """Template photos in the server's templates folder (``EASYPHOTO_HOME/templates``)."""
        return service.list_templates()

    @router.get("/v1/templates/{name}", tags=["generation"])
    def template_file(name: str) -> FileResponse:
        """One template photo of the templates folder."""
        return FileResponse(service.template_path(name))


__all__ = ["JobAccepted", "build_router", "job_urls", "parse_options", "read_uploads"]
