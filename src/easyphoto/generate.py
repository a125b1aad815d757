"""Portrait generation: a template photo in, the same photo with the user's face in it out.

For each template face (left to right, mapped to the user ids in order; ``"none"`` skips a face):

1. **Crop** a region around the face (``crop_ratio`` face sizes, clipped to the photo) and resize it
   so its short side is ``short_side`` px, both sides multiples of 8. The rest of the photo is
   never touched.
2. **Fuse** the user's reference face onto the template face (classical warp + colour + blend at
   ``before_fusion_ratio``), and draw the control images: canny edges and a colour mosaic of the fused
   crop, and an OpenPose-style face keypoint image of the user's landmarks placed on the template face
   by a 5-point similarity transform (the "replaced" face).
3. **First diffusion**: ControlNet inpainting (canny, openpose, colour at their weights) with the user's
   LoRA inside a face mask; the pixels outside the mask are pasted back (the VAE round trip changes
   them otherwise); Reinhard colour transfer toward the template's face (``color_shift_middle``).
4. **Fuse again** at ``after_fusion_ratio``, then a **second diffusion** at ``second_scale`` × the
   resolution with canny + tile, inside a ring around the face edge plus the eyes and mouth.
5. **Colour match** (``color_shift_last``) and **paste back** into the full template with a feathered
   mask; score the new face against the user's identity (calibrated similarity).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import TRIGGER_CAPTION, GenerateConfig, ModelConfig, easyphoto_home, env_overrides
from .errors import ConfigError, NoFaceError, UnknownUserError
from .imageio import ImageSource, load_image, save_png
from .store import user_dir, validate_user_id

log = logging.getLogger("easyphoto.generate")

SKIP = "none"


# ----------------------------------------------------------------------------------------- results


@dataclass
class FaceScore:
    """How one template face came out."""

    face_index: int
    user_id: str
    similarity: float
    box: tuple[float, float, float, float]


@dataclass
class Portrait:
    """A generated portrait: the full-size image, per-face scores and every parameter used."""

    array: np.ndarray
    scores: list[FaceScore]
    params: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    #: Each face's stages (``face0_fused``, ``face0_canny``, ``face0_first``, …) when asked for.
    intermediates: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def image(self):
        """The portrait as a ``PIL.Image`` (``portrait.save(path)`` keeps the parameters)."""
        from PIL import Image

        return Image.fromarray(self.array)

    @property
    def score(self) -> float:
        """Mean similarity over the generated faces (0 when none)."""
        return float(np.mean([s.similarity for s in self.scores])) if self.scores else 0.0

    def save(self, path: str | Path) -> Path:
        """Write a PNG with the parameters and scores in text chunks (``easyphoto`` key, JSON)."""
        text = {
            "easyphoto": json.dumps(self.params, default=str),
            "easyphoto_scores": json.dumps([asdict(s) for s in self.scores]),
            "Software": "easyphoto",
        }
        return save_png(self.array, path, text=text)

    def save_intermediates(self, folder: str | Path) -> list[Path]:
        """Write the stage images (``generate(..., keep_intermediates=True)``) as numbered PNGs."""
        folder = Path(folder)
        items = enumerate(self.intermediates.items())
        return [save_png(img, folder / f"{i:02d}_{name}.png") for i, (name, img) in items]


def read_png_params(path: str | Path) -> dict[str, Any]:
    """The generation parameters embedded in a portrait PNG by :meth:`Portrait.save`."""
    from PIL import Image

    with Image.open(path) as im:
        raw = im.text.get("easyphoto") if hasattr(im, "text") else None
    if raw is None:
        raise ConfigError(f"{path}: no easyphoto parameters in this PNG")
    return json.loads(raw)


# -------------------------------------------------------------------------------------- user model


@dataclass
class UserModel:
    """A trained user as generation needs it."""

    user_id: str
    path: Path
    lora: Path | None  # None: the LoRA is already active on the cache's modules (training validation)
    ref_image: np.ndarray
    ref_face: Any
    embedding: np.ndarray
    meta: dict[str, Any]


def load_user(user_id: str, analyzer: Any, home: Path | None = None) -> UserModel:
    """Load a trained user's LoRA path, reference face and identity embedding."""
    folder = user_dir(validate_user_id(user_id), home)
    lora = folder / "lora.safetensors"
    if not lora.is_file():
        raise UnknownUserError(f"no trained model for user {user_id!r}: train it first")
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").is_file() else {}
    ref_path = next((p for p in (folder / "ref.png", folder / "face_id.png") if p.is_file()), None)
    if ref_path is None:
        raise UnknownUserError(f"user {user_id!r} has no ref.png / face_id.png to take the face from")
    ref = load_image(ref_path)
    face = analyzer.largest(ref)
    if face is None:
        raise NoFaceError(f"user {user_id!r}", f"no face in the reference image {ref_path.name}")
    emb_path = folder / "embedding.npy"
    embedding = np.load(emb_path).astype(np.float32).ravel() if emb_path.is_file() else face.embedding
    return UserModel(user_id, folder, lora, ref, face, embedding, meta)


