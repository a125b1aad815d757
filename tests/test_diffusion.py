"""Diffusion core on the tiny random SD1.5 model: loading, pipelines, cache, LoRA, single file, errors.

Everything runs offline on the CPU with one thread, 64×64 images and 2–3 steps.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch
from PIL import Image

from easyphoto.config import TRIGGER_CAPTION, ModelConfig
from easyphoto.diffusion.models import ModelCache, check_control_inputs, pick_device_dtype
from easyphoto.diffusion.tiny import CONTROLNET_NAMES
from easyphoto.errors import ConfigError, ModelNotFoundError

SIZE = 64
PROMPT = TRIGGER_CAPTION


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def cache(tiny_model_dir: Path) -> ModelCache:
    return ModelCache(ModelConfig(base_model=str(tiny_model_dir), local_files_only=True), device="cpu")


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A smooth 64×64 gradient with a disc: has edges for canny and colours for the colour net."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    img = np.stack([x * 4, y * 4, 255 - x * 2], axis=2).astype(np.uint8)
    img[(x - 32) ** 2 + (y - 30) ** 2 < 15**2] = (230, 180, 150)
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def mask() -> Image.Image:
    m = Image.new("L", (SIZE, SIZE), 0)
    m.paste(255, (16, 16, 48, 48))
    return m


def _txt2img(pipe, seed: int = 1, prompt: str = PROMPT) -> np.ndarray:
    out = pipe(prompt, num_inference_steps=2, height=SIZE, width=SIZE, generator=_gen(seed), output_type="np")
    return out.images[0]


def _inpaint(pipe, picture, mask, n: int, scale: float | list[float] = 0.8, seed: int = 1) -> np.ndarray:
    images = [picture] * n if n > 1 else picture
    out = pipe(
        PROMPT,
        image=picture,
        mask_image=mask,
        control_image=images,
        controlnet_conditioning_scale=scale,
        num_inference_steps=3,
        strength=0.7,
        height=SIZE,
        width=SIZE,
        generator=_gen(seed),
        output_type="np",
    )
    return out.images[0]


# ---------------------------------------------------------------- the tiny folder in plain diffusers


def test_tiny_folder_is_a_standard_diffusers_folder(tiny_model_dir: Path) -> None:
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_model_dir / sub).is_dir(), sub
    assert (tiny_model_dir / "model_index.json").is_file()
    for name in CONTROLNET_NAMES:
        assert (tiny_model_dir / "controlnet" / name / "config.json").is_file()
        assert (tiny_model_dir / "controlnet" / name / "diffusion_pytorch_model.safetensors").is_file()


def test_tiny_tokenizer_handles_caption_and_any_english(tiny_model_dir: Path) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    assert tok.model_max_length == 77
    for text in (TRIGGER_CAPTION, "A Photo of Zoë, smiling — 50% off! (masterpiece:1.2)", ""):
        ids = tok(text, padding="max_length", max_length=77, truncation=True).input_ids
        assert len(ids) == 77
        assert ids[0] == tok.bos_token_id
        body = ids[1 : ids.index(tok.eos_token_id)]
        assert len(body) > 0 or text == ""
        assert tok.eos_token_id not in body  # no character fell back to the unknown (= eos) token
    # learned merges keep the trigger words whole
    assert "easyphoto</w>" in tok.tokenize(TRIGGER_CAPTION)


def test_plain_diffusers_txt2img_img2img_and_four_controlnet_inpaint(tiny_model_dir, picture, mask) -> None:
    from diffusers import (
        ControlNetModel,
        StableDiffusionControlNetInpaintPipeline,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionPipeline,
    )

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae_scale_factor == 8
    img = _txt2img(pipe)
    assert img.shape == (SIZE, SIZE, 3) and np.isfinite(img).all() and img.std() > 0.01

    i2i = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_model_dir)
    i2i.set_progress_bar_config(disable=True)
    out = i2i(PROMPT, image=picture, strength=0.5, num_inference_steps=3, generator=_gen(), output_type="np")
    assert out.images[0].shape == (SIZE, SIZE, 3)

    nets = [ControlNetModel.from_pretrained(tiny_model_dir / "controlnet" / n) for n in CONTROLNET_NAMES]
    inp = StableDiffusionControlNetInpaintPipeline.from_pretrained(tiny_model_dir, controlnet=nets)
    inp.set_progress_bar_config(disable=True)
    with_nets = _inpaint(inp, picture, mask, 4, [0.8] * 4)
    without = _inpaint(inp, picture, mask, 4, [0.0] * 4)
    assert with_nets.shape == (SIZE, SIZE, 3)
    assert np.abs(with_nets - without).max() > 1e-3  # the randomised nets really steer the result


# ---------------------------------------------------------------- the cache


def test_same_seed_same_output_and_other_seed_differs(cache: ModelCache) -> None:
    pipe = helpers.txt2img(cache)
    a, b, c = _txt2img(pipe, 3), _txt2img(helpers.txt2img(cache), 3), _txt2img(pipe, 4)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_cache_builds_pipelines_from_shared_components_without_reloading(cache, picture, mask) -> None:
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    t2i = helpers.txt2img(cache)
    base_loads = {k: cache.load_count[k] for k in ("unet", "vae", "text_encoder", "tokenizer")}
    assert base_loads == {"unet": 1, "vae": 1, "text_encoder": 1, "tokenizer": 1}
    i2i = helpers.img2img(cache)
    inp = cache.inpaint_controlnet(["canny", "openpose", "color"])
    loads_after_first_inpaint = cache.loads
    inp2 = cache.inpaint_controlnet(["canny", "openpose", "color", "tile"])
    cache.inpaint_controlnet(["tile", "canny"])
    assert {k: cache.load_count[k] for k in base_loads} == base_loads
    assert cache.loads == loads_after_first_inpaint + 1  # only the tile net was new
    assert all(cache.load_count[f"controlnet:{n}"] == 1 for n in CONTROLNET_NAMES)
    assert t2i.unet is i2i.unet is inp.unet is inp2.unet
    assert t2i.text_encoder is inp.text_encoder and t2i.vae is inp2.vae
    assert t2i.scheduler is not i2i.scheduler  # schedulers hold run state: one each
    assert isinstance(inp2.controlnet, MultiControlNetModel) and len(inp2.controlnet.nets) == 4
    assert inp2.controlnet.nets[3] is cache.controlnet("tile")
    out = _inpaint(inp2, picture, mask, 4, [0.5, 0.5, 0.85, 0.5])
    assert out.shape == (SIZE, SIZE, 3)


def test_inpainting_encodes_the_image_once_for_a_4_channel_unet(cache, picture, mask) -> None:
    """diffusers also VAE-encodes the masked image, which only 9-channel inpainting UNets read."""
    from diffusers import StableDiffusionControlNetInpaintPipeline

    lean = cache.inpaint_controlnet(["canny"])
    stock = StableDiffusionControlNetInpaintPipeline(**{k: getattr(lean, k) for k in lean.components})
    stock.set_progress_bar_config(disable=True)
    calls: list[int] = []
    hook = cache.vae.encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = _inpaint(lean, picture, mask, 1)
        lean_calls = len(calls)
        _inpaint(stock, picture, mask, 1)
    finally:
        hook.remove()
    assert lean_calls == 1 and len(calls) - lean_calls == 2
    assert out.shape == (SIZE, SIZE, 3) and np.isfinite(out).all()


@pytest.mark.parametrize("name", CONTROLNET_NAMES)
def test_each_controlnet_changes_the_inpainting(cache, picture, mask, name: str) -> None:
    pipe = cache.inpaint_controlnet([name])
    on = _inpaint(pipe, picture, mask, 1, 1.0)
    off = _inpaint(pipe, picture, mask, 1, 0.0)
    assert np.abs(on - off).mean() > 1e-4


def test_controlnets_default_to_local_subfolders_unless_configured(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cache = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu")
    assert cache.controlnet_source("color") == str(tiny_model_dir / "controlnet" / "color")
    custom = ModelCache(
        ModelConfig(base_model=str(tiny_model_dir), controlnet_tile=str(tmp_path)), device="cpu"
    )
    assert custom.controlnet_source("tile") == str(tmp_path)
    hub = ModelCache(ModelConfig(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5"), device="cpu")
    assert hub.controlnet_source("canny") == "lllyasviel/control_v11p_sd15_canny"
    with pytest.raises(ConfigError, match="unknown ControlNet"):
        cache.controlnet_source("depth")


def test_check_control_inputs_rejects_short_lists() -> None:
    check_control_inputs(["canny", "color"], [1, 2], [0.5, 0.85])
    with pytest.raises(ConfigError, match="2 ControlNets"):
        check_control_inputs(["canny", "color"], [1, 2], [0.5])


def test_scheduler_is_dpmpp_2m_karras_and_fresh(cache: ModelCache) -> None:
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    s1, s2 = cache.new_scheduler(), cache.new_scheduler()
    assert isinstance(s1, DPMSolverMultistepScheduler) and s1 is not s2
    assert s1.config.use_karras_sigmas and s1.config.algorithm_type == "dpmsolver++"
    assert s1.config.solver_order == 2
    assert cache.new_scheduler("dpmpp_2m_sde_karras").config.algorithm_type == "sde-dpmsolver++"
    noise = cache.noise_scheduler
    assert isinstance(noise, DDPMScheduler) and noise.config.num_train_timesteps == 1000
    assert noise.config.beta_schedule == "scaled_linear"
    with pytest.raises(ConfigError):
        cache.new_scheduler("euler")


def test_vae_override_and_release_reload(tiny_model_dir: Path) -> None:
    cfg = ModelConfig(base_model=str(tiny_model_dir), vae=str(tiny_model_dir / "vae"))
    cache = ModelCache(cfg, device="cpu")
    assert cache.vae.config.latent_channels == 4
    assert cache.load_count["vae"] == 2  # base VAE, then the override
    cache.release()
    assert cache.load_count["unet"] == 1
    _ = cache.unet
    assert cache.load_count["unet"] == 2  # released components load again on use


# ---------------------------------------------------------------- LoRA


def _make_lora(tiny_model_dir: Path, out: Path, rank: int = 4, alpha: float = 2.0):
    """A random LoRA (alpha ≠ rank) on fresh copies of the tiny UNet and text encoder, saved both ways."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from easyphoto.diffusion.lora import (
        TEXT_ENCODER_TARGETS,
        lora_config,
        save_lora_diffusers,
        save_lora_kohya,
    )

    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir, subfolder="unet")
    te = CLIPTextModel.from_pretrained(tiny_model_dir, subfolder="text_encoder")
    unet.add_adapter(lora_config(rank, alpha, init_lora_weights="gaussian"))
    te.add_adapter(lora_config(rank, alpha, TEXT_ENCODER_TARGETS, init_lora_weights="gaussian"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for model in (unet, te):
            for name, p in model.named_parameters():
                if "lora_B" in name:  # peft zero-initialises B: give the LoRA an effect
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    diffusers_file = save_lora_diffusers(out / "user_diffusers.safetensors", unet, te)
    kohya_file = save_lora_kohya(out / "user_kohya.safetensors", unet, te)
    return unet, te, diffusers_file, kohya_file


def test_lora_load_weight_and_unload_restores_base_exactly(cache, tiny_model_dir, tmp_path) -> None:
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    unet, te, diffusers_file, kohya_file = _make_lora(tiny_model_dir, tmp_path)
    with safe_open(str(kohya_file), "pt") as f:
        keys = list(f.keys())
        alphas = {f.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
    assert any(k.startswith("lora_unet_") for k in keys)
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in keys)
    assert alphas == {2.0}

    pipe = helpers.txt2img(cache)
    base = _txt2img(pipe)
    reference = _txt2img(
        StableDiffusionPipeline(
            vae=cache.vae,
            text_encoder=te,
            tokenizer=cache.tokenizer,
            unet=unet,
            scheduler=cache.new_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        ).to("cpu")
    )
    assert np.abs(reference - base).max() > 1e-3
    base_loads = cache.load_count["unet"]
    cache.reset()  # whatever earlier tests on this shared cache left (they may train on it)
    for path in (diffusers_file, kohya_file):
        lora_loads = cache.load_count["lora"]
        cache.set_lora(path, 1.0)
        full = _txt2img(pipe)
        # alpha/rank = 0.5 survives the file round trip: the output is the one the trained modules give
        np.testing.assert_allclose(full, reference, atol=1e-5)
        cache.set_lora(path, 0.5)
        assert cache.reset() == []  # a loaded user LoRA is inference state, nothing to clean
        half = _txt2img(pipe)
        assert np.abs(half - full).max() > 1e-3 and np.abs(half - base).max() > 1e-3
        assert cache.load_count["lora"] == lora_loads + 1  # a new weight does not read the file again
        assert cache.lora_path == str(Path(path).resolve()) and cache.lora_weight == 0.5
        cache.set_lora(None, 0.9)
        np.testing.assert_array_equal(_txt2img(pipe), base)
        assert cache.lora_path is None
    assert cache.load_count["unet"] == base_loads


def test_lora_cache_keeps_recent_users_and_evicts_the_oldest(tiny_model_dir, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    cache = ModelCache(
        ModelConfig(base_model=str(tiny_model_dir), lora_cache_size=2), device="cpu", dtype="float32"
    )
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)

    def out() -> torch.Tensor:
        with torch.no_grad():
            return cache.unet(x, 10, cond).sample

    base = out()
    files = []
    for i in range(3):  # three random "users" for the tiny UNet (diffusers-format LoRA keys)
        state = {}
        for name, mod in cache.unet.named_modules():
            if name.endswith(("attn1.to_q", "attn2.to_v")):
                gi = torch.Generator().manual_seed(10 + i)
                state[f"unet.{name}.lora_A.weight"] = torch.randn(2, mod.in_features, generator=gi) * 0.3
                state[f"unet.{name}.lora_B.weight"] = torch.randn(mod.out_features, 2, generator=gi) * 0.3
        files.append(tmp_path / f"user{i}.safetensors")
        save_file(state, str(files[-1]))
    outs = []
    for f in files[:2]:
        cache.set_lora(f, 1.0)
        outs.append(out())
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], base)
    cache.set_lora(files[0], 1.0)  # still loaded: no read, same output
    assert cache.load_count["lora"] == 2 and torch.equal(out(), outs[0])
    cache.set_lora(files[2], 1.0)  # third user: the least recently used (user1) is dropped
    assert cache.load_count["lora"] == 3
    cache.set_lora(files[0], 1.0)
    assert cache.load_count["lora"] == 3 and torch.equal(out(), outs[0])
    cache.set_lora(files[1], 1.0)
    assert cache.load_count["lora"] == 4 and torch.equal(out(), outs[1])
    cache.set_lora(None)
    assert torch.equal(out(), base), "no user LoRA active: the exact base model"
    cache.unload_lora()
    assert torch.equal(out(), base)


