"""Every setting of EasyPhoto in one typed, validated schema (pydantic).

Each field has its type, its range and a one-line description (with its unit); the class docstrings
say why the defaults are what they are (EasyPhoto's published values, DESIGN.md §4, or what we
measured). Out-of-range values are refused where they enter: constructing a settings object with a
bad value raises :class:`~easyphoto.errors.ConfigError` naming the field (the CLI turns that into
``exit 2`` naming the flag, the API into a 422 naming the field), never later in a worker.

Three layers, later wins: the defaults here; the operator's presets (``EASYPHOTO_TRAIN_DEFAULTS`` /
``_PREPARE_`` / ``_GENERATE_`` JSON objects, :func:`preset`); the request or command line.
:class:`ModelConfig` and :class:`ServerSettings` also read their ``EASYPHOTO_*`` environment variables
(pydantic-settings; each field's variable is listed in its description).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

S = TypeVar("S", bound="_Validated")

#: Default pixel limit for decoding a photo (40 megapixels). Checked from the header, before decoding.
DEFAULT_MAX_PIXELS = 40_000_000

#: Caption every training image gets (EasyPhoto's fixed trigger caption).
TRIGGER_CAPTION = "easyphoto_face, easyphoto, 1person"

#: EasyPhoto's positive prompt additions and negative prompt for portraits.
PORTRAIT_PROMPT = (
    TRIGGER_CAPTION + ", upper body, look at viewer, best quality, realistic, photo-realistic, "
    "detailed skin, natural lighting"
)
PORTRAIT_NEGATIVE_PROMPT = (
    "lowres, blurry, bad anatomy, deformed face, asymmetric eyes, extra teeth, watermark, text, "
    "cartoon, painting, illustration, worst quality, low quality"
)


def easyphoto_home() -> Path:
    """Folder that holds user models, jobs and caches: ``$EASYPHOTO_HOME`` or ``~/.easyphoto``."""
    env = os.environ.get("EASYPHOTO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".easyphoto"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def config_error(cls: type, exc: ValidationError) -> ConfigError:
    """One readable :class:`ConfigError` for a pydantic validation failure (fields named, input shown)."""
    parts, names = [], []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        names.append(loc.split(".")[0] if loc else "")
        kind = err.get("type")
        msg = "unknown setting" if kind == "extra_forbidden" else err.get("msg", "invalid value")
        msg = msg.removeprefix("Value error, ")
        got = (
            f", got {_short(err['input'])}"
            if "input" in err and kind not in ("missing", "extra_forbidden")
            else ""
        )
        parts.append(f"{cls.__name__}.{loc}: {msg}{got}" if loc else f"{cls.__name__}: {msg}")
    error = ConfigError("; ".join(parts))
    error.fields = [n for n in names if n]
    return error


class _Validated:
    """Shared behaviour of our settings models: readable errors, validated copies, JSON dicts."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise config_error(type(self), exc) from None

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied, validated like a new object."""
        return type(self)(**{**self.model_dump(), **changes})  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return self.model_dump(mode="json")  # type: ignore[attr-defined]

    @classmethod
    def from_layers(cls: type[S], *layers: dict[str, Any] | None) -> S:
        """The defaults plus ``layers`` of overrides (later layers win); unknown keys are refused."""
        values: dict[str, Any] = {}
        for layer in layers:
            if layer is not None and not isinstance(layer, dict):
                raise ConfigError(f"{cls.__name__}: expected an object of settings, got {_short(layer)}")
            values.update(layer or {})
        return cls(**values)

    @classmethod
    def describe(cls, name: str) -> str:
        """The one-line description of field ``name``."""
        return cls.model_fields[name].description or name  # type: ignore[attr-defined]


class _Settings(_Validated, BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: Any) -> Any:
        """A list field may be given as comma-separated text (forms, environment): ``"1, 2"``."""
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, str) and get_origin(f.annotation) is tuple:
                    data = {**data, name: tuple(x.strip() for x in value.split(",") if x.strip())}
        return data


def _multiple_of_8(value: int) -> int:
    """Image sizes in pixels: SD1.5's VAE works on 8×8 blocks."""
    if value % 8:
        raise ValueError("must be a multiple of 8")
    return value


