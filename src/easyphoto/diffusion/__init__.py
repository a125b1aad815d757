"""Diffusion models and pixels: loading SD1.5, ControlNets and LoRAs, tiny random models, control images.

This package imports torch and diffusers; importing ``easyphoto.diffusion`` itself stays light (the
submodules load them when used). It never knows about faces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from easyphoto.diffusion.models import ModelCache, pick_device_dtype
    from easyphoto.diffusion.tiny import build_tiny_model

_LAZY = {
    "ModelCache": "easyphoto.diffusion.models",
    "pick_device_dtype": "easyphoto.diffusion.models",
    "build_tiny_model": "easyphoto.diffusion.tiny",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'easyphoto.diffusion' has no attribute {name!r}")


__all__ = ["ModelCache", "build_tiny_model", "pick_device_dtype"]