def test_missing_lora_file_is_a_clear_error(cache, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        cache.set_lora(tmp_path / "nobody.safetensors", 0.9)
    bad = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({"something.weight": torch.zeros(2)}, str(bad))
    with pytest.raises(ModelNotFoundError, match="not a LoRA"):
        cache.set_lora(bad, 0.9)
    assert cache.lora_path is None


# ---------------------------------------------------------------- single file


def test_single_file_checkpoint_loads_offline_with_config_dir(
    cache, tiny_model_dir, tmp_path, monkeypatch
) -> None:
    from easyphoto.diffusion.single_file import save_single_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = save_single_file(tmp_path / "tiny_sd15.safetensors", cache.unet, cache.vae, cache.text_encoder)
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in keys

    single = ModelCache(
        ModelConfig(base_model=str(ckpt), config_dir=str(tiny_model_dir), local_files_only=True), device="cpu"
    )
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(cache, name).state_dict(), getattr(single, name).state_dict()
        assert set(ours) == set(theirs), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    np.testing.assert_array_equal(_txt2img(helpers.txt2img(single), 5), _txt2img(helpers.txt2img(cache), 5))

    no_config = ModelCache(ModelConfig(base_model=str(ckpt), local_files_only=True), device="cpu")
    with pytest.raises(ModelNotFoundError, match="EASYPHOTO_MODEL_CONFIG_DIR"):
        _ = no_config.unet


# ---------------------------------------------------------------- errors and settings


def test_missing_hub_model_offline_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = ModelCache(ModelConfig(base_model="nobody/missing-sd15", local_files_only=True), device="cpu")
    with pytest.raises(ModelNotFoundError) as info:
        _ = cache.unet
    msg = str(info.value)
    assert "'nobody/missing-sd15'" in msg and "huggingface-cli download nobody/missing-sd15" in msg
    assert "--base-model" in msg and "offline" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no hub traceback chained


def test_missing_paths_and_controlnets_are_clear_errors(tiny_model_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        _ = ModelCache(ModelConfig(base_model=str(tmp_path / "nope")), device="cpu").unet
    with pytest.raises(ModelNotFoundError, match="not a diffusers folder"):
        _ = ModelCache(ModelConfig(base_model=str(tmp_path)), device="cpu").unet
    cfg = ModelConfig(
        base_model=str(tiny_model_dir), controlnet_openpose="nobody/missing-pose", local_files_only=True
    )
    with pytest.raises(ModelNotFoundError, match="ControlNet 'openpose'.*EASYPHOTO_CONTROLNET_OPENPOSE"):
        ModelCache(cfg, device="cpu").controlnet("openpose")


def test_pick_device_dtype() -> None:
    assert pick_device_dtype("cpu", None) == (torch.device("cpu"), torch.float32)
    assert pick_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert pick_device_dtype("cpu", "torch.float16")[1] == torch.float16
    dev, dt = pick_device_dtype(None, None)
    if torch.cuda.is_available():
        assert (dev.type, dt) == ("cuda", torch.float16)
    else:
        assert dt == torch.float32
    with pytest.raises(ConfigError, match="dtype"):
        pick_device_dtype("cpu", "int8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            pick_device_dtype("cuda", None)


def test_model_config_environment_overrides() -> None:
    env = {
        "EASYPHOTO_BASE_MODEL": "/models/sd15",
        "EASYPHOTO_CONTROLNET_COLOR": "/models/color",
        "EASYPHOTO_SCHEDULER": "dpmpp_2m_sde_karras",
        "EASYPHOTO_CPU_OFFLOAD": "1",
        "HF_HUB_OFFLINE": "1",
    }
    cfg = ModelConfig.from_env(env)
    assert cfg.base_model == "/models/sd15" and cfg.controlnet_color == "/models/color"
    assert cfg.scheduler == "dpmpp_2m_sde_karras" and cfg.cpu_offload and cfg.local_files_only
    with pytest.raises(ConfigError, match="scheduler"):  # refused where it enters, naming the field
        ModelConfig(scheduler="euler")


def test_importing_easyphoto_diffusion_does_not_load_torch() -> None:
    code = "import sys, easyphoto, easyphoto.diffusion; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- control images and CLI helper


def test_control_images(picture: Image.Image) -> None:
    from easyphoto.diffusion.controls import canny_image, color_image, tile_image

    arr = np.asarray(picture)
    edges = canny_image(arr)
    assert edges.shape == arr.shape and set(np.unique(edges)) <= {0, 255} and edges.max() == 255
    colors = color_image(arr, cell=16)
    assert colors.shape == arr.shape
    assert len(np.unique(colors[:16, :16].reshape(-1, 3), axis=0)) == 1  # one colour per cell
    np.testing.assert_array_equal(tile_image(arr), arr)
    assert tile_image(arr, 4.0).shape == arr.shape
    with pytest.raises(ValueError, match="RGB uint8"):
        canny_image(arr.astype(np.float32))


def test_tiny_model_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from easyphoto.cli.tiny_model import tiny_model_command

    out = tmp_path / "tiny"
    tiny_model_command(out, full_size=False, seed=3)
    assert (out / "controlnet" / "tile" / "config.json").is_file()
    assert f"--base-model {out}" in capsys.readouterr().out
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        tiny_model_command(other, full_size=False, seed=0)


def test_in_memory_components_match_the_model_folder(tiny_model_dir) -> None:
    """``tiny_components`` (in memory, like diffusers' dummy components) is the folder's model exactly."""
    mem = helpers.tiny_cache(0)
    disk = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu")
    assert mem.loads == 0
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(mem, name).state_dict(), getattr(disk, name).state_dict()
        assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    for net in ("canny", "tile"):
        ours, theirs = mem.controlnet(net).state_dict(), disk.controlnet(net).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), net
    assert mem.load_count["controlnet:canny"] == 0
    np.testing.assert_array_equal(_txt2img(helpers.txt2img(mem), 5), _txt2img(helpers.txt2img(disk), 5))


def test_second_users_text_encoder_lora_applies_without_a_false_missing_report(
    tiny_model_dir, tmp_path: Path, caplog
) -> None:
    """transformers 5 reports the adapters already in a text encoder as MISSING when another user's
    LoRA is loaded beside them; the load is right (checked here), so ``quiet_libraries`` drops that report."""
    import logging

    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel

    from easyphoto.diffusion.lora import TEXT_ENCODER_TARGETS, UNET_TARGETS, save_lora_kohya

    cache = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    files = []
    for i in range(2):  # two users, each with UNet and text-encoder adapters (as training writes them)
        unet = UNet2DConditionModel.from_pretrained(tiny_model_dir, subfolder="unet")
        te = CLIPTextModel.from_pretrained(tiny_model_dir, subfolder="text_encoder")
        g = torch.Generator().manual_seed(20 + i)
        for model, targets in ((unet, UNET_TARGETS), (te, TEXT_ENCODER_TARGETS)):
            model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=list(targets)))
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_" in name:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        files.append(save_lora_kohya(tmp_path / f"user{i}.safetensors", unet, te))
    ids = cache.tokenizer(["a photo"], padding="max_length", max_length=77, return_tensors="pt").input_ids

    def encode() -> torch.Tensor:
        with torch.no_grad():
            return cache.text_encoder(ids)[0]

    base = encode()
    with caplog.at_level(logging.WARNING):
        outs = []
        for f in files:
            cache.set_lora(f, 1.0)
            outs.append(encode())
    assert "LOAD REPORT" not in caplog.text, caplog.text
    assert not torch.equal(outs[0], base) and not torch.equal(outs[1], outs[0])
    fresh = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    fresh.set_lora(files[1], 1.0)
    with torch.no_grad():
        alone = fresh.text_encoder(ids)[0]
    assert torch.allclose(alone, outs[1], atol=1e-6), "the second user's text-encoder LoRA did not apply"
