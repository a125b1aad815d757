"""Classical face fusion: put a source face onto a template face without any diffusion model.

:func:`fuse_face` works in four stages, all on a crop around the template face, so its cost does
not grow with the photo's size and every pixel outside that crop is left untouched bit for bit:

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
from .geometry import box_size, points_box, similarity_transform, transform_points
from .masks import grow_mask, polygon_mask

MaskMode = Literal["forehead", "hull"]
MouthMode = Literal["auto", "source", "template"]

# iBUG 68-point groups used here.
_JAW = np.arange(0, 17)
_BROWS = np.arange(17, 27)
_R_EYE = np.arange(36, 42)  # image-left eye
_L_EYE = np.arange(42, 48)
_OUTER_LIPS = np.arange(48, 60)
_INNER_LIPS = np.arange(60, 68)
_INNER = np.arange(17, 68)  # brows, nose, eyes, mouth

#: Height of the forehead arc above the brows, as a fraction of the eye-to-mouth distance. 0.55
#: reaches well into the forehead (identity rises measurably, DESIGN.md §5) but stays under most
#: hairlines; the skin weighting handles fringes that come lower.
FOREHEAD_HEIGHT = 0.55
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


def _landmarks_of(face: Any) -> np.ndarray:
    lm = np.asarray(getattr(face, "landmarks", face), dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"face fusion needs 68 landmarks, got shape {lm.shape}")
    return lm


def _face_frame(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Eye midpoint, unit right and up axes (image coordinates), and eye-to-mouth distance."""
    eye_l, eye_r = lm[_R_EYE].mean(axis=0), lm[_L_EYE].mean(axis=0)
    eye_mid = 0.5 * (eye_l + eye_r)
    right = eye_r - eye_l
    right /= max(float(np.linalg.norm(right)), 1e-6)
    up = np.array([right[1], -right[0]])
    mouth = lm[48:68].mean(axis=0)
    h = max(float(np.dot(eye_mid - mouth, up)), 1.0)
    return eye_mid, right, up, h


def forehead_arc(landmarks: np.ndarray, height: float = FOREHEAD_HEIGHT, n: int = 7) -> np.ndarray:
    """``n`` points on an arc over the forehead, from the 68 landmarks (image-right to image-left).

    The arc is half an ellipse through the jaw's ends at eye height, reaching ``height`` × the
    eye-to-mouth distance above the highest brow point. Built the same way on two faces, the points
    correspond, so they can drive a warp as well as a mask.
    """
    lm = _landmarks_of(landmarks)
    eye_mid, right, up, h = _face_frame(lm)
    jaw_mid = 0.5 * (lm[0] + lm[16])
    centre = eye_mid + right * float(np.dot(jaw_mid - eye_mid, right))
    rx = 0.5 * abs(float(np.dot(lm[16] - lm[0], right)))
    brow_top = float(np.max((lm[_BROWS] - centre) @ up))
    ry = max(brow_top, 0.0) + height * h
    t = np.linspace(0.0, np.pi, n + 2)[1:-1]
    return centre + np.outer(rx * np.cos(t), right) + np.outer(ry * np.sin(t), up)


_MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1))  # brows
    + list(range(21, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


def _mirror_landmarks(lm: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally mirrored image, renumbered so each index keeps its meaning."""
    flipped = lm.copy()
    flipped[:, 0] = (width - 1) - flipped[:, 0]
    return flipped[_MIRROR]


def _yaw(lm: np.ndarray) -> float:
    """Signed head turn in -1..1 from where the nose tip sits between the jaw ends (0 = frontal)."""
    _, right, _, _ = _face_frame(lm)
    left_d = float(np.dot(lm[30] - lm[0], right))
    right_d = float(np.dot(lm[16] - lm[30], right))
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
    tri = tri[np.any((tri < 17) | (tri >= 68), axis=1)]
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
    gap = np.linalg.norm(lm[[61, 62, 63]] - lm[[67, 66, 65]], axis=1).mean()
    width = max(float(np.linalg.norm(lm[54] - lm[48])), 1e-6)
    return float(gap / width)


# ------------------------------------------------------------------------------------------- warp


class _PiecewiseAffine:
    """Piecewise affine warps over one Delaunay triangulation of control points in the output frame.

    The triangles are rasterised once (an index image); :meth:`map` then gives the dense backward
    map (for :func:`cv2.remap`) to any set of corresponding source points. Pixels outside every
    triangle use a fallback affine.
    """

    def __init__(self, dst_pts: np.ndarray, shape: tuple[int, int]) -> None:
        from scipy.spatial import Delaunay

        self.dst = dst_pts
        self.tri = Delaunay(dst_pts, qhull_options="QJ").simplices
        d = dst_pts[self.tri]  # (n, 3, 2)
        self.mats = np.concatenate([d, np.ones((len(self.tri), 3, 1))], axis=2)  # rows [x, y, 1]
        det = np.linalg.det(self.mats)
        self.ok = np.abs(det) > 1e-6
        h, w = shape
        self.index = np.full((h, w), len(self.tri), dtype=np.uint16)
        # Larger triangles last, so a degenerate sliver never overwrites a real triangle's pixels.
        for i in np.argsort(np.abs(det)):
            if self.ok[i]:
                cv2.fillConvexPoly(self.index, np.round(d[i] * 16).astype(np.int32), int(i), cv2.LINE_8, 4)
        self.xs = np.arange(w, dtype=np.float32)[None, :]
        self.ys = np.arange(h, dtype=np.float32)[:, None]

    def map(self, src_pts: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward map ``(map_x, map_y)`` sending each output pixel to its source position."""
        n = len(self.tri)
        coef = np.empty((n + 1, 3, 2))
        coef[:-1][self.ok] = np.linalg.solve(self.mats[self.ok], src_pts[self.tri][self.ok])
        coef[:-1][~self.ok] = fallback.T
        coef[-1] = fallback.T
        coef = coef.astype(np.float32)
        c = [coef[:, i, j][self.index] for j in range(2) for i in range(3)]
        map_x = c[0] * self.xs + c[1] * self.ys + c[2]
        map_y = c[3] * self.xs + c[4] * self.ys + c[5]
        return map_x, map_y


def _sample(source: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, scale: float) -> np.ndarray:
    """Sample ``source`` at the map, shrinking it first when it is much larger (``scale`` > 1.3)."""
    h, w = source.shape[:2]
    x0 = int(np.clip(np.floor(map_x.min()) - 2, 0, w - 1))
    x1 = int(np.clip(np.ceil(map_x.max()) + 3, x0 + 1, w))
    y0 = int(np.clip(np.floor(map_y.min()) - 2, 0, h - 1))
    y1 = int(np.clip(np.ceil(map_y.max()) + 3, y0 + 1, h))
    sub = source[y0:y1, x0:x1]
    mx, my = map_x - x0, map_y - y0
    if scale > 1.3:
        f = 1.0 / scale
        size = (max(1, round(sub.shape[1] * f)), max(1, round(sub.shape[0] * f)))
        fx, fy = size[0] / sub.shape[1], size[1] / sub.shape[0]
        sub = cv2.resize(sub, size, interpolation=cv2.INTER_AREA)
        mx = (mx + 0.5) * fx - 0.5
        my = (my + 0.5) * fy - 0.5
    return cv2.remap(sub, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


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
    for group in (_R_EYE, _L_EYE, _OUTER_LIPS):
        m = np.maximum(m, _poly_mask(shape, lm[group]))
    brows = np.zeros(shape, dtype=np.uint8)
    thick = max(1, int(round(0.06 * size)))
    for group in (np.arange(17, 22), np.arange(22, 27)):
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
    eye_mid, right, up, h = _face_frame(lm)
    inner = 0.5 * (lm[39] + lm[42])
    half_w = 0.2 * float(np.linalg.norm(lm[42] - lm[39]))
    # Sample a small upright patch along the face axes: from the inner eye corners up to the brows.
    top = float(np.max((lm[[21, 22]] - inner) @ up))
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


# ----------------------------------------------------------------------------------------- fusion


def _crop_box(pts: np.ndarray, margin: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape
    x0, y0 = np.floor(pts.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + margin).astype(int) + 1
    return max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1))


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
    lm_t, lm_s = _landmarks_of(template_face), _landmarks_of(source_face)
    flipped = False
    yaw_t, yaw_s = _yaw(lm_t), _yaw(lm_s)
    if yaw_t * yaw_s < 0 and abs(yaw_t - yaw_s) - abs(yaw_t + yaw_s) > 0.2:
        # The faces turn opposite ways: a mirrored source matches the template's pose much better
        # (faces are near-symmetric; identity survives a mirror, hidden cheeks do not reappear).
        source = np.ascontiguousarray(source[:, ::-1])
        lm_s = _mirror_landmarks(lm_s, source.shape[1])
        flipped = True
    size_t, size_s = box_size(points_box(lm_t)), box_size(points_box(lm_s))
    fh_t, fh_s = forehead_arc(lm_t), forehead_arc(lm_s)
    # Morph target: the template's outline (jaw, forehead) with the inner features moved toward the
    # source's proportions (similarity-aligned), by ``ratio``. Both faces are warped to this shape, so
    # lips and eyes coincide at every ratio (no doubled mouth) and at ratio 1 the features keep the
    # source's geometry, which carries much of the identity. The move is shortened until no triangle
    # folds over (different poses would otherwise tear the face).
    ctl_t, ctl_s = np.vstack([lm_t, fh_t]), np.vstack([lm_s, fh_s])
    sim_st = similarity_transform(lm_s[_INNER], lm_t[_INNER])
    shift = np.zeros_like(ctl_t)
    shift[_INNER] = transform_points(sim_st, lm_s[_INNER], np.float64) - lm_t[_INNER]
    steps = _safe_morph_steps(ctl_t, shift, ratio)
    strength = float(steps[_INNER].mean())
    ctl_m = ctl_t + steps[:, None] * shift
    lm_m = ctl_m[:68]
    box = _crop_box(np.vstack([ctl_t, ctl_m]), 0.12 * size_t + 4, template.shape[:2])
    x0, y0, x1, y1 = box
    out = template.copy()
    full_mask = np.zeros(template.shape[:2], dtype=np.float32)
    if ratio == 0.0 or x1 - x0 < 4 or y1 - y0 < 4:
        return FusionResult(out, full_mask, full_mask.copy(), ratio, box, timings=timings)
    crop_t = template[y0:y1, x0:x1]
    shape = crop_t.shape[:2]
    off = np.array([x0, y0], dtype=np.float64)
    lm_mc, fh_tc, ctl_mc = lm_m - off, fh_t - off, ctl_m - off
    lm_tc = lm_mc  # masks are drawn on the morph shape, where both warped faces now are

    # 1. Warp both faces to the morph shape; the crop border stays put for the template and maps by
    # the overall similarity for the source.
    ch, cw = shape
    border = np.array(
        [[-1, -1], [cw / 2, -1], [cw, -1], [cw, ch / 2], [cw, ch], [cw / 2, ch], [-1, ch], [-1, ch / 2]],
        dtype=np.float64,
    )
    sim = similarity_transform(ctl_mc, ctl_s)
    pwa = _PiecewiseAffine(np.vstack([ctl_mc, border]), shape)
    map_x, map_y = pwa.map(np.vstack([ctl_s, transform_points(sim, border, np.float64)]), sim)
    warped = _sample(source, map_x, map_y, size_s / max(size_t, 1.0))
    ident = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    tmap_x, tmap_y = pwa.map(np.vstack([ctl_t - off, border]), ident)
    morphed_t = cv2.remap(crop_t, tmap_x, tmap_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    timings["warp"] = time.perf_counter() - t0

    # 2. Colour.
    t1 = time.perf_counter()
    jaw_hull = _poly_mask(shape, lm_tc[_JAW])
    face_hull = _poly_mask(shape, np.vstack([lm_tc[_JAW], fh_tc]))
    features = _feature_mask(shape, lm_tc, size_t)
    cheeks = jaw_hull * (1.0 - features)
    cheeks = _erode(cheeks, 0.03 * size_t)
    lab_t = rgb_to_lab(morphed_t)
    lab_w = rgb_to_lab(warped)
    # Skin statistics, refined once so beards, stubble and shadows do not count as skin.
    stats_t = lab_stats(lab_t, cheeks)
    stats_w = lab_stats(lab_w, cheeks)
    like_t, like_w = _skin_likeness(lab_t, stats_t), _skin_likeness(lab_w, stats_w)
    skin_t, skin_w = cheeks * (like_t > 0.3), cheeks * (like_w > 0.3)
    stats_t = lab_stats(lab_t, skin_t if skin_t.sum() > 0.3 * cheeks.sum() else cheeks)
    stats_w = lab_stats(lab_w, skin_w if skin_w.sum() > 0.3 * cheeks.sum() else cheeks)
    # Forehead band: inside the face hull, above the brows (where a fringe or the source's hair may be).
    _, _, up_c, h_c = _face_frame(lm_tc)
    brow_hull = _poly_mask(shape, np.vstack([lm_tc[_JAW], lm_tc[_BROWS] + 0.15 * h_c * up_c]))
    forehead_band = _erode(face_hull, 0.03 * size_t) * (1.0 - brow_hull)
    skin_both = _skin_likeness(lab_t, stats_t) * _skin_likeness(lab_w, stats_w)
    if color_match:
        lab_m = transfer_lab(lab_w, stats_w, stats_t)
        # Local low-frequency correction over the skin of both faces (normalised convolution).
        # Support: the template's skin (not its beard) on the cheeks, skin of both on the forehead.
        support = np.maximum(skin_t, forehead_band * (skin_both > 0.3)) * (1.0 - features)
        sigma = LOCAL_COLOR_SIGMA * size_t
        den = _blur(support, sigma)
        num = _blur((lab_t - lab_m) * support[..., None], sigma)
        corr = num / np.maximum(den, 0.15)[..., None]
        lab_m = lab_m + np.clip(corr, -LOCAL_COLOR_LIMIT, LOCAL_COLOR_LIMIT)
        if suppress_makeup:
            ring = np.zeros(shape, dtype=np.float32)
            for group in (_R_EYE, _L_EYE):
                eye = _poly_mask(shape, lm_tc[group])
                ring = np.maximum(ring, _dilate(eye, 0.07 * size_t) - _dilate(eye, 0.012 * size_t))
            ring = _blur(ring, 0.015 * size_t)
            floor = lab_t[..., 0] - 6.0
            lab_m[..., 0] = lab_m[..., 0] + ring * np.maximum(floor - lab_m[..., 0], 0.0)
        lab_m[..., 0] = np.clip(lab_m[..., 0], 0.0, 100.0)
        warped = lab_to_rgb(lab_m)
    timings["colour"] = time.perf_counter() - t1

    # 3. Mask.
    t2 = time.perf_counter()
    glasses = (
        _has_glasses(cv2.cvtColor(morphed_t, cv2.COLOR_RGB2GRAY), lm_tc),
        _has_glasses(cv2.cvtColor(source, cv2.COLOR_RGB2GRAY), lm_s),
    )
    if mask_mode == "forehead":
        hull_pts = np.vstack([lm_tc[_JAW], fh_tc])
    elif mask_mode == "hull":
        hull_pts = lm_tc
    else:
        raise ValueError(f"mask_mode must be 'forehead' or 'hull', got {mask_mode!r}")
    if any(glasses):
        # Widen at eye height so frames are replaced or kept whole, not cut at the mask's side.
        _, right, up, _ = _face_frame(lm_tc)
        widen = 0.1 * size_t
        hull_pts = np.vstack([hull_pts, lm_tc[[0, 1]] - right * widen, lm_tc[[15, 16]] + right * widen])
    feather = 0.035 * size_t
    mask = _blur(_erode(_poly_mask(shape, hull_pts), 2.2 * feather), feather)
    if mask_mode == "forehead":
        guard = _blur(skin_both, 0.02 * size_t)
        band = _blur(forehead_band, feather)
        mask = mask * (1.0 - band + band * guard)
    # Mouth interior: when the two mouths differ in openness, a cross-dissolve shows ghost teeth.
    # Take the interior from one face only: the more open one (squeezing teeth looks natural,
    # stretching closed lips does not).
    open_t, open_s = _mouth_openness(lm_t), _mouth_openness(lm_s)
    differ = max(open_t, open_s) > OPEN_MOUTH and not (0.6 < (open_s + 1e-3) / (open_t + 1e-3) < 1.0 / 0.6)
    mouth_from = "blend"
    if mouth in ("template", "source"):
        mouth_from = mouth
    elif mouth == "auto" and differ and 0.0 < ratio < 1.0:
        mouth_from = "template" if open_t > open_s else "source"
    elif mouth != "auto":
        raise ValueError(f"mouth must be 'auto', 'template' or 'source', got {mouth!r}")
    mask = np.clip(mask, 0.0, 1.0).astype(np.float32)
    alpha = ratio * mask
    if mouth_from != "blend":
        inner = _blur(_dilate(_poly_mask(shape, lm_tc[_INNER_LIPS]), 0.01 * size_t), 0.01 * size_t)
        inner = inner * (mask > 0.5)
        target = 1.0 if mouth_from == "source" else 0.0
        alpha = alpha * (1.0 - inner) + target * inner
    timings["mask"] = time.perf_counter() - t2

    # 4. Blend: alpha over the morphed template; exactly the template wherever nothing moved or mixed.
    t3 = time.perf_counter()
    a3 = alpha[..., None]
    tpl = morphed_t.astype(np.float32)
    blended = np.clip(tpl + a3 * (warped.astype(np.float32) - tpl) + 0.5, 0, 255).astype(np.uint8)
    xs = np.arange(cw, dtype=np.float32)[None, :]
    ys = np.arange(ch, dtype=np.float32)[:, None]
    moved = (np.abs(tmap_x - xs) + np.abs(tmap_y - ys)) > 1e-3
    touched = (alpha > 0) | moved
    out[y0:y1, x0:x1] = np.where(touched[..., None], blended, crop_t)
    full_mask[y0:y1, x0:x1] = mask
    full_alpha = np.zeros_like(full_mask)
    full_alpha[y0:y1, x0:x1] = alpha
    timings["blend"] = time.perf_counter() - t3
    return FusionResult(
        out, full_mask, full_alpha, ratio, box, mouth_from, glasses, flipped, strength, timings
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
        raise NoFaceError(template_name, f"no face #{face_index} (found {len(faces)}, numbered from 0)")
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