class FaceConfig(_Settings):
    """Face detection and identity settings.

    ``hog_max_side`` 1024 keeps HOG at ~0.3 s per photo and still finds faces down to ~40 px in that
    copy (smaller working copies are upsampled once). When HOG finds nothing, dlib's CNN detector runs
    on a copy of at most ``cnn_max_side`` (bounded at a few seconds on a CPU). ``same_person_threshold``
    0.6 is dlib's documented threshold for its ResNet descriptor (99.38% on LFW); measured here
    same-person pairs are ≤ 0.52 and 97% of different-person pairs ≥ 0.6.
    """

    hog_max_side: int = Field(1024, ge=64, le=8192, description="Long side of the HOG working copy, px.")
    cnn_fallback: bool = Field(True, description="Run dlib's CNN detector when HOG finds no face.")
    cnn_max_side: int = Field(640, ge=64, le=4096, description="Long side of the CNN working copy, px.")
    same_person_threshold: float = Field(
        0.6, gt=0, lt=2, description="Descriptor distance below which two faces are the same person."
    )
    embedding_jitters: int = Field(1, ge=1, le=100, description="Re-samplings averaged per embedding.")


def _env(field: str, var: str) -> str:
    """The environment variable of a settings field (the constructor still takes the field's name).

    Only the exact, upper-case ``EASYPHOTO_*`` name is read: a bare ``HOME`` or ``DEVICE`` in the
    environment must never become a setting.
    """
    return var


