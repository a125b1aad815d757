"""The portrait's background: kept (the default), restored, or replaced.

* ``keep``: nothing outside the face masks changes (the portrait pipeline's own behaviour).
* ``restore``: one low-denoise diffusion pass over the whole portrait (ControlNet tile + canny, in
  overlapping tiles for big images) so repainted faces, hair, skin and background share one light
  and grain — EasyPhoto's ``background_restore``. The faces as the portrait pipeline made them are
  blended back over their masks afterwards, so the pass cannot wash their identity out.
* ``replace``: a new background — painted from ``background_prompt`` by inpainting everything
  outside the person (canny edges of the person keep the outline), or taken from a picture — put
  behind the person with the soft person mask of :mod:`easyphoto.face.person` (plus the face hulls,
  so a face the segmenter doubts is never cut). Where that mask is 1 the portrait's pixels stay
  exactly as they were; hair edges are blended by the mask's soft border.

Each step takes the model cache and plain arrays; the diffusion call goes through :func:`_inpaint`
(one place, so tests can stand in for it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from ...config import TRIGGER_CAPTION
from ...errors import ConfigError
from ...face.masks import face_hull_mask, feather, grow_mask
from .regions import round8

#: What ``GenerateConfig.background`` may say.
BACKGROUNDS = ("keep", "restore", "replace")


def _inpaint(
    cache: Any, names: Sequence[str], image: np.ndarray, mask: np.ndarray, *args: Any, **kw: Any
) -> Any:
    """:func:`~easyphoto.diffusion.inpaint.controlnet_inpaint` (imported when first used: torch)."""
    from ...diffusion.inpaint import controlnet_inpaint

    return controlnet_inpaint(cache, names, image, mask, *args, **kw)


def _canny(image: np.ndarray, low: int, high: int) -> np.ndarray:
    edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(edges[..., None], 3, axis=2)


# -------------------------------------------------------------------------------------------- replace
def person_alpha(
    image: np.ndarray, faces: Sequence[Any], segmenter: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Soft mask (float32 0–1) of the people in ``image``: the segmenter's mask, and every face's hull
    (forehead included) at full strength."""
    alpha = segmenter(image).astype(np.float32)
    for face in faces:
        hull = face_hull_mask(face.landmarks, image.shape).astype(np.float32) / 255.0
        alpha = np.maximum(alpha, feather(hull, max(2.0, 0.05 * face.width), inside=True))
    return alpha


