"""Super-resolution of the finished portrait (#14): our Real-ESRGAN RRDBNet, its files, tiles, the pipeline.

Weights are tiny RRDBNets of the real layout (``easyphoto tiny-model`` writes them): they pass the picture
through with a random texture, so a tiling seam or a lost region would show in the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from easyphoto.config import GenerateConfig, ModelConfig
from easyphoto.diffusion.upscale import (
    RRDBNet,
    Upscalers,
    load_rrdbnet,
    rrdb_shape,
    tiny_rrdbnet,
    upscale_image,
    upscaler_file,
)
from easyphoto.errors import ModelNotFoundError
from easyphoto.imageio import save_png


@pytest.fixture(scope="module")
def picture(astronaut: np.ndarray) -> np.ndarray:
    """An odd-sized real photo crop (301×267): exercises the ×2 model's even-size padding."""
    return np.ascontiguousarray(astronaut[:301, :267])


def test_full_size_networks_have_real_esrgans_layout() -> None:
    """x4plus: 23 RRDBs of 64 channels, 16.7 M parameters; x2plus reads 2×2-folded input (12 channels)."""
    x4, x2 = RRDBNet(scale=4), RRDBNet(scale=2)
    keys = x4.state_dict()
    assert sum(p.numel() for p in x4.parameters()) == 16_697_987
    assert keys["conv_first.weight"].shape == (64, 3, 3, 3)
    assert x2.state_dict()["conv_first.weight"].shape == (64, 12, 3, 3)
    assert keys["body.22.rdb3.conv5.weight"].shape == (64, 64 + 4 * 32, 3, 3)
    assert keys["conv_last.weight"].shape == (3, 64, 3, 3) and "body.23.rdb1.conv1.weight" not in keys
    for net, scale in ((x4, 4), (x2, 2)):
        shape = rrdb_shape(net.state_dict())
        assert (shape.scale, shape.num_feat, shape.num_block, shape.num_grow_ch) == (scale, 64, 23, 32)


