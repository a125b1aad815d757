"""OpenPose-style face keypoint images and the "replaced" face points EasyPhoto feeds to openpose.

* :func:`face_keypoints_image` draws the 68 face points of each face as small white dots on black,
  the way ControlNet-openpose's face annotator draws them (dlib's iBUG 68-point order is OpenPose's
  face order; OpenPose's two extra pupil points are not drawn).
* :func:`replace_face_points` places the user's (``face_id``) 68 landmarks onto a template face with
  the 5-point similarity transform, so the openpose control keeps the template's position, size and
  roll but carries the user's face proportions (the fit is
  :func:`easyphoto.face.geometry.similarity_transform`: Umeyama 1991, reflection excluded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

from .geometry import similarity_transform, transform_points
from .landmarks import landmarks_of

#: Dot radius in pixels, as ControlNet's openpose face annotator draws at 512 px.
DOT_RADIUS = 3


def _kps_of(face: Any) -> np.ndarray:
    kps = np.asarray(getattr(face, "kps", face), dtype=np.float64)
    if kps.shape != (5, 2):
        raise ValueError(f"expected 5×2 kps, got shape {kps.shape}")
    return kps


def replace_face_points(template_face: Any, source_face: Any) -> np.ndarray:
    """The source face's 68 landmarks placed onto the template face (EasyPhoto's "replaced" face).

    The similarity transform is fitted on the 5 keypoints (eyes, nose tip, mouth corners) of both
    faces and applied to the source's 68 landmarks. Faces are :class:`~easyphoto.face.analyzer.Face`
    objects (``.kps``, ``.landmarks``) or, for ``source_face``, a ``(kps, landmarks)`` pair.

    Returns:
        ``68×2`` float array in the template image's pixel coordinates.
    """
    kps_t = _kps_of(template_face)
    if isinstance(source_face, tuple):
        kps_s, lm_s = (np.asarray(a, dtype=np.float64) for a in source_face)
    else:
        kps_s, lm_s = _kps_of(source_face), landmarks_of(source_face)
    return transform_points(similarity_transform(kps_s, kps_t), lm_s, np.float64)


def face_keypoints_image(
    landmarks_list: Iterable[np.ndarray],
    size: tuple[int, int],
    *,
    radius: int = DOT_RADIUS,
) -> np.ndarray:
    """OpenPose-style face keypoint control image: white dots on black.

    Args:
        landmarks_list: one ``68×2`` array (pixel coordinates) per face; a single ``68×2`` array is
            accepted too.
        size: ``(height, width)`` of the image.
        radius: dot radius in pixels (3, like the openpose annotator at 512 px).

    Returns:
        ``H×W×3`` ``uint8`` RGB; points outside the image are skipped.
    """
    h, w = int(size[0]), int(size[1])
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    items = list(landmarks_list) if not isinstance(landmarks_list, np.ndarray) else [landmarks_list]
    if isinstance(landmarks_list, np.ndarray) and landmarks_list.ndim == 3:
        items = list(landmarks_list)
    for lm in items:
        pts = np.asarray(lm, dtype=np.float64).reshape(-1, 2)
        for x, y in pts:
            if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x < w and 0 <= y < h):
                continue
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (255, 255, 255), -1, cv2.LINE_8)
    return canvas


__all__ = [
    "DOT_RADIUS",
    "face_keypoints_image",
    "replace_face_points",
]
