"""Helpers the tests share (no test module imports another test module).

* :func:`txt2img` / :func:`img2img`: diffusers pipelines on a :class:`ModelCache`'s shared modules
  (the studio itself only builds ControlNet-inpaint pipelines).
* :func:`png_bytes`: a small encoded image.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _parts(cache: Any) -> dict[str, Any]:
    return {
        "vae": cache.vae,
        "text_encoder": cache.text_encoder,
        "tokenizer": cache.tokenizer,
        "unet": cache.unet,
        "scheduler": cache.new_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def txt2img(cache: Any) -> Any:
    """A text-to-image pipeline on the cache's shared modules (fresh scheduler)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**_parts(cache))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def img2img(cache: Any) -> Any:
    """An image-to-image pipeline on the cache's shared modules."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**_parts(cache))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def png_bytes(w: int = 64, h: int = 64, value: int = 128) -> bytes:
    """A flat grey PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def tiny_cache(seed: int = 0) -> Any:
    """A :class:`ModelCache` over tiny random components built in memory (no model folder)."""
    from easyphoto.diffusion.models import ModelCache
    from easyphoto.diffusion.tiny import tiny_components

    return ModelCache.from_components(tiny_components(seed))
