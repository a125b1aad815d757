"""EasyPhoto's own endpoints, so its ``api_test/post_train.py`` and ``post_infer.py`` work unchanged.

``/easyphoto/easyphoto_train_forward`` and ``/easyphoto/easyphoto_infer_forward`` take EasyPhoto's JSON
bodies (sent without a Content-Type), map their fields onto ours (:data:`TRAIN_FIELDS`,
:data:`INFER_FIELDS`), queue the job like ``/v1`` does and answer when it has finished, in EasyPhoto's
response shape. Fields we do not implement are accepted and named in the answer's ``message``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import ServerSettings
from ..errors import BadImageError, ConfigError, EasyPhotoError
from ..jobs import SUCCEEDED, JobService, Upload
from .waiting import wait_for_job


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
TRAIN_FIELDS = {
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
INFER_FIELDS = {
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


def train_settings(body: EasyPhotoTrainRequest) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """EasyPhoto's training fields as our (train, prepare) settings, and notes on what is ignored."""
    if body.train_mode_choose not in (None, "Train Human Lora"):
        raise ConfigError(
            f"train_mode_choose {body.train_mode_choose!r} is not implemented (only 'Train Human Lora')"
        )
    given = body.model_dump(exclude_none=True)
    train = {dst: given[src] for src, dst in TRAIN_FIELDS.items() if src in given}
    if "max_train_steps" in given or "steps_per_photos" in given:
        train["max_steps"] = None  # EasyPhoto: min(photos × steps_per_photos, max_train_steps)
    prepare: dict[str, Any] = {}  # EasyPhoto's resolution is the training one; crops stay 512 px
    if "skin_retouching_bool" in given:
        prepare["retouch"] = given["skin_retouching_bool"]
    note = _ignored_note([k for k in _TRAIN_IGNORED if k in given] + sorted(body.model_extra or {}))
    return train, prepare, [note] if note else []


def infer_templates(body: EasyPhotoInferRequest) -> list[tuple[str, str]]:
    """``(label, base64)`` of the templates the request's ``tabs`` selects."""
    if body.tabs == 1:
        if not body.init_image:
            raise ConfigError("init_image is required with tabs=1 (an uploaded template)")
        raw = [("init_image", body.init_image)]
    elif body.tabs in (0, 2):
        field = "selected_template_images" if body.tabs == 0 else "uploaded_template_images"
        raw = [(f"{field}[{i}]", v) for i, v in enumerate(getattr(body, field) or [])]
    else:
        raise ConfigError(f"tabs={body.tabs} is not implemented (0: template gallery, 1: upload, 2: batch)")
    if not raw:
        raise ConfigError(f"no template images given for tabs={body.tabs}")
    return raw


def infer_settings(body: EasyPhotoInferRequest, default_prompt: str) -> tuple[dict[str, Any], list[str]]:
    """EasyPhoto's inference fields as our generation settings, and notes on what is ignored."""
    given = body.model_dump(exclude_none=True)
    gen = {dst: given[src] for src, dst in INFER_FIELDS.items() if src in given}
    if "seed" in given:
        gen["seed"] = given["seed"] if given["seed"] >= 0 else None
    if body.additional_prompt:
        gen["prompt"] = default_prompt + ", " + body.additional_prompt
    ignored = [k for k in _INFER_FLAGS_NOT_IMPLEMENTED if given.get(k)]
    if given.get("crop_face_preprocess") is False:
        ignored.append("crop_face_preprocess=false (we always work on a crop around each face)")
    if "sd_model_checkpoint" in given:
        ignored.append("sd_model_checkpoint (the server's base model is used)")
    note = _ignored_note(ignored + sorted(body.model_extra or {}))
    return gen, [note] if note else []


def infer_response(service: JobService, view: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """EasyPhoto's answer: base64 portraits, face-ID images with scores, a message."""
    outputs: list[str] = []
    face_ids: list[list[Any]] = []
    scores: list[dict[str, Any]] = []
    if view["state"] == SUCCEEDED:
        result = view["result"] or {}
        for img in result.get("images", []):
            outputs.append(base64.b64encode(service.job_file(view["id"], img["file"]).read_bytes()).decode())
            scores.append({"template": img["template"], "scores": img["scores"]})
            for s in img["scores"]:
                with contextlib.suppress(EasyPhotoError):
                    face = service.job_file(view["id"], f"face_id_{s['user_id']}.png").read_bytes()
                    face_ids.append(
                        [base64.b64encode(face).decode(), f"{s['user_id']}: {s['similarity']:.4f}"]
                    )
        message = "Success"
        notes = notes + [err["error"] for err in result.get("errors", [])]
    else:
        message = f"Infer error, error info: {view.get('error') or view['state']}"
    if notes:
        message += " (" + "; ".join(notes) + ")"
    return {
        "message": message,
        "outputs": outputs,
        "face_id_outputs": face_ids,
        "scores": scores,
        "job_id": view["id"],
        "state": view["state"],
    }


def build_router(service: JobService, settings: ServerSettings) -> APIRouter:
    """The two EasyPhoto-compatible routes over ``service``."""
    router = APIRouter(tags=["easyphoto-compatible"])

    @router.post("/easyphoto/easyphoto_train_forward", openapi_extra=_json_body_doc(EasyPhotoTrainRequest))
    async def easyphoto_train_forward(request: Request) -> JSONResponse:
        """EasyPhoto's training endpoint: answers when the training has finished."""
        body = await _json_body(request, EasyPhotoTrainRequest)
        train, prepare, notes = train_settings(body)
        uploads = [
            Upload(name=f"instance_{i:02d}", data=decode_base64_image(img, f"instance_images[{i}]"))
            for i, img in enumerate(body.instance_images)
        ]
        job = await run_in_threadpool(
            service.submit_train, body.user_id, uploads, train, prepare, notes=notes
        )
        view = await wait_for_job(service, job.id, settings.compat_timeout_s)
        if view["state"] == SUCCEEDED:
            res = view["result"] or {}
            message = (
                f"The training has been completed. User {body.user_id!r}: {res.get('steps')} steps, "
                f"best face-ID score {res.get('best_score')}."
            )
        else:
            message = f"Train error, error info: {view.get('error') or view['state']}"
        if notes:
            message += " (" + "; ".join(notes) + ")"
        return JSONResponse({"message": message, "job_id": job.id, "state": view["state"]})

    @router.post("/easyphoto/easyphoto_infer_forward", openapi_extra=_json_body_doc(EasyPhotoInferRequest))
    async def easyphoto_infer_forward(request: Request) -> JSONResponse:
        """EasyPhoto's inference endpoint: answers with base64 PNG portraits when they are done."""
        body = await _json_body(request, EasyPhotoInferRequest)
        ids = [body.user_ids] if isinstance(body.user_ids, str) else list(body.user_ids)
        raw = infer_templates(body)
        gen, notes = infer_settings(body, service.defaults("generate").prompt)
        uploads = [Upload(name=label.split("[")[0], data=decode_base64_image(v, label)) for label, v in raw]
        job = await run_in_threadpool(service.submit_generate, ids, uploads, (), gen, notes=notes)
        view = await wait_for_job(service, job.id, settings.compat_timeout_s)
        return JSONResponse(infer_response(service, view, notes))

    return router


__all__ = [
    "INFER_FIELDS",
    "TRAIN_FIELDS",
    "EasyPhotoInferRequest",
    "EasyPhotoTrainRequest",
    "build_router",
    "decode_base64_image",
]
