"""Faces at the template's own resolution (#14): a big template's face is not softened by resizing.

The diffusion passes are stubbed to return their input, so what is measured is the resizing alone:
face sharpness (variance of the Laplacian over the face box) of the portrait against the template's.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from easyphoto.config import GenerateConfig, ModelConfig
from easyphoto.imageio import load_image, save_png
from easyphoto.stages.generate import PortraitGenerator, crop_face_region
from easyphoto.stages.generate.resolution import max_crop_side

#: No fusion (it would change the face), no IP-Adapter: the passes only move pixels around.
STUBBED = GenerateConfig(
    seed=1, before_fusion_ratio=0, after_fusion_ratio=0, apply_fusion_before=False,
    apply_fusion_after=False, ip_adapter_scale=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def big_template(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """obama3.jpg (1434×2333) enlarged to 2400 px high: a ≥ 2000 px template with a ~290 px face."""
    image = load_image(faces_dir / "identities" / "obama" / "obama3.jpg")
    h, w = image.shape[:2]
    k = 2400 / h
    big = cv2.resize(image, (round(w * k), 2400), interpolation=cv2.INTER_CUBIC)
    return save_png(big, tmp_path_factory.mktemp("big") / "template.png")


def _sharpness(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    gray = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def test_crop_keeps_the_templates_pixels_between_the_limits(astronaut: np.ndarray, analyzer) -> None:
    face = analyzer.largest(astronaut)  # ~150 px face: a crop of ~450 px, clipped to the 512 px photo
    crop = crop_face_region(astronaut, face, 3.0, 256, 1024)
    x0, y0, x1, y1 = crop.box
    h, w = crop.image.shape[:2]
    assert h % 8 == 0 and w % 8 == 0 and (w, h) == (x1 - x0, y1 - y0) and crop.scale == (1.0, 1.0)
    assert np.array_equal(crop.image, astronaut[y0:y1, x0:x1]), "no resampling between the limits"
    assert x0 <= face.box[0] and y0 <= face.box[1] and x1 >= face.box[2] and y1 >= face.box[3]
    assert np.allclose(crop.face.landmarks + [x0, y0], face.landmarks)
    # Below short_side: enlarged to it; above the limit: reduced to it; no limit: EasyPhoto's 512.
    assert min(crop_face_region(astronaut, face, 3.0, 512, 1024).image.shape[:2]) == 512
    assert min(crop_face_region(astronaut, face, 3.0, 128, 256).image.shape[:2]) == 256
    assert min(crop_face_region(astronaut, face, 3.0, 128).image.shape[:2]) == 128


def test_limit_by_device_and_setting() -> None:
    import torch

    assert max_crop_side(GenerateConfig(), torch.device("cuda", 0)) == 1024
    assert max_crop_side(GenerateConfig(), "cpu") == 512
    assert max_crop_side(GenerateConfig(), "mps") == 512
    assert max_crop_side(GenerateConfig(max_short_side=768), "cpu") == 768
    assert max_crop_side(GenerateConfig(short_side=96), "cpu") == 96  # small test crops stay small
    assert max_crop_side(GenerateConfig(short_side=96), "cuda:1") == 192
    with pytest.raises(ValueError, match="max_short_side .* must not be below short_side"):
        GenerateConfig(max_short_side=256)
    with pytest.raises(ValueError, match="multiple of 8"):
        GenerateConfig(max_short_side=1004)


def test_big_template_face_stays_sharp(
    big_template: Path, tiny_model_dir: Path, analyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2400 px template, passes stubbed: the face keeps ≥ 0.8 × its sharpness at the GPU limit (1024);
    EasyPhoto's fixed 512 px crop keeps well under half of it (0.22 measured)."""
    from easyphoto.diffusion.models import ModelCache

    sizes: list[tuple[int, int]] = []

    def passthrough(cache, names, image, mask, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        sizes.append(image.shape[:2])
        return image.copy()

    monkeypatch.setattr("easyphoto.diffusion.inpaint.controlnet_inpaint", passthrough)
    cache = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    gen = PortraitGenerator(cache, analyzer)
    gen.add_photo_user([big_template], "me")
    template = load_image(big_template)
    face = analyzer.largest(template)
    box = tuple(int(v) for v in face.box)
    before = _sharpness(template, box)

    native = gen.generate(template, ["me"], STUBBED.replace(max_short_side=1024))
    ratio = _sharpness(native.array, box) / before
    crop = crop_face_region(template, face, 3.0, 512, 1024)
    assert sizes[0] == crop.image.shape[:2] and min(sizes[0]) > 800, "worked at the face's own size"
    assert sizes[1] == tuple(round(v * 1.5 / 8) * 8 for v in sizes[0]), "second pass at 1.5×"
    assert ratio >= 0.8, f"face sharpness {ratio:.2f} × the template's"

    fixed = gen.generate(template, ["me"], STUBBED.replace(max_short_side=512))
    assert min(sizes[2]) == 512
    assert _sharpness(fixed.array, box) / before < 0.5, "the measurement must see a 512 px round trip"
    # Away from the face nothing changed at either size.
    x0, y0, x1, y1 = crop.box
    for out in (native.array, fixed.array):
        outside = np.ones(template.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(out[outside], template[outside])


class _SpyUpscalers:
    """Stands in for :class:`~easyphoto.diffusion.upscale.Upscalers`: records calls, enlarges by repeating."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def upscale(self, image: np.ndarray, scale: int, tile: int, overlap: int) -> np.ndarray:
        self.calls.append((image.shape, scale))
        return np.repeat(np.repeat(image, scale, 0), scale, 1)


def test_face_worked_below_template_size_returns_through_the_upscaler(tiny_model_dir: Path, tmp_path: Path):
    from types import SimpleNamespace

    from easyphoto.stages.generate.resolution import enlarge_face

    here = _SpyUpscalers(ModelConfig(base_model=str(tiny_model_dir)))  # tiny-model has upscaler/x2, x4
    missing = _SpyUpscalers(ModelConfig(base_model=str(tmp_path), local_files_only=True))
    work = np.random.default_rng(0).integers(0, 255, (256, 232, 3), dtype=np.uint8)
    crop = SimpleNamespace(box=(100, 50, 100 + 870, 50 + 960))  # ×3.75 back to the template: ×4 model
    cfg = GenerateConfig()
    out = enlarge_face(here, work, crop, cfg.replace(face_upscale="on"), "cpu")
    assert out.shape == (960, 870, 3) and here.calls == [((256, 232, 3), 4)]
    for device, spy, used in (("cpu", here, False), ("cuda:0", here, True), ("cuda:0", missing, False)):
        spy.calls.clear()
        auto = enlarge_face(spy, work, crop, cfg, device)
        assert bool(spy.calls) == used, (device, spy is here)
        assert auto.shape == (960, 870, 3)
    here.calls.clear()
    assert enlarge_face(here, work, crop, cfg.replace(face_upscale="off"), "cuda").shape == (960, 870, 3)
    small = SimpleNamespace(box=(0, 0, 290, 320))  # ×1.25: bicubic, never the network
    enlarge_face(here, work, small, cfg.replace(face_upscale="on"), "cuda")
    half = SimpleNamespace(box=(0, 0, 464, 512))  # ×2: the ×2 model
    enlarge_face(here, work, half, cfg.replace(face_upscale="on"), "cuda")
    assert here.calls == [((256, 232, 3), 2)]
