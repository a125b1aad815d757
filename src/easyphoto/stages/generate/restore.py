"""Face restoration of the finished portrait (``GenerateConfig.face_restore``): each face made is
aligned to FFHQ's frame by five of its landmarks, restored by GFPGAN and blended back at
``face_restore_weight``. It runs after super-resolution, so it sees the faces at their final size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...face.landmarks import LEFT_EYE, NOSE_TIP, RIGHT_EYE, landmarks_of

#: The mouth corners among dlib's 68 points (image-left, image-right).
MOUTH_CORNERS = (48, 54)


def five_points(face: Any, scale: float = 1.0) -> np.ndarray:
    """Image-left eye, image-right eye, nose tip and mouth corners of ``face`` (×``scale``), in the
    order of FFHQ's reference points."""
    lm = landmarks_of(face).astype(np.float32)
    points = [
        lm[RIGHT_EYE].mean(0),
        lm[LEFT_EYE].mean(0),
        lm[NOSE_TIP],
        lm[MOUTH_CORNERS[0]],
        lm[MOUTH_CORNERS[1]],
    ]
    return np.stack(points) * scale


def restore_step(
    restorer: Any, image: np.ndarray, made: Sequence[Any], cfg: Any, scale: float, device: Any = "cpu"
) -> tuple[np.ndarray, dict[str, Any]]:
    """``image`` with the faces in ``made`` (template coordinates × ``scale``) restored, and what to
    record; unchanged when ``cfg.face_restore`` is off or no face was made."""
    if not cfg.face_restore or not made:
        return image, {}
    from ...diffusion.face_restore import restore_faces

    points = [five_points(face, scale) for face in made]
    out = restore_faces(restorer(), image, points, cfg.face_restore_weight, device)
    return out, {"face_restore": cfg.face_restore_weight}


__all__ = ["MOUTH_CORNERS", "five_points", "restore_step"]
