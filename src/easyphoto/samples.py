"""Public-domain photos that installed packages already ship: the demo's people and sample templates.

scikit-image carries NASA's portrait of astronaut Eileen Collins (public domain) and Lav Varshney's
"cameraman" (CC0). They are the only photos of people among our dependencies' data, and licensed for
any use, so the demo runs on them and a new server's templates folder starts with them as samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Sample templates a new templates folder gets: file name → (scikit-image image, upscale to px).
SAMPLE_TEMPLATES = {"sample-astronaut.png": ("astronaut", 1024), "sample-cameraman.png": ("camera", 1200)}


def people() -> dict[str, np.ndarray]:
    """The two public-domain people, RGB: ``astronaut`` and ``cameraman``, upscaled (2×, 2.3×) so each
    face is over the 128 px preparation asks of a training photo."""
    return {"astronaut": _sample("astronaut", 1024), "cameraman": _sample("camera", 1200)}


def _sample(name: str, side: int) -> np.ndarray:
    import cv2
    from skimage import data

    image = getattr(data, name)()
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
    return image if image.ndim == 3 else np.stack([image] * 3, axis=-1)


def seed_templates(folder: Path) -> list[Path]:
    """Write the sample templates into ``folder`` when it does not exist yet (a first start); a folder
    the operator made, emptied or filled is left alone. Returns what was written."""
    from .imageio import save_png

    if folder.exists():
        return []
    folder.mkdir(parents=True)
    return [save_png(_sample(src, side), folder / name) for name, (src, side) in SAMPLE_TEMPLATES.items()]


__all__ = ["SAMPLE_TEMPLATES", "people", "seed_templates"]
