"""Boxes, crops and 2-D transforms for face work.

Conventions used throughout:

* A *box* is ``(x0, y0, x1, y1)`` in pixels (floats allowed), ``x1``/``y1`` exclusive-ish as in dlib.
* An *image size* is ``(width, height)``; an array *shape* is ``(height, width[, channels])``.
* A *transform* is a ``2×3`` float64 matrix ``M`` mapping a point ``p`` (column ``[x, y, 1]``) of the
  source image to ``M @ [x, y, 1]`` in the destination image — the same matrices ``cv2.warpAffine``
  takes.
* Angles are in degrees in image coordinates (y down): a positive *roll* (see
  :func:`eye_angle`) means the image-right eye sits lower than the image-left eye.

Nothing here imports torch; everything is numpy + OpenCV (+ scipy's Delaunay for
:class:`PiecewiseAffine`) and cheap (microseconds to a few ms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .landmarks import LEFT_EYE, N_LANDMARKS, RIGHT_EYE

Box = tuple[float, float, float, float]
Size = tuple[int, int]

#: The 5-point ArcFace/InsightFace alignment template for a 112×112 crop (eyes, nose tip, mouth
#: corners, image left to right) — the order of :func:`easyphoto.face.analyzer.kps_from_landmarks`.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


# --------------------------------------------------------------------------------------------- boxes


def box_center(box: Box) -> tuple[float, float]:
    """Centre ``(cx, cy)`` of a box."""
    return (0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3]))


def box_size(box: Box) -> float:
    """Size of a box: the mean of its width and height (the same measure as ``Face.size``)."""
    return 0.5 * ((box[2] - box[0]) + (box[3] - box[1]))


def square_box(center: Sequence[float], side: float) -> Box:
    """Axis-aligned square of side ``side`` centred on ``center``."""
    cx, cy = float(center[0]), float(center[1])
    h = 0.5 * float(side)
    return (cx - h, cy - h, cx + h, cy + h)


def scale_box(box: Box, factor: float) -> Box:
    """Grow (``factor`` > 1) or shrink a box about its centre."""
    cx, cy = box_center(box)
    hw, hh = 0.5 * (box[2] - box[0]) * factor, 0.5 * (box[3] - box[1]) * factor
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def clip_box(box: Box, image_size: Size) -> Box:
    """Intersect a box with the image ``(width, height)`` (may become empty: x1 ≤ x0)."""
    w, h = image_size
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))


def box_area(box: Box) -> float:
    """Area of a box (0 when empty)."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def inside_fraction(box: Box, image_size: Size) -> float:
    """Fraction of the box's area that lies inside the image (1.0 = fully inside)."""
    area = box_area(box)
    return box_area(clip_box(box, image_size)) / area if area > 0 else 0.0


def int_box(box: Box) -> tuple[int, int, int, int]:
    """Round a box outward to integer pixels."""
    return (math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3]))


def crop_box(
    face_box: Box,
    ratio: float = 3.0,
    image_size: Size | None = None,
    *,
    shift_inside: bool = False,
) -> Box:
    """Square crop around a face at a *crop ratio*.

    The square has side ``ratio × box_size(face_box)`` and is centred on the face box: ratio 3 (EasyPhoto's
    default) grows the box by one face size on each side, which holds the hair, the ears and the neck.

    Args:
        face_box: the face box (e.g. ``Face.box``).
        ratio: side of the crop in face sizes.
        image_size: ``(width, height)``; only used with ``shift_inside``.
        shift_inside: move the square (without changing its size, unless it is larger than the image,
            then shrink it) so it lies inside the image. The face is then no longer centred; leave it
            off and let :func:`warp_image` pad instead when the face must stay centred.
    """
    side = ratio * box_size(face_box)
    box = square_box(box_center(face_box), side)
    if shift_inside:
        if image_size is None:
            raise ValueError("shift_inside needs image_size")
        w, h = image_size
        side = min(side, float(w), float(h))
        box = square_box(box_center(face_box), side)
        dx = max(0.0, -box[0]) - max(0.0, box[2] - w)
        dy = max(0.0, -box[1]) - max(0.0, box[3] - h)
        box = (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)
    return box


