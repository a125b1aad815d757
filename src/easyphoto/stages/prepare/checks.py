"""Measures preparation decides by: sharpness, cut-off, duplicates, frontalness, identity centre.

Each is a plain function over arrays; the thresholds they are compared with live in
:class:`~easyphoto.config.PrepareConfig` with what was measured to choose them.
"""

from __future__ import annotations

import numpy as np

from ...face.geometry import Box, align_face, int_box
from ...face.landmarks import face_frame, forehead_points

#: Side of the grey face patch the blur measure runs on (the minimum face size: always a downscale).
SHARPNESS_SIZE = 128


def sharpness(image: np.ndarray, face_box: Box) -> float:
    """Variance of the Laplacian of the face box resized to 128×128 grey.

    Normalising the patch size makes the measure independent of the photo's resolution (the same
    photo at 240p and 1080p scores alike); see ``PrepareConfig.blur_threshold`` for measured values.
    """
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = int_box(face_box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    patch = cv2.resize(grey, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(patch.astype(np.float32), cv2.CV_32F).var())


def cut_off_fraction(landmarks: np.ndarray, image_size: tuple[int, int], margin: float = 0.15) -> float:
    """Fraction of the head outline that lies outside the image.

    The outline is the convex hull of the 68 landmarks plus the forehead points, grown by ``margin``
    about its centre (ears, sides of the head). A face whose cheek touches the photo's edge scores
    ~0.05–0.1; a fully visible face with some space around it scores 0.
    """
    import cv2

    lm = np.asarray(landmarks, dtype=np.float64)
    pts = np.vstack([lm, forehead_points(lm, 0.5)])
    center = pts.mean(axis=0)
    pts = center + (pts - center) * (1.0 + margin)
    hull = cv2.convexHull(pts.astype(np.float32).reshape(-1, 1, 2))
    area = float(cv2.contourArea(hull))
    if area <= 0:
        return 0.0
    w, h = image_size
    rect = np.array([[[0, 0]], [[w, 0]], [[w, h]], [[0, h]]], dtype=np.float32)
    inter, _ = cv2.intersectConvexConvex(hull, rect)
    return float(np.clip(1.0 - inter / area, 0.0, 1.0))


def face_signature(image: np.ndarray, kps: np.ndarray, size: int = 64) -> np.ndarray:
    """Unit-norm, zero-mean grey patch of the face aligned by its 5 keypoints: near-duplicate photos
    (the same shot resized, re-compressed or re-cropped) correlate ≥ 0.9, different shots ≤ ~0.65."""
    import cv2

    aligned, _ = align_face(image, kps, size, border=None)
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0).ravel()
    grey -= grey.mean()
    norm = float(np.linalg.norm(grey))
    return grey / norm if norm > 1e-6 else grey


def frontalness(landmarks: np.ndarray) -> float:
    """1 for a frontal face, towards 0 as it turns sideways: where the nose tip sits between the jaw
    ends (points 0 and 16), measured along the eye line."""
    lm = np.asarray(landmarks, dtype=np.float64)
    frame = face_frame(lm)
    right, width = frame.right, frame.width
    r = float(np.dot(lm[30] - lm[0], right)) / width
    return float(np.clip(1.0 - 2.0 * abs(r - 0.5), 0.0, 1.0))


def levelness(roll: float) -> float:
    """1 for level eyes, falling linearly to 0 at a 45° roll."""
    return float(max(0.0, 1.0 - min(abs(roll), 45.0) / 45.0))


def robust_center(embeddings: np.ndarray, inlier_distance: float = 0.6) -> np.ndarray:
    """Identity centre of a set that may hold a few other people: the mean of the embeddings within
    ``inlier_distance`` (dlib's same-person threshold) of the medoid (the embedding with the smallest
    median distance to the others)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if len(emb) <= 2:
        return emb[0].astype(np.float32) if len(emb) == 1 else emb.mean(axis=0).astype(np.float32)
    dist = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2)
    medoid = int(np.argmin(np.median(dist, axis=1)))
    inliers = dist[medoid] < inlier_distance
    return emb[inliers].mean(axis=0).astype(np.float32)
