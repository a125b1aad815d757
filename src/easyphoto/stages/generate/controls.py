"""The control images of the two diffusion passes: one registry entry per ControlNet.

Adding a ControlNet is one entry in :data:`CONTROLS` (how its control image is drawn, which
:class:`~easyphoto.config.GenerateConfig` fields weigh it in each pass) plus its weights' source in
:data:`easyphoto.diffusion.models.CONTROLNET_FIELDS`. A pass lists the nets it uses by name
(``GenerateConfig.first_controlnets`` / ``second_controlnets``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import GenerateConfig
from ...errors import ConfigError


@dataclass(frozen=True)
class ControlInputs:
    """What a pass draws its control images from.

    ``image``: the crop this pass repaints (after face fusion). ``pose``: the user's 68 landmarks placed
    on the template face (EasyPhoto's "replaced" face), in ``image`` pixels.
    """

    image: np.ndarray
    pose: np.ndarray


@dataclass(frozen=True)
class ControlSpec:
    """One ControlNet: how to draw its control image, and its weight field per pass (first, second)."""

    build: Callable[[ControlInputs, GenerateConfig], np.ndarray]
    weights: tuple[str, str]


def _canny(x: ControlInputs, cfg: GenerateConfig) -> np.ndarray:
    from ...diffusion.controls import canny_image

    return canny_image(x.image, cfg.canny_low, cfg.canny_high)


def _openpose(x: ControlInputs, cfg: GenerateConfig) -> np.ndarray:
    from ...face.keypoints import face_keypoints_image

    return face_keypoints_image([x.pose], x.image.shape[:2])


def _color(x: ControlInputs, cfg: GenerateConfig) -> np.ndarray:
    from ...diffusion.controls import color_image

    # The cell is sized for a short_side crop: a crop worked at its own larger size gets larger cells,
    # so the colour net sees the same coarse layout.
    scale = max(1.0, min(x.image.shape[:2]) / cfg.short_side)
    return color_image(x.image, max(1, round(cfg.color_cell * scale)))


def _tile(x: ControlInputs, cfg: GenerateConfig) -> np.ndarray:
    from ...diffusion.controls import tile_image

    return tile_image(x.image)


#: Every ControlNet generation can use, by name (EasyPhoto: canny 0.5 / openpose 0.5 / colour 0.85 in
#: the first pass, canny 1.0 + tile 1.0 in the second).
CONTROLS: dict[str, ControlSpec] = {
    "canny": ControlSpec(_canny, ("canny_weight", "second_canny_weight")),
    "openpose": ControlSpec(_openpose, ("openpose_weight", "openpose_weight")),
    "color": ControlSpec(_color, ("color_weight", "color_weight")),
    "tile": ControlSpec(_tile, ("tile_weight", "tile_weight")),
}


def check_controlnets(cfg: GenerateConfig) -> None:
    """Refuse unknown or repeated ControlNet names in either pass (:class:`ConfigError`)."""
    for field in ("first_controlnets", "second_controlnets"):
        names = list(getattr(cfg, field))
        unknown = [n for n in names if n not in CONTROLS]
        if unknown:
            raise ConfigError(
                f"GenerateConfig.{field}: unknown ControlNet {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(CONTROLS)}"
            )
        if len(set(names)) != len(names):
            raise ConfigError(f"GenerateConfig.{field}: a ControlNet is listed twice: {names}")


def control_images(
    names: Sequence[str], inputs: ControlInputs, cfg: GenerateConfig, second: bool = False
) -> tuple[list[np.ndarray], list[float]]:
    """The control image and weight of each ControlNet in ``names`` for the first (or second) pass."""
    images, weights = [], []
    for name in names:
        spec = CONTROLS[name]
        images.append(spec.build(inputs, cfg))
        weights.append(float(getattr(cfg, spec.weights[1 if second else 0])))
    return images, weights


def family_config(cfg: GenerateConfig, cache: Any) -> GenerateConfig:
    """The settings a face is painted with on ``cache``'s model family: unchanged for SD1.5; for SDXL
    the crop is worked at ``sdxl_short_side`` (at most that, unless ``max_short_side`` is larger) and
    each pass keeps the ControlNets SDXL has (:attr:`SDXLCache.controlnet_names`), canny when none
    is left. See :class:`~easyphoto.config.GenerateConfig`."""
    if getattr(cache, "family", "sd15") == "sd15":
        return cfg
    have = tuple(cache.controlnet_names)

    def usable(names: Sequence[str]) -> tuple[str, ...]:
        return tuple(n for n in names if n in have) or (("canny",) if "canny" in have else have[:1])

    side = cfg.sdxl_short_side
    return cfg.replace(
        short_side=side,
        max_short_side=max(cfg.max_short_side or side, side),
        first_controlnets=usable(cfg.first_controlnets),
        second_controlnets=usable(cfg.second_controlnets),
    )


__all__ = [
    "CONTROLS",
    "ControlInputs",
    "ControlSpec",
    "check_controlnets",
    "control_images",
    "family_config",
]
