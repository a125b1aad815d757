"""Skin smoothing: edge-preserving smoothing restricted to the facial skin.

A bilateral filter (which averages only pixels of similar colour, so edges such as the jaw line, the
nostrils or a strand of hair stay put) is blended into the photo through a feathered skin mask built
from the 68 landmarks (:func:`easyphoto.face.masks.skin_mask`): eyes, brows and lips are outside the
mask and stay untouched. Part of the fine texture is added back so skin does not turn into plastic.
"""

from __future__ import annotations

import numpy as np

from .geometry import int_box, points_box, scale_box
from .landmarks import face_frame
from .masks import feather, skin_mask


def smooth_skin(
    image: np.ndarray,
    landmarks: np.ndarray,
    strength: float = 0.5,
    *,
    mask: np.ndarray | None = None,
    keep_texture: float = 0.25,
) -> np.ndarray:
    """Smooth the facial skin of one face; returns a new uint8 RGB image.

    Args:
        image: ``H×W×3`` uint8 RGB.
        landmarks: the face's 68 landmarks in ``image`` coordinates.
        strength: 0 (no change) … 1 (full smoothing). 0.5 evens out blemishes and sensor noise and
            keeps pores visible at 512 px; the filter's colour range grows with it too.
        mask: optional hard skin mask to use instead of the landmark one.
        keep_texture: share of the removed fine detail added back (0 = fully smooth skin).
    """
    import cv2

    strength = float(np.clip(strength, 0.0, 1.0))
    if strength == 0.0:
        return image.copy()
    h, w = image.shape[:2]
    width = face_frame(landmarks).width
    # Work on the face region only (bilateral filtering is the expensive part).
    x0, y0, x1, y1 = int_box(scale_box(points_box(landmarks), 1.6))
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return image.copy()
    roi = np.ascontiguousarray(image[y0:y1, x0:x1])
    skin = skin_mask(landmarks, (h, w)) if mask is None else mask
    alpha = feather(skin[y0:y1, x0:x1], 0.03 * width, inside=True) * strength
    if not alpha.any():
        return image.copy()
    # Filter size in proportion to the face: ~1/40 of its width (≈ 4 px for a 170 px face).
    diameter = int(np.clip(round(width / 25), 5, 25)) | 1
    sigma_color = 15.0 + 35.0 * strength
    sigma_space = max(2.0, width / 60.0)
    smooth = cv2.bilateralFilter(roi, diameter, sigma_color, sigma_space).astype(np.float32)
    src = roi.astype(np.float32)
    if keep_texture > 0:
        fine = src - cv2.GaussianBlur(src, (0, 0), 1.0)
        smooth = smooth + keep_texture * fine
    a = alpha[..., None]
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(src * (1.0 - a) + smooth * a + 0.5, 0, 255).astype(np.uint8)
    return out


__all__ = ["smooth_skin"]
