"""Loading photos safely.

:func:`load_image` turns whatever a user drops in (a path, raw bytes or a file object) into an
``H×W×3`` ``uint8`` RGB array, or raises :class:`~easyphoto.errors.BadImageError` naming the file and
the reason. Nothing else from Pillow escapes: no ``DecompressionBombWarning``, no raw ``OSError``.

* Only a regular file is read (a folder, device, FIFO or socket is refused without blocking), and
  never more than ``max_bytes`` of it.
* The pixel count and the short side are checked from the header, *before* any pixel is decoded
  (default 40 MP at most, 32 px at least on each side).
* EXIF orientation is applied, so phone photos come out upright.
* Transparent images (RGBA, LA, PA, P with transparency) are composited on white, which is what the
  rest of the pipeline expects around a face.
* 16-bit greyscale and other high-bit-depth modes are scaled to 8 bit, CMYK is converted to RGB.
* Animated GIF / WebP / multi-page TIFF: the first frame.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .config import DEFAULT_MAX_PIXELS
from .errors import BadImageError

#: Files larger than this many bytes are refused before they are read (a 40 MP JPEG is ~20 MB).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

#: Images whose short side is below this many pixels are refused (from the header, before decoding).
#: Measured with dlib-bin 20.0.1 through :class:`~easyphoto.face.FaceAnalyzer` (CNN fallback on):
#: 1×1, 3×3, 2×500 and 6×500 px images make dlib's CNN detector raise a RuntimeError (and the heap
#: corruption it leaves aborted the next call in the same process); 5×5 and 7×500 px pass. The
#: smallest image in which any face was found is 36 px (the 112×112 Tom Hanks crop scaled down; 40
#: and 48 px for two larger photos); nothing was found at 32 px or below. So 32 px refuses only
#: images that can hold no usable face, ~5× above the crash, and keeps small valid photos.
DEFAULT_MIN_SIDE = 32

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


#: The message code (:data:`~easyphoto.errors.MESSAGES`) of each non-regular file type.
_KINDS = (
    (stat.S_ISDIR, "image.is_dir"),
    (stat.S_ISCHR, "image.char_device"),
    (stat.S_ISBLK, "image.block_device"),
    (stat.S_ISFIFO, "image.fifo"),
    (stat.S_ISSOCK, "image.socket"),
)

#: A message code and its params.
Reason = tuple[str, dict]


def _size(n: int) -> str:
    """A byte count in words: MB for big ones, exact bytes below 1 MB."""
    return f"{n / 1e6:.0f} MB" if n >= 1_000_000 else f"{n:,} bytes"


def _not_regular_reason(mode: int) -> Reason | None:
    """Why a file of this ``st_mode`` cannot be a photo (``None`` for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, code in _KINDS:
        if test(mode):
            return code, {}
    return "image.not_regular", {}


_ERRNO_CODES = {
    errno.ELOOP: "image.link_loop",
    errno.EACCES: "image.permission",
    errno.EPERM: "image.permission",
    errno.ENOTDIR: "image.not_dir",
    errno.EISDIR: "image.is_dir",
    errno.ENAMETOOLONG: "image.name_too_long",
}


def _open_error_reason(path: str, exc: OSError) -> Reason:
    """Plain words (a message code) for why ``path`` could not be opened or looked up."""
    if exc.errno == errno.ENOENT:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return "image.broken_link", {"target": target}
        return "image.not_found", {}
    if exc.errno in _ERRNO_CODES:
        return _ERRNO_CODES[exc.errno], {}
    if exc.errno == errno.ENXIO:  # opening a socket, or a device with no driver behind it
        try:
            return _not_regular_reason(os.stat(path).st_mode) or ("image.no_device", {})
        except OSError:
            return "image.no_device", {}
    return "image.read_failed", {"detail": exc.strerror or str(exc)}


def _refuse(label: str, reason: Reason) -> BadImageError:
    return BadImageError(label, code=reason[0], **reason[1])


def _read_file(path: str, label: str, max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes; anything else is a :class:`BadImageError`.

    The path is opened once, non-blocking (opening a FIFO for reading would otherwise wait for a
    writer forever), and the open handle is checked with ``fstat``: only a regular file is read, and
    never more than ``max_bytes + 1`` bytes (``/dev/zero`` is endless). A ``stat`` before the open
    refuses devices without opening them (opening some devices has effects, e.g. a tape rewinds).
    """
    try:
        reason = _not_regular_reason(os.stat(path).st_mode)
    except OSError as exc:
        raise _refuse(label, _open_error_reason(path, exc)) from None
    if reason:
        raise _refuse(label, reason)
    nonblock = getattr(os, "O_NONBLOCK", 0)  # POSIX only; Windows has no FIFOs to block on
    flags = os.O_RDONLY | nonblock | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _refuse(label, _open_error_reason(path, exc)) from None
    try:
        info = os.fstat(fd)  # the file we hold, not whatever the path names by now
        reason = _not_regular_reason(info.st_mode)
        if reason:
            raise _refuse(label, reason)
        if info.st_size > max_bytes:
            raise BadImageError(
                label, code="image.file_too_large", size=_size(info.st_size), limit=_size(max_bytes)
            )
        if nonblock:
            os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        want = max(info.st_size + 1, 1 << 16)  # one read for a file that does not grow meanwhile
        while total <= max_bytes:
            chunk = os.read(fd, min(want, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise BadImageError(label, code="image.read_failed", detail=exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def _read_bytes(source: ImageSource, label: str, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        data = _read_file(os.fspath(source), label, max_bytes)
    else:
        try:
            data = source.read(max_bytes + 1)
        except OSError as exc:
            raise BadImageError(label, code="image.stream_failed", detail=str(exc)) from None
    if len(data) == 0:
        raise BadImageError(label, code="image.empty")
    if len(data) > max_bytes:
        raise BadImageError(label, code="image.stream_too_large", limit=_size(max_bytes))
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
    raise BadImageError(label, code="image.mode", mode=mode)


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    min_side: int = DEFAULT_MIN_SIDE,
    name: str | None = None,
) -> np.ndarray:
    """Load a photo as an ``H×W×3`` ``uint8`` RGB array.

    Args:
        source: a path, raw file bytes, or a binary file object.
        max_pixels: refuse images with more pixels than this (read from the header, before decoding).
            The default 40 MP covers every phone camera; a bigger photo is almost always a mistake or
            an attack (a 60k×60k PNG header would need 10 GB to decode).
        max_bytes: refuse files larger than this; at most ``max_bytes + 1`` bytes are ever read.
        min_side: refuse images whose width or height is below this (read from the header). The
            default 32 px is below the smallest image in which dlib finds a face (36 px, measured)
            and ~5× above the sizes that crash it (≤ 6 px); pass 1 to accept any size.
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
            raise BadImageError(label, code="image.bomb", max_pixels=max_pixels) from None
        except UnidentifiedImageError:
            raise BadImageError(label, code="image.not_image") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadImageError(label, code="image.corrupt_header", detail=str(exc)) from None
        with im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise BadImageError(label, code="image.invalid_size", width=width, height=height)
            if width * height > max_pixels:
                mp, limit_mp = width * height / 1e6, max_pixels / 1e6
                raise BadImageError(
                    label, code="image.too_many_pixels", width=width, height=height, mp=mp, limit_mp=limit_mp
                )
            if min(width, height) < min_side:
                raise BadImageError(
                    label, code="image.too_small", width=width, height=height, min_side=min_side
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
                raise BadImageError(label, code="image.bomb", max_pixels=max_pixels) from None
            except (OSError, ValueError, SyntaxError, EOFError, IndexError, MemoryError) as exc:
                reason = str(exc)
                if "truncated" in reason.lower() or isinstance(exc, EOFError):
                    raise BadImageError(label, code="image.truncated") from None
                detail = reason or type(exc).__name__
                raise BadImageError(label, code="image.decode_failed", detail=detail) from None
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
