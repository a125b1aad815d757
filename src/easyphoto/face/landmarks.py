"""The iBUG 300-W 68-point landmark scheme, defined once: index groups, validation, the face frame,
the mirror renumbering and the two forehead builders.

Every module of :mod:`easyphoto.face` takes its landmark indices and its face frame from here. Only
numpy and the standard library are imported (no OpenCV, no torch).

Left and right: the group names follow iBUG and are the *subject's* sides, so on an upright,
unmirrored photo ``RIGHT_EYE`` (36–41) and ``RIGHT_BROW`` (17–21) are on the *image-left*. Vectors
and point orders described as "image-left" / "image-right" refer to the picture.

The groups are plain ``list[int]`` so they index numpy arrays (``lm[MOUTH]``) and concatenate
(``RIGHT_EYE + LEFT_EYE``); treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Number of points in the scheme.
N_LANDMARKS = 68

JAW = list(range(0, 17))  # image-left ear to image-right ear, chin at 8
RIGHT_BROW = list(range(17, 22))  # subject's right = image left
LEFT_BROW = list(range(22, 27))
BROWS = RIGHT_BROW + LEFT_BROW
NOSE = list(range(27, 36))  # bridge 27–30 (tip 30), then the nostril base 31–35
RIGHT_EYE = list(range(36, 42))  # subject's right = image left
LEFT_EYE = list(range(42, 48))
MOUTH = list(range(48, 68))
OUTER_LIPS = list(range(48, 60))
INNER_LIPS = list(range(60, 68))
INNER = list(range(17, 68))  # everything inside the jaw line: brows, nose, eyes, mouth

CHIN = 8
NOSE_TIP = 30
#: Inner corners of the image-left and image-right eye (either side of the nose bridge).
INNER_EYE_CORNERS = [39, 42]
#: Image-left and image-right mouth corners.
MOUTH_CORNERS = [48, 54]

#: Renumbering for a horizontally mirrored face: ``mirrored_lm = flipped_lm[MIRROR]`` keeps each
#: index's meaning (point 36 stays the outer corner of the image-left eye, and so on).
MIRROR = (
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1))  # brows
    + list(range(21, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)

#: Height of :func:`forehead_arc` above the brows, as a fraction of the eye-to-mouth distance. 0.55
#: reaches well into the forehead (identity rises measurably, DESIGN.md §5) but stays under most
#: hairlines; face fusion's skin weighting handles fringes that come lower.
FOREHEAD_HEIGHT = 0.55


def landmarks_of(face: Any) -> np.ndarray:
    """The 68 landmarks as a ``68×2`` float64 array.

    Accepts a :class:`~easyphoto.face.analyzer.Face` (its ``.landmarks``) or anything array-like
    holding 68 points (``68×2`` or flat ``136``). Raises ``ValueError`` for any other number of points.
    """
    lm = np.asarray(getattr(face, "landmarks", face), dtype=np.float64)
    if lm.size != 2 * N_LANDMARKS:
        raise ValueError(f"expected {N_LANDMARKS} landmarks (68×2), got shape {lm.shape}")
    return lm.reshape(N_LANDMARKS, 2)


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally mirrored image (``width`` pixels wide), renumbered with
    :data:`MIRROR` so each index keeps its meaning."""
    flipped = landmarks_of(landmarks).copy()
    flipped[:, 0] = (width - 1) - flipped[:, 0]
    return flipped[MIRROR]


@dataclass(frozen=True, eq=False)
class FaceFrame:
    """A face's own axes and sizes in image coordinates (y down), from :func:`face_frame`.

    Attributes:
        eye_mid: midpoint of the two eye centres.
        right: unit vector from the image-left eye centre to the image-right one (``(1, 0)`` when
            the eyes coincide).
        up: unit vector perpendicular to ``right``, towards the top of the head.
        width: jaw width along ``right`` (points 0 to 16), at least 1.
        height: brow line (mean of the brows) to the chin along ``up``, at least 1.
        eye_mouth: eye midpoint to the mouth's centre along ``up``, at least 1.
    """

    eye_mid: np.ndarray
    right: np.ndarray
    up: np.ndarray
    width: float
    height: float
    eye_mouth: float


def face_frame(landmarks: np.ndarray) -> FaceFrame:
    """The face-aligned frame of 68 landmarks (it tilts with the head): see :class:`FaceFrame`."""
    lm = landmarks_of(landmarks)
    eye_l, eye_r = lm[RIGHT_EYE].mean(axis=0), lm[LEFT_EYE].mean(axis=0)
    eye_mid = 0.5 * (eye_l + eye_r)
    right = eye_r - eye_l
    norm = np.linalg.norm(right)
    right = right / norm if norm > 1e-6 else np.array([1.0, 0.0])
    up = np.array([right[1], -right[0]])  # y grows downward: rotate (1, 0) to (0, -1)
    width = float(abs(np.dot(lm[JAW[-1]] - lm[JAW[0]], right)))
    height = float(np.dot(lm[BROWS].mean(axis=0) - lm[CHIN], up))
    eye_mouth = float(np.dot(eye_mid - lm[MOUTH].mean(axis=0), up))
    return FaceFrame(eye_mid, right, up, max(width, 1.0), max(height, 1.0), max(eye_mouth, 1.0))


# Two forehead builders, on purpose: dlib's 68 points stop at the brows. ``forehead_points`` (the
# brows lifted) hugs the brow line and suits masks; ``forehead_arc`` (half an ellipse from temple to
# temple) gives points that correspond between two faces, so face fusion can warp with them.


def forehead_points(landmarks: np.ndarray, height: float = 0.5) -> np.ndarray:
    """Points over the forehead, ``height`` × (brow-to-chin height) above the eyebrows (for masks).

    The forehead matters for identity (measured: extending the hull raises face-fusion similarity)
    and for a mask that does not cut the face at the brows. The points follow the brow arc, lifted
    along the face's own "up" direction (so they tilt with the head); the temples (jaw points 0 and
    16) are lifted by half as much. Returns 12 ``float32`` points: temple, 10 brow points, temple.
    """
    lm = landmarks_of(landmarks)
    frame = face_frame(lm)
    brows = lm[BROWS] + frame.up * (height * frame.height)
    temples = lm[[JAW[0], JAW[-1]]] + frame.up * (0.5 * height * frame.height)
    return np.vstack([temples[:1], brows, temples[1:]]).astype(np.float32)


def forehead_arc(landmarks: np.ndarray, height: float = FOREHEAD_HEIGHT, n: int = 7) -> np.ndarray:
    """``n`` points on an arc over the forehead (image-right to image-left), for face fusion.

    The arc is half an ellipse through the jaw's ends at eye height, reaching ``height`` × the
    eye-to-mouth distance above the highest brow point. Built the same way on two faces, the points
    correspond, so they can drive a warp as well as a mask. Returns ``n×2`` float64.
    """
    lm = landmarks_of(landmarks)
    frame = face_frame(lm)
    eye_mid, right, up = frame.eye_mid, frame.right, frame.up
    jaw_l, jaw_r = lm[JAW[0]], lm[JAW[-1]]
    centre = eye_mid + right * float(np.dot(0.5 * (jaw_l + jaw_r) - eye_mid, right))
    rx = 0.5 * abs(float(np.dot(jaw_r - jaw_l, right)))
    brow_top = float(np.max((lm[BROWS] - centre) @ up))
    ry = max(brow_top, 0.0) + height * frame.eye_mouth
    t = np.linspace(0.0, np.pi, n + 2)[1:-1]
    return centre + np.outer(rx * np.cos(t), right) + np.outer(ry * np.sin(t), up)


__all__ = [
    "BROWS",
    "CHIN",
    "FOREHEAD_HEIGHT",
    "INNER",
    "INNER_EYE_CORNERS",
    "INNER_LIPS",
    "JAW",
    "LEFT_BROW",
    "LEFT_EYE",
    "MIRROR",
    "MOUTH",
    "MOUTH_CORNERS",
    "NOSE",
    "NOSE_TIP",
    "N_LANDMARKS",
    "OUTER_LIPS",
    "RIGHT_BROW",
    "RIGHT_EYE",
    "FaceFrame",
    "face_frame",
    "forehead_arc",
    "forehead_points",
    "landmarks_of",
    "mirror_landmarks",
]