@pytest.mark.parametrize("scale", [2, 4])
def test_files_load_in_every_official_wrapping(scale: int, tmp_path: Path, picture: np.ndarray) -> None:
    from safetensors.torch import save_file

    net = tiny_rrdbnet(scale, seed=3)
    state = net.state_dict()
    files = {
        "ema.pth": {"params_ema": state},
        "params.pth": {"params": state},
        "bare.pth": state,
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    expected = upscale_image(net, picture[:64, :48], tile=512)
    assert expected.shape == (64 * scale, 48 * scale, 3)
    for name in [*files, "w.safetensors"]:
        loaded = load_rrdbnet(tmp_path / name)
        assert (loaded.scale, len(loaded.body)) == (scale, 2)
        assert np.array_equal(upscale_image(loaded, picture[:64, :48], tile=512), expected), name


def test_bad_weight_files_say_which_and_why(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    buf = tmp_path / "whole.pth"
    torch.save({"params_ema": tiny_rrdbnet(4).state_dict()}, buf)
    cut.write_bytes(buf.read_bytes()[:5000])
    with pytest.raises(ModelNotFoundError, match=r"cut\.pth: not a readable weights file"):
        load_rrdbnet(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelNotFoundError, match=r"junk\.safetensors: not a readable weights file"):
        load_rrdbnet(junk)
    pickled = tmp_path / "code.pth"
    torch.save({"params_ema": {"x": torch.zeros(1)}, "cls": Path("x")}, pickled)  # a non-tensor global
    with pytest.raises(ModelNotFoundError, match=r"code\.pth: not a readable weights file"):
        load_rrdbnet(pickled)
    old = tmp_path / "old_esrgan.pth"
    torch.save({"model.0.weight": torch.zeros(64, 3, 3, 3)}, old)
    with pytest.raises(ModelNotFoundError, match=r"old_esrgan\.pth: the original ESRGAN key layout"):
        load_rrdbnet(old)
    other = tmp_path / "unet.pth"
    torch.save({"down.0.weight": torch.zeros(1)}, other)
    with pytest.raises(
        ModelNotFoundError, match=r"unet\.pth: not a Real-ESRGAN RRDBNet .*missing conv_first"
    ):
        load_rrdbnet(other)
    state = tiny_rrdbnet(4).state_dict()
    state["conv_hr.weight"] = state["conv_hr.weight"][:, :8]
    broken = tmp_path / "shapes.pth"
    torch.save(state, broken)
    with pytest.raises(ModelNotFoundError, match=r"shapes\.pth: weights do not fit an RRDBNet"):
        load_rrdbnet(broken)
    with pytest.raises(ModelNotFoundError, match=r"missing\.pth: no such file"):
        load_rrdbnet(tmp_path / "missing.pth")


@pytest.mark.parametrize("scale", [2, 4])
def test_tiles_agree_with_one_pass_at_the_seams(scale: int, picture: np.ndarray) -> None:
    """4 × 3 tiles with 16 px of context and cross-fade match one pass at every seam (±2 levels)."""
    step = 4 // scale  # ×4 on a half-size copy: the same grid, a quarter of the work
    image = np.ascontiguousarray(picture[::step, ::step])
    h, w = image.shape[:2]
    tile = 96 // step
    net = tiny_rrdbnet(scale)
    whole = upscale_image(net, image, tile=1024, overlap=0).astype(int)
    assert whole.shape == (h * scale, w * scale, 3)
    tiles: list[tuple[int, int]] = []
    tiled = upscale_image(net, image, tile=tile, overlap=16, on_tile=lambda k, n: tiles.append((k, n)))
    assert tiles[-1] == (12, 12) and len(tiles) == 12  # 4 rows × 3 columns of cells
    diff = np.abs(tiled.astype(int) - whole)
    rows = [round(i * h / 4) * scale for i in (1, 2, 3)]  # where cells meet (± a px of rounding)
    cols = [round(i * w / 3) * scale for i in (1, 2)]
    near = 8 * scale
    seams = [diff[max(0, y - near) : y + near] for y in rows] + [diff[:, x - near : x + near] for x in cols]
    assert max(int(s.max()) for s in seams) <= 2, "tiles disagree with one pass at a seam"
    assert diff.mean() < 0.05
    # Without context and cross-fade the seams show: the check above can see them.
    hard = np.abs(upscale_image(net, image, tile=tile, overlap=0).astype(int) - whole)
    assert hard.max() > 20


def test_setting_resolves_tiny_folder_and_scale_mismatch(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = ModelConfig(base_model=str(tiny_model_dir))
    assert upscaler_file(config, 2) == tiny_model_dir / "upscaler" / "x2" / "RealESRGAN_x2plus.pth"
    x4 = upscaler_file(config, 4)
    wrong = Upscalers(ModelConfig(base_model=str(tiny_model_dir), upscaler_x2=str(x4)))
    with pytest.raises(ModelNotFoundError, match=r"RealESRGAN_x4plus\.pth: a ×4 network where ×2"):
        wrong.get(2)
    offline = ModelConfig(base_model=str(tmp_path), local_files_only=True)
    with pytest.raises(ModelNotFoundError, match="realesrgan-x2plus: not on this machine.*models download"):
        upscaler_file(offline, 2)
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        upscaler_file(ModelConfig(upscaler_x4=str(tmp_path / "nope.pth")), 4)


def test_registry_entries() -> None:
    from easyphoto.registry import REGISTRY, by_setting

    for scale in (2, 4):
        e = REGISTRY[f"realesrgan-x{scale}plus"]
        assert e.licence == "BSD-3-Clause" and e.commercial and not e.default
        assert e.sources[0].url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/download/")
        assert e.sources[1].repo and len(e.sha256[f"RealESRGAN_x{scale}plus.pth"]) == 64
        assert by_setting(f"upscaler_x{scale}", ModelConfig.default_of(f"upscaler_x{scale}")) is e


def test_portrait_upscaled_2x_with_params(
    tiny_model_dir: Path, analyzer, astronaut: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """upscale=2: the portrait is exactly twice the template; the PNG says how it was made."""
    import cv2

    from easyphoto.diffusion.models import ModelCache
    from easyphoto.stages.generate import PortraitGenerator, read_png_params

    monkeypatch.setattr(
        "easyphoto.diffusion.inpaint.controlnet_inpaint", lambda c, n, image, *a, **k: image.copy()
    )
    cache = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    gen = PortraitGenerator(cache, analyzer)
    gen.add_photo_user([save_png(astronaut, tmp_path / "me.png")], "me")
    cfg = GenerateConfig(seed=1, ip_adapter_scale=0, short_side=128)
    plain = gen.generate(astronaut, ["me"], cfg)
    events: list[dict] = []
    big = gen.generate(astronaut, ["me"], cfg.replace(upscale=2, upscale_tile=256), on_event=events.append)
    assert big.array.shape == (1024, 1024, 3)
    net, path = gen.upscalers.get(2)
    assert np.array_equal(big.array, upscale_image(net, plain.array, tile=256, overlap=16))
    # The content is the portrait's (the tiny net keeps the picture): close to a plain enlargement.
    near = cv2.resize(plain.array, (1024, 1024), interpolation=cv2.INTER_NEAREST).astype(float)
    assert np.corrcoef(near.ravel(), big.array.astype(float).ravel())[0, 1] > 0.9
    assert [e["step"] for e in events if e.get("pass") == "upscale"] == [1, 2, 3, 4]
    assert big.scores[0].box == tuple(round(2 * v, 1) for v in plain.scores[0].box)
    assert "upscale" in big.timings
    params = read_png_params(big.save(tmp_path / "big.png"))
    assert params["config"]["upscale"] == 2 and params["upscaler"]["scale"] == 2
    assert params["upscaler"]["file"] == str(path) and params["upscaler"]["input_size"] == [512, 512]
    # A missing upscaler is refused before any diffusion runs (not after minutes of work).
    calls: list[int] = []
    monkeypatch.setattr("easyphoto.diffusion.inpaint.controlnet_inpaint", lambda *a, **k: calls.append(1))
    nope = ModelConfig(base_model=str(tiny_model_dir), upscaler_x4=str(tmp_path / "nope.pth"))
    other = PortraitGenerator(ModelCache(nope, device="cpu", dtype="float32"), analyzer)
    other.photo_users = gen.photo_users
    with pytest.raises(ModelNotFoundError, match=r"nope\.pth"):
        other.generate(astronaut, ["me"], cfg.replace(upscale=4))
    assert calls == []


def test_easyphoto_super_resolution_is_honoured() -> None:
    from easyphoto.server.compat_fields import EasyPhotoInferRequest, infer_settings

    gen, notes = infer_settings(EasyPhotoInferRequest(user_ids=["a"], super_resolution=True), "p")
    assert gen["upscale"] == 2 and not any("super_resolution" in n for n in notes)
    gen, _ = infer_settings(EasyPhotoInferRequest(user_ids=["a"], super_resolution=False), "p")
    assert "upscale" not in gen
    assert GenerateConfig(**{"upscale": 4}).upscale == 4
    with pytest.raises(ValueError, match="upscale"):
        GenerateConfig(upscale=3)


def test_cli_upscale_flag(
    tiny_model_dir: Path, astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`easyphoto generate --photo … --upscale 2` on the tiny model writes a 2× portrait; --upscale 3
    is refused naming the flag (the CLI's ``main`` in this process: no second torch import)."""
    from PIL import Image

    from easyphoto.cli import main
    from easyphoto.stages.generate import read_png_params

    photo = save_png(astronaut[::2, ::2], tmp_path / "me.png")  # 256 px: a quick run
    args = ["generate", "--photo", str(photo), "--template", str(photo), "--base-model", str(tiny_model_dir),
            "--out", str(tmp_path / "out"), "--seed", "1", "--first-steps", "2", "--second-steps", "0",
            "--short-side", "96", "--json"]  # fmt: skip
    capsys.readouterr()
    assert main([*args, "--upscale", "3"]) == 2
    assert "--upscale" in capsys.readouterr().err
    assert main([*args, "--upscale", "2"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    with Image.open(result["output"]) as im:
        assert im.size == (512, 512)
    assert read_png_params(result["output"])["config"]["upscale"] == 2