def points_box(points: np.ndarray) -> Box:
    """Bounding box of a set of points (``N×2``)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (float(x0), float(y0), float(x1), float(y1))


# ---------------------------------------------------------------------------------------- transforms


def transform_points(matrix: np.ndarray, points: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Apply a ``2×3`` transform to ``N×2`` points (computed in float64); returns ``dtype`` ``N×2``."""
    m = np.asarray(matrix, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = pts @ m[:, :2].T + m[:, 2]
    return out.astype(dtype, copy=False)


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """Inverse of an invertible ``2×3`` transform."""
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(m)[:2]


def compose(*matrices: np.ndarray) -> np.ndarray:
    """Compose ``2×3`` transforms, applied **right to left**: ``compose(B, A)`` maps p → B(A(p))."""
    out = np.eye(3)
    for m in matrices:
        out = out @ np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return out[:2]


def transform_scale(matrix: np.ndarray) -> float:
    """Mean linear scale factor of a transform: ``sqrt(|det A|)`` of its ``2×2`` part."""
    return float(math.sqrt(abs(np.linalg.det(np.asarray(matrix, dtype=np.float64)[:, :2]))))


def similarity_matrix(
    angle: float = 0.0,
    scale: float = 1.0,
    center: Sequence[float] = (0.0, 0.0),
    target: Sequence[float] | None = None,
) -> np.ndarray:
    """Rotation by ``angle`` degrees and uniform ``scale`` about ``center``, moved to ``target``.

    The point ``center`` maps to ``target`` (default: ``center`` itself). In image coordinates (y down) a
    positive angle turns a direction vector's angle ``atan2(dy, dx)`` up by ``angle``, i.e. clockwise on
    screen; :func:`level_rotation` uses ``-roll`` to make eyes level.
    """
    a = math.radians(angle)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    cx, cy = float(center[0]), float(center[1])
    tx, ty = (cx, cy) if target is None else (float(target[0]), float(target[1]))
    return np.array([[c, -s, tx - (c * cx - s * cy)], [s, c, ty - (s * cx + c * cy)]], dtype=np.float64)


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation; no reflection).

    Umeyama's closed form: minimises ``Σ |s R p + t - q|²`` over corresponding points. Used with the
    5 keypoints to align a face to a template (``ARCFACE_TEMPLATE_112``) or onto another face.

    Args:
        src_pts: ``N×2`` source points (N ≥ 2).
        dst_pts: ``N×2`` destination points.

    Returns:
        ``2×3`` matrix mapping source to destination.
    """
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need ≥ 2 corresponding points, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("source points are all the same point")
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def affine_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares full affine transform (6 degrees of freedom) from ≥ 3 point pairs."""
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 3:
        raise ValueError(f"need ≥ 3 corresponding points, got {src.shape} and {dst.shape}")
    a = np.hstack([src, np.ones((len(src), 1))])
    sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
    return sol.T


