"""Where on the template each pass works: the crop around a face, the two masks, the colour match."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def round8(v: float) -> int:
    return max(8, int(round(v / 8.0)) * 8)


@dataclass
class FaceCrop:
    """A template region around one face, resized for diffusion."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the template
    image: np.ndarray  # resized crop (multiples of 8)
    face: Any  # the face, in crop pixels
    scale: tuple[float, float]  # crop px per template px (x, y)


def crop_face_region(
    template: np.ndarray, face: Any, ratio: float, short_side: int, max_short_side: int | None = None
) -> FaceCrop:
    """Cut ``ratio`` face sizes around ``face`` (clipped to the photo) and size it for diffusion.

    The crop keeps the template's own pixels when its short side lies between ``short_side`` and
    ``max_short_side`` (its box is trimmed by at most 7 px so both sides are multiples of 8: no
    resampling at all); a smaller crop is enlarged to ``short_side``, a larger one reduced to
    ``max_short_side``. ``max_short_side`` ``None``: always ``short_side`` (EasyPhoto's behaviour).
    """
    import cv2

    from ...face.analyzer import Face
    from ...face.geometry import crop_box

    h, w = template.shape[:2]
    x0, y0, x1, y1 = crop_box(face.box, ratio)
    x0, y0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    x1, y1 = min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))
    native = min(y1 - y0, x1 - x0)
    if max_short_side is not None and short_side <= native <= max_short_side and native >= 8:
        x0, x1 = _trim8(x0, x1, face.box[0], face.box[2])
        y0, y1 = _trim8(y0, y1, face.box[1], face.box[3])
    region = template[y0:y1, x0:x1]
    rh, rw = region.shape[:2]
    target = short_side if max_short_side is None else min(max(min(rh, rw), short_side), max_short_side)
    k = target / min(rh, rw)
    out_w, out_h = round8(rw * k), round8(rh * k)
    if (out_w, out_h) == (rw, rh):
        resized = region.copy()
    else:
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


def _trim8(a: int, b: int, face_a: float, face_b: float) -> tuple[int, int]:
    """``[a, b)`` shortened by ``(b - a) % 8`` px, taken from the side farther from the face."""
    cut = (b - a) % 8
    if face_a - a >= b - face_b:
        return a + cut, b
    return a, b - cut


def _hard(mask: np.ndarray) -> np.ndarray:
    return (
        np.where(mask > 127, 255, 0).astype(np.uint8)
        if mask.dtype == np.uint8
        else (np.where(mask > 0.5, 255, 0).astype(np.uint8))
    )


def inpaint_mask(landmarks: np.ndarray, shape: tuple[int, ...], grow: float) -> np.ndarray:
    """The face region the first pass repaints: hull with forehead, grown by ``grow`` × face width."""
    from ...face.landmarks import face_frame
    from ...face.masks import face_hull_mask, grow_mask

    hull = face_hull_mask(landmarks, shape, forehead=True)
    width = face_frame(landmarks).width
    return grow_mask(hull, grow * width)


def refine_mask(landmarks: np.ndarray, shape: tuple[int, ...], ring: float) -> np.ndarray:
    """The second pass's mask: a ring along the face edge plus the eyes and mouth."""
    from ...face.landmarks import face_frame
    from ...face.masks import face_hull_mask, feature_mask, grow_mask

    hull = face_hull_mask(landmarks, shape, forehead=True)
    width = face_frame(landmarks).width
    px = ring * width
    band = np.where((grow_mask(hull, px) > 0) & (grow_mask(hull, -px) == 0), 255, 0).astype(np.uint8)
    features = feature_mask(landmarks, shape, parts=("eyes", "mouth"), grow=0.06)
    return np.maximum(band, features)


def reinhard_face(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Move the colours of ``image`` inside ``mask`` toward ``reference``'s (Reinhard, LAB)."""
    from ...face.color import match_color

    soft = mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
    matched = match_color(image, reference, soft, soft)
    alpha = soft[..., None]
    return np.clip(image * (1 - alpha) + matched * alpha + 0.5, 0, 255).astype(np.uint8)


__all__ = ["FaceCrop", "crop_face_region", "inpaint_mask", "refine_mask", "reinhard_face", "round8"]
