"""Face restoration: our GFPGAN loads the release layout, aligns faces to FFHQ's frame, blends back only
over the face, and runs in the portrait pipeline when asked (tiny random weights: geometry, not looks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from easyphoto.config import GenerateConfig, ModelConfig
from easyphoto.diffusion.face_restore import (
    FFHQ_POINTS_512,
    five_point_frame,
    gfpgan_from_state,
    load_face_restorer,
    restore_faces,
    tiny_gfpgan,
)
from easyphoto.errors import ModelNotFoundError
from easyphoto.stages.generate.restore import five_points

HOPPER = Path(__file__).parent / "faces" / "identities" / "grace_hopper" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    return np.asarray(Image.open(HOPPER).convert("RGB"))


def test_release_layout_loads_from_pth_and_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    net = tiny_gfpgan(seed=3)
    torch.save({"params_ema": net.state_dict()}, tmp_path / "GFPGANv1.4.pth")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "g.safetensors")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        want = net(x)
    for name in ("GFPGANv1.4.pth", "g.safetensors"):
        cfg = ModelConfig(base_model="/nonexistent", face_restorer=str(tmp_path / name))
        loaded = load_face_restorer(cfg)
        assert loaded.size == 64 and loaded.style == 32
        with torch.no_grad():
            assert torch.equal(loaded(x), want)  # same weights, same (stored) noise: same face


def test_other_files_are_refused_by_name(tmp_path: Path) -> None:
    from easyphoto.diffusion.upscale import tiny_rrdbnet

    torch.save({"params_ema": tiny_rrdbnet(2).state_dict()}, tmp_path / "esrgan.pth")
    with pytest.raises(ModelNotFoundError, match="esrgan.pth: not a GFPGAN"):
        load_face_restorer(ModelConfig(base_model="/x", face_restorer=str(tmp_path / "esrgan.pth")))
    (tmp_path / "broken.pth").write_bytes(b"\x80\x02 not a pickle")
    with pytest.raises(ModelNotFoundError, match="broken.pth: not a readable weights file"):
        load_face_restorer(ModelConfig(base_model="/x", face_restorer=str(tmp_path / "broken.pth")))
    state = tiny_gfpgan().state_dict()
    del state["final_linear.weight"]
    with pytest.raises(ModelNotFoundError, match="not a GFPGAN"):
        gfpgan_from_state(state, "partial")


def test_faces_are_aligned_to_ffhq_and_blended_back_only_there(hopper: np.ndarray, analyzer) -> None:
    face = analyzer.largest(hopper)
    points = five_points(face)
    matrix = five_point_frame(points, 512)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - FFHQ_POINTS_512).max() < 25  # a similarity fits a real face's points
    net = tiny_gfpgan()
    assert np.array_equal(restore_faces(net, hopper, [points], 0.0), hopper)
    out = restore_faces(net, hopper, [points], 1.0)
    changed = np.abs(out.astype(int) - hopper).max(axis=2) > 0
    x0, y0, x1, y1 = face.box
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    ys, xs = np.nonzero(changed)
    assert changed[int(cy), int(cx)], "the face's centre is restored"
    # FFHQ's frame spans ~4.1 eye distances: nothing changes beyond ~1.5 face sizes from the centre
    assert np.abs(xs - cx).max() < 1.5 * side and np.abs(ys - cy).max() < 1.5 * side
    half = restore_faces(net, hopper, [points], 0.5)
    mid = np.abs(half.astype(int) - (hopper.astype(int) + out) / 2)[int(cy), int(cx)]
    assert mid.max() <= 1  # weight 0.5 is halfway


@pytest.mark.slow
def test_pipeline_restores_the_faces_it_made(
    tiny_model_dir: Path, hopper: np.ndarray, analyzer, monkeypatch
) -> None:
    from easyphoto.diffusion.models import ModelCache
    from easyphoto.stages.generate import PortraitGenerator

    monkeypatch.setattr(
        "easyphoto.diffusion.inpaint.controlnet_inpaint", lambda cache, names, image, *a, **k: image.copy()
    )  # the passes stood in for: the face stays a face
    cache = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    gen = PortraitGenerator(cache, analyzer)
    gen.add_photo_user([HOPPER], "me")
    cfg = GenerateConfig(short_side=96, first_steps=2, second_steps=2, seed=1)
    plain = gen.generate(hopper, ["me"], cfg)
    restored = gen.generate(hopper, ["me"], cfg.replace(face_restore=True))
    assert restored.params["face_restore"] == 0.5 and "face_restore" in restored.timings
    assert "face_restore" not in plain.params
    diff = np.abs(restored.array.astype(int) - plain.array).max(axis=2) > 0
    face = analyzer.largest(hopper)
    x0, y0, x1, y1 = (int(v) for v in face.box)
    assert diff[y0:y1, x0:x1].mean() > 0.5  # restored over the face
    assert not diff[:, :40].any() and not diff[-40:].any()  # the picture's edges untouched
