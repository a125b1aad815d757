"""Pose images for text-to-photo: the shipped presets (prompts, OpenPose body poses) and their drawing.

An OpenPose ControlNet reads a body pose as a coloured stick figure on black: the 18 COCO keypoints
(nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist, right hip/knee/ankle, left
hip/knee/ankle, right/left eye, right/left ear) joined by 17 limbs, each limb and point in its own
colour. :func:`draw_body_pose` draws that convention (limbs as filled ellipses 4 px wide at 512 px,
60% of their colour; joints as 4 px dots), which is what the public SDXL openpose nets were trained on.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError

PRESETS_FILE = Path(__file__).with_name("presets.json")

#: Limbs as pairs of keypoint indices (COCO-18 order), in OpenPose's drawing order.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
#: OpenPose's 18 colours (RGB): limb i and keypoint i use colour i.
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def presets() -> dict[str, Any]:
    """The shipped presets: ``{"prompts": {name: text}, "poses": {name: 18 points or None}}``."""
    data = json.loads(PRESETS_FILE.read_text(encoding="utf-8"))
    for name, points in data["poses"].items():
        if len(points) != 18:
            raise ConfigError(f"{PRESETS_FILE.name}: pose {name!r} has {len(points)} keypoints, expected 18")
    return data


def preset_prompt(name: str) -> str:
    """The prompt of preset ``name`` (:class:`ConfigError` listing the names when unknown)."""
    prompts = presets()["prompts"]
    if name not in prompts:
        raise ConfigError(f"unknown prompt preset {name!r}; known: {', '.join(prompts)}")
    return prompts[name]


def draw_body_pose(points: list[Any], width: int, height: int) -> np.ndarray:
    """An OpenPose map (RGB uint8, ``height`` × ``width``) of 18 keypoints given as fractions of the size
    (``None``: not visible)."""
    import cv2

    if len(points) != 18:
        raise ConfigError(f"a body pose has 18 keypoints, got {len(points)}")
    canvas = np.zeros((height, width, 3), np.uint8)
    xy = [None if p is None else (float(p[0]) * width, float(p[1]) * height) for p in points]
    stick = max(1, round(4 * min(width, height) / 512))
    for i, (a, b) in enumerate(LIMBS):
        if xy[a] is None or xy[b] is None:
            continue
        (x0, y0), (x1, y1) = xy[a], xy[b]  # type: ignore[misc]
        length = float(np.hypot(x1 - x0, y1 - y0))
        angle = float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))
        poly = cv2.ellipse2Poly(
            (round((x0 + x1) / 2), round((y0 + y1) / 2)), (round(length / 2), stick), round(angle), 0, 360, 1
        )
        layer = canvas.copy()
        cv2.fillConvexPoly(layer, poly, COLORS[i])
        canvas = cv2.addWeighted(canvas, 0.4, layer, 0.6, 0)
    for i, p in enumerate(xy):
        if p is not None:
            cv2.circle(canvas, (round(p[0]), round(p[1])), stick, COLORS[i], thickness=-1)
    return canvas


def pose_image(pose: Any, width: int, height: int) -> tuple[np.ndarray, str]:
    """The pose control image and how it is recorded in the PNG: a shipped pose's name (drawn at the
    template's size), a file path or bytes of an OpenPose map (loaded as it is; the pipeline resizes it),
    or an RGB array."""
    from ...imageio import load_image

    if isinstance(pose, np.ndarray):
        return pose, "array"
    if isinstance(pose, str) and pose in presets()["poses"] and not Path(pose).exists():
        return draw_body_pose(presets()["poses"][pose], width, height), f"preset:{pose}"
    if isinstance(pose, (str, Path)) and not Path(pose).exists():
        raise ConfigError(
            f"pose {str(pose)!r}: no such file, and not a shipped pose ({', '.join(presets()['poses'])})"
        )
    label = str(pose) if isinstance(pose, (str, Path)) else "pose"
    return load_image(pose, name=label), Path(label).name


__all__ = ["COLORS", "LIMBS", "draw_body_pose", "pose_image", "preset_prompt", "presets"]