class ModelConfig(_Validated, BaseSettings):
    """Which diffusion weights to load and how (device, dtype, memory options).

    ``base_model``: a Hugging Face id, a local diffusers folder, or a single ``.safetensors``/``.ckpt``
    checkpoint (offline, a single file also needs ``config_dir``: a local diffusers SD1.5 folder whose
    configs describe it). When ``base_model`` is a local folder with a ``controlnet/`` subfolder (like the
    one ``easyphoto tiny-model DIR`` writes), every ControlNet left at its default is taken from
    ``controlnet/<name>/`` instead. ``controlnet_color``: EasyPhoto's ``control_sd15_random_color.pth``,
    an original ControlNet-1.x file (converted with the canny net's config) in no official hub repo: the
    default is the Hugging Face mirror ``ll00292007/easyphoto`` (diffusers fetches hub URLs only); EasyPhoto's
    installer takes https://pai-aigc-photog.oss-cn-hangzhou.aliyuncs.com/webui/control_sd15_random_color.pth
    (the fallback of ``easyphoto models download controlnet-color``). ``cpu_offload`` (CUDA) keeps each
    model on the CPU until it runs: ~3 GB of VRAM instead of ~5. ``lora_cache_size`` 4: each cached user
    LoRA costs ~150 MB in fp16 at rank 128, and switching among cached ones measured 0.013 s, not 0.184 s.

    Every field is also read from its environment variable (named in its description); a value given
    to the constructor wins. ``HF_HUB_OFFLINE=1`` never tries the hub.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
        env_prefix="EASYPHOTO_",
        case_sensitive=True,
    )

    base_model: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        min_length=1,
        validation_alias=_env("base_model", "EASYPHOTO_BASE_MODEL"),
        description="Base SD1.5 model: hub id, diffusers folder or single file (EASYPHOTO_BASE_MODEL).",
    )
    vae: str | None = Field(
        None, validation_alias=_env("vae", "EASYPHOTO_VAE"), description="VAE override (EASYPHOTO_VAE)."
    )
    controlnet_canny: str = Field(
        "lllyasviel/control_v11p_sd15_canny",
        validation_alias=_env("controlnet_canny", "EASYPHOTO_CONTROLNET_CANNY"),
        description="Canny ControlNet: id, folder or file (EASYPHOTO_CONTROLNET_CANNY).",
    )
    controlnet_openpose: str = Field(
        "lllyasviel/control_v11p_sd15_openpose",
        validation_alias=_env("controlnet_openpose", "EASYPHOTO_CONTROLNET_OPENPOSE"),
        description="OpenPose ControlNet: id, folder or file (EASYPHOTO_CONTROLNET_OPENPOSE).",
    )
    controlnet_color: str = Field(
        "https://huggingface.co/ll00292007/easyphoto/blob/main/control_sd15_random_color.pth",
        validation_alias=_env("controlnet_color", "EASYPHOTO_CONTROLNET_COLOR"),
        description="Colour ControlNet: id, folder, file or hub URL (EASYPHOTO_CONTROLNET_COLOR).",
    )
    controlnet_tile: str = Field(
        "lllyasviel/control_v11f1e_sd15_tile",
        validation_alias=_env("controlnet_tile", "EASYPHOTO_CONTROLNET_TILE"),
        description="Tile ControlNet: id, folder or file (EASYPHOTO_CONTROLNET_TILE).",
    )
    config_dir: str | None = Field(
        None,
        validation_alias=_env("config_dir", "EASYPHOTO_MODEL_CONFIG_DIR"),
        description="Diffusers configs for single-file checkpoints offline (EASYPHOTO_MODEL_CONFIG_DIR).",
    )
    scheduler: Literal["dpmpp_2m_karras", "dpmpp_2m_sde_karras"] = Field(
        "dpmpp_2m_karras",
        validation_alias=_env("scheduler", "EASYPHOTO_SCHEDULER"),
        description="DPM++ 2M Karras, or EasyPhoto's stochastic 2M SDE Karras (EASYPHOTO_SCHEDULER).",
    )
    device: str | None = Field(
        None,
        pattern=r"^(cpu|mps|cuda(:\d+)?)$",
        validation_alias=_env("device", "EASYPHOTO_DEVICE"),
        description="cpu, cuda, cuda:N or mps; unset picks cuda > mps > cpu (EASYPHOTO_DEVICE).",
    )
    dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        None,
        validation_alias=_env("dtype", "EASYPHOTO_DTYPE"),
        description="Weights dtype; unset: float16 on CUDA, float32 elsewhere (EASYPHOTO_DTYPE).",
    )
    cpu_offload: bool = Field(
        False,
        validation_alias=_env("cpu_offload", "EASYPHOTO_CPU_OFFLOAD"),
        description="CUDA: keep models on the CPU until they run (EASYPHOTO_CPU_OFFLOAD).",
    )
    vae_tiling: bool = Field(
        False,
        validation_alias=_env("vae_tiling", "EASYPHOTO_VAE_TILING"),
        description="Decode large images in tiles (EASYPHOTO_VAE_TILING).",
    )
    attention_slicing: bool = Field(
        False,
        validation_alias=_env("attention_slicing", "EASYPHOTO_ATTENTION_SLICING"),
        description="Slower, less memory (MPS) (EASYPHOTO_ATTENTION_SLICING).",
    )
    local_files_only: bool = Field(
        False,
        validation_alias=_env("local_files_only", "HF_HUB_OFFLINE"),
        description="Never try the hub (HF_HUB_OFFLINE).",
    )
    lcm_lora: str | None = Field(
        None,
        validation_alias=_env("lcm_lora", "EASYPHOTO_LCM_LORA"),
        description="LCM-LoRA of the fast mode: id, folder or file; unset: none (EASYPHOTO_LCM_LORA).",
    )
    ip_adapter: str = Field(
        "h94/IP-Adapter",
        validation_alias=_env("ip_adapter", "EASYPHOTO_IP_ADAPTER"),
        description="IP-Adapter: repo id or folder with models/<file>, models/image_encoder/ "
        "(EASYPHOTO_IP_ADAPTER).",
    )
    ip_adapter_file: str = Field(
        "ip-adapter-full-face_sd15.safetensors",
        validation_alias=_env("ip_adapter_file", "EASYPHOTO_IP_ADAPTER_FILE"),
        description="IP-Adapter weights under models/ (EASYPHOTO_IP_ADAPTER_FILE).",
    )
    lora_cache_size: int = Field(
        4,
        ge=1,
        le=64,
        validation_alias=_env("lora_cache_size", "EASYPHOTO_LORA_CACHE"),
        description="User LoRAs kept loaded at once (EASYPHOTO_LORA_CACHE).",
    )

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The built-in default of field ``name`` (before any environment variable)."""
        return cls.model_fields[name].default

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **values: Any) -> ModelConfig:
        """Settings from ``environ`` (default: the process environment); ``values`` win."""
        if environ is None:
            return cls(**values)
        names = {
            f.validation_alias: name
            for name, f in cls.model_fields.items()
            if isinstance(f.validation_alias, str)
        }
        from_env = {names[k]: v for k, v in environ.items() if k in names}
        return cls(**{**from_env, **values})