# ------------------------------------------------------------------------------------------- crops


def _round8(v: float) -> int:
    return max(8, int(round(v / 8.0)) * 8)


@dataclass
class FaceCrop:
    """A template region around one face, resized for diffusion."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the template
    image: np.ndarray  # resized crop (multiples of 8)
    face: Any  # the face, in crop pixels
    scale: tuple[float, float]  # crop px per template px (x, y)


def crop_face_region(template: np.ndarray, face: Any, ratio: float, short_side: int) -> FaceCrop:
    """Cut ``ratio`` face sizes around ``face`` (clipped to the photo), short side → ``short_side``."""
    import cv2

    from .face.analyzer import Face
    from .face.geometry import crop_box

    h, w = template.shape[:2]
    x0, y0, x1, y1 = crop_box(face.box, ratio)
    x0, y0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    x1, y1 = min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))
    region = template[y0:y1, x0:x1]
    rh, rw = region.shape[:2]
    k = short_side / min(rh, rw)
    out_w, out_h = _round8(rw * k), _round8(rh * k)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(region, (out_w, out_h), interpolation=interp)
    sx, sy = out_w / rw, out_h / rh
    scale = np.array([sx, sy], dtype=np.float32)
    offset = np.array([x0, y0], dtype=np.float32)
    moved = Face(
        box=(
            (face.box[0] - x0) * sx,
            (face.box[1] - y0) * sy,
            (face.box[2] - x0) * sx,
            (face.box[3] - y0) * sy,
        ),
        score=face.score,
        landmarks=(face.landmarks - offset) * scale,
        kps=(face.kps - offset) * scale,
        detector=face.detector,
    )
    return FaceCrop(box=(x0, y0, x1, y1), image=resized, face=moved, scale=(sx, sy))


def _hard(mask: np.ndarray) -> np.ndarray:
    return (
        np.where(mask > 127, 255, 0).astype(np.uint8)
        if mask.dtype == np.uint8
        else (np.where(mask > 0.5, 255, 0).astype(np.uint8))
    )


def inpaint_mask(landmarks: np.ndarray, shape: tuple[int, ...], grow: float) -> np.ndarray:
    """The face region the first pass repaints: hull with forehead, grown by ``grow`` × face width."""
    from .face.masks import face_frame, face_hull_mask, grow_mask

    hull = face_hull_mask(landmarks, shape, forehead=True)
    _, _, width, _ = face_frame(landmarks)
    return grow_mask(hull, grow * width)


def refine_mask(landmarks: np.ndarray, shape: tuple[int, ...], ring: float) -> np.ndarray:
    """The second pass's mask: a ring along the face edge plus the eyes and mouth."""
    from .face.masks import face_frame, face_hull_mask, feature_mask, grow_mask

    hull = face_hull_mask(landmarks, shape, forehead=True)
    _, _, width, _ = face_frame(landmarks)
    px = ring * width
    band = np.where((grow_mask(hull, px) > 0) & (grow_mask(hull, -px) == 0), 255, 0).astype(np.uint8)
    features = feature_mask(landmarks, shape, parts=("eyes", "mouth"), grow=0.06)
    return np.maximum(band, features)


