"""Classical face fusion: put a source face onto a template face without any diffusion model.

:func:`fuse_face` works in four stages (one function each: ``_warp``, ``_colour``, ``_mask``,
``_blend``), all on a crop around the template face, so its cost does not grow with the photo's size
and every pixel outside that crop is left untouched bit for bit:

1. **Warp** (a morph, piecewise affine). The target shape keeps the template's outline (jaw line and
   a forehead arc built from the landmarks) and moves the inner features (brows, eyes, nose, mouth)
   toward the source's proportions by ``ratio``; both faces are warped to it. Lips land on lips at
   every ratio (no doubled mouth), and at ratio 1 the features keep the source's geometry, which
   carries much of the identity (without it a warped swap still reads as the template person). The
   control points plus the crop's corners are triangulated (Delaunay) and each image is sampled once
   with :func:`cv2.remap`, so the map is continuous across triangle edges (no jagged teeth). Moves
   that would fold a triangle at the outline (heads turned differently) are shortened; a source
   turned the other way is mirrored; a much larger source face is area-shrunk first (no aliasing).
2. **Colour**. Robust Reinhard LAB transfer (:mod:`easyphoto.face.color`) from statistics over the
   skin of both faces (cheeks, nose, forehead; eyes, brows and lips excluded), with the std ratio
   clamped so tinted light does not over-saturate. Then a *local* low-frequency correction: the
   smoothed difference between the template and the recoloured source over their skin (normalised
   convolution), which carries the template's lighting gradients into the face and removes the
   colour band a plain feather leaves at the forehead edge.
3. **Mask**. The convex hull of the jaw line and the forehead arc, eroded and then feathered inside
   the face outline (no background of either photo leaks). On the forehead the mask is weighted by
   how skin-like both faces are there, so neither a template fringe nor the source's hair is pasted.
   When the two mouths differ a lot in openness and 0 < ratio < 1, the mouth interior comes from the
   more open face alone (no ghost teeth from cross-dissolving an open and a closed mouth). When either
   face wears glasses the mask is widened at eye height so frames are taken whole instead of cut at
   the mask edge (detection is a heuristic). A ring around each eye may not be darker than the
   template's (dark eye make-up of the source is damped).
4. **Blend**. ``morphed_template + ratio * mask * (source - morphed_template)``: an alpha blend (no
   ``seamlessClone``: its Poisson solve pulls colour from the mask border into the face and turns
   skin grey-muddy). ``ratio`` 0 returns the template unchanged, 1 the full source face; EasyPhoto
   uses 0.5–0.6 before and after diffusion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from ..errors import NoFaceError
from .color import lab_stats, lab_to_rgb, rgb_to_lab, transfer_lab
from .geometry import (
    PiecewiseAffine,
    box_size,
    points_box,
    remap_image,
    similarity_transform,
    transform_points,
)
from .landmarks import (
    BROWS,
    FOREHEAD_HEIGHT,
    INNER,
    INNER_EYE_CORNERS,
    INNER_LIPS,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    MOUTH_CORNERS,
    N_LANDMARKS,
    NOSE_TIP,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
    face_frame,
    forehead_arc,
    landmarks_of,
    mirror_landmarks,
)
from .masks import grow_mask, polygon_mask

MaskMode = Literal["forehead", "hull"]
MouthMode = Literal["auto", "source", "template"]

#: Scale (fraction of the face size) of the local colour correction: lighting gradients, not features.
LOCAL_COLOR_SIGMA = 0.2
#: Largest local correction per LAB channel (L, a, b) after the global transfer.
LOCAL_COLOR_LIMIT = np.array([12.0, 6.0, 6.0], dtype=np.float32)
#: Mouth openness (inner-lip gap / mouth width) above which a mouth counts as open.
OPEN_MOUTH = 0.06


@dataclass
class FusionResult:
    """Outcome of :func:`fuse_face`.

    Attributes:
        image: the fused image, same size as the template; pixels where ``mask`` is 0 are the
            template's, bit for bit.
        mask: ``float32`` H×W face mask in 0..1 (feathered, before ``ratio``).
        alpha: ``float32`` H×W weight of the source actually used: ``ratio * mask``, except inside
            the mouth when its interior was taken from one face only. The output is
            ``morphed_template + alpha * (warped_source - morphed_template)``.
        ratio: the blend ratio used.
        box: ``(x0, y0, x1, y1)`` of the template region that was worked on.
        mouth_from: ``"blend"``, ``"template"`` or ``"source"``: where the mouth interior came from.
        glasses: whether glasses were detected on ``(template, source)``.
        flipped: whether the source was mirrored to match the template's head turn.
        morph: how far the inner features moved toward the source's proportions (0..ratio, mean).
        timings: seconds spent per stage (``warp``, ``colour``, ``mask``, ``blend``).
    """

    image: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray
    ratio: float
    box: tuple[int, int, int, int]
    mouth_from: str = "blend"
    glasses: tuple[bool, bool] = (False, False)
    flipped: bool = False
    morph: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- geometry


def _yaw(lm: np.ndarray) -> float:
    """Signed head turn in -1..1 from where the nose tip sits between the jaw ends (0 = frontal)."""
    right = face_frame(lm).right
    left_d = float(np.dot(lm[NOSE_TIP] - lm[JAW[0]], right))
    right_d = float(np.dot(lm[JAW[-1]] - lm[NOSE_TIP], right))
    return (left_d - right_d) / max(left_d + right_d, 1e-6)


def _signed_areas(tri: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = pts[tri]
    return (q[:, 1, 0] - q[:, 0, 0]) * (q[:, 2, 1] - q[:, 0, 1]) - (q[:, 1, 1] - q[:, 0, 1]) * (
        q[:, 2, 0] - q[:, 0, 0]
    )


def _safe_morph_steps(ctl_t: np.ndarray, shift: np.ndarray, ratio: float) -> np.ndarray:
    """Per-point morph strengths (≤ ``ratio``) such that no triangle along the outline folds over.

    Moving the inner features to the source's proportions can push them across the jaw line when the
    two heads are turned differently, which tears the face. Triangles touching the outline (jaw,
    forehead arc) must keep their orientation and at least a tenth of their area; the points of a
    triangle that fails are moved less (×0.6 per round) until none fails. Slivers inside the mouth
    may flip harmlessly and are not checked.
    """
    from scipy.spatial import Delaunay

    tri = Delaunay(ctl_t, qhull_options="QJ").simplices
    tri = tri[np.any((tri <= JAW[-1]) | (tri >= N_LANDMARKS), axis=1)]
    before = _signed_areas(tri, ctl_t)
    k = np.full(len(ctl_t), ratio)
    for _ in range(12):
        after = _signed_areas(tri, ctl_t + k[:, None] * shift)
        bad = (np.sign(after) != np.sign(before)) | (np.abs(after) < 0.1 * np.abs(before))
        if not bad.any():
            return k
        k[np.unique(tri[bad])] *= 0.6
    return np.zeros(len(ctl_t))


def _mouth_openness(lm: np.ndarray) -> float:
    """Inner-lip gap (three upper/lower point pairs) over the mouth's width."""
    gap = np.linalg.norm(lm[[61, 62, 63]] - lm[[67, 66, 65]], axis=1).mean()
    corner_l, corner_r = MOUTH_CORNERS
    width = max(float(np.linalg.norm(lm[corner_r] - lm[corner_l])), 1e-6)
    return float(gap / width)


