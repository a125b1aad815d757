"""Original-format ControlNet files (A1111 / ControlNet 1.x, ``control_model.*``): EasyPhoto's colour net.

A tiny ControlNet from ``easyphoto tiny-model`` is written in that key layout (``.pth`` and
``.safetensors``) and loaded through :class:`ModelCache` as the colour net: exact weights, same inpainting
output as the diffusers folder. The default URL is downloaded next to a local canny folder (a stand-in hub
replaces ``hf_hub_download``: no network), and the error messages name what is really missing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from easyphoto.config import TRIGGER_CAPTION, ModelConfig
from easyphoto.diffusion.models import ModelCache
from easyphoto.diffusion.single_file import controlnet_original_state_dict
from easyphoto.errors import ModelNotFoundError

SIZE = 64
COLOR_URL = ModelConfig.default_of("controlnet_color")
COLOR_REPO, COLOR_FILE = "ll00292007/easyphoto", "control_sd15_random_color.pth"


def _source_net(tiny_model_dir: Path):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(tiny_model_dir / "controlnet" / "color")


def _write(net, path: Path, *, wrapped: bool = False, extra: dict | None = None) -> Path:
    """``net`` as an original-format file (``.pth`` via torch.save, else safetensors)."""
    state = controlnet_original_state_dict(net)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        obj: dict = {"state_dict": state} if wrapped else dict(state)
        torch.save({**obj, **(extra or {})}, path)
    return path


def _assert_same_weights(loaded, source) -> None:
    a, b = loaded.state_dict(), source.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "converted weights differ from the source net"


@contextlib.contextmanager
def _fp32_notices() -> Iterator[list[str]]:
    """Messages that pass the filters of diffusers' ``modeling_utils`` logger while the block runs
    (diffusers' own handler writes to the stderr of the time it was imported: capfd can miss it)."""
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("diffusers.models.modeling_utils")
    log.addHandler(handler)
    try:
        yield seen
    finally:
        log.removeHandler(handler)


def _inpaint(cache: ModelCache) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    picture = Image.fromarray(np.stack([x * 4, y * 4, 255 - x * 2], axis=2).astype(np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = cache.inpaint_controlnet(["color"])(
        TRIGGER_CAPTION, image=picture, mask_image=mask, control_image=picture,
        controlnet_conditioning_scale=1.0, num_inference_steps=2, strength=0.7, height=SIZE, width=SIZE,
        generator=torch.Generator().manual_seed(1), output_type="np",
    )  # fmt: skip
    return out.images[0]


def test_original_layout_keys(tiny_model_dir: Path) -> None:
    net = _source_net(tiny_model_dir)
    keys = set(controlnet_original_state_dict(net))
    assert all(k.startswith("control_model.") for k in keys) and len(keys) == len(net.state_dict())
    for key in ("input_hint_block.0.weight", "input_hint_block.14.bias", "middle_block_out.0.weight"):
        assert f"control_model.{key}" in keys
    zero = {int(k.split(".")[2]) for k in keys if k.startswith("control_model.zero_convs.")}
    assert zero == set(range(len(net.controlnet_down_blocks)))


@pytest.mark.parametrize(("name", "wrapped"), [("c.pth", False), ("c.safetensors", False), ("w.pth", True)])
def test_original_file_loads_exactly_as_colour_net_and_runs(
    tiny_model_dir: Path, tmp_path: Path, name: str, wrapped: bool
) -> None:
    """Converted with the local canny folder's config (offline), bit-exact, same pipeline output."""
    source = _source_net(tiny_model_dir)
    path = _write(source, tmp_path / name, wrapped=wrapped)
    cfg = ModelConfig(base_model=str(tiny_model_dir), controlnet_color=str(path), local_files_only=True)
    cache = ModelCache(cfg, device="cpu", dtype="float32")
    with _fp32_notices() as notices:
        net = cache.controlnet("color")
    assert not notices  # diffusers' "should be kept in float32: []" on every single-file load
    _assert_same_weights(net, source)
    reference = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    assert reference.controlnet_source("color") == str(tiny_model_dir / "controlnet" / "color")
    out = _inpaint(cache)
    assert out.shape == (SIZE, SIZE, 3) and np.isfinite(out).all()
    np.testing.assert_array_equal(out, _inpaint(reference))


def test_float32_filter_drops_only_the_empty_list(tiny_model_dir: Path) -> None:
    from easyphoto.diffusion.sources import quiet_libraries

    quiet_libraries()
    log = logging.getLogger("diffusers.models.modeling_utils")
    with _fp32_notices() as notices:
        log.warning("There are modules in X that should be kept in float32: []. Casting directly …")
        log.warning("There are modules in Y that should be kept in float32: ['norm']. Casting directly …")
        _source_net(tiny_model_dir).to(torch.float32)  # diffusers' own call, which always warns
    assert notices == ["There are modules in Y that should be kept in float32: ['norm']. Casting directly …"]


class _StandInHub:
    """Replaces the ``hf_hub_download`` diffusers calls: records requests, serves one file, and refuses
    when ``local_files_only`` like the real one does for a file that is not in the cache."""

    def __init__(self, served: Path) -> None:
        self.served, self.calls = served, []

    def __call__(self, repo_id: str, filename: str, **kw):
        from huggingface_hub.errors import LocalEntryNotFoundError

        self.calls.append((repo_id, filename, kw.get("local_files_only")))
        if kw.get("local_files_only"):
            raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache.")
        return str(self.served)


@pytest.mark.parametrize("canny_from", ["setting", "base folder"])
def test_default_url_is_requested_next_to_a_local_canny_folder(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, canny_from: str
) -> None:
    import diffusers.utils.hub_utils as hub_utils

    source = _source_net(tiny_model_dir)
    hub = _StandInHub(_write(source, tmp_path / COLOR_FILE))
    monkeypatch.setattr(hub_utils, "hf_hub_download", hub)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    canny = tiny_model_dir / "controlnet" / "canny"
    if canny_from == "setting":
        cfg = ModelConfig(
            base_model=str(tmp_path / "none"), controlnet_canny=str(canny), local_files_only=False
        )
    else:  # a local base with controlnet/canny but no controlnet/color
        shutil.copytree(canny, tmp_path / "base" / "controlnet" / "canny")
        cfg = ModelConfig(base_model=str(tmp_path / "base"), local_files_only=False)
    cache = ModelCache(cfg, device="cpu", dtype="float32")
    assert cache.controlnet_source("color") == COLOR_URL
    net = cache.controlnet("color")
    assert hub.calls == [(COLOR_REPO, COLOR_FILE, False)]
    _assert_same_weights(net, source)


def test_offline_setting_alone_forbids_the_download(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffusers.utils.hub_utils as hub_utils

    hub = _StandInHub(_write(_source_net(tiny_model_dir), tmp_path / COLOR_FILE))
    monkeypatch.setattr(hub_utils, "hf_hub_download", hub)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    canny = str(tiny_model_dir / "controlnet" / "canny")
    cache = ModelCache(ModelConfig(base_model=str(tmp_path), controlnet_canny=canny, local_files_only=True))
    with pytest.raises(ModelNotFoundError) as err:
        cache.controlnet("color")
    assert hub.calls == [(COLOR_REPO, COLOR_FILE, True)]
    msg = str(err.value)
    assert "offline mode is on" in msg and "EASYPHOTO_CONTROLNET_COLOR" in msg and ".." not in msg


def _load_error(cfg: ModelConfig) -> str:
    with pytest.raises(ModelNotFoundError) as err:
        ModelCache(cfg, device="cpu").controlnet("color")
    return str(err.value)


def test_missing_canny_config_is_blamed_not_the_colour_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Offline with a local colour file and an uncached hub id for the canny config."""
    colour = _write(_source_net(tiny_model_dir), tmp_path / "colour.safetensors")
    cfg = ModelConfig(
        base_model=str(tmp_path), controlnet_color=str(colour),
        controlnet_canny="easyphoto-test/uncached-canny", local_files_only=True,
    )  # fmt: skip
    msg = _load_error(cfg)
    assert "config of the canny ControlNet" in msg and "'easyphoto-test/uncached-canny'" in msg
    assert "EASYPHOTO_CONTROLNET_CANNY" in msg and "controlnet_canny" in msg
    assert str(colour) not in msg  # neither "could not be loaded" nor `huggingface-cli download <file>`
    assert "huggingface-cli download easyphoto-test/uncached-canny config.json" in msg
    assert ".." not in msg


@pytest.mark.parametrize("canny", ["empty", "missing"])
def test_canny_folder_without_config_is_named(tiny_model_dir: Path, tmp_path: Path, canny: str) -> None:
    colour = _write(_source_net(tiny_model_dir), tmp_path / "colour.pth")
    (tmp_path / "empty").mkdir()
    cfg = ModelConfig(
        base_model=str(tmp_path), controlnet_color=str(colour), controlnet_canny=str(tmp_path / canny)
    )
    msg = _load_error(cfg)
    assert f"canny ControlNet {str(tmp_path / canny)!r} is not a folder with a config.json" in msg
    assert "EASYPHOTO_CONTROLNET_CANNY" in msg and str(colour) not in msg


def test_pth_refused_by_the_safe_unpickler_says_why(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = _write(_source_net(tiny_model_dir), tmp_path / "bad.pth", extra={"args": argparse.Namespace(lr=1)})
    cfg = ModelConfig(base_model=str(tiny_model_dir), controlnet_color=str(bad), local_files_only=True)
    msg = _load_error(cfg)
    assert f"ControlNet 'color' {str(bad)!r} could not be loaded" in msg
    assert "weights_only" in msg and "argparse.Namespace" in msg and "Unable to load weights" not in msg
    assert "huggingface-cli" not in msg and "EASYPHOTO_CONTROLNET_COLOR" in msg
    assert ".." not in msg and msg.endswith("EASYPHOTO_CONTROLNET_COLOR.")


@pytest.mark.parametrize(
    ("name", "content", "cause"),
    [
        ("empty.safetensors", b"", "SafetensorError: Error while deserializing header"),
        ("text.pth", b"not a checkpoint\n" * 8, "UnpicklingError: Unsupported operand"),
    ],
)
def test_broken_file_says_why_with_single_periods(
    tiny_model_dir: Path, tmp_path: Path, name: str, content: bytes, cause: str
) -> None:
    """diffusers' "Unable to load weights … '<file>'. " hid the cause and met our own period ("'..")."""
    broken = tmp_path / name
    broken.write_bytes(content)
    cfg = ModelConfig(base_model=str(tiny_model_dir), controlnet_color=str(broken), local_files_only=True)
    msg = _load_error(cfg)
    assert f"{str(broken)!r} could not be loaded: {cause}" in msg and "Unable to load weights" not in msg
    assert ".." not in msg and ". Pass a diffusers ControlNet folder" in msg
    assert "weights_only=False" not in msg  # a damaged file is not a trust question
