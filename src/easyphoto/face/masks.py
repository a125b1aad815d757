"""Face and head masks from 68 landmarks, and background removal.

Conventions: a *hard mask* is a ``uint8`` ``H×W`` array holding 0 or 255 (what OpenCV expects); a
*soft mask* (an alpha) is ``float32`` in ``[0, 1]``. Functions take a ``shape`` — ``(height, width)``
or a full image shape — for the mask to draw.

The pieces:

* :func:`face_hull_mask` — convex hull of the landmarks, optionally extended up over the forehead
  (dlib's 68 points stop at the eyebrows; :func:`~easyphoto.face.landmarks.forehead_points`).
* :func:`feature_mask` / :func:`skin_mask` — eyes, brows, lips (and the skin without them).
* :func:`head_prior` — a landmark-only guess at head + hair + neck.
* :func:`head_mask` — that guess refined with GrabCut on a small copy (~0.1–0.2 s).
* :func:`feather`, :func:`grow_mask`, :func:`largest_component`, :func:`fill_holes` — mask algebra.
* :func:`whiten_background` / :func:`composite` — paint what is outside a mask white.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .landmarks import (
    BROWS,
    CHIN,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    MOUTH,
    RIGHT_BROW,
    RIGHT_EYE,
    face_frame,
    forehead_points,
)
from .landmarks import landmarks_of as _lm

FACE_PARTS: dict[str, list[int]] = {
    "eyes": RIGHT_EYE + LEFT_EYE,
    "brows": RIGHT_BROW + LEFT_BROW,
    "mouth": MOUTH,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
}


def _hw(shape: Sequence[int]) -> tuple[int, int]:
    return int(shape[0]), int(shape[1])


def polygon_mask(points: np.ndarray, shape: Sequence[int], *, convex: bool = True) -> np.ndarray:
    """Fill a polygon (its convex hull when ``convex``) into a new hard mask of ``shape``."""
    import cv2

    h, w = _hw(shape)
    mask = np.zeros((h, w), dtype=np.uint8)
    pts = np.round(np.asarray(points, dtype=np.float64).reshape(-1, 2) * 16).astype(np.int32)
    if len(pts) < 3:
        return mask
    if convex:
        pts = cv2.convexHull(pts)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 255, cv2.LINE_AA, 4)
    return np.where(mask >= 128, 255, 0).astype(np.uint8)


def face_hull_mask(
    landmarks: np.ndarray, shape: Sequence[int], forehead: bool = True, forehead_height: float = 0.5
) -> np.ndarray:
    """Hard mask of the face: convex hull of the 68 landmarks, plus the forehead when ``forehead``.

    ``forehead_height`` is in brow-to-chin heights (see :func:`forehead_points`); 0.5 reaches about
    two thirds of the way to a typical hairline, which keeps hair out of the mask.
    """
    lm = _lm(landmarks)
    pts = np.vstack([lm, forehead_points(lm, forehead_height)]) if forehead else lm
    return polygon_mask(pts, shape)


def feature_mask(
    landmarks: np.ndarray,
    shape: Sequence[int],
    parts: Sequence[str] = ("eyes", "brows", "mouth"),
    grow: float = 0.0,
) -> np.ndarray:
    """Hard mask of facial features (each part's convex hull), grown by ``grow`` × face width pixels.

    Parts: ``eyes``, ``brows``, ``mouth`` (or one side: ``right_eye``, ``left_brow``…).
    """
    lm = _lm(landmarks)
    h, w = _hw(shape)
    mask = np.zeros((h, w), dtype=np.uint8)
    groups: list[list[int]] = []
    for part in parts:
        if part not in FACE_PARTS:
            raise ValueError(f"unknown face part {part!r}; known: {sorted(FACE_PARTS)}")
        idx = FACE_PARTS[part]
        if part in ("eyes", "brows"):
            groups.extend([idx[: len(idx) // 2], idx[len(idx) // 2 :]])
        else:
            groups.append(idx)
    for idx in groups:
        mask |= polygon_mask(lm[idx], (h, w))
    if grow:
        mask = grow_mask(mask, grow * face_frame(lm).width)
    return mask


def skin_mask(
    landmarks: np.ndarray,
    shape: Sequence[int],
    *,
    forehead: bool = True,
    feature_margin: float = 0.05,
    shrink: float = 0.03,
) -> np.ndarray:
    """Hard mask of facial skin: the face hull (with forehead) minus eyes, brows and lips.

    The features are grown by ``feature_margin`` × face width (lashes, brow hairs, lip line) and the
    hull is shrunk by ``shrink`` × face width so the jaw line and hair edge stay out.
    """
    lm = _lm(landmarks)
    width = face_frame(lm).width
    hull = face_hull_mask(lm, shape, forehead=forehead, forehead_height=0.4)
    if shrink:
        hull = grow_mask(hull, -shrink * width)
    features = feature_mask(lm, shape, grow=feature_margin)
    return np.where((hull > 0) & (features == 0), 255, 0).astype(np.uint8)


def _ellipse_kernel(radius: float) -> np.ndarray:
    import cv2

    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def grow_mask(mask: np.ndarray, px: float) -> np.ndarray:
    """Dilate a hard mask by ``px`` pixels (erode when negative), with a round kernel."""
    import cv2

    if abs(px) < 0.5:
        return mask.copy()
    kernel = _ellipse_kernel(abs(px))
    return cv2.dilate(mask, kernel) if px > 0 else cv2.erode(mask, kernel)


def feather(mask: np.ndarray, px: float, *, inside: bool = False) -> np.ndarray:
    """Soft mask (float32 0..1) with edges blurred over about ``px`` pixels.

    With ``inside=False`` the blur is centred on the edge (alpha 0.5 on the original border). With
    ``inside=True`` the mask is first eroded so the alpha is 0 everywhere outside the original mask —
    what pasting needs, so nothing leaks past the mask.
    """
    import cv2

    m = np.asarray(mask)
    alpha = m.astype(np.float32) / (255.0 if m.dtype == np.uint8 else max(1.0, float(m.max() or 1)))
    if px <= 0:
        return alpha
    if inside:
        hard = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)
        alpha = grow_mask(hard, -px).astype(np.float32) / 255.0
    sigma = max(0.5, px / 2.0)
    return np.clip(cv2.GaussianBlur(alpha, (0, 0), sigma), 0.0, 1.0)


def largest_component(mask: np.ndarray, seed: np.ndarray | None = None) -> np.ndarray:
    """Keep one connected component of a hard mask: the one overlapping ``seed`` most (a hard mask),
    or the largest when no seed is given or none overlaps."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    if n <= 2:
        return np.where(mask > 0, 255, 0).astype(np.uint8)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if seed is not None:
        counts = np.bincount(labels[seed > 0].ravel(), minlength=n)
        counts[0] = 0
        if counts.max() > 0:
            best = int(np.argmax(counts))
    return np.where(labels == best, 255, 0).astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a hard mask (background regions not connected to the image border)."""
    import cv2

    h, w = mask.shape[:2]
    inv = np.where(mask > 0, 0, 255).astype(np.uint8)
    padded = np.pad(inv, 1, constant_values=255)
    flood = np.zeros((h + 4, w + 4), dtype=np.uint8)
    cv2.floodFill(padded, flood, (0, 0), 0)
    holes = padded[1:-1, 1:-1] > 0
    return np.where((mask > 0) | holes, 255, 0).astype(np.uint8)


def head_prior(
    landmarks: np.ndarray,
    shape: Sequence[int],
    *,
    hair: float = 0.85,
    neck: float = 0.3,
    breadth: float = 1.3,
) -> np.ndarray:
    """Landmark-only guess at the head: an ellipse over face and hair plus the neck, as a hard mask.

    The ellipse is set in the face's own frame (it tilts with the head): it is ``breadth`` × the jaw
    width wide and reaches ``hair`` × (brow-to-chin height) above the eyebrows (the skull top is
    ~0.8 above the brows; 0.85 covers short hair). The neck is a band ``0.56 ×`` jaw width wide reaching
    ``neck`` × height below the chin. Refine it with :func:`head_mask`.
    """
    import cv2

    lm = _lm(landmarks)
    frame = face_frame(lm)
    right, up, width, height = frame.right, frame.up, frame.width, frame.height
    h, w = _hw(shape)
    chin = lm[CHIN]
    brow = lm[BROWS].mean(axis=0)
    top = brow + up * (hair * height)
    bottom = chin - up * (0.02 * height)
    center = 0.5 * (top + bottom)
    # Centre horizontally on the face (jaw midpoint), keep the ellipse in the face frame.
    jaw_mid = 0.5 * (lm[JAW[0]] + lm[JAW[-1]])
    center = center + right * float(np.dot(jaw_mid - center, right))
    semi_v = 0.5 * float(np.linalg.norm(top - bottom))
    semi_h = 0.5 * breadth * width
    angle = float(np.degrees(np.arctan2(right[1], right[0])))
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.ellipse(
        mask,
        (int(round(center[0] * 16)), int(round(center[1] * 16))),
        (int(round(semi_h * 16)), int(round(semi_v * 16))),
        angle,
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
        4,
    )
    mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    if neck > 0:
        neck_top = 0.5 * (lm[5] + lm[11])
        half = 0.28 * width
        low = neck_top - up * (float(np.dot(neck_top - chin, up)) + neck * height)
        quad = np.array(
            [neck_top - right * half, neck_top + right * half, low + right * half, low - right * half]
        )
        mask |= polygon_mask(quad, (h, w))
    mask |= face_hull_mask(lm, (h, w), forehead=True)
    return mask


def _grabcut(
    image: np.ndarray, trimap: np.ndarray, margin: int, work_size: int, iterations: int
) -> np.ndarray | None:
    """GrabCut from a full-size ``trimap`` on a small copy, as a full-size hard mask (``None``: it
    could not run). Works on the bounding box of the uncertain region plus ``margin`` pixels of
    certain background, shrunk to at most ``work_size`` pixels across."""
    import cv2

    h, w = image.shape[:2]
    ys, xs = np.nonzero(trimap != cv2.GC_BGD)
    if len(xs) == 0:
        return None
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + 1 + margin)
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + 1 + margin)
    roi_img = image[y0:y1, x0:x1]
    roi_tri = trimap[y0:y1, x0:x1]
    rh, rw = roi_img.shape[:2]
    scale = min(1.0, work_size / max(rh, rw))
    sw, sh = max(8, round(rw * scale)), max(8, round(rh * scale))
    small_img = cv2.resize(roi_img, (sw, sh), interpolation=cv2.INTER_AREA)
    small_tri = cv2.resize(roi_tri, (sw, sh), interpolation=cv2.INTER_NEAREST)
    if not (np.any(small_tri == cv2.GC_BGD) or np.any(small_tri == cv2.GC_PR_BGD)):
        return None
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(
            np.ascontiguousarray(small_img),
            small_tri,
            None,
            bgd,
            fgd,
            iterations,
            cv2.GC_INIT_WITH_MASK,
        )
    except cv2.error:
        return None
    small_fg = np.isin(small_tri, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    # Smooth upsampling: blur at the small scale, resize linearly, threshold at one half.
    small_fg = cv2.GaussianBlur(small_fg, (0, 0), 0.7)
    big = cv2.resize(small_fg, (rw, rh), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y1, x0:x1] = np.where(big >= 0.5, 255, 0).astype(np.uint8)
    return mask


def head_mask(
    image: np.ndarray,
    landmarks: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    refine: bool = True,
    work_size: int = 200,
    iterations: int = 4,
    sure_skull: float = 0.45,
    neck_core: float = 0.12,
    hair: float = 0.75,
    breadth: float = 1.2,
) -> np.ndarray:
    """Hard mask of the head (face, forehead, hair, neck) in an image holding one main face.

    The landmark hull with the forehead is certain foreground. :func:`head_prior` marks probable
    foreground, a margin around it probable background, and everything further out certain
    background. GrabCut then decides hair versus background from colour — on a copy of the head region
    at most ``work_size`` pixels across (GrabCut costs ~1.8 s at 455×568 but ~0.1 s at 160 px) — and
    its mask is upsampled smoothly, reduced to the part connected to the face, and its holes filled.
    The face hull is always kept, so no part of the face is ever cut off by a bad GrabCut.

    Args:
        image: ``H×W×3`` uint8 RGB (typically a face crop at ratio 3).
        landmarks: the face's 68 landmarks in ``image`` coordinates.
        valid: optional hard mask of real pixels (padding outside it is certain background).
        refine: run GrabCut; when ``False`` return :func:`head_prior` (no colour information).
        work_size: the long side of the copy GrabCut runs on.
        iterations: GrabCut iterations.
        sure_skull: how far above the brows (in brow-to-chin heights) the hull is certain foreground.
        neck_core: how far below the jaw line (same unit) a strip following the jaw is kept as neck.
        hair, breadth: size of the probable-head ellipse GrabCut starts from (see :func:`head_prior`);
            kept tight on purpose — hair beyond it is still claimed when its colour matches.
    """
    import cv2

    lm = _lm(landmarks)
    h, w = image.shape[:2]
    frame = face_frame(lm)
    up, width, height = frame.up, frame.width, frame.height
    face = face_hull_mask(lm, (h, w), forehead=True, forehead_height=0.35)
    if not refine:
        prior = head_prior(lm, (h, w))
        return prior & valid if valid is not None else prior
    # The neck is left out of GrabCut's colour models (a white collar there would make every bright
    # background patch "head"); a short band under the chin is added back at the end.
    prior = head_prior(lm, (h, w), hair=hair, breadth=breadth, neck=0.0)
    # Above the brows, within the face's width and up to ~0.45 of its height, there is always head
    # (forehead skin, hair or a hat): certain foreground together with the face itself.
    sure_fg = grow_mask(face_hull_mask(lm, (h, w), forehead=True, forehead_height=sure_skull), -0.04 * width)
    # Right under the chin there is neck (or a beard or a collar, still the person): a short band.
    jaw = lm[JAW[4:13]]
    neck_band = polygon_mask(np.vstack([jaw, jaw[::-1] - up * (neck_core * height)]), (h, w), convex=False)
    outer = grow_mask(head_prior(lm, (h, w), hair=1.25, neck=0.25, breadth=1.9), 0.1 * width)
    trimap = np.full((h, w), cv2.GC_BGD, dtype=np.uint8)
    trimap[outer > 0] = cv2.GC_PR_BGD
    trimap[prior > 0] = cv2.GC_PR_FGD
    trimap[sure_fg > 0] = cv2.GC_FGD
    if valid is not None:
        trimap[valid == 0] = cv2.GC_BGD
    mask = _grabcut(image, trimap, int(0.1 * width) + 4, work_size, iterations)
    if mask is None:
        return prior
    mask |= face | neck_band
    # Open away thin spurs, keep the part attached to the face, close small gaps, fill holes.
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _ellipse_kernel(0.02 * width))
    mask = largest_component(mask, seed=face)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _ellipse_kernel(0.03 * width))
    mask = fill_holes(mask)
    if valid is not None:
        mask &= valid
    return mask | face | (neck_band & (valid if valid is not None else neck_band))


def composite(foreground: np.ndarray, background: np.ndarray | float, alpha: np.ndarray) -> np.ndarray:
    """``alpha × foreground + (1 − alpha) × background`` as uint8 (``alpha`` soft or hard mask)."""
    a = alpha.astype(np.float32)
    if a.max() > 1.0:
        a = a / 255.0
    if a.ndim == 2 and foreground.ndim == 3:
        a = a[..., None]
    fg = foreground.astype(np.float32)
    bg = background.astype(np.float32) if isinstance(background, np.ndarray) else np.float32(background)
    return np.clip(fg * a + bg * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def whiten_background(
    image: np.ndarray, mask: np.ndarray, feather_px: float = 2.0, color: int | Sequence[int] = 255
) -> np.ndarray:
    """Paint everything outside ``mask`` with ``color`` (white), with a ``feather_px`` soft edge."""
    alpha = feather(mask, feather_px) if feather_px > 0 else mask.astype(np.float32) / 255.0
    bg: np.ndarray | float
    bg = float(color) if isinstance(color, (int, float)) else np.asarray(color, dtype=np.float32)
    return composite(image, bg, alpha)


__all__ = [
    "FACE_PARTS",
    "composite",
    "face_hull_mask",
    "feather",
    "feature_mask",
    "fill_holes",
    "forehead_points",
    "grow_mask",
    "head_mask",
    "head_prior",
    "largest_component",
    "polygon_mask",
    "skin_mask",
    "whiten_background",
]