# ------------------------------------------------------------------------------------------ masks


def _poly_mask(shape: tuple[int, int], pts: np.ndarray, *, hull: bool = True) -> np.ndarray:
    """Filled polygon (convex hull of ``pts`` if ``hull``) as a float32 0/1 mask."""
    return polygon_mask(pts, shape, convex=hull).astype(np.float32) / 255.0


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    return grow_mask(mask, -radius)


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    return grow_mask(mask, radius)


def _blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return mask
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def _feature_mask(shape: tuple[int, int], lm: np.ndarray, size: float) -> np.ndarray:
    """Eyes, brows and lips (dilated): the pixels that are not plain skin."""
    m = np.zeros(shape, dtype=np.float32)
    for group in (RIGHT_EYE, LEFT_EYE, OUTER_LIPS):
        m = np.maximum(m, _poly_mask(shape, lm[group]))
    brows = np.zeros(shape, dtype=np.uint8)
    thick = max(1, int(round(0.06 * size)))
    for group in (RIGHT_BROW, LEFT_BROW):
        cv2.polylines(brows, [np.round(lm[group]).astype(np.int32).reshape(-1, 1, 2)], False, 1, thick)
    m = np.maximum(m, brows.astype(np.float32))
    return _dilate(m, 0.04 * size)