def reinhard_face(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Move the colours of ``image`` inside ``mask`` toward ``reference``'s (Reinhard, LAB)."""
    from .face.color import match_color

    soft = mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
    matched = match_color(image, reference, soft, soft)
    alpha = soft[..., None]
    return np.clip(image * (1 - alpha) + matched * alpha + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- stages


class PortraitGenerator:
    """Holds the model cache and face analyzer across calls; switching users switches LoRAs only."""

    def __init__(
        self,
        cache: Any = None,
        analyzer: Any = None,
        *,
        model_config: ModelConfig | None = None,
        home: Path | None = None,
    ) -> None:
        from .diffusion.models import ModelCache
        from .face.analyzer import FaceAnalyzer

        self.cache = cache or ModelCache(model_config or env_overrides(ModelConfig()))
        self.analyzer = analyzer or FaceAnalyzer()
        self.home = home
        self._users: dict[str, tuple[float, UserModel]] = {}

    def user(self, user_id: str) -> UserModel:
        """A trained user's assets (cached until their LoRA file changes)."""
        folder = user_dir(validate_user_id(user_id), self.home)
        lora = folder / "lora.safetensors"
        mtime = lora.stat().st_mtime if lora.is_file() else -1.0
        hit = self._users.get(user_id)
        if hit is None or hit[0] != mtime:
            model = load_user(user_id, self.analyzer, self.home)
            self._check_base(model)
            self._users[user_id] = (mtime, model)
            hit = self._users[user_id]
        return hit[1]

    def _check_base(self, user: UserModel) -> None:
        trained = user.meta.get("base_model")
        current = self.cache.config.base_model
        if trained and str(trained) != str(current):
            log.warning(
                "user %r was trained on %r but portraits use %r: fine for SD1.5 fine-tunes, "
                "but an SDXL/SD2 base will not accept this LoRA",
                user.user_id,
                trained,
                current,
            )

    # -- the two diffusion passes ------------------------------------------------------------------
    def _diffuse(
        self,
        names: list[str],
        image: np.ndarray,
        mask: np.ndarray,
        controls: list[np.ndarray],
        scales: list[float],
        steps: int,
        strength: float,
        cfg: GenerateConfig,
        seed: int,
    ) -> np.ndarray:
        import torch
        from PIL import Image

        from .diffusion.models import check_control_inputs

        check_control_inputs(names, controls, scales)
        # diffusers runs int(steps × strength) steps: make sure that is at least one.
        steps = max(int(steps), math.ceil(1.0 / max(strength, 1e-3)))
        pipe = self.cache.inpaint_controlnet(names)
        if cfg.fast:
            pipe.scheduler = self.cache.new_scheduler("lcm")
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        h, w = image.shape[:2]
        out = pipe(
            prompt=cfg.prompt,
            negative_prompt=cfg.negative_prompt,
            image=Image.fromarray(image),
            mask_image=Image.fromarray(mask),
            control_image=[Image.fromarray(c) for c in controls]
            if len(names) > 1
            else Image.fromarray(controls[0]),
            controlnet_conditioning_scale=[float(s) for s in scales] if len(names) > 1 else float(scales[0]),
            num_inference_steps=int(steps),
            strength=float(strength),
            guidance_scale=float(cfg.fast_guidance_scale if cfg.fast else cfg.guidance_scale),
            height=h,
            width=w,
            generator=gen,
            output_type="np",
        ).images[0]
        result = np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
        if result.shape[:2] != (h, w):
            import cv2

            result = cv2.resize(result, (w, h), interpolation=cv2.INTER_CUBIC)
        # Outside the mask the VAE round trip changed pixels: keep the input there, blend at the edge.
        from .face.masks import feather

        alpha = feather(mask, max(2.0, 0.01 * max(h, w)))[..., None]
        return np.clip(image * (1 - alpha) + result * alpha + 0.5, 0, 255).astype(np.uint8)

    def face(
        self,
        template: np.ndarray,
        face: Any,
        user: UserModel,
        cfg: GenerateConfig,
        seed: int,
        timings: dict[str, float],
        keep: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, float]:
        """Repaint one template face with one user's identity; returns (new template, similarity).

        ``keep``: when given, receives the stage images (crop, fused, controls, masks, each pass).
        """
        keep = keep if keep is not None else {}
        import cv2

        from .diffusion.controls import canny_image, color_image, tile_image
        from .face.analyzer import similarity
        from .face.fusion import fuse_face
        from .face.keypoints import face_keypoints_image, replace_face_points
        from .face.masks import feather, grow_mask

        def tick(name: str, t0: float) -> float:
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - t0
            return now

        t = time.perf_counter()
        crop = crop_face_region(template, face, cfg.crop_ratio, cfg.short_side)
        base = crop.image
        lm = crop.face.landmarks
        mask1 = inpaint_mask(lm, base.shape, cfg.mask_grow)
        t = tick("analysis", t)

        fused = base
        if cfg.apply_fusion_before and cfg.before_fusion_ratio > 0:
            fused = fuse_face(base, crop.face, user.ref_image, user.ref_face, cfg.before_fusion_ratio).image
        t = tick("fusion", t)

        replaced = replace_face_points(crop.face, user.ref_face)
        controls = {
            "canny": canny_image(fused, cfg.canny_low, cfg.canny_high),
            "openpose": face_keypoints_image([replaced], base.shape[:2]),
            "color": color_image(fused, cfg.color_cell),
        }
        names = list(cfg.first_controlnets)
        weights = {"canny": cfg.canny_weight, "openpose": cfg.openpose_weight, "color": cfg.color_weight}
        t = tick("controls", t)
        keep.update(crop=base, fused=fused, mask=mask1, **{n: controls[n] for n in names})

        if user.lora is not None:
            self.cache.set_lora(user.lora, cfg.lora_weight)
        self.cache.set_fast(cfg.fast)
        first_steps = cfg.fast_first_steps if cfg.fast else cfg.first_steps
        second_steps = cfg.fast_second_steps if cfg.fast else cfg.second_steps
        first = self._diffuse(
            names,
            fused,
            mask1,
            [controls[n] for n in names],
            [weights[n] for n in names],
            first_steps,
            cfg.first_denoise,
            cfg,
            seed,
        )
        t = tick("first_diffusion", t)
        keep["first"] = first
        if cfg.color_shift_middle:
            first = reinhard_face(first, base, mask1)

        # Second pass: fuse again, refine at a higher resolution.
        again = first
        found = self.analyzer.find_near(first, crop.face.box)  # the face is where it was: search there
        if cfg.apply_fusion_after and cfg.after_fusion_ratio > 0 and found is not None:
            again = fuse_face(first, found, user.ref_image, user.ref_face, cfg.after_fusion_ratio).image
        t = tick("fusion", t)
        if second_steps > 0 and cfg.second_denoise > 0:
            s = cfg.second_scale
            h, w = again.shape[:2]
            W2, H2 = _round8(w * s), _round8(h * s)
            big = cv2.resize(again, (W2, H2), interpolation=cv2.INTER_CUBIC) if (w, h) != (W2, H2) else again
            lm2 = (found.landmarks if found is not None else lm) * np.array([W2 / w, H2 / h], np.float32)
            mask2 = refine_mask(lm2, big.shape, cfg.ring_width)
            sec_names = list(cfg.second_controlnets)
            sec_controls = {"canny": canny_image(big, cfg.canny_low, cfg.canny_high), "tile": tile_image(big)}
            sec_weights = {"canny": cfg.second_canny_weight, "tile": cfg.tile_weight}
            t = tick("controls", t)
            keep.update(fused_again=again, refine_mask=mask2)
            second = self._diffuse(
                sec_names,
                big,
                mask2,
                [sec_controls[n] for n in sec_names],
                [sec_weights[n] for n in sec_names],
                second_steps,
                cfg.second_denoise,
                cfg,
                seed + 1,
            )
            refined = (
                cv2.resize(second, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != (W2, H2) else second
            )
            t = tick("second_diffusion", t)
            keep["second"] = refined
        else:
            refined = again
        if cfg.color_shift_last:
            refined = reinhard_face(refined, base, mask1)

        # Paste back into the full template.
        x0, y0, x1, y1 = crop.box
        region = cv2.resize(refined, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        hard = cv2.resize(
            grow_mask(mask1, cfg.paste_grow * crop.face.width),
            (x1 - x0, y1 - y0),
            interpolation=cv2.INTER_NEAREST,
        )
        alpha = feather(hard, cfg.paste_feather * face.width, inside=True)[..., None]
        out = template.copy()
        patch = template[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(patch * (1 - alpha) + region * alpha + 0.5, 0, 255).astype(np.uint8)
        t = tick("paste_back", t)
        keep["result"] = out[y0:y1, x0:x1]

        # Score the new face (in the crop region) against the user.
        score = 0.0
        new_face = self.analyzer.find_near(out, face.box)
        if new_face is not None:
            score = similarity(new_face, user.embedding)
        tick("score", t)
        return out, score

    def generate(
        self,
        template: ImageSource | np.ndarray,
        user_ids: Sequence[str],
        config: GenerateConfig | None = None,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        template_name: str | None = None,
        keep_intermediates: bool = False,
    ) -> Portrait:
        """One portrait from one template (see :func:`generate`)."""
        cfg = config or GenerateConfig()
        if not user_ids:
            raise ConfigError("give at least one user id")
        label = template_name or (str(template) if isinstance(template, (str, Path)) else "template")
        self.cache.set_fast(cfg.fast)  # before any work: a missing LCM-LoRA is a config error
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        image = template if isinstance(template, np.ndarray) else load_image(template, name=template_name)
        t0 = time.perf_counter()
        faces = self.analyzer.detect(image)
        timings["analysis"] = time.perf_counter() - t0
        if not faces:
            raise NoFaceError(label, "no face found in the template")
        ids = [u.strip() for u in user_ids]
        if len(ids) > len(faces):
            raise ConfigError(
                f"{label}: {len(ids)} user ids ({', '.join(ids)}) but only {len(faces)} face(s) in the "
                "template (faces map to user ids left to right; use 'none' to skip a face)"
            )
        if len(ids) == 1 and len(faces) > 1 and cfg.single_user_face == "largest":
            target = max(range(len(faces)), key=lambda i: faces[i].area)
            ids = [SKIP] * len(faces)
            ids[target] = user_ids[0].strip()
        users = {u: self.user(u) for u in ids if u.lower() != SKIP}
        seed = (
            cfg.seed
            if cfg.seed is not None and cfg.seed >= 0
            else int(np.random.default_rng().integers(2**31))
        )
        out = image
        scores: list[FaceScore] = []
        intermediates: dict[str, np.ndarray] = {}
        for i, (face, uid) in enumerate(zip(faces, ids, strict=False)):
            if uid.lower() == SKIP:
                continue
            if on_event:
                on_event({"type": "face", "face_index": i, "user_id": uid, "faces": len(faces)})
            stages: dict[str, np.ndarray] = {}
            out, score = self.face(out, face, users[uid], cfg, seed + 1000 * i, timings, stages)
            if keep_intermediates:
                intermediates.update({f"face{i}_{k}": v for k, v in stages.items()})
            scores.append(
                FaceScore(i, uid, round(float(score), 4), tuple(round(float(v), 1) for v in face.box))
            )
        timings["total"] = time.perf_counter() - t_all
        params = {
            "template": label,
            "user_ids": ids,
            "seed": seed,
            "base_model": str(self.cache.config.base_model),
            "controlnets": {
                n: self.cache.controlnet_source(n)
                for n in dict.fromkeys([*cfg.first_controlnets, *cfg.second_controlnets])
            },
            "loras": {u: str(m.lora) for u, m in users.items()},
            "lcm_lora": self.cache.config.lcm_lora if cfg.fast else None,
            "config": asdict(cfg) | {"seed": seed},
        }
        return Portrait(
            array=out,
            scores=scores,
            params=params,
            timings={k: round(v, 3) for k, v in timings.items()},
            intermediates=intermediates,
        )


def generate(
    template: ImageSource | np.ndarray | Sequence[ImageSource],
    user_ids: str | Sequence[str],
    config: GenerateConfig | None = None,
    *,
    generator: PortraitGenerator | None = None,
    model_config: ModelConfig | None = None,
    home: Path | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    keep_intermediates: bool = False,
) -> list[Portrait]:
    """Paint trained users into template photos.

    Args:
        template: one template (path, bytes or RGB array) or a list of template paths.
        user_ids: a user id or a list; template faces sorted left to right map to them in order
            (``"none"`` skips a face). One id with several faces: the largest face (``config``).
        config: every switch and number of the two-pass pipeline (:class:`GenerateConfig`).
        generator: reuse a :class:`PortraitGenerator` (loaded models) across calls.
        model_config: base model / ControlNets to load when no ``generator`` is given.
        home: ``EASYPHOTO_HOME`` override.
        on_event: progress callback (``{"type": "face", …}`` per face, ``"portrait"`` per template).
        keep_intermediates: fill :attr:`Portrait.intermediates` with every face's stage images.

    Returns:
        One :class:`Portrait` per template, at the template's size.
    """
    ids = [user_ids] if isinstance(user_ids, str) else list(user_ids)
    gen = generator or PortraitGenerator(model_config=model_config, home=home or easyphoto_home())
    if isinstance(template, (np.ndarray, str, Path, bytes, bytearray)):
        templates: list[Any] = [template]
    else:
        templates = list(template)
    out = []
    for i, tpl in enumerate(templates):
        portrait = gen.generate(tpl, ids, config, on_event=on_event, keep_intermediates=keep_intermediates)
        out.append(portrait)
        if on_event:
            on_event({"type": "portrait", "index": i, "scores": [asdict(s) for s in portrait.scores]})
    return out


__all__ = [
    "FaceScore",
    "Portrait",
    "PortraitGenerator",
    "TRIGGER_CAPTION",
    "UserModel",
    "crop_face_region",
    "generate",
    "load_user",
    "read_png_params",
]