def cover(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``picture`` scaled to cover ``size`` (w, h) and centre-cropped to it (nothing stretched)."""
    w, h = size
    ph, pw = picture.shape[:2]
    scale = max(w / pw, h / ph)
    sw, sh = max(w, round(pw * scale)), max(h, round(ph * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    big = cv2.resize(picture, (sw, sh), interpolation=interp)
    x, y = (sw - w) // 2, (sh - h) // 2
    return big[y : y + h, x : x + w].copy()


def composite(image: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The person of ``image`` (``alpha``) in front of ``background``; pixels where alpha is 1 are
    ``image``'s, exactly."""
    a = np.ascontiguousarray(alpha, dtype=np.float32)
    out = cv2.blendLinear(image, np.ascontiguousarray(background, dtype=np.uint8), a, 1.0 - a)
    np.copyto(out, image, where=(alpha >= 1.0)[..., None])  # exactly, whatever the rounding
    return out


def paint_background(
    cache: Any,
    image: np.ndarray,
    alpha: np.ndarray,
    *,
    prompt: str,
    negative_prompt: str,
    work_side: int,
    steps: int,
    guidance_scale: float,
    seed: int,
    canny: tuple[int, int] = (100, 200),
    on_step: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """A new background for ``image`` painted from ``prompt`` (full size, RGB uint8).

    Everything outside the person is repainted on a copy of at most ``work_side`` px (SD1.5 draws
    best near its 512–768 training sizes; the result is scaled up: a background may be soft, the
    person stays sharp). The canny edges of the person (and only of the person) steer the pass, so
    the new scene is lit and placed around the same outline.
    """
    h, w = image.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    size = (max(64, round8(w * scale)), max(64, round8(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    person = (cv2.resize(alpha, size, interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8) * 255
    core = grow_mask(person, -0.01 * max(size))  # the person's rim is repainted too: no old halo
    mask = 255 - core
    control = _canny(small, *canny) * (grow_mask(person, 0.01 * max(size))[..., None] > 0)
    painted = _inpaint(
        cache, ["canny"], small, mask, [control.astype(np.uint8)], [1.0],
        steps=steps, strength=1.0, prompt=prompt, negative_prompt=negative_prompt,
        guidance_scale=guidance_scale, seed=seed, on_step=on_step,
    )  # fmt: skip
    return cv2.resize(painted, (w, h), interpolation=cv2.INTER_CUBIC)


# -------------------------------------------------------------------------------------------- restore
def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``length`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    n = int(np.ceil((length - overlap) / (tile - overlap)))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _weight(h: int, w: int, overlap: int) -> np.ndarray:
    """Blend weights of one tile: 1 inside, ramping down over ``overlap`` px at every edge."""

    def ramp(n: int) -> np.ndarray:
        edge = np.minimum(np.arange(n), np.arange(n)[::-1]) + 1
        return np.minimum(1.0, edge / max(1, overlap))

    return np.outer(ramp(h), ramp(w)).astype(np.float32)[..., None]


def restore_background(
    cache: Any,
    image: np.ndarray,
    face_masks: Sequence[np.ndarray],
    *,
    strength: float,
    prompt: str,
    negative_prompt: str,
    steps: int,
    guidance_scale: float,
    seed: int,
    tile: int,
    overlap: int,
    scales: tuple[float, float] = (1.0, 0.5),
    canny: tuple[int, int] = (100, 200),
    on_step: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``image`` after one low-denoise (``strength``) pass of ControlNet tile + canny (``scales``), in
    ``tile`` px tiles cross-faded over ``overlap`` px; then each of ``face_masks`` (hard masks of the
    faces as made) blended back from ``image``, feathered, so the faces keep their identity."""
    h, w = image.shape[:2]
    acc = np.zeros((h, w, 3), np.float32)
    total = np.zeros((h, w, 1), np.float32)
    side = round8(min(tile, max(h, w)))
    for k, (y, x) in enumerate(
        (y, x) for y in _starts(h, min(side, h), overlap) for x in _starts(w, min(side, w), overlap)
    ):
        piece = image[y : y + side, x : x + side]
        ph, pw = piece.shape[:2]
        work = cv2.resize(piece, (round8(pw), round8(ph)), interpolation=cv2.INTER_AREA)
        full = np.full(work.shape[:2], 255, np.uint8)
        out = _inpaint(
            cache, ["tile", "canny"], work, full, [work, _canny(work, *canny)], list(scales),
            steps=steps, strength=strength, prompt=prompt, negative_prompt=negative_prompt,
            guidance_scale=guidance_scale, seed=seed + k, on_step=on_step,
        )  # fmt: skip
        out = cv2.resize(out, (pw, ph), interpolation=cv2.INTER_CUBIC) if out.shape[:2] != (ph, pw) else out
        weight = _weight(ph, pw, overlap)
        acc[y : y + ph, x : x + pw] += out.astype(np.float32) * weight
        total[y : y + ph, x : x + pw] += weight
    restored = acc / np.maximum(total, 1e-6)
    keep = np.zeros((h, w), np.float32)
    for m in face_masks:  # the whole mask kept, a soft rim outside it
        px = max(2.0, 0.015 * max(h, w))
        keep = np.maximum(keep, np.maximum(m > 0, feather(grow_mask(m, px), px)))
    keep = keep[..., None]
    return np.clip(image * keep + restored * (1.0 - keep) + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------- the pipeline step
def check_background(cfg: Any, has_picture: bool) -> None:
    """Refuse, before any work, a replacement with nothing to put behind the person, and a picture
    given for a mode that would not use it (see :func:`with_picture`)."""
    if cfg.background == "replace" and not has_picture and not cfg.background_prompt.strip():
        raise ConfigError("background=replace needs background_prompt or a background picture")
    if has_picture and cfg.background != "replace":
        raise ConfigError(
            f"a background picture is put behind the people (background=replace), but background is "
            f"{cfg.background!r}: give one or the other"
        )


def with_picture(cfg: Any, has_picture: bool) -> Any:
    """``cfg`` for a request that gives a background picture or not: a picture with the default
    ``keep`` means ``replace`` (a picture given is a picture to use); with ``restore`` it stays a
    contradiction that :func:`check_background` refuses."""
    if has_picture and cfg.background == "keep":
        return cfg.replace(background="replace")
    return cfg


def background_step(
    cache: Any,
    image: np.ndarray,
    faces: Sequence[Any],
    made: Sequence[Any],
    cfg: Any,
    seed: int,
    *,
    picture: np.ndarray | None = None,
    segmenter: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The finished portrait's background as ``cfg.background`` says, and what to record of it.

    ``faces``: every face of the template (all stay in front of a new background); ``made``: the ones
    repainted (given back after a restore). ``segmenter()`` returns the person segmenter (loaded on
    first use). The user LoRA is switched off for these passes: they paint no face.
    """
    if cfg.background == "keep":
        return image, {}
    if on_event:
        on_event({"type": "background", "mode": cfg.background})
    on_step = (
        (lambda k, n: on_event({"type": "step", "pass": "background", "step": k, "steps": n}))
        if on_event
        else None
    )
    if cache.lora_path is not None:  # the user LoRA off for these passes, but kept loaded (no re-read)
        cache.set_lora(cache.lora_path, 0.0)
    common = dict(
        negative_prompt=cfg.negative_prompt, steps=cfg.second_steps, guidance_scale=cfg.guidance_scale,
        seed=seed + 7919, canny=(cfg.canny_low, cfg.canny_high), on_step=on_step,
    )  # fmt: skip
    if cfg.background == "restore":
        masks = [face_hull_mask(f.landmarks, image.shape) for f in made]
        overlap = max(32, cfg.background_tile // 8)
        prompt = cfg.prompt.replace(TRIGGER_CAPTION, "").strip(" ,")  # no user identity to call up
        out = restore_background(
            cache, image, masks, strength=cfg.background_strength, prompt=prompt,
            tile=cfg.background_tile, overlap=overlap, **common,
        )  # fmt: skip
        return out, {"background": "restore", "background_strength": cfg.background_strength}
    alpha = person_alpha(image, faces, (segmenter or default_segmenter)())
    if picture is not None:
        behind = cover(picture, (image.shape[1], image.shape[0]))
    else:
        behind = paint_background(
            cache, image, alpha, prompt=cfg.background_prompt, work_side=cfg.background_tile, **common
        )
    done = {
        "background": "replace",
        "background_prompt": None if picture is not None else cfg.background_prompt,
    }
    return composite(image, alpha, behind), done


def default_segmenter() -> Callable[[np.ndarray], np.ndarray]:
    """The bundled person segmenter (a new one; :class:`PortraitGenerator` keeps its own)."""
    from ...face.person import PersonSegmenter

    return PersonSegmenter()


__all__ = [
    "BACKGROUNDS",
    "background_step",
    "check_background",
    "with_picture",
    "default_segmenter",
    "composite",
    "cover",
    "paint_background",
    "person_alpha",
    "restore_background",
]