def _skin_likeness(lab: np.ndarray, stats: tuple[np.ndarray, np.ndarray], k: float = 2.5) -> np.ndarray:
    """0..1 per pixel: how close its LAB colour is to a skin model (mean, std); hair scores ~0."""
    mean, std = stats
    std = np.maximum(std, np.array([6.0, 3.0, 3.0], dtype=np.float32))
    z = (lab - mean) / std
    d2 = 0.5 * z[..., 0] ** 2 + z[..., 1] ** 2 + z[..., 2] ** 2
    return np.exp(-0.5 * d2 / (k * k)).astype(np.float32)


def _has_glasses(gray: np.ndarray, lm: np.ndarray) -> bool:
    """Heuristic: a glasses bridge is a horizontal edge across the nose bridge between the eyes."""
    frame = face_frame(lm)
    right, up, h = frame.right, frame.up, frame.eye_mouth
    corner_l, corner_r = INNER_EYE_CORNERS
    inner = 0.5 * (lm[corner_l] + lm[corner_r])
    half_w = 0.2 * float(np.linalg.norm(lm[corner_r] - lm[corner_l]))
    # Sample a small upright patch along the face axes: from the inner eye corners up to the brows.
    top = float(np.max((lm[[RIGHT_BROW[-1], LEFT_BROW[0]]] - inner) @ up))
    n_rows = max(8, int(round(top + 0.1 * h)))
    n_cols = max(4, int(round(2 * half_w)))
    v = np.linspace(-0.1 * h, 0.65 * top, n_rows)
    u = np.linspace(-half_w, half_w, n_cols)
    pts = inner + v[:, None, None] * up + u[None, :, None] * right
    patch = cv2.remap(
        gray.astype(np.float32),
        pts[..., 0].astype(np.float32),
        pts[..., 1].astype(np.float32),
        cv2.INTER_LINEAR,
    )
    if patch.size == 0:
        return False
    rows = patch.mean(axis=1)
    steps = np.abs(np.diff(rows))
    contrast = float(steps.max()) / max(float(patch.std()), 4.0)
    return contrast > 0.45 and float(steps.max()) > 13.0


# ------------------------------------------------------------------------------------ the four stages


def _crop_box(pts: np.ndarray, margin: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape
    x0, y0 = np.floor(pts.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + margin).astype(int) + 1
    return max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1))