class TrainConfig(_Settings):
    """Face-LoRA training settings (EasyPhoto's defaults, DESIGN §4).

    One optimizer step = ``batch_size × grad_accum`` images; ``max_steps`` unset means
    ``min(n_photos × steps_per_photo, max_steps_cap)`` (EasyPhoto: 200 per photo, at most 800). Every
    ``validate_every`` steps (and at the end) a checkpoint is saved and validation images are rendered
    (one text-to-image render per seed, plus one portrait per ``validation_templates`` entry with the
    portrait pipeline's first pass) and scored by face-ID; the ``fuse_top_k`` best checkpoints are fused
    exactly. Validation templates are server files: only the operator may set them (not a request).
    """

    resolution: int = Field(512, ge=64, le=2048, description="Training resolution, px (multiple of 8).")
    max_steps: int | None = Field(None, ge=1, le=100_000, description="Optimizer steps; unset: from photos.")
    steps_per_photo: int = Field(
        200, ge=1, le=10_000, description="Steps per kept photo when max_steps unset."
    )
    max_steps_cap: int = Field(800, ge=1, le=100_000, description="Most steps when max_steps is unset.")
    batch_size: int = Field(1, ge=1, le=64, description="Images per micro-batch.")
    grad_accum: int = Field(4, ge=1, le=1024, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="AdamW learning rate of the UNet LoRA.")
    text_encoder_lr_ratio: float = Field(0.5, ge=0, le=10, description="Text-encoder lr as a fraction of it.")
    weight_decay: float = Field(1e-2, ge=0, le=1, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, le=1000, description="Gradient norm clip.")
    rank: int = Field(128, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(64.0, gt=0, le=4096, description="LoRA alpha (scale = alpha / rank).")
    train_text_encoder: bool = Field(True, description="Also train a LoRA on the text encoder.")
    random_flip: bool = Field(True, description="Mirror training images at random.")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = Field(
        None,
        description="Mixed precision; unset: fp16 on CUDA (and for fp16 weights on MPS), none on the CPU.",
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory (CUDA).")
    use_8bit_adam: bool = Field(False, description="8-bit AdamW (CUDA, bitsandbytes).")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed.")
    validate_every: int = Field(100, ge=1, le=100_000, description="Validate and checkpoint every N steps.")
    validation_seeds: tuple[int, ...] = Field(
        (1234, 4321), max_length=16, description="One text-to-image validation render per seed."
    )
    validation_size: int = Field(
        512, ge=64, le=2048, description="Validation render size, px (multiple of 8)."
    )
    validation_steps: int = Field(20, ge=1, le=1000, description="Inference steps per validation render.")
    validation_guidance: float = Field(7.0, ge=0, le=30, description="CFG scale of validation renders.")
    validation_prompt: str = Field(
        TRIGGER_CAPTION + ", upper body, look at viewer, best quality, photo realistic",
        max_length=2000,
        description="Prompt of validation renders.",
    )
    validation_negative_prompt: str = Field(
        "lowres, blurry, bad anatomy, deformed face, watermark, text",
        max_length=2000,
        description="Negative prompt of validation renders.",
    )
    validation_templates: tuple[str, ...] = Field(
        (), max_length=16, description="Template photos (server paths) painted at each validation."
    )
    validation_template_steps: int = Field(20, ge=1, le=1000, description="Steps of a template validation.")
    fuse_top_k: int = Field(3, ge=1, le=100, description="Best checkpoints fused into the final LoRA.")
    fuse_rank: int | None = Field(None, ge=1, le=1024, description="Rank of the fused LoRA; unset: rank.")
    keep_checkpoints: bool = Field(False, description="Keep the run's checkpoints after success.")

    _sizes = field_validator("resolution", "validation_size")(_multiple_of_8)


class PrepareConfig(_Settings):
    """Training-photo preparation (:func:`easyphoto.prepare`). Defaults follow DESIGN.md §4.

    Selection: faces under ``min_face_size`` (EasyPhoto's 128 px; a 512 px crop at ratio 3 then
    upsamples at most 1.33×) are rejected; a second face ≥ ``ambiguous_ratio`` of the largest makes a
    photo ambiguous. ``max_cut_off``: whole faces measured 0–0.004 of the head outside the photo, a
    face whose ear and cheek touch the edge 0.05–0.07 (a straight cut through the head): rejected above
    0.04. ``blur_threshold``: variance of the Laplacian at 128 px; sharp photos measured 180–1300, a soft
    video frame 60, blurred σ 1.5 / 2 / 3 px 11–49 / 6–34 / 4–21. Duplicates: one photo at other sizes
    or crops correlates 0.91–1.0 (distance ≤ 0.14), different photos of the same person ≤ 0.63.
    ``identity_threshold``: same-person photos measured 0.15–0.30 from the set's robust centre,
    another person 0.76+. EasyPhoto keeps the 15 most similar photos.
    """

    resolution: int = Field(512, ge=64, le=2048, description="Side of each square training crop, px.")
    crop_ratio: float = Field(
        3.0, ge=1, le=10, description="Crop size in face sizes (3: one face each side)."
    )
    max_photos: int = Field(15, ge=1, le=1000, description="Keep at most this many, most similar first.")
    min_photos: int = Field(3, ge=1, le=1000, description="Fail when fewer usable photos remain.")
    min_face_size: float = Field(128.0, ge=16, le=4096, description="Smallest face kept, px of the original.")
    ambiguous_ratio: float = Field(0.8, gt=0, le=1, description="Second face this large: ambiguous photo.")
    max_cut_off: float = Field(
        0.04, ge=0, le=1, description="Largest fraction of the head outside the photo."
    )
    blur_threshold: float = Field(30.0, ge=0, le=10_000, description="Laplacian variance below: too blurry.")
    duplicate_correlation: float = Field(
        0.8, ge=-1, le=2, description="Aligned-face correlation of duplicates (above 1: no duplicate check)."
    )
    duplicate_distance: float = Field(0.3, ge=0, le=2, description="Descriptor distance of duplicates.")
    identity_threshold: float = Field(0.5, gt=0, le=2, description="Distance from the set: other person.")
    level_eyes: bool = Field(True, description="Rotate each crop so the eyes are level.")
    remove_background: bool = Field(True, description="Paint the background white.")
    grabcut: bool = Field(True, description="Refine the head mask with GrabCut on a small copy.")
    retouch: bool = Field(False, description="Smooth the skin (eyes, brows and lips untouched).")
    retouch_strength: float = Field(0.5, ge=0, le=1, description="Skin smoothing strength.")
    caption: str = Field(TRIGGER_CAPTION, min_length=1, max_length=500, description="Caption of every image.")

    _sizes = field_validator("resolution")(_multiple_of_8)

    @model_validator(mode="after")
    def _check(self) -> PrepareConfig:
        if self.min_photos > self.max_photos:
            raise ValueError(f"min_photos ({self.min_photos}) must not exceed max_photos ({self.max_photos})")
        return self


class GenerateConfig(_Settings):
    """Every switch and number of the two-pass portrait pipeline (EasyPhoto's defaults, DESIGN §4).

    Each template face is cropped at ``crop_ratio`` face sizes (short side ``short_side``), fused with
    the user's face, repainted by ControlNet inpainting (``first_controlnets`` at their weights, user
    LoRA at ``lora_weight``), fused again and refined at ``second_scale`` × inside a ring of
    ``ring_width`` × face width plus eyes and mouth, colour-matched and pasted back feathered over
    ``paste_feather`` × face size. ``fast`` samples with the LCM scheduler and the LCM-LoRA
    (``ModelConfig.lcm_lora``) at ``fast_*`` steps and guidance instead. ``ip_adapter_scale`` adds the
    IP-Adapter's view of the user's face to both passes: off by default for a trained user (EasyPhoto's
    ``ipa_control`` default; the LoRA carries identity), 0.7 for a user given as photos only (the middle
    of the 0.5–1.0 range the adapter's authors suggest for faces; unmeasured here, random weights).
    """

    lora_weight: float = Field(0.9, ge=0, le=2, description="Weight of the user LoRA.")
    crop_ratio: float = Field(3.0, ge=1, le=10, description="Face crop size in face sizes.")
    short_side: int = Field(
        512, ge=64, le=2048, description="Short side of each face crop, px (multiple of 8)."
    )
    apply_fusion_before: bool = Field(True, description="Fuse the user's face in before the first pass.")
    before_fusion_ratio: float = Field(0.5, ge=0, le=1, description="Face fusion ratio before diffusion.")
    apply_fusion_after: bool = Field(True, description="Fuse the user's face in before the second pass.")
    after_fusion_ratio: float = Field(0.5, ge=0, le=1, description="Face fusion ratio after the first pass.")
    first_controlnets: tuple[str, ...] = Field(
        ("canny", "openpose", "color"),
        min_length=1,
        max_length=8,
        description="ControlNets of the first pass.",
    )
    canny_low: int = Field(100, ge=0, le=255, description="Canny low threshold.")
    canny_high: int = Field(200, ge=0, le=255, description="Canny high threshold.")
    canny_weight: float = Field(0.5, ge=0, le=2, description="First-pass canny ControlNet weight.")
    openpose_weight: float = Field(0.5, ge=0, le=2, description="First-pass openpose ControlNet weight.")
    color_weight: float = Field(0.85, ge=0, le=2, description="First-pass colour ControlNet weight.")
    color_cell: int = Field(32, ge=1, le=512, description="Colour mosaic cell, px.")
    first_steps: int = Field(50, ge=1, le=1000, description="Steps of the first diffusion.")
    first_denoise: float = Field(0.45, gt=0, le=1, description="Denoising strength of the first diffusion.")
    guidance_scale: float = Field(7.0, ge=0, le=30, description="Classifier-free guidance.")
    mask_grow: float = Field(0.05, ge=0, le=1, description="First-pass mask growth, × face width.")
    second_controlnets: tuple[str, ...] = Field(
        ("canny", "tile"), min_length=1, max_length=8, description="ControlNets of the second pass."
    )
    second_steps: int = Field(20, ge=0, le=1000, description="Steps of the second diffusion (0: skip).")
    second_denoise: float = Field(0.35, ge=0, le=1, description="Denoising strength of the second diffusion.")
    second_scale: float = Field(1.5, ge=1, le=4, description="Resolution factor of the second diffusion.")
    second_canny_weight: float = Field(1.0, ge=0, le=2, description="Second-pass canny ControlNet weight.")
    tile_weight: float = Field(1.0, ge=0, le=2, description="Second-pass tile ControlNet weight.")
    ring_width: float = Field(0.06, gt=0, le=1, description="Second-pass ring width, × face width.")
    color_shift_middle: bool = Field(True, description="Colour-match the face after the first pass.")
    color_shift_last: bool = Field(True, description="Colour-match the face after the second pass.")
    paste_grow: float = Field(0.04, ge=0, le=1, description="Paste-back mask growth, × face width.")
    paste_feather: float = Field(0.08, ge=0, le=1, description="Paste-back feather, × face size.")
    prompt: str = Field(PORTRAIT_PROMPT, max_length=2000, description="Prompt of both passes.")
    negative_prompt: str = Field(PORTRAIT_NEGATIVE_PROMPT, max_length=2000, description="Negative prompt.")
    seed: int | None = Field(None, le=2**32 - 1, description="Random seed; unset or negative: random.")
    single_user_face: Literal["largest", "first"] = Field(
        "largest", description="One user id, several faces: repaint the largest or the left-most."
    )
    fast: bool = Field(False, description="LCM sampler + LCM-LoRA: several times faster.")
    fast_first_steps: int = Field(8, ge=1, le=100, description="First-pass steps in the fast mode.")
    fast_second_steps: int = Field(8, ge=0, le=100, description="Second-pass steps in the fast mode.")
    fast_guidance_scale: float = Field(1.5, ge=0, le=30, description="Guidance in the fast mode.")
    ip_adapter_scale: float | None = Field(
        None, ge=0, le=2, description="IP-Adapter face weight (ipa_weight); unset: 0 with LoRA, 0.7 without."
    )

    _sizes = field_validator("short_side")(_multiple_of_8)

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if self.canny_low > self.canny_high:
            raise ValueError(f"canny_low ({self.canny_low}) must not exceed canny_high ({self.canny_high})")
        return self


MB = 1024 * 1024


class ServerSettings(_Validated, BaseSettings):
    """What the server needs to know; read from its ``EASYPHOTO_*`` variables, keyword arguments win.

    ``max_file_mb`` 32 covers a 40 MP JPEG; ``max_request_mb`` 512 a JSON body of EasyPhoto's API with
    20 base64 photos. ``workers``: worker processes, i.e. GPU-heavy jobs at once.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
        env_prefix="EASYPHOTO_",
        case_sensitive=True,
    )

    home: Path = Field(
        default_factory=easyphoto_home,
        validation_alias=_env("home", "EASYPHOTO_HOME"),
        description="Models, jobs and templates (EASYPHOTO_HOME).",
    )
    token: str | None = Field(
        None,
        validation_alias=_env("token", "EASYPHOTO_API_TOKEN"),
        description="Bearer token required on every request once set (EASYPHOTO_API_TOKEN).",
    )
    max_file_mb: float = Field(
        32,
        gt=0,
        le=4096,
        validation_alias=_env("max_file_mb", "EASYPHOTO_MAX_UPLOAD_MB"),
        description="Largest uploaded photo, MB (EASYPHOTO_MAX_UPLOAD_MB).",
    )
    max_request_mb: float = Field(
        512,
        gt=0,
        le=65536,
        validation_alias=_env("max_request_mb", "EASYPHOTO_MAX_REQUEST_MB"),
        description="Largest request body, MB (EASYPHOTO_MAX_REQUEST_MB).",
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        validation_alias=_env("max_pixels", "EASYPHOTO_MAX_PIXELS"),
        description="Largest image, pixels, checked before decoding (EASYPHOTO_MAX_PIXELS).",
    )
    max_photos: int = Field(50, ge=1, le=1000, description="Most training photos per request.")
    max_templates: int = Field(20, ge=1, le=1000, description="Most templates per request.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        validation_alias=_env("workers", "EASYPHOTO_WORKERS"),
        description="Worker processes (EASYPHOTO_WORKERS).",
    )
    start_workers: bool = Field(True, description="Start the worker processes with the server.")
    ui: bool = Field(True, description="Serve the web UI at /.")
    ui_lang: Literal["auto", "en", "zh-CN"] = Field(
        "auto",
        validation_alias=_env("ui_lang", "EASYPHOTO_UI_LANG"),
        description="UI language: the browser's, en or zh-CN (EASYPHOTO_UI_LANG).",
    )
    job_retention_days: float = Field(
        30,
        ge=0,
        le=36500,
        validation_alias=_env("job_retention_days", "EASYPHOTO_JOB_RETENTION_DAYS"),
        description="Finished jobs (their uploads, portraits and logs) are deleted after this many days; "
        "0 keeps them (EASYPHOTO_JOB_RETENTION_DAYS).",
    )
    compat_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="How long EasyPhoto-compatible endpoints wait for their job, s."
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerSettings:
        """Settings from the environment; keyword arguments that are not ``None`` win."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MB)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * MB)


#: Environment variables holding JSON objects of the operator's default settings.
PRESET_ENV = {
    "train": "EASYPHOTO_TRAIN_DEFAULTS",
    "prepare": "EASYPHOTO_PREPARE_DEFAULTS",
    "generate": "EASYPHOTO_GENERATE_DEFAULTS",
}
CONFIG_CLASSES: dict[str, type[_Settings]] = {
    "train": TrainConfig,
    "prepare": PrepareConfig,
    "generate": GenerateConfig,
}


def preset(kind: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The operator's default ``kind`` settings (``EASYPHOTO_TRAIN_DEFAULTS`` etc.), as given."""
    env = os.environ if environ is None else environ
    raw = env.get(PRESET_ENV[kind], "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{PRESET_ENV[kind]} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{PRESET_ENV[kind]} must be a JSON object of {kind} settings")
    return data


def effective_config(kind: str, *layers: dict[str, Any] | None, environ: dict[str, str] | None = None) -> Any:
    """``kind`` settings: defaults, then the operator's preset, then ``layers`` (validated)."""
    return CONFIG_CLASSES[kind].from_layers(preset(kind, environ), *layers)


__all__ = [
    "CONFIG_CLASSES",
    "DEFAULT_MAX_PIXELS",
    "PORTRAIT_NEGATIVE_PROMPT",
    "PORTRAIT_PROMPT",
    "PRESET_ENV",
]
__all__ += ["TRIGGER_CAPTION", "FaceConfig", "GenerateConfig", "ModelConfig", "PrepareConfig", "TrainConfig"]
__all__ += ["ServerSettings", "config_error", "easyphoto_home", "effective_config", "preset"]
