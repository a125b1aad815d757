"""One home for every default of EasyPhoto, typed.

Numbers follow EasyPhoto's published defaults (see DESIGN.md §4) unless a comment says why we differ.
Settings that an operator usually changes per machine can be overridden by environment variables
(``EASYPHOTO_*``); :func:`env_overrides` documents which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Default pixel limit for decoding a photo (40 megapixels). Checked before decoding.
DEFAULT_MAX_PIXELS = 40_000_000

#: Caption every training image gets (EasyPhoto's fixed trigger caption).
TRIGGER_CAPTION = "easyphoto_face, easyphoto, 1person"


def easyphoto_home() -> Path:
    """Folder that holds user models, jobs and caches: ``$EASYPHOTO_HOME`` or ``~/.easyphoto``."""
    env = os.environ.get("EASYPHOTO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".easyphoto"


@dataclass(frozen=True)
class FaceConfig:
    """Face detection and identity settings.

    ``hog_max_side``: images are analysed on a copy whose long side is at most this many pixels;
    landmarks and boxes are mapped back to full resolution. 1024 keeps HOG at ~0.3 s per photo and
    still finds faces down to ~40 px in that copy.
    ``min_face_for_upsample``: HOG only sees faces ≥ ~80 px; when the working copy is small we
    upsample once so faces down to ~40 px are found (see :func:`choose_upsample`).
    ``cnn_fallback`` / ``cnn_max_side``: when HOG finds nothing, run dlib's CNN detector on a copy
    whose long side is at most ``cnn_max_side`` (bounded at a few seconds on a CPU).
    ``same_person_threshold``: descriptor distance below which two faces are the same person. dlib
    documents 0.6 for its ResNet descriptor (99.38% on LFW); measured here same-person pairs are
    ≤ 0.52 and 97% of different-person pairs ≥ 0.6.
    """

    hog_max_side: int = 1024
    cnn_fallback: bool = True
    cnn_max_side: int = 640
    same_person_threshold: float = 0.6
    embedding_jitters: int = 1


@dataclass(frozen=True)
class ModelConfig:
    """Which diffusion weights to load and how (device, dtype, memory options).

    Environment overrides: ``EASYPHOTO_BASE_MODEL``, ``EASYPHOTO_VAE``, ``EASYPHOTO_DEVICE``,
    ``EASYPHOTO_DTYPE``, ``EASYPHOTO_CONTROLNET_CANNY`` / ``_OPENPOSE`` / ``_COLOR`` / ``_TILE``,
    ``EASYPHOTO_MODEL_CONFIG_DIR`` (local diffusers config folder for single-file checkpoints
    offline), ``EASYPHOTO_CPU_OFFLOAD``, ``EASYPHOTO_VAE_TILING``.
    """

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    vae: str | None = None
    controlnet_canny: str = "lllyasviel/control_v11p_sd15_canny"
    controlnet_openpose: str = "lllyasviel/control_v11p_sd15_openpose"
    controlnet_color: str = "lllyasviel/control_v11p_sd15_shuffle"
    controlnet_tile: str = "lllyasviel/control_v11f1e_sd15_tile"
    config_dir: str | None = None
    device: str | None = None  # None: cuda > mps > cpu
    dtype: str | None = None  # None: float16 on cuda, float32 elsewhere
    cpu_offload: bool = False
    vae_tiling: bool = False
    local_files_only: bool = False


_ENV_KEYS: dict[type, dict[str, str]] = {
    ModelConfig: {
        "base_model": "EASYPHOTO_BASE_MODEL",
        "vae": "EASYPHOTO_VAE",
        "device": "EASYPHOTO_DEVICE",
        "dtype": "EASYPHOTO_DTYPE",
        "controlnet_canny": "EASYPHOTO_CONTROLNET_CANNY",
        "controlnet_openpose": "EASYPHOTO_CONTROLNET_OPENPOSE",
        "controlnet_color": "EASYPHOTO_CONTROLNET_COLOR",
        "controlnet_tile": "EASYPHOTO_CONTROLNET_TILE",
        "config_dir": "EASYPHOTO_MODEL_CONFIG_DIR",
        "cpu_offload": "EASYPHOTO_CPU_OFFLOAD",
        "vae_tiling": "EASYPHOTO_VAE_TILING",
        "local_files_only": "HF_HUB_OFFLINE",
    },
}


def _coerce(value: str, like: Any, name: str) -> Any:
    if isinstance(like, bool):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: expected a boolean, got {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def env_overrides(cfg: T, environ: dict[str, str] | None = None) -> T:
    """Return ``cfg`` with fields replaced by their ``EASYPHOTO_*`` environment variables, if set."""
    env = os.environ if environ is None else environ
    keys = _ENV_KEYS.get(type(cfg), {})
    changes: dict[str, Any] = {}
    for f in fields(cfg):  # type: ignore[arg-type]
        var = keys.get(f.name)
        if var and var in env:
            changes[f.name] = _coerce(env[var], getattr(cfg, f.name), var)
    return replace(cfg, **changes) if changes else cfg  # type: ignore[type-var]


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "TRIGGER_CAPTION",
    "FaceConfig",
    "ModelConfig",
    "easyphoto_home",
    "env_overrides",
    "field",
]
