"""Control images for the ControlNets (canny, colour, tile): RGB uint8 arrays in, RGB uint8 arrays out.

The openpose control image is drawn from face keypoints by ``easyphoto.face.keypoints`` (this package
never sees faces).
"""

from __future__ import annotations

import cv2
import numpy as np


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
    return image


def canny_image(image: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """White Canny edges on black, 3 channels. 100/200 are EasyPhoto's (and ControlNet 1.1's) thresholds."""
    gray = cv2.cvtColor(_check_rgb(image), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, low, high)
    return np.repeat(edges[:, :, None], 3, axis=2)


def color_image(image: np.ndarray, cell: int = 64) -> np.ndarray:
    """A colour layout: the image averaged over ``cell``×``cell`` pixel patches, blown up with hard edges.

    The colour ControlNet should see where the colours are, not the details: 64 px patches keep skin tone
    and light direction and drop the features. ``cell=1`` returns the image unchanged.
    """
    image = _check_rgb(image)
    h, w = image.shape[:2]
    if cell <= 1:
        return image.copy()
    small = cv2.resize(image, (max(1, w // cell), max(1, h // cell)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def tile_image(image: np.ndarray, down: float = 1.0) -> np.ndarray:
    """The tile ControlNet's input: the image itself, optionally downsampled by ``down`` and resized back
    (ControlNet 1.1's ``tile_resample``; ``down > 1`` lets the net invent more detail)."""
    image = _check_rgb(image)
    if down <= 1.0:
        return image.copy()
    h, w = image.shape[:2]
    small = cv2.resize(
        image, (max(1, round(w / down)), max(1, round(h / down))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


__all__ = ["canny_image", "color_image", "tile_image"]
