"""Safe photo loading: every format and mode we promise, and a clear error for every bad file."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from easyphoto import BadImageError, load_image
from easyphoto.imageio import DEFAULT_MIN_SIDE, fit_within, save_png


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width×height`` RGB pixels but holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def _gradient(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], axis=2).astype(np.uint8)


def _expect_bad(source, reason_part: str, name_part: str | None = None, **kwargs) -> BadImageError:
    with pytest.raises(BadImageError) as info:
        load_image(source, **kwargs)
    message = str(info.value)
    assert reason_part in message.lower(), message
    if name_part is not None:
        assert name_part in message, message
    assert "Traceback" not in message and "\n" not in message, message  # one line
    assert message == f"{info.value.source}: {info.value.reason}"
    return info.value


# --- bad files -------------------------------------------------------------------------------------


def test_empty_file_names_file_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    err = _expect_bad(path, "empty", str(path))
    assert err.source == str(path)


def test_text_renamed_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n" * 20)
    _expect_bad(path, "not an image", "notes.jpg")


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    _expect_bad(path, "truncated", "cut.jpg")


def test_png_header_claiming_60000_squared_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(60000, 60000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape
        _expect_bad(path, "too large", "bomb.png")


def test_pixel_limit_is_ours_and_configurable(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(7000, 7000))  # 49 MP: under Pillow's own limit, over our 40 MP
    err = _expect_bad(path, "too large", "big.png")
    assert "49.0 MP" in str(err) and "40.0 MP" in str(err)
    small = tmp_path / "small.png"
    Image.fromarray(_gradient(20, 20)).save(small)
    _expect_bad(small, "too large", max_pixels=100)
    assert load_image(small, max_pixels=400, min_side=1).shape == (20, 20, 3)


def test_raised_limit_never_leaks_pillow_warning(tmp_path: Path) -> None:
    path = tmp_path / "huge_header.png"
    path.write_bytes(_png_header_only(10000, 10000))  # 100 MP: Pillow would warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _expect_bad(path, "", "huge_header.png", max_pixels=10**9)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    _expect_bad(tmp_path / "nope.jpg", "not found", "nope.jpg")
    _expect_bad(tmp_path, "folder")


def test_bad_bytes_are_named_with_given_name() -> None:
    _expect_bad(b"GIF89a garbage", "", "upload.gif", name="upload.gif")


# --- files that are not regular files: refused from the open handle, never read without bound -------


@contextlib.contextmanager
def _deadline(seconds: int = 10) -> Iterator[None]:
    """Fail instead of hanging (SIGALRM interrupts a blocking open() or read())."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"load_image still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos.jpg"
    folder.mkdir()
    err = _expect_bad(folder, "is a folder, not an image file", str(folder))
    assert err.source == str(folder)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_character_device_is_refused_without_reading() -> None:
    with _deadline():
        _expect_bad("/dev/zero", "is a character device", "/dev/zero")
        _expect_bad("/dev/null", "is a character device", "/dev/null")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with _deadline():
        _expect_bad(fifo, "is a named pipe (fifo)", str(fifo))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_fifo_swapped_in_after_stat_is_caught_on_the_open_handle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path is checked again from the open file (fstat), and the open itself does not block on a
    FIFO with no writer: a file replaced between the first check and the open is still refused."""
    fifo = tmp_path / "raced.jpg"
    os.mkfifo(fifo)
    regular = tmp_path / "regular"
    regular.write_bytes(b"x")
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: real_stat(regular if p == str(fifo) else p, *a, **k))
    with _deadline():
        _expect_bad(fifo, "is a named pipe (fifo)", str(fifo))


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
def test_socket_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        with _deadline():
            _expect_bad(path, "is a socket", str(path))
    finally:
        server.close()


def test_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "photo.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    err = _expect_bad(link, "broken symbolic link", str(link))
    assert "gone.jpg" in err.reason


def test_symlink_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.symlink_to(b)
    b.symlink_to(a)
    _expect_bad(a, "symbolic link loop", str(a))


def test_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _expect_bad(tmp_path / "file" / "x.jpg", "not found", "x.jpg")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: permission errors cannot happen")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.fromarray(_gradient()).save(path)
    path.chmod(0)
    try:
        _expect_bad(path, "permission denied", str(path))
    finally:
        path.chmod(0o600)


def test_symlink_to_a_good_photo_is_fine(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "real.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    assert np.array_equal(load_image(tmp_path / "link.png"), _gradient())


def test_file_over_max_bytes_is_refused_from_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(_gradient()).save(path)
    size = path.stat().st_size
    _expect_bad(path, "file too large", "big.png", max_bytes=size - 1)
    assert load_image(path, max_bytes=size).shape == (48, 64, 3)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="no /proc")
def test_read_is_bounded_when_the_size_lies(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc files are regular but report size 0: at most max_bytes + 1 bytes are read."""
    requested: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: (requested.append(n), real_read(fd, n))[1])
    _expect_bad("/proc/self/maps", "file too large", "/proc/self/maps", max_bytes=100)
    assert sum(requested) <= 101


