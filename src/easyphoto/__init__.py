"""EasyPhoto: an AI portrait studio.

The public API is small::

    import easyphoto as ep

    image = ep.load_image("me.jpg")            # RGB uint8 array; ep.BadImageError on bad input
    faces = ep.FaceAnalyzer().detect(image)     # list[Face], left to right
    ep.similarity(faces[0], other_face)         # 0..1, calibrated; ep.same_person(a, b) -> bool
"""

from __future__ import annotations

from .config import FaceConfig, GenerateConfig, ModelConfig, PrepareConfig, TrainConfig, easyphoto_home
from .errors import (
    BadImageError,
    ConfigError,
    EasyPhotoError,
    InvalidUserIdError,
    ModelNotFoundError,
    NoFaceError,
    NotEnoughPhotosError,
    UnknownUserError,
    UserBusyError,
)
from .face.analyzer import Face, FaceAnalyzer, face_distance, same_person, similarity
from .imageio import load_image

__version__ = "0.1.0"


__all__ = [
    "BadImageError",
    "ConfigError",
    "EasyPhotoError",
    "Face",
    "FaceAnalyzer",
    "FaceConfig",
    "GenerateConfig",
    "PrepareConfig",
    "TrainConfig",
    "InvalidUserIdError",
    "ModelConfig",
    "ModelNotFoundError",
    "NoFaceError",
    "NotEnoughPhotosError",
    "UnknownUserError",
    "UserBusyError",
    "__version__",
    "easyphoto_home",
    "face_distance",
    "load_image",
    "same_person",
    "similarity",
]
