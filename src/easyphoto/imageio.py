"""Loading photos safely.

:func:`load_image` turns whatever a user drops in (a path, raw bytes or a file object) into an
``H×W×3`` ``uint8`` RGB array, or raises :class:`~easyphoto.errors.BadImageError` naming the file and
the reason. Nothing else from Pillow escapes: no ``DecompressionBombWarning``, no raw ``OSError``.

* The pixel count is checked from the header, *before* any pixel is decoded (default 40 MP).
* EXIF orientation is applied, so phone photos come out upright.
* Transparent images (RGBA, LA, PA, P with transparency) are composited on white, which is what the
  rest of the pipeline expects around a face.
* 16-bit greyscale and other high-bit-depth modes are scaled to 8 bit, CMYK is converted to RGB.
* Animated GIF / WebP / multi-page TIFF: the first frame.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .config import DEFAULT_MAX_PIXELS
from .errors import BadImageError

#: Files larger than this many bytes are refused before they are read (a 40 MP JPEG is ~20 MB).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

_TRANSPARENT_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return getattr(source, "name", None) or "<stream>"


def _read_bytes(source: ImageSource, label: str, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BadImageError(label, "file not found") from None
        except OSError as exc:
            raise BadImageError(label, f"cannot read file ({exc.strerror or exc})") from None
        if path.is_dir():
            raise BadImageError(label, "is a folder, not an image file")
        if size > max_bytes:
            raise BadImageError(
                label, f"file too large ({size / 1e6:.0f} MB, limit {max_bytes / 1e6:.0f} MB)"
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    else:
        try:
            data = source.read(max_bytes + 1)
        except OSError as exc:
            raise BadImageError(label, f"cannot read stream ({exc})") from None
    if len(data) == 0:
        raise BadImageError(label, "empty file (0 bytes)")
    if len(data) > max_bytes:
        raise BadImageError(label, f"file too large (over {max_bytes / 1e6:.0f} MB)")
    return data


def _to_rgb_array(im: Image.Image, label: str) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to H×W×3 uint8 RGB."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in _TRANSPARENT_MODES:
        rgba = im.convert("RGBA")
        arr = np.asarray(rgba, dtype=np.float32)
        alpha = arr[..., 3:4] / 255.0
        rgb = arr[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    if mode in ("1", "L"):
        grey = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode.startswith("I") or mode == "F":
        # 16/32-bit integer or float greyscale (e.g. 16-bit PNG opens as "I;16" or "I").
        arr = np.asarray(im)
        if arr.dtype.kind == "f":
            finite = arr[np.isfinite(arr)]
            hi = float(finite.max()) if finite.size else 1.0
            scale = 255.0 if hi <= 1.0 else 255.0 / max(hi, 1e-6)
            grey = np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
        else:
            arr = arr.astype(np.int64)
            hi = int(arr.max()) if arr.size else 0
            if hi > 255:
                # Full 16-bit range: 65535 -> 255 (divide by 257, round).
                grey = np.clip((arr * 255 + 32767) // 65535, 0, 255).astype(np.uint8)
            else:
                grey = np.clip(arr, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    raise BadImageError(label, f"unsupported image mode {mode!r}")


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> np.ndarray:
    """Load a photo as an ``H×W×3`` ``uint8`` RGB array.

    Args:
        source: a path, raw file bytes, or a binary file object.
        max_pixels: refuse images with more pixels than this (read from the header, before decoding).
            The default 40 MP covers every phone camera; a bigger photo is almost always a mistake or
            an attack (a 60k×60k PNG header would need 10 GB to decode).
        max_bytes: refuse files larger than this.
        name: how to call the source in error messages (defaults to the path).

    Raises:
        BadImageError: the message names the file and the reason.
    """
    label = _describe(source, name)
    data = _read_bytes(source, label, max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise BadImageError(label, f"image too large (limit {max_pixels:,} pixels)") from None
        except UnidentifiedImageError:
            raise BadImageError(label, "not an image, or a format we cannot read") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadImageError(label, f"corrupt image header ({exc})") from None
        with im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise BadImageError(label, f"invalid image size {width}×{height}")
            if width * height > max_pixels:
                raise BadImageError(
                    label,
                    f"image too large: {width}×{height} = {width * height / 1e6:.1f} MP "
                    f"(limit {max_pixels / 1e6:.1f} MP)",
                )
            try:
                im.seek(0)
                previous = ImageFile.LOAD_TRUNCATED_IMAGES
                if previous:  # someone else set the global; we never accept half images
                    ImageFile.LOAD_TRUNCATED_IMAGES = False
                try:
                    im.load()
                finally:
                    if previous:
                        ImageFile.LOAD_TRUNCATED_IMAGES = previous
            except Image.DecompressionBombError:
                raise BadImageError(label, f"image too large (limit {max_pixels:,} pixels)") from None
            except (OSError, ValueError, SyntaxError, EOFError, IndexError, MemoryError) as exc:
                reason = str(exc)
                if "truncated" in reason.lower() or isinstance(exc, EOFError):
                    raise BadImageError(label, "truncated or incomplete image file") from None
                raise BadImageError(label, f"cannot decode image ({reason or type(exc).__name__})") from None
            try:
                oriented = ImageOps.exif_transpose(im)
            except Exception:  # broken EXIF must not lose a usable photo
                oriented = im
            if oriented is None:
                oriented = im
            return _to_rgb_array(oriented, label)


def save_png(image: np.ndarray, path: str | os.PathLike, text: dict[str, str] | None = None) -> Path:
    """Write an RGB/greyscale array as PNG atomically (temp file + rename), with optional text chunks."""
    from PIL import PngImagePlugin

    from .store import atomic_path

    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    target = Path(path)
    with atomic_path(target) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", pnginfo=info)
    return target


def fit_within(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the long side is at most ``max_side``; return the copy and its scale (≤ 1)."""
    import cv2

    h, w = image.shape[:2]
    long_side = max(h, w)
    if long_side <= max_side:
        return image, 1.0
    scale = max_side / long_side
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale
