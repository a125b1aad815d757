"""What generation hands back: a portrait with its scores, parameters and (on request) stage images."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...imageio import save_png


@dataclass
class FaceScore:
    """How one template face came out."""

    face_index: int
    user_id: str
    similarity: float
    box: tuple[float, float, float, float]  # in the portrait's pixels

    def scaled(self, factor: float) -> FaceScore:
        """The same score with its box in a portrait enlarged ``factor`` ×."""
        box = tuple(round(v * factor, 1) for v in self.box)
        return FaceScore(self.face_index, self.user_id, self.similarity, box)  # type: ignore[arg-type]


@dataclass
class Portrait:
    """A generated portrait: the full-size image, per-face scores and every parameter used."""

    array: np.ndarray
    scores: list[FaceScore]
    params: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    #: Each face's stages (``face0_fused``, ``face0_canny``, ``face0_first``, …) when asked for.
    intermediates: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def image(self):
        """The portrait as a ``PIL.Image`` (``portrait.save(path)`` keeps the parameters)."""
        from PIL import Image

        return Image.fromarray(self.array)

    @property
    def score(self) -> float:
        """Mean similarity over the generated faces (0 when none)."""
        return float(np.mean([s.similarity for s in self.scores])) if self.scores else 0.0

    def save(self, path: str | Path) -> Path:
        """Write a PNG with the parameters and scores in text chunks (``easyphoto`` key, JSON)."""
        text = {
            "easyphoto": json.dumps(self.params, default=str),
            "easyphoto_scores": json.dumps([asdict(s) for s in self.scores]),
            "Software": "easyphoto",
        }
        return save_png(self.array, path, text=text)

    def save_intermediates(self, folder: str | Path) -> list[Path]:
        """Write the stage images (``generate(..., keep_intermediates=True)``) as numbered PNGs."""
        folder = Path(folder)
        items = enumerate(self.intermediates.items())
        return [save_png(img, folder / f"{i:02d}_{name}.png") for i, (name, img) in items]


def read_png_params(path: str | Path) -> dict[str, Any]:
    """The generation parameters embedded in a portrait PNG by :meth:`Portrait.save`."""
    from PIL import Image

    with Image.open(path) as im:
        raw = im.text.get("easyphoto") if hasattr(im, "text") else None
    if raw is None:
        raise ConfigError(f"{path}: no easyphoto parameters in this PNG")
    return json.loads(raw)


__all__ = ["FaceScore", "Portrait", "read_png_params"]