def eye_angle(points: np.ndarray) -> float:
    """Roll of a face in degrees from its keypoints: the angle of the line from the image-left eye
    to the image-right eye (0 = level). Accepts 5 keypoints or 68 landmarks."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == N_LANDMARKS:
        left, right = pts[RIGHT_EYE].mean(axis=0), pts[LEFT_EYE].mean(axis=0)  # image-left, -right
    elif len(pts) == 5:
        left, right = pts[0], pts[1]
    else:
        raise ValueError(f"expected 5 keypoints or 68 landmarks, got {len(pts)} points")
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def level_rotation(center: Sequence[float], roll: float) -> np.ndarray:
    """Rotation about ``center`` that makes eyes with the given ``roll`` (degrees) level."""
    return similarity_matrix(-roll, 1.0, center)


def crop_transform(
    center: Sequence[float],
    side: float,
    out_size: int | Size,
    angle: float = 0.0,
) -> np.ndarray:
    """Transform that cuts a square of ``side`` pixels centred on ``center`` and turned by ``angle``
    degrees (the face's roll, to level it; 0 = upright crop) and scales it to ``out_size``."""
    ow, oh = (out_size, out_size) if isinstance(out_size, int) else out_size
    scale = min(ow, oh) / float(side)
    return similarity_matrix(-angle, scale, center, (0.5 * ow, 0.5 * oh))


def align_transform(
    kps: np.ndarray, size: int = 112, template: np.ndarray = ARCFACE_TEMPLATE_112
) -> np.ndarray:
    """Similarity transform that maps 5 keypoints onto ``template`` scaled to a ``size``-pixel square."""
    dst = np.asarray(template, dtype=np.float64) * (size / 112.0)
    return similarity_transform(kps, dst)


# ------------------------------------------------------------------------------------------- warping


def warp_image(
    image: np.ndarray,
    matrix: np.ndarray,
    out_size: int | Size,
    *,
    border: int | float | Sequence[float] | None = 255,
    interpolation: int | None = None,
) -> np.ndarray:
    """``cv2.warpAffine`` that stays sharp *and* alias-free when the transform shrinks a lot.

    Only the source region the output needs is touched; when the transform downscales by more than
    ~1.5× that region is first reduced with ``INTER_AREA`` (a real box filter) so a 12 MP photo
    turned into a 512 px crop does not shimmer. Pixels outside the source image take the constant
    ``border`` value (``None``: replicate the edge).

    Args:
        image: ``H×W`` or ``H×W×C`` array (uint8 or float32).
        matrix: ``2×3`` source → output transform.
        out_size: output side or ``(width, height)``.
        border: constant for outside pixels (255 = white for uint8 images), or ``None`` to replicate.
        interpolation: OpenCV flag; default ``INTER_LINEAR`` (``INTER_CUBIC`` when enlarging).
    """
    import cv2

    ow, oh = (out_size, out_size) if isinstance(out_size, int) else out_size
    m = np.asarray(matrix, dtype=np.float64)
    h, w = image.shape[:2]
    # Source region the output needs (inverse-map the output corners), with a small margin.
    inv = invert_transform(m)
    corners = transform_points(inv, np.array([[0, 0], [ow, 0], [0, oh], [ow, oh]], dtype=np.float64))
    x0, y0 = np.floor(corners.min(axis=0)) - 2
    x1, y1 = np.ceil(corners.max(axis=0)) + 2
    x0, y0 = int(max(0, x0)), int(max(0, y0))
    x1, y1 = int(min(w, x1)), int(min(h, y1))
    channels = () if image.ndim == 2 else (image.shape[2],)
    if border is None:
        fill: float | tuple[float, ...] = 0
    elif isinstance(border, (int, float)):
        fill = float(border)
    else:
        fill = tuple(float(v) for v in border)
    if x1 <= x0 or y1 <= y0:  # the output lies entirely outside the image
        out = np.empty((oh, ow, *channels), dtype=image.dtype)
        out[...] = fill if not isinstance(fill, tuple) else np.asarray(fill, dtype=image.dtype)
        return out
    roi = image[y0:y1, x0:x1]
    m = compose(m, similarity_matrix(0.0, 1.0, (0.0, 0.0), (x0, y0)))  # roi coords → output
    scale = transform_scale(m)
    if scale < 0.66:
        # Box-filter the region down to about the output's scale first.
        f = min(1.0, scale * 1.25)
        rw, rh = max(1, round(roi.shape[1] * f)), max(1, round(roi.shape[0] * f))
        fx, fy = rw / roi.shape[1], rh / roi.shape[0]
        roi = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
        pre = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
        m = compose(m, invert_transform(pre))
        scale = transform_scale(m)
    if interpolation is None:
        interpolation = cv2.INTER_CUBIC if scale > 1.05 else cv2.INTER_LINEAR
    if border is None:
        mode, value = cv2.BORDER_REPLICATE, 0
    else:
        # A bare number would fill only the first channel: spell it out for every channel.
        mode, value = cv2.BORDER_CONSTANT, (fill,) * 4 if not isinstance(fill, tuple) else fill
    src = np.ascontiguousarray(roi)
    return cv2.warpAffine(src, m, (ow, oh), flags=interpolation, borderMode=mode, borderValue=value)


class PiecewiseAffine:
    """Piecewise affine warps over one Delaunay triangulation of control points in the output frame.

    The triangles are rasterised once (an index image); :meth:`map` then gives the dense backward
    map (for :func:`cv2.remap`) to any set of corresponding source points. Pixels outside every
    triangle use a fallback affine.
    """

    def __init__(self, dst_pts: np.ndarray, shape: tuple[int, int]) -> None:
        import cv2
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
        """Backward map ``(map_x, map_y)`` sending each output pixel to its source position.

        ``src_pts`` correspond to the control points given at construction; ``fallback`` is the
        ``2×3`` transform used outside every (non-degenerate) triangle.
        """
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


def remap_image(source: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, scale: float) -> np.ndarray:
    """``cv2.remap`` of ``source`` at a backward map (e.g. from :class:`PiecewiseAffine`), alias-free.

    Only the region the map reads is touched; when ``scale`` (source pixels per output pixel) is
    above 1.3 that region is first area-shrunk by ``scale``, so a much larger source does not alias.
    Outside the image, pixels are reflected.
    """
    import cv2

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


def valid_region(matrix: np.ndarray, image_size: Size, out_size: int | Size) -> np.ndarray:
    """``uint8`` mask (0/255) of the output pixels of :func:`warp_image` that come from inside the
    source image (not from the border padding)."""
    import cv2

    ow, oh = (out_size, out_size) if isinstance(out_size, int) else out_size
    w, h = image_size
    corners = transform_points(matrix, np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64))
    mask = np.zeros((oh, ow), dtype=np.uint8)
    cv2.fillConvexPoly(mask, np.round(corners * 16).astype(np.int32), 255, cv2.LINE_AA, 4)
    return np.where(mask >= 128, 255, 0).astype(np.uint8)


