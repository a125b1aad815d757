"""One home for every default of EasyPhoto, typed.

Numbers follow EasyPhoto's published defaults (see DESIGN.md §4) unless a comment says why we differ.
Settings that an operator usually changes per machine can be overridden by environment variables
(``EASYPHOTO_*``); :func:`env_overrides` documents which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Default pixel limit for decoding a photo (40 megapixels). Checked before decoding.
DEFAULT_MAX_PIXELS = 40_000_000

#: Caption every training image gets (EasyPhoto's fixed trigger caption).
TRIGGER_CAPTION = "easyphoto_face, easyphoto, 1person"


def easyphoto_home() -> Path:
    """Folder that holds user models, jobs and caches: ``$EASYPHOTO_HOME`` or ``~/.easyphoto``."""
    env = os.environ.get("EASYPHOTO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".easyphoto"


@dataclass(frozen=True)
class FaceConfig:
    """Face detection and identity settings.

    ``hog_max_side``: images are analysed on a copy whose long side is at most this many pixels;
    landmarks and boxes are mapped back to full resolution. 1024 keeps HOG at ~0.3 s per photo and
    still finds faces down to ~40 px in that copy.
    ``min_face_for_upsample``: HOG only sees faces ≥ ~80 px; when the working copy is small we
    upsample once so faces down to ~40 px are found (see :func:`choose_upsample`).
    ``cnn_fallback`` / ``cnn_max_side``: when HOG finds nothing, run dlib's CNN detector on a copy
    whose long side is at most ``cnn_max_side`` (bounded at a few seconds on a CPU).
    ``same_person_threshold``: descriptor distance below which two faces are the same person. dlib
    documents 0.6 for its ResNet descriptor (99.38% on LFW); measured here same-person pairs are
    ≤ 0.52 and 97% of different-person pairs ≥ 0.6.
    """

    hog_max_side: int = 1024
    cnn_fallback: bool = True
    cnn_max_side: int = 640
    same_person_threshold: float = 0.6
    embedding_jitters: int = 1


@dataclass(frozen=True)
class ModelConfig:
    """Which diffusion weights to load and how (device, dtype, memory options).

    ``base_model``: a Hugging Face id, a local diffusers folder, or a single ``.safetensors``/``.ckpt``
    checkpoint (offline, a single file also needs ``config_dir``: a local diffusers SD1.5 folder whose
    configs describe it). When ``base_model`` is a local folder with a ``controlnet/`` subfolder (like the
    one ``easyphoto tiny-model DIR`` writes), every ControlNet left at its default below is taken from
    ``controlnet/<name>/`` instead.
    ``controlnet_*``: Hugging Face id, local diffusers folder, or single file (``.safetensors``/``.pth``,
    local path or ``https://huggingface.co/...`` URL; converted with ``controlnet_canny``'s config).
    ``controlnet_color`` defaults to EasyPhoto's own colour ControlNet (``control_sd15_random_color``),
    which has no official hub repository; the URL is the mirror EasyPhoto's installer downloads from.
    ``scheduler``: ``dpmpp_2m_karras`` (DPM++ 2M Karras, deterministic) or ``dpmpp_2m_sde_karras``
    (EasyPhoto's sampler; stochastic, still reproducible with a seeded generator).
    ``device``/``dtype``: ``None`` picks cuda > mps > cpu, float16 on CUDA and float32 elsewhere.
    ``cpu_offload`` (CUDA): keep each model on the CPU until it runs, ~3 GB of VRAM instead of ~5.
    ``vae_tiling``: decode large images in tiles. ``attention_slicing``: slower, less memory (MPS).
    PyTorch's scaled-dot-product attention is always used where available.
    ``lcm_lora``: LCM-LoRA weights for the fast mode (``GenerateConfig.fast``), e.g.
    ``latent-consistency/lcm-lora-sdv1-5``, a local folder or ``.safetensors`` file; ``None``: no fast mode.
    ``lora_cache_size``: user LoRAs kept loaded at once (switching between them reads no file; each
    costs its size in memory: ~150 MB in fp16 at rank 128).

    Environment overrides: ``EASYPHOTO_BASE_MODEL``, ``EASYPHOTO_VAE``, ``EASYPHOTO_DEVICE``,
    ``EASYPHOTO_DTYPE``, ``EASYPHOTO_CONTROLNET_CANNY`` / ``_OPENPOSE`` / ``_COLOR`` / ``_TILE``,
    ``EASYPHOTO_MODEL_CONFIG_DIR`` (local diffusers config folder for single-file checkpoints
    offline), ``EASYPHOTO_SCHEDULER``, ``EASYPHOTO_CPU_OFFLOAD``, ``EASYPHOTO_VAE_TILING``,
    ``EASYPHOTO_ATTENTION_SLICING``, ``EASYPHOTO_LCM_LORA``, ``EASYPHOTO_LORA_CACHE``,
    ``HF_HUB_OFFLINE`` (never try the hub).
    """

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    vae: str | None = None
    controlnet_canny: str = "lllyasviel/control_v11p_sd15_canny"
    controlnet_openpose: str = "lllyasviel/control_v11p_sd15_openpose"
    controlnet_color: str = (
        "https://huggingface.co/ll00292007/easyphoto/blob/main/control_sd15_random_color.pth"
    )
    controlnet_tile: str = "lllyasviel/control_v11f1e_sd15_tile"
    config_dir: str | None = None
    scheduler: str = "dpmpp_2m_karras"
    device: str | None = None  # None: cuda > mps > cpu
    dtype: str | None = None  # None: float16 on cuda, float32 elsewhere
    cpu_offload: bool = False
    vae_tiling: bool = False
    attention_slicing: bool = False
    local_files_only: bool = False
    lcm_lora: str | None = None
    lora_cache_size: int = 4


_ENV_KEYS: dict[type, dict[str, str]] = {
    ModelConfig: {
        "base_model": "EASYPHOTO_BASE_MODEL",
        "vae": "EASYPHOTO_VAE",
        "device": "EASYPHOTO_DEVICE",
        "dtype": "EASYPHOTO_DTYPE",
        "controlnet_canny": "EASYPHOTO_CONTROLNET_CANNY",
        "controlnet_openpose": "EASYPHOTO_CONTROLNET_OPENPOSE",
        "controlnet_color": "EASYPHOTO_CONTROLNET_COLOR",
        "controlnet_tile": "EASYPHOTO_CONTROLNET_TILE",
        "config_dir": "EASYPHOTO_MODEL_CONFIG_DIR",
        "cpu_offload": "EASYPHOTO_CPU_OFFLOAD",
        "vae_tiling": "EASYPHOTO_VAE_TILING",
        "attention_slicing": "EASYPHOTO_ATTENTION_SLICING",
        "scheduler": "EASYPHOTO_SCHEDULER",
        "lcm_lora": "EASYPHOTO_LCM_LORA",
        "lora_cache_size": "EASYPHOTO_LORA_CACHE",
        "local_files_only": "HF_HUB_OFFLINE",
    },
}


def _coerce(value: str, like: Any, name: str) -> Any:
    if isinstance(like, bool):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: expected a boolean, got {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def env_overrides(cfg: T, environ: dict[str, str] | None = None) -> T:
    """Return ``cfg`` with fields replaced by their ``EASYPHOTO_*`` environment variables, if set."""
    env = os.environ if environ is None else environ
    keys = _ENV_KEYS.get(type(cfg), {})
    changes: dict[str, Any] = {}
    for f in fields(cfg):  # type: ignore[arg-type]
        var = keys.get(f.name)
        if var and var in env:
            changes[f.name] = _coerce(env[var], getattr(cfg, f.name), var)
    return replace(cfg, **changes) if changes else cfg  # type: ignore[type-var]


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "TRIGGER_CAPTION",
    "FaceConfig",
    "ModelConfig",
    "easyphoto_home",
    "env_overrides",
    "field",
]


@dataclass(frozen=True)
class TrainConfig:
    """Face-LoRA training settings (EasyPhoto's defaults, DESIGN §4).

    ``max_steps``: optimizer steps; ``None`` means ``min(n_photos × steps_per_photo, max_steps_cap)``
    (EasyPhoto: 200 per photo, at most 800). One optimizer step = ``batch_size × grad_accum`` images.
    ``text_encoder_lr_ratio``: the text encoder learns at this fraction of ``learning_rate``.
    ``validate_every``: save a checkpoint and render validation images every this many steps (and at
    the end). ``validation_seeds``: one text-to-image validation render per seed, at
    ``validation_size`` px with ``validation_steps`` inference steps. ``fuse_top_k``: the best this
    many checkpoints (by face-ID similarity) are fused into the final LoRA; ``fuse_rank``: re-compress
    the fused LoRA to this rank (``None``: the training rank).
    ``validation_templates``: template photos (paths) that every validation also paints the user into
    with the portrait pipeline's first pass (ControlNet inpainting with the LoRA being trained, classical
    fusion before it, :class:`GenerateConfig` defaults otherwise, ``validation_template_steps``
    inference steps, the first validation seed); their face-ID scores count in checkpoint selection.
    They need the first pass's ControlNets, which are then loaded at the start of training.
    ``mixed_precision``: ``None`` = fp16 on CUDA, none on CPU/MPS.
    """

    resolution: int = 512
    max_steps: int | None = None
    steps_per_photo: int = 200
    max_steps_cap: int = 800
    batch_size: int = 1
    grad_accum: int = 4
    learning_rate: float = 1e-4
    text_encoder_lr_ratio: float = 0.5
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    rank: int = 128
    alpha: float = 64.0
    train_text_encoder: bool = True
    random_flip: bool = True
    mixed_precision: str | None = None
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False
    seed: int = 42
    validate_every: int = 100
    validation_seeds: tuple[int, ...] = (1234, 4321)
    validation_size: int = 512
    validation_steps: int = 20
    validation_guidance: float = 7.0
    validation_prompt: str = TRIGGER_CAPTION + ", upper body, look at viewer, best quality, photo realistic"
    validation_negative_prompt: str = "lowres, blurry, bad anatomy, deformed face, watermark, text"
    validation_templates: tuple[str, ...] = ()
    validation_template_steps: int = 20
    fuse_top_k: int = 3
    fuse_rank: int | None = None
    keep_checkpoints: bool = False


@dataclass(frozen=True)
class PrepareConfig:
    """Training-photo preparation (:func:`easyphoto.prepare`). Defaults follow DESIGN.md §4.

    Selection:
        ``min_face_size``: faces smaller than this (``Face.size``, the mean box side, in pixels of the
        original photo) are rejected — EasyPhoto's 128 px; a 512 px crop at ratio 3 then upsamples at
        most 1.33×.
        ``ambiguous_ratio``: when the second-largest face is at least this fraction of the largest
        (by ``Face.size``), the photo is ambiguous (whose photo is it?) and skipped.
        ``max_cut_off``: largest fraction of the head outline (landmark hull with forehead, grown 15%)
        allowed outside the photo. Measured: whole faces 0–0.004, a face whose ear and cheek touch the
        edge 0.05–0.07 (then the crop shows a straight cut through the head): rejected above 0.04.
        ``blur_threshold``: variance of the Laplacian of the face box resized to 128×128 grey. Measured
        here: sharp photos 180–1300 at any resolution (a soft video frame: 60), the same photos
        blurred with σ = 1.5 / 2 / 3 px at that scale: 11–49 / 6–34 / 4–21. Below 30 is "too blurry".
        ``duplicate_correlation`` / ``duplicate_distance``: two photos are near-duplicates when their
        faces, aligned by 5 points to 64×64 grey, correlate at least this much *and* their descriptors
        are closer than this distance. Measured: one photo at other sizes or crops 0.91–1.0 (distance
        ≤ 0.14); different photos of the same person ≤ 0.63.
        ``identity_threshold``: a photo whose descriptor is farther than this from the set's robust
        centre (trimmed mean around the medoid) is "a different person". Measured: same-person photos
        0.15–0.30 from the centre, another person 0.76+; dlib's pairwise threshold is 0.6.
        ``max_photos``: keep the ``max_photos`` most similar to the mean embedding (EasyPhoto: 15).
        ``min_photos``: fewer usable photos raise :class:`~easyphoto.errors.NotEnoughPhotosError`
        (5–20 recommended).

    Processing of kept photos:
        ``crop_ratio`` (3: face box grown by one face size each side), ``resolution`` (512, square),
        ``level_eyes`` (rotate about the face so the eyes are level), ``remove_background`` (head mask,
        background painted white), ``grabcut`` (refine the landmark mask by GrabCut on a ≤ 200 px copy;
        off = landmark-only head shape), ``retouch`` / ``retouch_strength`` (skin smoothing, 0..1).
    """

    resolution: int = 512
    crop_ratio: float = 3.0
    max_photos: int = 15
    min_photos: int = 3
    min_face_size: float = 128.0
    ambiguous_ratio: float = 0.8
    max_cut_off: float = 0.04
    blur_threshold: float = 30.0
    duplicate_correlation: float = 0.8
    duplicate_distance: float = 0.3
    identity_threshold: float = 0.5
    level_eyes: bool = True
    remove_background: bool = True
    grabcut: bool = True
    retouch: bool = False
    retouch_strength: float = 0.5
    caption: str = TRIGGER_CAPTION


__all__ += ["PrepareConfig"]


#: EasyPhoto's positive prompt additions and negative prompt for portraits.
PORTRAIT_PROMPT = (
    TRIGGER_CAPTION + ", upper body, look at viewer, best quality, realistic, photo-realistic, "
    "detailed skin, natural lighting"
)
PORTRAIT_NEGATIVE_PROMPT = (
    "lowres, blurry, bad anatomy, deformed face, asymmetric eyes, extra teeth, watermark, text, "
    "cartoon, painting, illustration, worst quality, low quality"
)


@dataclass(frozen=True)
class GenerateConfig:
    """Every switch and number of the two-pass portrait pipeline (EasyPhoto's defaults, DESIGN §4).

    Template crops: ``crop_ratio`` face sizes around each face, short side ``short_side`` px.
    Fusion: the user's face is blended in at ``before_fusion_ratio`` before the first pass and
    ``after_fusion_ratio`` before the second. First pass: ControlNet inpainting with
    ``first_controlnets`` (canny on the fused crop, openpose from the "replaced" face, colour mosaic of
    the fused crop) at their weights, ``first_steps`` × ``first_denoise``, CFG ``guidance_scale``; the
    user's LoRA at ``lora_weight``. Second pass: ``second_scale`` × resolution, canny + tile,
    ``second_steps`` × ``second_denoise`` inside a ring of ``ring_width`` × face width along the face
    edge plus eyes and mouth. ``color_shift_*``: Reinhard LAB transfer toward the template face after
    each pass. Paste-back: mask grown by ``paste_grow`` and feathered over ``paste_feather`` × face size.
    ``seed``: ``None`` or negative = random (recorded in the output).
    ``single_user_face``: with one user id and several faces, ``"largest"`` face only, or ``"first"``
    (left-most).
    ``fast``: sample with the LCM scheduler and the LCM-LoRA (``ModelConfig.lcm_lora``) stacked on the
    user's, ``fast_first_steps`` / ``fast_second_steps`` steps (× the denoising strengths) at guidance
    ``fast_guidance_scale`` instead of the numbers above.
    """

    lora_weight: float = 0.9
    crop_ratio: float = 3.0
    short_side: int = 512
    apply_fusion_before: bool = True
    before_fusion_ratio: float = 0.5
    apply_fusion_after: bool = True
    after_fusion_ratio: float = 0.5
    first_controlnets: tuple[str, ...] = ("canny", "openpose", "color")
    canny_low: int = 100
    canny_high: int = 200
    canny_weight: float = 0.5
    openpose_weight: float = 0.5
    color_weight: float = 0.85
    color_cell: int = 32
    first_steps: int = 50
    first_denoise: float = 0.45
    guidance_scale: float = 7.0
    mask_grow: float = 0.05
    second_controlnets: tuple[str, ...] = ("canny", "tile")
    second_steps: int = 20
    second_denoise: float = 0.35
    second_scale: float = 1.5
    second_canny_weight: float = 1.0
    tile_weight: float = 1.0
    ring_width: float = 0.06
    color_shift_middle: bool = True
    color_shift_last: bool = True
    paste_grow: float = 0.04
    paste_feather: float = 0.08
    prompt: str = PORTRAIT_PROMPT
    negative_prompt: str = PORTRAIT_NEGATIVE_PROMPT
    seed: int | None = None
    single_user_face: str = "largest"
    fast: bool = False
    fast_first_steps: int = 8
    fast_second_steps: int = 8
    fast_guidance_scale: float = 1.5
