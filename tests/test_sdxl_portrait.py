"""Portraits of SDXL users: the two-pass pipeline on the SDXL model (ControlNet inpainting with SDXL's
canny and openpose nets), the family checks, the memory policy between the families, and SDXL users in
text-to-photo sharing the template's loaded SDXL.

The SDXL user here is a random rank-4 SDXL LoRA in a user model copied from a tiny SD1.5 user (its
reference photo and identity are real): training SDXL users is tested in ``test_sdxl_train.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import PlacedFaces, train_tiny_users

from easyphoto.config import GenerateConfig, ModelConfig, Text2PhotoConfig
from easyphoto.errors import ConfigError

#: SDXL crops of 96 px (the tiny SDXL's VAE halves once: any multiple of 8 works), few steps.
XL = GenerateConfig(short_side=96, sdxl_short_side=96, first_steps=4, second_steps=2, seed=7)


def _sdxl_lora(path: Path, seed: int = 3) -> Path:
    """A random rank-4 kohya SDXL LoRA (UNet and both text encoders) for the tiny SDXL."""
    import torch

    from easyphoto.diffusion.lora import lora_config
    from easyphoto.diffusion.lora_sdxl import SDXL_TEXT_ENCODER_TARGETS, save_lora_kohya_sdxl
    from easyphoto.diffusion.tiny_sdxl import tiny_sdxl_components

    parts = tiny_sdxl_components(seed=0)
    unet, te1, te2 = parts["unet"], parts["text_encoder"], parts["text_encoder_2"]
    unet.add_adapter(lora_config(rank=4, alpha=4))
    for te in (te1, te2):
        te.add_adapter(lora_config(rank=4, alpha=4, targets=SDXL_TEXT_ENCODER_TARGETS))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in (unet, te1, te2):
            for name, p in model.named_parameters():
                if "lora_B" in name:  # B starts at zero: give every adapter an effect
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return save_lora_kohya_sdxl(path, unet, te1, te2)


@pytest.fixture(scope="module")
def xl_home(tmp_path_factory, tiny_model_dir: Path, sdxl_dir: Path, astronaut, analyzer) -> Path:
    """EASYPHOTO_HOME with alice (a tiny SD1.5 user) and xlbob (an SDXL user: alice's photo and identity,
    a random SDXL LoRA, ``family: sdxl``)."""
    from easyphoto.users import LORA_FILE, META_FILE, user_dir

    home = train_tiny_users(tmp_path_factory, tiny_model_dir, astronaut, analyzer, ("alice",))
    bob = user_dir("xlbob", home)
    shutil.copytree(user_dir("alice", home), bob)
    _sdxl_lora(bob / LORA_FILE)
    meta = json.loads((bob / META_FILE).read_text())
    (bob / META_FILE).write_text(
        json.dumps({**meta, "user_id": "xlbob", "family": "sdxl", "base_model": str(sdxl_dir)})
    )
    return home


def _config(tiny_model_dir: Path, sdxl_dir: Path, **kw) -> ModelConfig:
    return ModelConfig(
        base_model=str(tiny_model_dir), template_model=str(sdxl_dir), device="cpu", dtype="float32", **kw
    )


@pytest.fixture(scope="module")
def gen(tiny_model_dir: Path, sdxl_dir: Path, xl_home: Path, analyzer):
    from easyphoto.workflows import portrait_generator

    return portrait_generator(analyzer=analyzer, model_config=_config(tiny_model_dir, sdxl_dir), home=xl_home)


def test_sdxl_user_is_painted_on_the_sdxl_model(gen, astronaut: np.ndarray) -> None:
    out = gen.generate(astronaut, ["xlbob"], XL, keep_intermediates=True)
    xl = gen.sdxl_cache
    # SDXL ran, with the nets SDXL has (colour and tile dropped); SD1.5 was never loaded
    assert xl.load_count["sdxl:unet"] == 1 and xl.load_count["sdxl:lora"] == 1
    assert {k for k in xl.load_count if "controlnet" in k} == {
        "sdxl:controlnet:canny",
        "sdxl:controlnet:openpose",
    }
    assert gen.cache._base is None, "the SD1.5 model was loaded for an SDXL user"
    assert out.params["families"] == {"xlbob": "sdxl"} and out.params["sdxl_model"] == str(
        xl.config.template_model
    )
    assert set(out.params["sdxl_controlnets"]) == {"canny", "openpose"}
    # the face was repainted, and only around it; the crop was worked at sdxl_short_side
    diff = np.abs(out.array.astype(int) - astronaut).max(axis=2) > 0
    face = gen.analyzer.largest(astronaut)
    ys, xs = np.nonzero(diff)
    assert diff.any() and max(abs(xs - face.center[0]).max(), abs(ys - face.center[1]).max()) < 2 * face.size
    assert min(out.intermediates["face0_crop"].shape[:2]) == XL.sdxl_short_side
    assert out.intermediates["face0_first"].shape == out.intermediates["face0_crop"].shape
    assert [s.user_id for s in out.scores] == ["xlbob"]
    # the same seed gives the same portrait; the user's LoRA changes it (and is not read again)
    again = gen.generate(astronaut, ["xlbob"], XL)
    assert np.array_equal(again.array, out.array)
    plain = gen.generate(astronaut, ["xlbob"], XL.replace(lora_weight=0.0))
    assert np.abs(plain.array.astype(int) - out.array).mean() > 0.05, "the SDXL LoRA had no effect"
    assert xl.load_count["sdxl:lora"] == 1 and xl.load_count["sdxl:unet"] == 1


def test_families_switch_under_the_memory_policy(
    tiny_model_dir, sdxl_dir, xl_home, analyzer, astronaut
) -> None:
    from easyphoto.workflows import portrait_generator

    mc = _config(tiny_model_dir, sdxl_dir, sdxl_memory="free")
    gen = portrait_generator(analyzer=analyzer, model_config=mc, home=xl_home)
    cfg = XL.replace(second_steps=0)
    sd15 = gen.generate(astronaut, ["alice"], cfg)
    assert gen.cache._base is not None and gen._sdxl is None  # no SDXL for an SD1.5 user
    gen.generate(astronaut, ["xlbob"], cfg)
    assert gen.cache._base is None and gen.sdxl_cache.loaded  # SD1.5 freed while SDXL works
    again = gen.generate(astronaut, ["alice"], cfg)
    assert not gen.sdxl_cache.loaded and np.array_equal(again.array, sd15.array)  # reloaded, same result
    assert [m["actions"] for m in gen.memory.moves] == [["freed sd15"], ["freed sdxl"]]


def test_sdxl_users_are_refused_what_sdxl_lacks(gen, astronaut, xl_home: Path, sdxl_dir, tmp_path) -> None:
    from easyphoto.users import user_dir
    from easyphoto.workflows import generate_batch

    loads = dict(gen.sdxl_cache.load_count)
    with pytest.raises(ConfigError, match=r"fast mode \(LCM-LoRA\) runs on SD1\.5 users only"):
        gen.generate(astronaut, ["xlbob"], XL.replace(fast=True))
    with pytest.raises(ConfigError, match="IP-Adapter runs with SD1.5 users only"):
        gen.generate(astronaut, ["xlbob"], XL.replace(ip_adapter_scale=0.5))
    with pytest.raises(ConfigError, match=r"LoRA 'lora.safetensors' is SD1\.5 but the SDXL model is SDXL"):
        gen.sdxl_cache.set_lora(user_dir("alice", xl_home) / "lora.safetensors")
    assert gen.sdxl_cache.load_count == loads, "a refused request loaded something"
    # an SD1.5 user while the base model is SDXL: refused before anything is loaded
    mc = ModelConfig(base_model=str(sdxl_dir))
    with pytest.raises(ConfigError, match=r"is SDXL, but 'alice' needs SD1\.5"):
        generate_batch([("t.jpg", "t")], ["xlbob", "alice"], XL, tmp_path, model_config=mc, home=xl_home)
    with pytest.raises(ConfigError, match=r"background 'restore' runs on SD1\.5"):
        generate_batch([("t.jpg", "t")], ["xlbob"], XL.replace(background="restore"), tmp_path,
                       model_config=mc, home=xl_home)  # fmt: skip


def test_sdxl_base_model_paints_sdxl_users(
    tiny_model_dir, sdxl_dir, xl_home, analyzer, astronaut, tmp_path
) -> None:
    """``generate --base-model SDXL``: the SDXL users are painted on that model (no template model
    needed), through the batch workflow the CLI and the worker call."""
    from easyphoto.imageio import save_png
    from easyphoto.stages.generate import read_png_params
    from easyphoto.workflows import generate_batch

    mc = ModelConfig(
        base_model=str(sdxl_dir), template_model="nobody/absent-sdxl", device="cpu", dtype="float32"
    )
    template = save_png(astronaut, tmp_path / "astronaut.png")
    result = generate_batch(
        [(template, "astronaut.png")], ["xlbob"], XL.replace(second_steps=0), tmp_path / "out",
        model_config=mc, home=xl_home,
    )  # fmt: skip
    params = read_png_params(result.images[0]["path"])
    assert params["sdxl_model"] == str(sdxl_dir) and params["families"] == {"xlbob": "sdxl"}


@pytest.mark.slow
def test_text_to_photo_paints_an_sdxl_user_with_the_templates_model(
    tiny_model_dir, sdxl_dir, xl_home, analyzer, astronaut
) -> None:
    from easyphoto.text_to_photo import text_to_photo
    from easyphoto.workflows import portrait_generator

    mc = _config(tiny_model_dir, sdxl_dir)
    gen = portrait_generator(analyzer=PlacedFaces(analyzer, astronaut), model_config=mc, home=xl_home)
    t2p = Text2PhotoConfig(prompt="a person at the beach", width=128, height=128, steps=3, seed=5)
    portrait = text_to_photo(["xlbob"], t2p, XL.replace(second_steps=0), generator=gen, home=xl_home)
    xl = gen.sdxl_cache
    assert xl.load_count["sdxl:unet"] == 1, "the template and the portrait did not share one SDXL"
    assert gen.cache._base is None and portrait.params["families"] == {"xlbob": "sdxl"}
    template = portrait.intermediates["template"]
    assert np.abs(portrait.array.astype(int) - template).max() > 0, "the face was not painted"
    # the scene LoRA of a template and the user's LoRA take turns on the same modules
    assert xl.lora_path is not None and list(xl._active.values()) == [XL.lora_weight]
    assert next(iter(xl._active)).startswith("easyphoto_user"), "the user's adapter, not the scene's"


def test_sdxl_users_loras_are_cached_and_switch_exactly(tmp_path: Path) -> None:
    """The last ``sdxl_lora_cache_size`` SDXL users' LoRAs stay loaded: switching back reads no file and
    gives the same model as before; the least recently used goes first; a rewritten file is read again;
    ``None`` gives the exact base model back."""
    import os

    import torch

    from easyphoto.diffusion.sdxl import SDXLCache
    from easyphoto.diffusion.tiny_sdxl import tiny_sdxl_components

    files = {n: _sdxl_lora(tmp_path / f"{n}.safetensors", seed=i) for i, n in enumerate("abc")}
    config = ModelConfig(template_model="<in memory>", sdxl_lora_cache_size=2)
    xl = SDXLCache.from_components(tiny_sdxl_components(seed=0), config=config)
    te = xl.components()["text_encoder"]
    ids = torch.arange(8)[None]

    def out() -> torch.Tensor:
        with torch.no_grad():
            return te(ids).last_hidden_state.clone()

    base = out()
    xl.set_lora(files["a"], 1.0)
    with_a = out()
    xl.set_lora(files["b"], 1.0)
    with_b = out()
    xl.set_lora(files["a"], 1.0)
    assert xl.load_count["sdxl:lora"] == 2 and torch.equal(out(), with_a), "a was cached"
    assert not torch.allclose(with_a, with_b) and not torch.allclose(with_a, base)
    xl.set_lora(files["c"], 1.0)  # b is the least recently used: it goes
    xl.set_lora(files["a"], 1.0)
    assert xl.load_count["sdxl:lora"] == 3
    xl.set_lora(files["b"], 1.0)
    assert xl.load_count["sdxl:lora"] == 4 and torch.equal(out(), with_b)
    assert len(te.peft_config) == 2, f"adapters loaded: {sorted(te.peft_config)}"
    os.utime(files["b"], (1, 1))  # b rewritten (a new mtime): read again, the stale adapter dropped
    xl.set_lora(files["b"], 1.0)
    assert xl.load_count["sdxl:lora"] == 5 and len(te.peft_config) == 2
    xl.set_lora(None)
    assert torch.equal(out(), base) and xl.lora_path is None


def test_sdxl_cache_reset_cleans_what_a_failed_job_left(gen, astronaut: np.ndarray) -> None:
    from easyphoto.diffusion.lora import lora_config

    cfg = XL.replace(second_steps=0)
    before = gen.generate(astronaut, ["xlbob"], cfg).array
    xl = gen.sdxl_cache
    unet = xl.components()["unet"]
    unet.add_adapter(lora_config(rank=2, alpha=2), adapter_name="crashed_training")  # as a failed job
    unet.train()
    cleaned = xl.reset()
    assert "sdxl unet: adapter crashed_training" in cleaned and "sdxl unet: training mode" in cleaned
    assert xl.reset() == [] and xl.lora_path is not None  # clean now; the user's LoRA stays loaded
    assert np.array_equal(gen.generate(astronaut, ["xlbob"], cfg).array, before)
    assert xl.load_count["sdxl:lora"] == 1


def test_cli_generates_an_sdxl_user(
    tiny_model_dir, sdxl_dir, xl_home, astronaut, tmp_path, monkeypatch, capsys
) -> None:
    from easyphoto.cli.app import main
    from easyphoto.imageio import save_png
    from easyphoto.stages.generate import read_png_params

    monkeypatch.setenv("EASYPHOTO_HOME", str(xl_home))
    template = save_png(astronaut, tmp_path / "astronaut.png")
    code = main([
        "generate", "--template", str(template), "--user-id", "xlbob", "--base-model", str(tiny_model_dir),
        "--template-model", str(sdxl_dir), "--sdxl-short-side", "96", "--first-steps", "4",
        "--second-steps", "0", "--face-upscale", "off", "--seed", "3", "--device", "cpu",
        "--out", str(tmp_path / "out"), "--json",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    [entry] = json.loads(out.out)
    params = read_png_params(entry["output"])
    assert params["sdxl_model"] == str(sdxl_dir) and params["families"] == {"xlbob": "sdxl"}
    cfg = params["config"]
    assert (cfg["sdxl_short_side"], cfg["face_upscale"], cfg["second_steps"]) == (96, "off", 0)
    assert cfg["prompt"] == GenerateConfig().prompt  # the portrait passes keep their own prompt
