"""EasyPhoto: an AI portrait studio.

The public API is small::

    import easyphoto as ep

    image = ep.load_image("me.jpg")            # RGB uint8 array; ep.BadImageError on bad input
    faces = ep.FaceAnalyzer().detect(image)     # list[Face], left to right
    ep.similarity(faces[0], other_face)         # 0..1, calibrated; ep.same_person(a, b) -> bool
    prepared = ep.prepare(paths, "work/alice", ep.PrepareConfig())        # dataset + report
    model = ep.train("alice", prepared, ep.TrainConfig(max_steps=800))    # user model on disk
    portraits = ep.generate("template.jpg", ["alice"], ep.GenerateConfig(seed=1))
    portraits = ep.generate(prompt="a photo on a beach", user_ids=["alice"])  # SDXL draws the template
    result = ep.swap("me.jpg", "template.jpg")                           # instant, no diffusion

``prepare``, ``train``, ``generate`` and ``swap`` are loaded on first use: importing easyphoto never
imports torch or diffusers.
"""

from __future__ import annotations

from typing import Any

from .config import (
    FaceConfig,
    GenerateConfig,
    ModelConfig,
    PrepareConfig,
    ServerSettings,
    Text2PhotoConfig,
    TrainConfig,
    easyphoto_home,
)
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
    UserModelError,
)
from .face.analyzer import Face, FaceAnalyzer, face_distance, same_person, similarity
from .imageio import load_image

__version__ = "0.1.0"

#: Public functions loaded on first use (they import torch / diffusers / opencv when they run).
_LAZY = {
    "prepare": ("easyphoto.stages.prepare", "prepare"),
    "train": ("easyphoto.workflows", "train"),
    "prepare_and_train": ("easyphoto.workflows", "prepare_and_train"),
    "generate": ("easyphoto.text_to_photo", "generate"),
    "generate_batch": ("easyphoto.workflows", "generate_batch"),
    "swap": ("easyphoto.workflows", "swap"),
    "UserModel": ("easyphoto.users", "UserModel"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'easyphoto' has no attribute {name!r}")


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
    "Text2PhotoConfig",
    "InvalidUserIdError",
    "ModelConfig",
    "ModelNotFoundError",
    "NoFaceError",
    "NotEnoughPhotosError",
    "UnknownUserError",
    "ServerSettings",
    "UserBusyError",
    "UserModel",
    "UserModelError",
    "__version__",
    "easyphoto_home",
    "face_distance",
    "generate",
    "generate_batch",
    "load_image",
    "prepare",
    "prepare_and_train",
    "same_person",
    "similarity",
    "swap",
    "train",
]