def crop_face(
    image: np.ndarray,
    face_box: Box,
    out_size: int = 512,
    *,
    ratio: float = 3.0,
    roll: float = 0.0,
    border: int | float | Sequence[float] | None = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """Square face crop at ``ratio`` face sizes, centred on the face, turned by ``roll`` degrees
    (pass ``face.roll`` to level the eyes), resized to ``out_size``.

    Parts of the square outside the photo are filled with ``border`` (white by default), so the face
    stays centred even at an image edge.

    Returns:
        ``(crop, matrix)``: the crop and the ``2×3`` transform from photo to crop coordinates (apply
        it to landmarks with :func:`transform_points`).
    """
    side = ratio * box_size(face_box)
    m = crop_transform(box_center(face_box), side, out_size, roll)
    return warp_image(image, m, out_size, border=border), m


def align_face(
    image: np.ndarray, kps: np.ndarray, size: int = 112, *, border: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Align a face by its 5 keypoints to the ArcFace template at ``size`` pixels.

    Returns ``(aligned, matrix)``.
    """
    m = align_transform(kps, size)
    return warp_image(image, m, size, border=border), m


__all__ = [
    "ARCFACE_TEMPLATE_112",
    "Box",
    "PiecewiseAffine",
    "Size",
    "affine_transform",
    "align_face",
    "align_transform",
    "box_area",
    "box_center",
    "box_size",
    "clip_box",
    "compose",
    "crop_box",
    "crop_face",
    "crop_transform",
    "eye_angle",
    "inside_fraction",
    "int_box",
    "invert_transform",
    "level_rotation",
    "points_box",
    "remap_image",
    "scale_box",
    "similarity_matrix",
    "similarity_transform",
    "transform_points",
    "transform_scale",
    "valid_region",
    "warp_image",
]
