"""EasyPhoto's request bodies and how their fields map onto our settings (the compat endpoints' schema).

:class:`EasyPhotoTrainRequest` and :class:`EasyPhotoInferRequest` are the JSON bodies of EasyPhoto's
``api_test/post_train.py`` and ``post_infer.py``; :func:`train_settings` and :func:`infer_settings` turn
them into our settings (:data:`TRAIN_FIELDS`, :data:`INFER_FIELDS`) plus a note naming every field we
accept but do not implement. :mod:`.compat` parses the bodies, queues the jobs and answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError


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
    ``uploaded_template_images``, 3 = text-to-photo (SDXL draws the template from
    ``sd_xl_input_prompt`` at ``sd_xl_resolution``). Unknown fields are accepted and reported back in
    ``message``.
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
    ref_mode_choose: str | None = Field(
        None, description="'Infer without User Lora': ipa_only_image, no training."
    )
    no_user_lora_mode: str | None = Field(None, description="Only 'IP-Adapter Face' is implemented.")
    ipa_only_weight: float | None = None
    ipa_only_image: str | None = None
    makeup_transfer: bool | None = None
    face_shape_match: bool | None = None
    sd_xl_input_prompt: str | None = Field(None, description="tabs=3: what the SDXL template shows.")
    sd_xl_resolution: str | list[int] | None = Field(
        None, description="tabs=3: template size, '(width, height)' as EasyPhoto sends it."
    )


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
    "id_task": None,
    "dataloader_num_workers": None,
    "validation": "validation always runs: it selects the checkpoints",
    "enable_rl": "not implemented",
    "max_rl_time": "not implemented",
    "timestep_fraction": "not implemented",
    "args": None,
}
_INFER_FLAGS_NOT_IMPLEMENTED = (
    "skin_retouching_bool",
    "lcm_accelerate",
    "makeup_transfer",
    "face_shape_match",
)


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
    if body.tabs == 3:
        return []  # text-to-photo: SDXL draws the template (text2photo_settings)
    if body.tabs == 1:
        if not body.init_image:
            raise ConfigError("init_image is required with tabs=1 (an uploaded template)")
        raw = [("init_image", body.init_image)]
    elif body.tabs in (0, 2):
        field = "selected_template_images" if body.tabs == 0 else "uploaded_template_images"
        raw = [(f"{field}[{i}]", v) for i, v in enumerate(getattr(body, field) or [])]
    else:
        raise ConfigError(
            f"tabs={body.tabs} is not implemented (0: gallery, 1: upload, 2: batch, 3: text-to-photo)"
        )
    if not raw:
        raise ConfigError(f"no template images given for tabs={body.tabs}")
    return raw


#: EasyPhoto's default IP-Adapter weights: on top of a user LoRA, and without one (``scripts/api.py``).
EASYPHOTO_IPA_WEIGHT = 0.5
EASYPHOTO_IPA_ONLY_WEIGHT = 0.6
#: ``super_resolution: true`` → ``upscale`` 2: EasyPhoto's portrait enhancement (ModelScope's
#: ``damo/cv_gpen_image-portrait-enhancement``) restores faces with GPEN and enlarges the rest ×2 with
#: RealESRNet. We enlarge the whole portrait ×2 with Real-ESRGAN x2plus; face restoration is not done.
EASYPHOTO_SUPER_RESOLUTION_SCALE = 2
#: EasyPhoto's user id of the face-from-a-photo mode.
IPA_ONLY_USER = "ipa_control_only"


def without_user_lora(body: EasyPhotoInferRequest) -> bool:
    """EasyPhoto's "Infer without User Lora" (by ``ref_mode_choose`` or the ``ipa_control_only`` id)."""
    ids = [body.user_ids] if isinstance(body.user_ids, str) else list(body.user_ids)
    return body.ref_mode_choose == "Infer without User Lora" or IPA_ONLY_USER in ids


#: EasyPhoto's tabs=3 defaults (``scripts/api.py``): its prompt, and 1024 × 1024.
EASYPHOTO_SDXL_PROMPT = (
    "upper-body, look at viewer, one twenty years old girl, standing, in the garden, daytime"
)


def text2photo_settings(body: EasyPhotoInferRequest) -> dict[str, Any]:
    """tabs=3's fields as :class:`~easyphoto.config.Text2PhotoConfig` settings: ``sd_xl_input_prompt``
    (EasyPhoto's default prompt when absent), ``sd_xl_resolution`` ``"(W, H)"`` or ``[W, H]``, ``seed``."""
    out: dict[str, Any] = {"prompt": body.sd_xl_input_prompt or EASYPHOTO_SDXL_PROMPT}
    size = body.sd_xl_resolution
    if size is not None:
        import re

        nums = [int(n) for n in re.findall(r"\d+", size)] if isinstance(size, str) else list(size)
        if len(nums) != 2:
            raise ConfigError(f"sd_xl_resolution {size!r}: expected '(width, height)', e.g. '(1024, 1024)'")
        out["width"], out["height"] = nums
    if body.seed is not None and body.seed >= 0:
        out["seed"] = body.seed
    return out


def infer_settings(body: EasyPhotoInferRequest, default_prompt: str) -> tuple[dict[str, Any], list[str]]:
    """EasyPhoto's inference fields as our generation settings, and notes on what is ignored."""
    given = body.model_dump(exclude_none=True)
    gen = {dst: given[src] for src, dst in INFER_FIELDS.items() if src in given}
    if "seed" in given:
        gen["seed"] = given["seed"] if given["seed"] >= 0 else None
    if body.additional_prompt:
        gen["prompt"] = default_prompt + ", " + body.additional_prompt
    if body.super_resolution:
        gen["upscale"] = EASYPHOTO_SUPER_RESOLUTION_SCALE
    if body.background_restore:  # EasyPhoto's strength field (default 0.35, as ours)
        gen["background"] = "restore"
        if body.background_restore_denoising_strength is not None:
            gen["background_strength"] = body.background_restore_denoising_strength
    if body.ipa_control:
        gen["ip_adapter_scale"] = given.get("ipa_weight", EASYPHOTO_IPA_WEIGHT)
    if without_user_lora(body):
        gen["ip_adapter_scale"] = given.get("ipa_only_weight", EASYPHOTO_IPA_ONLY_WEIGHT)
    ignored = [k for k in _INFER_FLAGS_NOT_IMPLEMENTED if given.get(k)]
    if body.no_user_lora_mode not in (None, "IP-Adapter Face"):
        ignored.append(f"no_user_lora_mode={body.no_user_lora_mode!r} (IP-Adapter Face is used)")
    if given.get("crop_face_preprocess") is False:
        ignored.append("crop_face_preprocess=false (we always work on a crop around each face)")
    note = _ignored_note(ignored + sorted(body.model_extra or {}))
    return gen, [note] if note else []
