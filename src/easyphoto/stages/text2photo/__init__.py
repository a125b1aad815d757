"""Text-to-photo's first half: SDXL draws a high-resolution template from a prompt, no upload needed.

Named steps of :meth:`TemplateMaker.make`:

1. **pose** (optional): a shipped pose drawn as an OpenPose map, or the caller's OpenPose image
   (:mod:`.pose`);
2. **scene LoRA** (optional): an SDXL style LoRA set on the SDXL modules at its weight (an SD1.5 LoRA is
   refused before loading);
3. **render**: SDXL (``ModelConfig.template_model``), held to the pose by the SDXL openpose ControlNet;
   the seed fixes the result.

The portrait half (painting the user into the template) is the generate stage's; composing the two is
:func:`easyphoto.text_to_photo.text_to_photo`'s job. Every parameter that fixes the template is in
:attr:`Template.params`, which goes into the portrait's PNG.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config import ModelConfig, Text2PhotoConfig
from ...imageio import save_png
from .pose import draw_body_pose, pose_image, preset_prompt, presets

#: PNG text key of a template's parameters.
TEMPLATE_KEY = "easyphoto_template"


@dataclass
class Template:
    """An SDXL template: the image, every parameter that made it, and how long it took."""

    array: np.ndarray
    params: dict[str, Any]
    seconds: float = 0.0
    pose: np.ndarray | None = field(default=None, repr=False)

    def save(self, path: str | Path) -> Path:
        """Write the template as a PNG with its parameters (``easyphoto_template`` text chunk)."""
        import json

        return save_png(
            self.array, path, text={TEMPLATE_KEY: json.dumps(self.params), "Software": "easyphoto"}
        )


class TemplateMaker:
    """Holds the SDXL cache across templates (:class:`~easyphoto.diffusion.sdxl.SDXLCache`)."""

    def __init__(self, cache: Any = None, *, model_config: ModelConfig | None = None) -> None:
        from ...diffusion.sdxl import SDXLCache

        self.cache = cache or SDXLCache(model_config or ModelConfig())

    def make(
        self,
        config: Text2PhotoConfig,
        pose: Any = None,
        *,
        scene_lora: str | Path | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Template:
        """Render one template. ``pose``: a shipped pose name, an OpenPose image (path, bytes, array) or
        ``None``. ``scene_lora``: the resolved LoRA file (``config.scene_lora`` is its name, recorded)."""
        from ...diffusion.sdxl import render_template

        t0 = time.perf_counter()
        seed = config.seed if config.seed is not None and config.seed >= 0 else _random_seed()
        self.cache.check_source()
        control, pose_label = (None, None)
        if pose is not None:
            control, pose_label = pose_image(pose, config.width, config.height)
        lora = scene_lora if scene_lora is not None else config.scene_lora
        self.cache.set_scene_lora(lora, config.scene_lora_weight)
        array = render_template(
            self.cache, config.prompt, config.negative_prompt, width=config.width, height=config.height,
            steps=config.steps, guidance_scale=config.guidance_scale, seed=seed, pose=control,
            pose_weight=config.pose_weight, on_step=on_step,
        )  # fmt: skip
        params = {
            **config.to_dict(),
            "seed": seed,
            "template_model": str(self.cache.config.template_model),
            "vae": self.cache.vae_source(),
            "scheduler": self.cache.config.scheduler,
            "pose": pose_label,
            "pose_sha256": _sha256(control) if control is not None else None,
            "controlnet_openpose_sdxl": self._pose_net() if control is not None else None,
            "scene_lora": Path(lora).name if lora else None,
        }
        return Template(array, params, round(time.perf_counter() - t0, 3), control)

    def _pose_net(self) -> str:
        from ...registry import effective_source

        return str(effective_source(self.cache.config, "controlnet_openpose_sdxl"))


def _random_seed() -> int:
    return int(np.random.default_rng().integers(2**31))


def _sha256(array: np.ndarray) -> str:
    """Hash of a pose image's pixels (the PNG names the pose; this proves which one it was)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def read_template_params(path: str | Path) -> dict[str, Any]:
    """The parameters of a template PNG written by :meth:`Template.save`."""
    import json

    from PIL import Image

    from ...errors import ConfigError

    with Image.open(path) as im:
        raw = getattr(im, "text", {}).get(TEMPLATE_KEY)
    if raw is None:
        raise ConfigError(f"{path}: no text-to-photo template parameters in this PNG")
    return json.loads(raw)


__all__ = [
    "TEMPLATE_KEY",
    "Template",
    "TemplateMaker",
    "draw_body_pose",
    "pose_image",
    "preset_prompt",
    "presets",
    "read_template_params",
]