def _match_turn(
    source: np.ndarray, lm_s: np.ndarray, lm_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The source and its landmarks, mirrored when the two faces turn opposite ways (and whether).

    A mirrored source then matches the template's pose much better: faces are near-symmetric,
    identity survives a mirror, hidden cheeks do not reappear.
    """
    yaw_t, yaw_s = _yaw(lm_t), _yaw(lm_s)
    if yaw_t * yaw_s < 0 and abs(yaw_t - yaw_s) - abs(yaw_t + yaw_s) > 0.2:
        return np.ascontiguousarray(source[:, ::-1]), mirror_landmarks(lm_s, source.shape[1]), True
    return source, lm_s, False


def _morph_target(
    lm_t: np.ndarray, lm_s: np.ndarray, ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Control points (68 landmarks + forehead arc) of the template, the source and the morph shape,
    and how far the inner features moved (mean strength, 0..ratio).

    The morph shape keeps the template's outline (jaw, forehead) and moves the inner features toward
    the source's proportions (similarity-aligned) by ``ratio``. Both faces are warped to it, so lips
    and eyes coincide at every ratio (no doubled mouth) and at ratio 1 the features keep the source's
    geometry, which carries much of the identity. The move is shortened until no triangle folds over
    (different poses would otherwise tear the face).
    """
    ctl_t = np.vstack([lm_t, forehead_arc(lm_t)])
    ctl_s = np.vstack([lm_s, forehead_arc(lm_s)])
    sim_st = similarity_transform(lm_s[INNER], lm_t[INNER])
    shift = np.zeros_like(ctl_t)
    shift[INNER] = transform_points(sim_st, lm_s[INNER], np.float64) - lm_t[INNER]
    steps = _safe_morph_steps(ctl_t, shift, ratio)
    return ctl_t, ctl_s, ctl_t + steps[:, None] * shift, float(steps[INNER].mean())


@dataclass
class _Warped:
    """Stage 1's output, in the coordinates of the template crop ``box``."""

    box: tuple[int, int, int, int]
    crop: np.ndarray  # the template's own pixels
    template: np.ndarray  # the template warped to the morph shape
    source: np.ndarray  # the source warped to the morph shape
    tmap: tuple[np.ndarray, np.ndarray]  # the template's backward map (where its pixels moved)
    lm: np.ndarray  # the morph shape's 68 landmarks: where both warped faces now are
    forehead: np.ndarray  # the forehead arc (the morph keeps the template's outline)
    size: float  # the template face's size in pixels


def _warp(
    template: np.ndarray,
    source: np.ndarray,
    ctl: tuple[np.ndarray, np.ndarray, np.ndarray],
    box: tuple[int, int, int, int],
    size_t: float,
    size_s: float,
) -> _Warped:
    """Stage 1: warp both faces to the morph shape (``ctl``: template, source, morph control points).

    The crop border stays put for the template and maps by the overall similarity for the source.
    """
    ctl_t, ctl_s, ctl_m = ctl
    x0, y0, x1, y1 = box
    crop_t = template[y0:y1, x0:x1]
    ch, cw = crop_t.shape[:2]
    off = np.array([x0, y0], dtype=np.float64)
    ctl_mc = ctl_m - off
    border = np.array(
        [[-1, -1], [cw / 2, -1], [cw, -1], [cw, ch / 2], [cw, ch], [cw / 2, ch], [-1, ch], [-1, ch / 2]],
        dtype=np.float64,
    )
    sim = similarity_transform(ctl_mc, ctl_s)
    pwa = PiecewiseAffine(np.vstack([ctl_mc, border]), (ch, cw))
    map_x, map_y = pwa.map(np.vstack([ctl_s, transform_points(sim, border, np.float64)]), sim)
    warped = remap_image(source, map_x, map_y, size_s / max(size_t, 1.0))
    ident = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    tmap_x, tmap_y = pwa.map(np.vstack([ctl_t - off, border]), ident)
    morphed_t = cv2.remap(crop_t, tmap_x, tmap_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lm_mc, fh_tc = ctl_mc[:N_LANDMARKS], ctl_t[N_LANDMARKS:] - off
    return _Warped(box, crop_t, morphed_t, warped, (tmap_x, tmap_y), lm_mc, fh_tc, size_t)


def _skin(lab: np.ndarray, cheeks: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The skin of the ``cheeks`` mask and its LAB statistics, refined once so beards, stubble and
    shadows do not count as skin."""
    skin = cheeks * (_skin_likeness(lab, lab_stats(lab, cheeks)) > 0.3)
    return skin, lab_stats(lab, skin if skin.sum() > 0.3 * cheeks.sum() else cheeks)


def _local_correction(diff: np.ndarray, support: np.ndarray, sigma: float) -> np.ndarray:
    """Low-frequency part of the LAB difference ``diff`` over ``support`` (normalised convolution),
    clipped to :data:`LOCAL_COLOR_LIMIT`."""
    den = _blur(support, sigma)
    num = _blur(diff * support[..., None], sigma)
    corr = num / np.maximum(den, 0.15)[..., None]
    return np.clip(corr, -LOCAL_COLOR_LIMIT, LOCAL_COLOR_LIMIT)


def _eye_rings(shape: tuple[int, int], lm: np.ndarray, size: float) -> np.ndarray:
    """Soft 0..1 ring around each eye (where eye make-up sits), eye itself excluded."""
    ring = np.zeros(shape, dtype=np.float32)
    for group in (RIGHT_EYE, LEFT_EYE):
        eye = _poly_mask(shape, lm[group])
        ring = np.maximum(ring, _dilate(eye, 0.07 * size) - _dilate(eye, 0.012 * size))
    return _blur(ring, 0.015 * size)


def _colour(
    w: _Warped, color_match: bool, suppress_makeup: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 2: the warped source recoloured to the template's skin and light.

    Also returns what the mask stage reuses: how skin-like both faces are per pixel, and the
    forehead band (inside the face hull, above the brows: where a fringe or the source's hair may be).
    """
    shape, lm, size = w.crop.shape[:2], w.lm, w.size
    jaw_hull = _poly_mask(shape, lm[JAW])
    face_hull = _poly_mask(shape, np.vstack([lm[JAW], w.forehead]))
    features = _feature_mask(shape, lm, size)
    cheeks = _erode(jaw_hull * (1.0 - features), 0.03 * size)
    lab_t, lab_w = rgb_to_lab(w.template), rgb_to_lab(w.source)
    skin_t, stats_t = _skin(lab_t, cheeks)
    _, stats_w = _skin(lab_w, cheeks)
    frame = face_frame(lm)
    brow_hull = _poly_mask(shape, np.vstack([lm[JAW], lm[BROWS] + 0.15 * frame.eye_mouth * frame.up]))
    forehead_band = _erode(face_hull, 0.03 * size) * (1.0 - brow_hull)
    skin_both = _skin_likeness(lab_t, stats_t) * _skin_likeness(lab_w, stats_w)
    if not color_match:
        return w.source, skin_both, forehead_band
    lab_m = transfer_lab(lab_w, stats_w, stats_t)
    # Local low-frequency correction over the skin of both faces: the template's skin (not its
    # beard) on the cheeks, skin of both on the forehead.
    support = np.maximum(skin_t, forehead_band * (skin_both > 0.3)) * (1.0 - features)
    lab_m = lab_m + _local_correction(lab_t - lab_m, support, LOCAL_COLOR_SIGMA * size)
    if suppress_makeup:
        ring = _eye_rings(shape, lm, size)
        floor = lab_t[..., 0] - 6.0
        lab_m[..., 0] = lab_m[..., 0] + ring * np.maximum(floor - lab_m[..., 0], 0.0)
    lab_m[..., 0] = np.clip(lab_m[..., 0], 0.0, 100.0)
    return lab_to_rgb(lab_m), skin_both, forehead_band


def _mask(
    w: _Warped,
    source: np.ndarray,
    lm_s: np.ndarray,
    mask_mode: MaskMode,
    skin_both: np.ndarray,
    forehead_band: np.ndarray,
) -> tuple[np.ndarray, tuple[bool, bool]]:
    """Stage 3: the feathered face mask (0..1) and whether (template, source) wear glasses."""
    shape, lm, size = w.crop.shape[:2], w.lm, w.size
    glasses = (
        _has_glasses(cv2.cvtColor(w.template, cv2.COLOR_RGB2GRAY), lm),
        _has_glasses(cv2.cvtColor(source, cv2.COLOR_RGB2GRAY), lm_s),
    )
    if mask_mode == "forehead":
        hull_pts = np.vstack([lm[JAW], w.forehead])
    elif mask_mode == "hull":
        hull_pts = lm
    else:
        raise ValueError(f"mask_mode must be 'forehead' or 'hull', got {mask_mode!r}")
    if any(glasses):
        # Widen at eye height so frames are replaced or kept whole, not cut at the mask's side.
        right, widen = face_frame(lm).right, 0.1 * size
        hull_pts = np.vstack([hull_pts, lm[[0, 1]] - right * widen, lm[[15, 16]] + right * widen])
    feather = 0.035 * size
    mask = _blur(_erode(_poly_mask(shape, hull_pts), 2.2 * feather), feather)
    if mask_mode == "forehead":
        guard = _blur(skin_both, 0.02 * size)
        band = _blur(forehead_band, feather)
        mask = mask * (1.0 - band + band * guard)
    return np.clip(mask, 0.0, 1.0).astype(np.float32), glasses


def _mouth_from(lm_t: np.ndarray, lm_s: np.ndarray, ratio: float, mouth: MouthMode) -> str:
    """Where the mouth interior comes from: ``"blend"``, ``"template"`` or ``"source"``.

    When the two mouths differ in openness, a cross-dissolve shows ghost teeth: take the interior
    from one face only, the more open one (squeezing teeth looks natural, stretching closed lips
    does not).
    """
    open_t, open_s = _mouth_openness(lm_t), _mouth_openness(lm_s)
    differ = max(open_t, open_s) > OPEN_MOUTH and not (0.6 < (open_s + 1e-3) / (open_t + 1e-3) < 1.0 / 0.6)
    if mouth in ("template", "source"):
        return mouth
    if mouth != "auto":
        raise ValueError(f"mouth must be 'auto', 'template' or 'source', got {mouth!r}")
    if differ and 0.0 < ratio < 1.0:
        return "template" if open_t > open_s else "source"
    return "blend"


def _alpha(w: _Warped, mask: np.ndarray, ratio: float, mouth_from: str) -> np.ndarray:
    """Weight of the source per crop pixel: ``ratio * mask``, with the mouth interior set to 1
    (from the source) or 0 (from the template) unless ``mouth_from`` is ``"blend"``."""
    alpha = ratio * mask
    if mouth_from != "blend":
        inner = _blur(_dilate(_poly_mask(mask.shape, w.lm[INNER_LIPS]), 0.01 * w.size), 0.01 * w.size)
        inner = inner * (mask > 0.5)
        target = 1.0 if mouth_from == "source" else 0.0
        alpha = alpha * (1.0 - inner) + target * inner
    return alpha


def _blend(
    template: np.ndarray, w: _Warped, source: np.ndarray, mask: np.ndarray, alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 4: ``alpha`` of the (recoloured) warped ``source`` over the morphed template, pasted into
    a copy of ``template``; exactly the template wherever nothing moved or mixed. Returns the image,
    and the mask and alpha at the template's size."""
    x0, y0, x1, y1 = w.box
    a3 = alpha[..., None]
    tpl = w.template.astype(np.float32)
    blended = np.clip(tpl + a3 * (source.astype(np.float32) - tpl) + 0.5, 0, 255).astype(np.uint8)
    ch, cw = alpha.shape
    xs = np.arange(cw, dtype=np.float32)[None, :]
    ys = np.arange(ch, dtype=np.float32)[:, None]
    tmap_x, tmap_y = w.tmap
    moved = (np.abs(tmap_x - xs) + np.abs(tmap_y - ys)) > 1e-3
    touched = (alpha > 0) | moved
    out = template.copy()
    out[y0:y1, x0:x1] = np.where(touched[..., None], blended, w.crop)
    full_mask = np.zeros(template.shape[:2], dtype=np.float32)
    full_mask[y0:y1, x0:x1] = mask
    full_alpha = np.zeros_like(full_mask)
    full_alpha[y0:y1, x0:x1] = alpha
    return out, full_mask, full_alpha


def fuse_face(
    template: np.ndarray,
    template_face: Any,
    source: np.ndarray,
    source_face: Any,
    ratio: float = 1.0,
    *,
    mask_mode: MaskMode = "forehead",
    color_match: bool = True,
    mouth: MouthMode = "auto",
    suppress_makeup: bool = True,
) -> FusionResult:
    """Fuse ``source``'s face onto ``template``'s face (warp, colour match, feathered blend).

    Args:
        template: RGB ``uint8`` template image (not modified).
        template_face: the template face (a :class:`~easyphoto.face.analyzer.Face` or a 68×2 array).
        source: RGB ``uint8`` image of the face to put in (any size).
        source_face: the source face (Face or 68×2 landmarks).
        ratio: blend ratio in 0..1: 0 leaves the template unchanged, 1 puts the full source face in.
            EasyPhoto uses 0.5–0.6 to guide diffusion; at those ratios the result stays the template
            person. At 1 it is the source person (measured ≥ 9 in 10 pairs of real photos).
        mask_mode: ``"forehead"`` (jaw line + forehead arc; default, higher identity) or ``"hull"``
            (convex hull of the 68 points: brows to chin).
        color_match: match the source's skin to the template's colour and lighting (recommended).
        mouth: where the mouth interior comes from. ``"auto"``: when the mouths' openness differs a
            lot and 0 < ratio < 1, from the more open face alone (no ghost teeth); otherwise blended
            like the rest. ``"template"`` / ``"source"``: always from that face.
        suppress_makeup: take the darkness of the ring around each eye from the template.

    Returns:
        A :class:`FusionResult`; ``result.image`` has the template's size.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in 0..1, got {ratio}")
    for name, img in (("template", template), ("source", source)):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{name} must be an H×W×3 uint8 RGB image, got {img.shape} {img.dtype}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lm_t = landmarks_of(template_face)
    source, lm_s, flipped = _match_turn(source, landmarks_of(source_face), lm_t)
    size_t, size_s = box_size(points_box(lm_t)), box_size(points_box(lm_s))
    ctl_t, ctl_s, ctl_m, strength = _morph_target(lm_t, lm_s, ratio)
    box = _crop_box(np.vstack([ctl_t, ctl_m]), 0.12 * size_t + 4, template.shape[:2])
    if ratio == 0.0 or box[2] - box[0] < 4 or box[3] - box[1] < 4:
        empty = np.zeros(template.shape[:2], dtype=np.float32)
        return FusionResult(template.copy(), empty, empty.copy(), ratio, box, timings=timings)
    warped = _warp(template, source, (ctl_t, ctl_s, ctl_m), box, size_t, size_s)
    timings["warp"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    recoloured, skin_both, forehead_band = _colour(warped, color_match, suppress_makeup)
    timings["colour"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    mask, glasses = _mask(warped, source, lm_s, mask_mode, skin_both, forehead_band)
    mouth_from = _mouth_from(lm_t, lm_s, ratio, mouth)
    alpha = _alpha(warped, mask, ratio, mouth_from)
    timings["mask"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    image, full_mask, full_alpha = _blend(template, warped, recoloured, mask, alpha)
    timings["blend"] = time.perf_counter() - t3
    return FusionResult(
        image, full_mask, full_alpha, ratio, box, mouth_from, glasses, flipped, strength, timings
    )


def swap_faces(
    template_img: np.ndarray,
    source_img: np.ndarray,
    analyzer: Any,
    ratio: float = 1.0,
    face_index: int | None = None,
    *,
    template_name: str = "template",
    source_name: str = "source photo",
    **options: Any,
) -> FusionResult:
    """Detect faces and put the largest face of ``source_img`` onto a face of ``template_img``.

    Args:
        template_img, source_img: RGB ``uint8`` images.
        analyzer: a :class:`~easyphoto.face.analyzer.FaceAnalyzer`.
        ratio: blend ratio (see :func:`fuse_face`).
        face_index: which template face (left to right, from 0); ``None`` = the largest.
        template_name, source_name: how to name the images in errors.
        **options: passed on to :func:`fuse_face` (``mask_mode``, ``color_match``, ``mouth``…).

    Raises:
        NoFaceError: an image has no face, or ``face_index`` is out of range.
    """
    src_face = analyzer.largest(source_img)
    if src_face is None:
        raise NoFaceError(source_name)
    faces = analyzer.detect(template_img)
    if not faces:
        raise NoFaceError(template_name)
    if face_index is None:
        tpl_face = max(faces, key=lambda f: f.area)
    elif -len(faces) <= face_index < len(faces):
        tpl_face = faces[face_index]
    else:
        raise NoFaceError(template_name, code="face.index", index=face_index, found=len(faces))
    return fuse_face(template_img, tpl_face, source_img, src_face, ratio, **options)


__all__ = [
    "FOREHEAD_HEIGHT",
    "FusionResult",
    "MaskMode",
    "MouthMode",
    "forehead_arc",
    "fuse_face",
    "swap_faces",
]