# --- minimum size: checked from the header, before decoding -----------------------------------------


@pytest.mark.parametrize(("w", "h"), [(1, 1), (2, 500), (500, 2), (31, 31), (31, 800), (800, 31)])
def test_too_small_images_are_refused(tmp_path: Path, w: int, h: int) -> None:
    path = tmp_path / f"small_{w}x{h}.png"
    Image.new("RGB", (w, h), (120, 90, 60)).save(path)
    err = _expect_bad(path, "image too small", path.name)
    assert err.reason == f"image too small: {w}×{h}, at least {DEFAULT_MIN_SIDE} px on each side"


@pytest.mark.parametrize(("w", "h"), [(32, 32), (32, 800), (800, 32)])
def test_minimum_size_boundary_is_accepted(tmp_path: Path, w: int, h: int) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (w, h), (120, 90, 60)).save(path)
    assert load_image(path).shape == (h, w, 3)


def test_minimum_size_is_read_from_the_header_and_configurable(tmp_path: Path) -> None:
    path = tmp_path / "tiny_header.png"
    path.write_bytes(_png_header_only(1, 1))  # no valid pixel data: decoding would fail differently
    _expect_bad(path, "image too small: 1×1", "tiny_header.png")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4)).save(tiny)
    assert load_image(tiny, min_side=4).shape == (4, 4, 3)
    _expect_bad(tiny, "at least 5 px", min_side=5)
    _expect_bad(io.BytesIO(tiny.read_bytes()), "image too small")  # streams and bytes too
    _expect_bad(tiny.read_bytes(), "image too small", "upload.png", name="upload.png")


def test_small_aligned_face_crop_is_a_valid_photo(faces_dir: Path) -> None:
    crop = faces_dir / "identities" / "tom_hanks" / "Tom_Hanks_54745.png"
    assert load_image(crop).shape == (112, 112, 3)


def test_smallest_accepted_images_do_not_crash_dlib(analyzer) -> None:
    """What the floor protects: at 1×1 or 2×500 px dlib's CNN detector raises (see DEFAULT_MIN_SIDE);
    at the minimum, detection with the CNN fallback runs and finds nothing."""
    rng = np.random.default_rng(0)
    for h, w in [(DEFAULT_MIN_SIDE, DEFAULT_MIN_SIDE), (DEFAULT_MIN_SIDE, 500), (500, DEFAULT_MIN_SIDE)]:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        assert analyzer.detect(load_image(buf.getvalue()), fallback=True) == []


# --- formats and modes -----------------------------------------------------------------------------
# Small images below pass min_side=1: they test the decoders, not the size floor.


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_round_trip(tmp_path: Path, fmt: str) -> None:
    img = _gradient()
    path = tmp_path / f"x.{fmt.lower()}"
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(img).save(path, format=fmt, **kwargs)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.array_equal(out, img)


def test_jpeg_bytes_and_stream(tmp_path: Path) -> None:
    img = _gradient()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=98)
    from_bytes = load_image(buf.getvalue())
    buf.seek(0)
    from_stream = load_image(buf)
    assert from_bytes.shape == img.shape
    assert np.array_equal(from_bytes, from_stream)
    assert np.abs(from_bytes.astype(int) - img).mean() < 3


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide × 20 high: left half red, right half blue. Orientation 6 = display rotated 90° CW.
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)
    img[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(img).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    out = load_image(path, min_side=1)
    assert out.shape == (40, 20, 3)  # upright: now tall
    # Rotating 90° clockwise puts the stored left (red) on top and the right (blue) at the bottom.
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 30, 4), np.uint8)
    rgba[:, :10] = (255, 0, 0, 255)  # opaque red
    rgba[:, 10:20] = (0, 0, 0, 0)  # fully transparent
    rgba[:, 20:] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = load_image(path, min_side=1)
    assert out.shape == (10, 30, 3)
    assert tuple(out[5, 5]) == (255, 0, 0)
    assert tuple(out[5, 15]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[5, 25])


def test_la_and_palette_transparency(tmp_path: Path) -> None:
    la = Image.new("LA", (8, 8), (0, 0))
    la.save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png", min_side=1) == 255).all()
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 1
    pal.save(tmp_path / "pal.png", transparency=1)
    assert (load_image(tmp_path / "pal.png", min_side=1) == 255).all()


def test_gif_first_frame(tmp_path: Path) -> None:
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)
    out = load_image(path, min_side=1)
    assert out.shape == (16, 16, 3)
    assert out[8, 8, 0] > 240 and out[8, 8, 2] < 15


def test_greyscale_l(tmp_path: Path) -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png", min_side=1)
    assert out.shape == (16, 16, 3)
    assert np.array_equal(out[..., 0], grey) and np.array_equal(out[..., 1], grey)


def test_16bit_greyscale_png_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    assert cv2.imwrite(str(path), values)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path, min_side=1)
    assert out.shape == (1, 4, 3)
    assert list(out[0, :, 0]) == [0, 1, 128, 255]


def test_16bit_colour_png(tmp_path: Path) -> None:
    rgb16 = np.zeros((4, 4, 3), np.uint16)
    rgb16[..., 0] = 65535  # red in RGB order
    rgb16[..., 1] = 32896
    path = tmp_path / "c16.png"
    assert cv2.imwrite(str(path), rgb16[..., ::-1])  # OpenCV writes BGR
    out = load_image(path, min_side=1)
    assert tuple(out[0, 0]) == (255, 128, 0)


def test_cmyk_jpeg_converted_to_rgb(tmp_path: Path) -> None:
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, :16] = (220, 30, 30)
    img[:, 16:] = (30, 30, 220)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(img).convert("CMYK").save(path, format="JPEG", quality=95)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path, min_side=1)
    assert out.shape == (16, 32, 3)
    assert np.abs(out[8, 4].astype(int) - (220, 30, 30)).max() < 25
    assert np.abs(out[8, 28].astype(int) - (30, 30, 220)).max() < 25


# --- helpers ---------------------------------------------------------------------------------------


def test_fit_within_and_save_png(tmp_path: Path) -> None:
    img = _gradient(100, 400)
    small, scale = fit_within(img, 200)
    assert small.shape == (50, 200, 3) and scale == pytest.approx(0.5)
    same, one = fit_within(img, 400)
    assert same is img and one == 1.0
    out = save_png(img, tmp_path / "sub" / "x.png", text={"seed": "42"})
    assert np.array_equal(load_image(out), img)
    assert Image.open(out).text["seed"] == "42"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]  # no temp file left behind
