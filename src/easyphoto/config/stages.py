"""Settings of the three stages (prepare, train, generate) and of face analysis."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import ConfigError
from .base import PORTRAIT_NEGATIVE_PROMPT, PORTRAIT_PROMPT, TRIGGER_CAPTION, _multiple_of_8, _Settings


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


#: Training and validation size of each base-model family, px, when ``TrainConfig`` leaves it unset:
#: SD1.5 was trained at 512², SDXL at 1024² (at 512 SDXL's faces come out smeared); EasyPhoto trains
#: each at that size.
FAMILY_RESOLUTION: dict[str, int] = {"sd15": 512, "sdxl": 1024}


class TrainConfig(_Settings):
    """Face-LoRA training settings (EasyPhoto's defaults, DESIGN §4).

    One optimizer step = ``batch_size × grad_accum`` images; ``max_steps`` unset means
    ``min(n_photos × steps_per_photo, max_steps_cap)`` (EasyPhoto: 200 per photo, at most 800). Every
    ``validate_every`` steps (and at the end) a checkpoint is saved and validation images are rendered
    (one text-to-image render per seed, plus one portrait per ``validation_templates`` entry with the
    portrait pipeline's first pass) and scored by face-ID; the ``fuse_top_k`` best checkpoints are fused
    exactly. Validation templates are server files: only the operator may set them (not a request).

    ``resolution`` and ``validation_size`` unset mean the base model family's own size
    (:data:`FAMILY_RESOLUTION`: 512 for SD1.5, 1024 for SDXL, the sizes each was trained at and
    EasyPhoto's defaults for each); the training stage resolves them with :meth:`for_family` once it
    knows the family, logs them, and records the resolved numbers in the user model. A value set
    explicitly wins for either family.
    """

    resolution: int | None = Field(
        None,
        ge=64,
        le=2048,
        description="Training resolution, px (multiple of 8); unset: 512 (SD1.5), 1024 (SDXL).",
    )
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
    validation_size: int | None = Field(
        None,
        ge=64,
        le=2048,
        description="Validation render size, px (multiple of 8); unset: 512 (SD1.5), 1024 (SDXL).",
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

    @field_validator("resolution", "validation_size")
    @classmethod
    def _sizes(cls, value: int | None) -> int | None:
        return None if value is None else _multiple_of_8(value)

    def for_family(self, family: str | None) -> TrainConfig:
        """This config with the unset sizes (``resolution``, ``validation_size``) set to ``family``'s
        (:data:`FAMILY_RESOLUTION`); ``family=None`` (not known yet) leaves them unset."""
        return _sized(self, family, ("resolution", "validation_size"))


def _sized(cfg: Any, family: str | None, fields: tuple[str, ...]) -> Any:
    """``cfg`` with its unset size ``fields`` set to ``family``'s :data:`FAMILY_RESOLUTION`."""
    size = FAMILY_RESOLUTION.get(family) if family is not None else None
    if size is None:
        if family is not None:
            raise ConfigError(f"unknown model family {family!r}; known: {', '.join(FAMILY_RESOLUTION)}")
        return cfg
    changes = {k: size for k in fields if getattr(cfg, k) is None}
    return cfg.replace(**changes) if changes else cfg


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

    resolution: int | None = Field(
        None,
        ge=64,
        le=2048,
        description="Side of each square training crop, px; unset: the training's size (SD1.5 512, "
        "SDXL 1024).",
    )
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

    @field_validator("resolution")
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        return None if value is None else _multiple_of_8(value)

    def for_family(self, family: str | None) -> PrepareConfig:
        """This config with an unset ``resolution`` set to ``family``'s training size
        (:data:`FAMILY_RESOLUTION`): photos for an SDXL user are cropped at 1024, not at 512 and then
        enlarged 2× by the trainer. ``None`` leaves it unset (:func:`easyphoto.prepare` then uses 512)."""
        return _sized(self, family, ("resolution",))

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

    Big templates: a crop whose short side lies between ``short_side`` and ``max_short_side`` is worked
    on at its own pixels (no resampling in or out), a larger one at ``max_short_side``. Unset, that is
    2 × ``short_side`` (1024 px) on CUDA and ``short_side`` on a CPU or MPS, where one SD1.5 step costs
    ~16 s at 512 px and 4× the pixels would make a one-face portrait take hours. Measured on a 2400 px
    template (290 px face) with the passes stubbed: face sharpness 0.86 × the template's at 1024, 0.22
    × at 512. ``upscale`` 2 or 4 enlarges the finished portrait with Real-ESRGAN x2plus / x4plus
    (``ModelConfig.upscaler_x2`` / ``_x4``) in tiles of ``upscale_tile`` px (512, ComfyUI's default:
    peak 1.2–1.6 GB at ×2 and 3.7–5.1 GB at ×4 on a CPU from 1 to 16 MP, the growth being the output
    itself; 3.5 GB for one untiled ×2 megapixel) that see ``upscale_overlap`` px
    (16) past their edges and cross-fade there: tiled and one-pass results differ by ≤ 2 levels at the
    seams, by 65–100 without the overlap. ``face_upscale`` brings a crop worked below its template size
    back through the same networks instead of bicubic ("auto": on CUDA when the file is here; on a CPU
    one megapixel at ×2 takes 4–11 min).

    SDXL users are painted on crops of ``sdxl_short_side`` (1024: SDXL was trained at 1024², and at
    512 its faces come out smeared), at most that large unless ``max_short_side`` is larger, with the
    ControlNets of each pass that SDXL has (canny, openpose; colour and tile are SD1.5's).

    ``face_restore`` blends GFPGAN v1.4's restoration (``ModelConfig.face_restorer``) over each face made,
    after super-resolution, at ``face_restore_weight`` 0.5: half, so the trained likeness and skin
    texture stay while blur and artefacts go (GFPGAN alone smooths skin; unmeasured here, no real
    weights offline). Off by default: its weights were trained on FFHQ, whose images are non-commercial.

    ``background`` (see ``stages/generate/background.py``): ``keep`` changes nothing outside the face
    masks; ``restore`` runs one ControlNet tile + canny pass over the whole portrait at
    ``background_strength`` (0.35, EasyPhoto's ``background_restore_denoising_strength``; its UI
    offers 0.1–0.6) in tiles of ``background_tile`` px (768: SD1.5 draws best at 512–768 px, and a
    2048 px portrait is then 9 tiles) and gives the faces back afterwards; ``replace`` paints
    ``background_prompt`` behind the person (or takes a picture the caller gives), on a copy of at
    most ``background_tile`` px.
    """

    lora_weight: float = Field(0.9, ge=0, le=2, description="Weight of the user LoRA.")
    crop_ratio: float = Field(3.0, ge=1, le=10, description="Face crop size in face sizes.")
    short_side: int = Field(
        512, ge=64, le=2048, description="Short side of each face crop, px (multiple of 8)."
    )
    sdxl_short_side: int = Field(
        1024, ge=64, le=2048, description="Short side of each face crop of an SDXL user, px (multiple of 8)."
    )
    max_short_side: int | None = Field(
        None,
        ge=64,
        le=4096,
        description="Largest short side of a face crop, px: crops up to it keep the template's own "
        "pixels; unset: 2 × short_side on CUDA (1024), short_side elsewhere.",
    )
    face_upscale: Literal["auto", "on", "off"] = Field(
        "auto",
        description="A face crop worked below the template's size returns to it through Real-ESRGAN, "
        "not bicubic; auto: on CUDA when the ×2/×4 model is on this machine.",
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
    color_cell: int = Field(
        32, ge=1, le=512, description="Colour mosaic cell, px at short_side (scaled with larger crops)."
    )
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
    upscale: int = Field(
        1, ge=1, le=4, description="Super-resolution of the finished portrait: 1 (off), 2 or 4 (Real-ESRGAN)."
    )
    upscale_tile: int = Field(
        512, ge=32, le=4096, description="Super-resolution tile side, px of the portrait (memory bound)."
    )
    upscale_overlap: int = Field(
        16, ge=0, le=256, description="Context each super-resolution tile sees past its edges, px."
    )
    face_restore: bool = Field(False, description="Restore the faces with GFPGAN after super-resolution.")
    face_restore_weight: float = Field(
        0.5, ge=0, le=1, description="How much of GFPGAN's face is blended in (0–1)."
    )
    background: Literal["keep", "restore", "replace"] = Field(
        "keep", description="Background: keep it, restore (one light pass over everything) or replace it."
    )
    background_prompt: str = Field(
        "", max_length=2000, description="The new background (background=replace without a picture)."
    )
    background_strength: float = Field(
        0.35, ge=0.05, le=1, description="Denoising strength of the restore pass."
    )
    background_tile: int = Field(
        768, ge=256, le=2048, description="Tile side of the background passes, px (multiple of 8)."
    )

    _sizes = field_validator("short_side", "sdxl_short_side", "background_tile")(_multiple_of_8)

    @field_validator("max_short_side")
    @classmethod
    def _max_side(cls, value: int | None) -> int | None:
        return None if value is None else _multiple_of_8(value)

    @field_validator("upscale")
    @classmethod
    def _upscale(cls, value: int) -> int:
        if value not in (1, 2, 4):
            raise ValueError("must be 1, 2 or 4 (the Real-ESRGAN networks are ×2 and ×4)")
        return value

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if self.canny_low > self.canny_high:
            raise ValueError(f"canny_low ({self.canny_low}) must not exceed canny_high ({self.canny_high})")
        if self.max_short_side is not None and self.max_short_side < self.short_side:
            raise ValueError(
                f"max_short_side ({self.max_short_side}) must not be below short_side ({self.short_side})"
            )
        if 2 * self.upscale_overlap >= self.upscale_tile:
            raise ValueError(
                f"upscale_overlap ({self.upscale_overlap}) must be under half of upscale_tile "
                f"({self.upscale_tile})"
            )
        return self


class Text2PhotoConfig(_Settings):
    """Text-to-photo's template step: SDXL draws a template from a prompt, then the portrait pipeline
    (:class:`GenerateConfig`) paints the user in.

    Defaults: 1024 × 1024, SDXL's native resolution (its UNet was trained at about one megapixel; far
    smaller sizes come out blurred and badly composed); 30 steps of DPM++ 2M Karras (diffusers' SDXL
    examples use 25–50; past ~30 the picture barely changes); guidance 7, as for SD1.5. ``pose_weight``
    1.0 is the openpose ControlNet's nominal strength. ``scene_lora_weight`` 0.8 leaves the base model
    some room (a style LoRA at 1.0 tends to override the prompt). Scene LoRAs are server files, chosen
    by name from the operator's folder (a request never names a path).
    """

    prompt: str = Field(
        "a portrait photo of a person, upper body, looking at the camera, natural light",
        min_length=1,
        max_length=2000,
        description="What the template shows (the person is painted in afterwards).",
    )
    negative_prompt: str = Field(
        "lowres, blurry, bad anatomy, deformed face, watermark, text, cartoon, painting",
        max_length=2000,
        description="What the template must not show.",
    )
    width: int = Field(1024, ge=64, le=2048, description="Template width, px (multiple of 8).")
    height: int = Field(1024, ge=64, le=2048, description="Template height, px (multiple of 8).")
    steps: int = Field(30, ge=1, le=200, description="SDXL sampling steps of the template.")
    guidance_scale: float = Field(7.0, ge=0, le=30, description="Classifier-free guidance of the template.")
    pose_weight: float = Field(1.0, ge=0, le=2, description="Weight of the pose image's openpose ControlNet.")
    scene_lora: str | None = Field(None, max_length=500, description="Scene/style LoRA (SDXL) file, or none.")
    scene_lora_weight: float = Field(0.8, ge=0, le=2, description="Weight of the scene LoRA.")
    seed: int | None = Field(None, le=2**32 - 1, description="Template seed; unset or negative: random.")

    _sizes = field_validator("width", "height")(_multiple_of_8)
