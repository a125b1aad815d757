"""SDXL: the tiny random SDXL builder, SDXL loading and family checks, text-to-photo end to end.

The tiny SDXL (UNet 32/64 channels, text encoders 32 and 48 wide) renders 64 px templates in ~0.1 s on one
CPU thread. Its pictures are noise; the tests check shapes, determinism, metadata and that each
control (pose, scene LoRA) measurably changes the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import PlacedFaces, train_tiny_users

from easyphoto.config import GenerateConfig, ModelConfig, Text2PhotoConfig
from easyphoto.errors import ConfigError

T2P = Text2PhotoConfig(prompt="a photo of a person at the beach", width=64, height=64, steps=3, seed=5)


@pytest.fixture(scope="module")
def sdxl_cache(sdxl_dir: Path):
    from easyphoto.diffusion.sdxl import SDXLCache

    return SDXLCache(ModelConfig(template_model=str(sdxl_dir)), device="cpu", dtype="float32")


# ------------------------------------------------------------------ (a) the tiny builder
def test_tiny_sdxl_is_a_real_sdxl_folder(sdxl_dir: Path) -> None:
    from diffusers import ControlNetModel, StableDiffusionXLPipeline

    index = json.loads((sdxl_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert {"text_encoder_2", "tokenizer_2"} <= set(index)
    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_dir)
    unet = pipe.unet.config
    assert unet.addition_embed_type == "text_time"
    # cross attention reads both encoders' hidden states side by side; the added embedding reads six
    # size numbers plus the second encoder's pooled projection.
    te1, te2 = pipe.text_encoder.config, pipe.text_encoder_2.config
    assert unet.cross_attention_dim == te1.hidden_size + te2.hidden_size
    assert unet.projection_class_embeddings_input_dim == unet.addition_time_embed_dim * 6 + te2.projection_dim
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.vae.config.scaling_factor == pytest.approx(0.13025)
    net = ControlNetModel.from_pretrained(sdxl_dir / "controlnet" / "openpose")
    assert net.config.addition_embed_type == "text_time"
    size = sum(f.stat().st_size for f in sdxl_dir.rglob("*") if f.is_file())
    assert size < 20 * 1024**2, f"the tiny SDXL should stay tiny, got {size / 1024**2:.1f} MB"


def test_cli_tiny_model_sdxl(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from easyphoto.cli import app
    from easyphoto.diffusion.families import model_family

    out = tmp_path / "xl"
    result = CliRunner().invoke(app, ["tiny-model", "--sdxl", str(out)])
    assert result.exit_code == 0, result.output
    assert "SDXL" in result.output and "--template-model" in result.output
    assert model_family(str(out)) == "sdxl"
    assert (out / "controlnet" / "openpose" / "config.json").is_file()


# ------------------------------------------------------------------ (b) loading and families
def test_family_detection(sdxl_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from easyphoto.diffusion.families import model_family
    from easyphoto.diffusion.single_file import save_single_file

    assert model_family(str(sdxl_dir)) == "sdxl"
    assert model_family(str(tiny_model_dir)) == "sd15"
    assert model_family("stabilityai/stable-diffusion-xl-base-1.0") == "sdxl"
    assert model_family("nobody/not-downloaded") is None
    # a folder with only unet/config.json is told by its added embedding
    (tmp_path / "u" / "unet").mkdir(parents=True)
    (tmp_path / "u" / "unet" / "config.json").write_text(json.dumps({"addition_embed_type": "text_time"}))
    assert model_family(str(tmp_path / "u")) == "sdxl"
    # an original-layout SD1.5 single file, from its tensor names
    from diffusers import StableDiffusionPipeline

    sd = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
    path = save_single_file(tmp_path / "sd15.safetensors", sd.unet, sd.vae, sd.text_encoder)
    assert model_family(str(path)) == "sd15"
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="broken.safetensors"):
        model_family(str(tmp_path / "broken.safetensors"))


def test_sdxl_single_file_loads_like_the_folder(sdxl_dir: Path, sdxl_cache, tmp_path: Path) -> None:
    from easyphoto.diffusion.families import model_family
    from easyphoto.diffusion.sdxl import SDXLCache, render_template
    from easyphoto.diffusion.single_file_sdxl import save_sdxl_single_file

    parts = sdxl_cache.components()
    path = save_sdxl_single_file(
        tmp_path / "xl.safetensors",
        parts["unet"],
        parts["vae"],
        parts["text_encoder"],
        parts["text_encoder_2"],
    )
    assert model_family(str(path)) == "sdxl"
    mc = ModelConfig(template_model=str(path), config_dir=str(sdxl_dir), local_files_only=True)
    single = SDXLCache(mc, device="cpu", dtype="float32")
    kw = {"width": 64, "height": 64, "steps": 2, "guidance_scale": 5.0, "seed": 8}
    a = render_template(single, "a person", "", **kw)
    assert np.array_equal(a, render_template(sdxl_cache, "a person", "", **kw)), (
        "the file differs from the folder"
    )
    assert single.load_count["sdxl:unet"] == 1


def test_sd15_template_model_is_refused_before_loading(tiny_model_dir: Path) -> None:
    from easyphoto.diffusion.sdxl import SDXLCache

    cache = SDXLCache(ModelConfig(template_model=str(tiny_model_dir)), device="cpu")
    with pytest.raises(ConfigError, match=r"is SD1\.5 but text-to-photo .* is SDXL"):
        cache.pipeline()
    assert cache.loads == 0 and not cache.loaded


def test_missing_template_model_names_the_setting(tmp_path: Path) -> None:
    from easyphoto.diffusion.sdxl import SDXLCache
    from easyphoto.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="EASYPHOTO_TEMPLATE_MODEL"):
        SDXLCache(ModelConfig(template_model=str(tmp_path / "nope")), device="cpu").pipeline()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a diffusers folder"):
        SDXLCache(ModelConfig(template_model=str(tmp_path / "empty")), device="cpu").pipeline()


def test_vae_override_only_in_half_precision(sdxl_dir: Path) -> None:
    from easyphoto.diffusion.sdxl import SDXLCache

    fp32 = SDXLCache(ModelConfig(template_model=str(sdxl_dir)), device="cpu", dtype="float32")
    assert fp32.vae_source() is None  # the default fp16-fix VAE is for float16 only
    mine = SDXLCache(ModelConfig(template_model=str(sdxl_dir), template_vae="/x/vae"), device="cpu")
    assert mine.vae_source() == "/x/vae"
    half = SDXLCache(ModelConfig(template_model=str(sdxl_dir)), device="cpu", dtype="bfloat16")
    assert half.vae_source() == "madebyollin/sdxl-vae-fp16-fix"


def test_render_is_seeded_and_pose_changes_it(sdxl_cache) -> None:
    from easyphoto.diffusion.sdxl import render_template
    from easyphoto.stages.text2photo import draw_body_pose, presets

    kw = {"width": 64, "height": 48, "steps": 3, "guidance_scale": 5.0}
    a = render_template(sdxl_cache, "a person", "blurry", seed=1, **kw)
    loads = dict(sdxl_cache.load_count)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8 and a.std() > 1
    assert np.array_equal(a, render_template(sdxl_cache, "a person", "blurry", seed=1, **kw))
    assert not np.array_equal(a, render_template(sdxl_cache, "a person", "blurry", seed=2, **kw))
    assert dict(sdxl_cache.load_count) == loads, "a second render must not read weights again"
    pose = draw_body_pose(presets()["poses"]["half_body"], 64, 48)
    posed = render_template(sdxl_cache, "a person", "blurry", seed=1, pose=pose, **kw)
    assert np.abs(posed.astype(int) - a).mean() > 1, "the pose ControlNet had no effect"
    other = draw_body_pose(presets()["poses"]["arms_crossed"], 64, 48)
    assert not np.array_equal(
        posed, render_template(sdxl_cache, "a person", "blurry", seed=1, pose=other, **kw)
    )
    assert sdxl_cache.load_count["sdxl:controlnet:openpose"] == 1
    with pytest.raises(ConfigError, match="multiples of 8"):
        render_template(sdxl_cache, "a person", "", seed=1, **{**kw, "width": 60})


def _scene_lora(path: Path) -> Path:
    """A random rank-4 SDXL LoRA for the tiny UNet, saved the way diffusers' SDXL trainers save one."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from easyphoto.diffusion.tiny_sdxl import tiny_sdxl_components

    unet = tiny_sdxl_components(seed=0)["unet"]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: no effect until trained
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    StableDiffusionXLPipeline.save_lora_weights(path, unet_lora_layers=get_peft_model_state_dict(unet))
    return path / "pytorch_lora_weights.safetensors"


def test_scene_lora_styles_the_template_and_sd15_loras_are_refused(sdxl_cache, t2p_home, tmp_path) -> None:
    from easyphoto.diffusion.families import lora_family
    from easyphoto.diffusion.sdxl import render_template
    from easyphoto.users import user_dir

    kw = {"width": 64, "height": 64, "steps": 3, "guidance_scale": 5.0, "seed": 3}
    plain = render_template(sdxl_cache, "a person", "", **kw)
    lora = _scene_lora(tmp_path)
    sdxl_cache.set_scene_lora(lora, 0.8)
    styled = render_template(sdxl_cache, "a person", "", **kw)
    assert np.abs(styled.astype(int) - plain).mean() > 1, "the scene LoRA had no effect"
    sdxl_cache.set_scene_lora(lora, 0.8)  # the same file again: not read twice
    assert sdxl_cache.load_count["sdxl:scene_lora"] == 1
    sdxl_cache.set_scene_lora(None)
    assert np.array_equal(render_template(sdxl_cache, "a person", "", **kw), plain), "not back to the base"
    sd15 = user_dir("alice", t2p_home) / "lora.safetensors"
    assert lora_family(sd15) == "sd15"
    with pytest.raises(ConfigError, match=r"scene LoRA 'lora.safetensors' is SD1\.5 but the template model"):
        sdxl_cache.set_scene_lora(sd15)
    assert sdxl_cache.load_count["sdxl:scene_lora"] == 1


def test_body_pose_drawing() -> None:
    from easyphoto.stages.text2photo import draw_body_pose, pose_image, presets

    points = presets()["poses"]["half_body"]
    img = draw_body_pose(points, 128, 96)
    assert img.shape == (96, 128, 3) and img.dtype == np.uint8
    # the nose (keypoint 0) is drawn in OpenPose's colour 0, pure red, where the preset puts it
    x, y = round(points[0][0] * 128), round(points[0][1] * 96)
    assert tuple(img[y, x]) == (255, 0, 0)
    assert img[0, 0].sum() == 0  # the background stays black
    with pytest.raises(ConfigError, match="not a shipped pose"):
        pose_image("no_such_pose", 64, 64)
    with pytest.raises(ConfigError, match="18 keypoints"):
        draw_body_pose([[0.5, 0.5]], 64, 64)


# ------------------------------------------------------------------ (c) text-to-photo end to end
FAST = GenerateConfig(short_side=96, first_steps=3, second_steps=2, second_scale=1.5)
T2P_E2E = Text2PhotoConfig(prompt="a photo of a person at the beach", width=128, height=128, steps=3, seed=5)


@pytest.fixture(scope="module")
def t2p_home(tmp_path_factory, tiny_model_dir: Path, astronaut: np.ndarray, analyzer) -> Path:
    """An EASYPHOTO_HOME with one tiny SD1.5 user, alice."""
    return train_tiny_users(tmp_path_factory, tiny_model_dir, astronaut, analyzer, ("alice",))


@pytest.fixture(scope="module")
def t2p(sdxl_dir: Path, tiny_model_dir: Path, t2p_home: Path, analyzer, astronaut: np.ndarray):
    """(portrait generator, template maker) over the tiny SD1.5 and the tiny SDXL."""
    from easyphoto.text_to_photo import template_maker
    from easyphoto.workflows import portrait_generator

    mc = ModelConfig(
        base_model=str(tiny_model_dir), template_model=str(sdxl_dir), device="cpu", dtype="float32"
    )
    gen = portrait_generator(analyzer=PlacedFaces(analyzer, astronaut), model_config=mc, home=t2p_home)
    return gen, template_maker(model_config=mc)


@pytest.mark.slow
def test_text_to_photo_end_to_end(t2p, t2p_home: Path, tmp_path: Path) -> None:
    from easyphoto.imageio import load_image
    from easyphoto.stages.generate import read_png_params
    from easyphoto.text_to_photo import text_to_photo_files

    gen, maker = t2p
    events: list[dict] = []
    result = text_to_photo_files(
        ["alice"], T2P_E2E, FAST, tmp_path, generator=gen, maker=maker, home=t2p_home, on_event=events.append
    )
    entry = result.images[0]
    portrait, template = load_image(entry["path"]), load_image(entry["template_path"])
    assert portrait.shape == template.shape == (128, 128, 3)
    assert gen.analyzer.placed >= 1, "the portrait half did not run on the SDXL template"
    # the user was painted in: pixels changed, and only inside the face region
    diff = np.abs(portrait.astype(int) - template).max(axis=2) > 0
    assert diff.any(), "the face was not painted"
    face = gen.analyzer.detect(template)[0]
    ys, xs = np.nonzero(diff)
    cx, cy = face.center
    assert max(abs(xs - cx).max(), abs(ys - cy).max()) < 1.6 * face.size
    assert [s["user_id"] for s in entry["scores"]] == ["alice"]
    # PNG metadata: the template's prompt, seed and model; the portrait seed follows the template's
    params = read_png_params(entry["path"])
    t = params["text2photo"]
    assert (
        t["prompt"] == T2P_E2E.prompt
        and t["seed"] == 5
        and t["template_model"] == str(maker.cache.config.template_model)
    )
    assert (t["width"], t["height"], t["steps"]) == (128, 128, 3) and t["pose"] is None
    assert params["seed"] == 5 and params["template"] == "text-to-photo" and params["user_ids"] == ["alice"]
    assert {"template", "step"} <= {e.get("stage", e["type"]) for e in events}
    # reproducible from the PNG alone: the same settings give the same pixels
    again = text_to_photo_files(
        params["user_ids"], Text2PhotoConfig(**{k: t[k] for k in Text2PhotoConfig.model_fields}),
        GenerateConfig(**params["config"]), tmp_path / "again", generator=gen, maker=maker, home=t2p_home,
    )  # fmt: skip
    assert np.array_equal(load_image(again.images[0]["path"]), portrait)
    assert np.array_equal(load_image(again.images[0]["template_path"]), template)


def test_text_to_photo_of_a_person_given_as_photos(t2p, t2p_home: Path, tmp_path: Path, astronaut) -> None:
    """No template and no training: SDXL draws the scene, the IP-Adapter paints the person from photos
    (user "photo"); a picture goes behind them; a kept generator forgets the photos for the next job."""
    from easyphoto.imageio import load_image, save_png
    from easyphoto.stages.generate import read_png_params
    from easyphoto.text_to_photo import text_to_photo_files

    gen, maker = t2p
    me = save_png(astronaut, tmp_path / "me.png")
    beach = save_png(np.full((64, 96, 3), (30, 140, 220), np.uint8), tmp_path / "beach.png")
    result = text_to_photo_files(
        [], T2P_E2E, FAST.replace(second_steps=0), tmp_path / "out", generator=gen, maker=maker,
        home=t2p_home, photos=[me], background_image=beach,
    )  # fmt: skip
    entry = result.images[0]
    assert [s["user_id"] for s in entry["scores"]] == ["photo"] and entry["path"].endswith("-photo.png")
    params = read_png_params(entry["path"])
    assert params["user_ids"] == ["photo"] and params["config"]["ip_adapter_scale"] is None
    assert params["background"] == "replace" and params["text2photo"]["prompt"] == T2P_E2E.prompt
    portrait, template = load_image(entry["path"]), load_image(entry["template_path"])
    assert (np.abs(portrait.astype(int) - template).max(axis=2) > 0).any(), "the person was painted in"
    assert "photo" in gen.photo_users
    again = text_to_photo_files(["alice"], T2P_E2E, FAST, tmp_path / "next", generator=gen, maker=maker,
                                home=t2p_home)  # fmt: skip
    assert [s["user_id"] for s in again.images[0]["scores"]] == ["alice"] and not gen.photo_users


@pytest.mark.slow
def test_text_to_photo_pose_changes_the_template(t2p, t2p_home: Path) -> None:
    from easyphoto.text_to_photo import text_to_photo

    gen, maker = t2p
    plain = text_to_photo(
        ["alice"], T2P_E2E, FAST.replace(second_steps=0), generator=gen, maker=maker, home=t2p_home
    )
    posed = text_to_photo(
        ["alice"],
        T2P_E2E,
        FAST.replace(second_steps=0),
        pose="half_body",
        generator=gen,
        maker=maker,
        home=t2p_home,
    )
    a, b = plain.intermediates["template"], posed.intermediates["template"]
    assert np.abs(a.astype(int) - b).mean() > 1, "the pose did not change the template"
    assert posed.params["text2photo"]["pose"] == "preset:half_body"
    assert posed.params["text2photo"]["pose_sha256"] and plain.params["text2photo"]["pose_sha256"] is None


def test_no_face_in_template_is_a_clear_error(sdxl_dir, tiny_model_dir, t2p_home, analyzer) -> None:
    from easyphoto.errors import NoFaceError
    from easyphoto.text_to_photo import text_to_photo
    from easyphoto.workflows import portrait_generator

    mc = ModelConfig(
        base_model=str(tiny_model_dir), template_model=str(sdxl_dir), device="cpu", dtype="float32"
    )
    gen = portrait_generator(analyzer=analyzer, model_config=mc, home=t2p_home)
    with pytest.raises(NoFaceError, match=r"text-to-photo template \(seed 5\)"):
        text_to_photo(["alice"], T2P_E2E, FAST, generator=gen, model_config=mc, home=t2p_home)


def test_text_to_photo_refuses_unknown_users_and_sd15_users_on_an_sdxl_base(
    t2p_home: Path, sdxl_dir: Path
) -> None:
    from easyphoto.errors import UnknownUserError
    from easyphoto.text_to_photo import check_text_to_photo

    with pytest.raises(UnknownUserError):
        check_text_to_photo(["nobody"], FAST, t2p_home)
    assert check_text_to_photo(["alice"], FAST, t2p_home) == ["alice"]
    with pytest.raises(ConfigError, match=r"is SDXL, but 'alice' needs SD1\.5"):
        check_text_to_photo(["alice"], FAST, t2p_home, ModelConfig(base_model=str(sdxl_dir)))


def test_cli_generate_prompt(
    sdxl_dir: Path, tiny_model_dir: Path, t2p_home: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from easyphoto.cli.app import main

    monkeypatch.setenv("EASYPHOTO_HOME", str(t2p_home))
    base = ["generate", "--user-id", "alice", "--base-model", str(tiny_model_dir), "--device", "cpu"]

    def run(*args: str) -> tuple[int, str]:
        code = main([*base, *args])
        out = capsys.readouterr()
        return code, out.out + out.err

    # the tiny SDXL draws noise: the portrait half finds no face and says so, naming the template's seed
    xl = ["--size", "64x64", "--seed", "9", "--template-model", str(sdxl_dir)]
    code, text = run("--prompt", "@beach", *xl, "--first-steps", "2", "--out", str(tmp_path / "out"))
    assert code == 2 and "text-to-photo template (seed 9)" in text and "no face" in text, text
    assert run("--prompt", "x", "--size", "64by64")[0] == 2
    code, text = run("--prompt", "@nope")
    assert code == 2 and "studio" in text  # the shipped presets are listed
    code, text = run("--prompt", "a person", "--size", "64x64", "--template-model", str(tiny_model_dir))
    assert code == 2 and "SD1.5" in text and "SDXL" in text, text
    code, text = run()
    assert code == 2 and "--template" in text and "--prompt" in text


# ------------------------------------------------------------------ the server: /v1 and EasyPhoto's tabs=3
def _worker(home: Path, mc: ModelConfig, analyzer, astronaut: np.ndarray):
    """An in-process job worker whose face analyzer places a face in the tiny SDXL's noise."""
    from easyphoto.jobs import Worker

    worker = Worker(home, model_config=mc)
    worker._analyzer = PlacedFaces(analyzer, astronaut)
    return worker


@pytest.mark.slow
def test_compat_tabs3_produces_an_image(
    sdxl_dir, tiny_model_dir, t2p_home, analyzer, astronaut, monkeypatch
) -> None:
    import base64

    import cv2

    from easyphoto.jobs import JobService
    from easyphoto.server.compat import infer_response, submit_infer_body

    monkeypatch.setenv("EASYPHOTO_GENERATE_DEFAULTS", json.dumps({"short_side": 96}))
    service = JobService(t2p_home)
    body = {
        "user_ids": ["alice"], "tabs": 3, "sd_xl_input_prompt": "a person in a garden",
        "sd_xl_resolution": "(128, 96)", "seed": 11, "first_diffusion_steps": 3, "second_diffusion_steps": 2,
    }  # fmt: skip
    job, notes = submit_infer_body(service, bytearray(json.dumps(body).encode()))
    assert job.params["text2photo"]["width"] == 128 and job.params["text2photo"]["height"] == 96
    mc = ModelConfig(
        base_model=str(tiny_model_dir), template_model=str(sdxl_dir), device="cpu", dtype="float32"
    )
    worker = _worker(t2p_home, mc, analyzer, astronaut)
    worker.run_job(worker.store.claim_next(worker.pid))
    out = infer_response(service, service.job_view(job.id), notes)
    assert out["message"].startswith("Success"), out["message"]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(out["outputs"][0]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (96, 128, 3)
    assert out["scores"][0]["scores"][0]["user_id"] == "alice"
    result = service.job_view(job.id)["result"]
    assert result["images"][0]["template_seed"] == 11 and result["images"][0]["template_file"].endswith(
        "-template.png"
    )
    with pytest.raises(ConfigError, match="sd_xl_resolution"):
        submit_infer_body(service, bytearray(json.dumps({**body, "sd_xl_resolution": "big"}).encode()))


@pytest.mark.slow
def test_v1_text2photo_route(sdxl_dir, tiny_model_dir, t2p_home, analyzer, astronaut, monkeypatch) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from easyphoto.config import ServerSettings
    from easyphoto.jobs import JobService
    from easyphoto.server import routes
    from easyphoto.stages.text2photo import draw_body_pose, presets

    service = JobService(t2p_home)
    from easyphoto.server.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(routes.build_router(service, ServerSettings()))
    client = TestClient(app)
    presets_answer = client.get("/v1/text2photo/presets").json()
    assert "half_body" in presets_answer["poses"] and "studio" in presets_answer["prompts"]
    pose = cv2_png(draw_body_pose(presets()["poses"]["arms_crossed"], 128, 128))
    options = {"width": 128, "height": 128, "steps": 3, "seed": 4}
    gen = {"short_side": 96, "first_steps": 3, "second_steps": 0}
    r = client.post(
        "/v1/text2photo",
        data={
            "user_ids": "alice",
            "prompt": "a person",
            "options": json.dumps(options),
            "generate_options": json.dumps(gen),
        },
        files={"pose": ("pose.png", pose, "image/png")},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    mc = ModelConfig(
        base_model=str(tiny_model_dir), template_model=str(sdxl_dir), device="cpu", dtype="float32"
    )
    worker = _worker(t2p_home, mc, analyzer, astronaut)
    worker.run_job(worker.store.claim_next(worker.pid))
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["state"] == "succeeded", view
    img = view["result"]["images"][0]
    assert client.get(img["url"]).status_code == 200 and client.get(img["template_url"]).status_code == 200
    # no template, no training: photos of the person (user "photo") and a picture behind them
    r = client.post(
        "/v1/text2photo",
        data={"prompt": "a person", "options": json.dumps(options), "generate_options": json.dumps(gen)},
        files=[("photos", ("me.png", cv2_png(astronaut), "image/png")),
               ("background_image", ("sky.png", cv2_png(np.full((32, 32, 3), 200, np.uint8)), "image/png"))],
    )  # fmt: skip
    assert r.status_code == 202, r.text
    worker.run_job(worker.store.claim_next(worker.pid))
    photo_job = client.get(f"/v1/jobs/{r.json()['job_id']}").json()
    assert photo_job["state"] == "succeeded", photo_job
    assert photo_job["result"]["user_ids"] == ["photo"]
    assert photo_job["params"]["generate"]["background"] == "replace", "a picture given is a picture used"
    # the web UI's Text-to-photo tab shows the portrait, then its template
    from types import SimpleNamespace

    gr = pytest.importorskip("gradio")
    from easyphoto.server.i18n import t
    from easyphoto.server.webui.text2photo_tab import Text2PhotoTab

    tab = Text2PhotoTab(gr, service, "en", lambda key: t(key, "en"))
    _, status, gallery, downloads, _ = tab.poll(job_id, SimpleNamespace(headers={}))
    assert [Path(p).name for p, _ in gallery] == [img["file"], img["template_file"]]
    assert gallery[1][1] == "the template SDXL drew" and len(downloads) == 2
    # bad input is refused before a job exists, naming what is wrong
    bad = client.post("/v1/text2photo", data={"user_ids": "alice", "pose_name": "cartwheel"})
    assert bad.status_code in (400, 422) and "cartwheel" in bad.text
    bad = client.post(
        "/v1/text2photo", data={"user_ids": "alice", "options": json.dumps({"scene_lora": "noir"})}
    )
    assert bad.status_code in (400, 422) and "noir" in bad.text
    bad = client.post("/v1/text2photo", data={"user_ids": "alice", "options": json.dumps({"width": 100})})
    assert bad.status_code == 422 and "width" in bad.text


def cv2_png(image: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", image[..., ::-1])[1].tobytes()


# ------------------------------------------------------------------ (3) memory policy
def test_memory_policy_free_and_keep(sdxl_dir: Path, tiny_model_dir: Path) -> None:
    from easyphoto.diffusion.memory import FamilyMemory
    from easyphoto.diffusion.models import ModelCache
    from easyphoto.diffusion.sdxl import SDXLCache, render_template

    mc = ModelConfig(base_model=str(tiny_model_dir), template_model=str(sdxl_dir), device="cpu")
    sd15, sdxl = ModelCache(mc), SDXLCache(mc)
    kw = {"width": 64, "height": 64, "steps": 2, "guidance_scale": 5.0, "seed": 1}
    memory = FamilyMemory("free", {"sd15": sd15, "sdxl": sdxl})
    memory.use("sdxl")
    first = render_template(sdxl, "a person", "", **kw)
    memory.use("sd15")
    assert not sdxl.loaded and sd15.unet is not None  # SDXL was dropped while SD1.5 works
    assert memory.moves[-1]["actions"] == ["freed sdxl"]
    memory.use("sdxl")
    assert sd15._base is None and memory.moves[-1]["actions"] == ["freed sd15"]
    again = render_template(sdxl, "a person", "", **kw)
    assert sdxl.load_count["sdxl:unet"] == 2 and np.array_equal(first, again)  # read again, same image
    keep = FamilyMemory("keep", {"sd15": sd15, "sdxl": sdxl})
    keep.use("sd15")
    assert sdxl.loaded and keep.moves[-1]["actions"] == []
    # on a CPU there is nowhere to offload to: nothing moves, nothing is dropped
    assert sd15.unet is not None
    offload = FamilyMemory("offload", {"sd15": sd15, "sdxl": sdxl})
    offload.use("sdxl")
    assert offload.moves[-1]["actions"] == [] and sdxl.loaded and sd15._base is not None
    with pytest.raises(ConfigError, match="sdxl_memory 'swap'"):
        FamilyMemory("swap")


def test_ep_generate_with_a_prompt(t2p, t2p_home: Path) -> None:
    import easyphoto as ep

    gen, maker = t2p
    [portrait] = ep.generate(
        prompt="a person in a park", user_ids="alice", config=FAST.replace(second_steps=0),
        text2photo=T2P_E2E, generator=gen, maker=maker, home=t2p_home,
    )  # fmt: skip
    assert portrait.params["text2photo"]["prompt"] == "a person in a park"
    assert portrait.array.shape == (128, 128, 3) and [s.user_id for s in portrait.scores] == ["alice"]
    with pytest.raises(ConfigError, match="template photo, or a prompt"):
        ep.generate(user_ids="alice")
    with pytest.raises(ConfigError, match="not both"):
        ep.generate("t.jpg", "alice", prompt="x")


def test_webui_text2photo_tab_queues_a_job(t2p_home: Path) -> None:
    from types import SimpleNamespace

    gr = pytest.importorskip("gradio")
    from easyphoto.jobs import JobService
    from easyphoto.server.i18n import t
    from easyphoto.server.webui import build_ui
    from easyphoto.server.webui.text2photo_tab import T2P_FIELDS, Text2PhotoTab

    service = JobService(t2p_home)
    demo, _ = build_ui(service, "en")  # the whole page builds with the new tab in it
    assert "tab-text2photo" in str(demo.config)
    assert t("tab.text2photo", "zh-CN") == "文生图" and t("field.pose_weight", "en") == "Pose weight"
    tab = Text2PhotoTab(gr, service, "en", lambda key: t(key, "en"))
    request = SimpleNamespace(headers={"accept-language": "en"})
    values = {n: getattr(Text2PhotoConfig(), n) for n in T2P_FIELDS} | {
        "width": 128,
        "height": 96,
        "seed": "",
    }
    values["scene_lora"] = ""
    out = tab.start_text2photo(
        request, ["alice"], None, " a person ", "half_body", None, None, *values.values()
    )
    job = service.store.get(out[0])
    assert job.params["text2photo"]["prompt"] == "a person" and job.params["pose_name"] == "half_body"
    assert job.params["text2photo"]["width"] == 128 and job.params["text2photo"]["seed"] is None
    assert tab.use_preset("beach").startswith("a photo of a person on a sunny beach")
    queued = len(service.store.list(kind="generate"))
    with pytest.warns(UserWarning, match="Say what the picture should show"):
        skipped = tab.start_text2photo(request, ["alice"], None, "  ", None, None, None, *values.values())
    assert len(skipped) == 6 and len(service.store.list(kind="generate")) == queued  # nothing queued
    with pytest.warns(UserWarning, match="give photos of the person"):
        tab.start_text2photo(request, [], None, "a person", None, None, None, *values.values())
    # no trained user: photos of the person (no training, no template), a picture behind them
    me, sky = t2p_home.parent / "me.png", t2p_home.parent / "sky.png"
    me.write_bytes(cv2_png(np.full((64, 64, 3), 120, np.uint8)))
    sky.write_bytes(cv2_png(np.full((64, 64, 3), 200, np.uint8)))
    photo = service.store.get(tab.start_text2photo(request, [], [str(me)], "a person", None, None, str(sky),
                                                   *values.values())[0])  # fmt: skip
    assert photo.params["user_ids"] == ["photo"] and photo.params["photos"][0]["name"] == "me"
    assert (
        photo.params["background_image"]["name"] == "sky"
        and photo.params["generate"]["background"] == "replace"
    )
    for queued_job in (job, photo):
        service.store.request_cancel(queued_job.id)


def test_sdxl_base_is_refused_where_sd15_runs(sdxl_dir: Path, t2p_home: Path, tmp_path: Path) -> None:
    from easyphoto.workflows import generate_batch

    mc = ModelConfig(base_model=str(sdxl_dir))
    with pytest.raises(ConfigError, match=r"is SDXL, but 'alice' needs SD1\.5"):
        generate_batch([("t.jpg", "t")], ["alice"], FAST, tmp_path, model_config=mc, home=t2p_home)
    # an SDXL base trains an SDXL user (tests/test_sdxl_train.py)


# ------------------------------------------------------------------ (e) first piece: SDXL kohya LoRA export
def test_sdxl_kohya_export_loads_in_diffusers_and_reproduces_the_adapters(
    sdxl_dir: Path, tmp_path: Path
) -> None:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from easyphoto.diffusion.families import lora_family
    from easyphoto.diffusion.lora import lora_config
    from easyphoto.diffusion.lora_sdxl import SDXL_TEXT_ENCODER_TARGETS, save_lora_kohya_sdxl

    def pipe() -> StableDiffusionXLPipeline:
        p = StableDiffusionXLPipeline.from_pretrained(sdxl_dir)
        p.set_progress_bar_config(disable=True)
        return p

    def render(p: StableDiffusionXLPipeline) -> np.ndarray:
        kw = {"num_inference_steps": 2, "height": 64, "width": 64, "output_type": "np", "guidance_scale": 5.0}
        return p("a person", generator=torch.Generator().manual_seed(0), **kw).images[0]

    trained = pipe()
    base = render(trained)
    gen = torch.Generator().manual_seed(1)
    # alpha ≠ rank: the scale alpha/rank must survive the file
    trained.unet.add_adapter(lora_config(rank=4, alpha=2))
    for te in (trained.text_encoder, trained.text_encoder_2):
        te.add_adapter(lora_config(rank=4, alpha=2, targets=SDXL_TEXT_ENCODER_TARGETS))
    with torch.no_grad():
        for model in (trained.unet, trained.text_encoder, trained.text_encoder_2):
            for name, p in model.named_parameters():
                if "lora_B" in name:  # B starts at zero: give every adapter an effect
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    expected = render(trained)
    path = save_lora_kohya_sdxl(
        tmp_path / "lora.safetensors", trained.unet, trained.text_encoder, trained.text_encoder_2
    )
    from easyphoto.diffusion.families import safetensors_keys

    keys = safetensors_keys(path)
    assert {k.split("_", 2)[1] for k in keys} == {"unet", "te1", "te2"}
    assert lora_family(path) == "sdxl"
    fresh = pipe()
    fresh.load_lora_weights(str(path))
    got = render(fresh)
    assert np.abs(expected - base).mean() > 0.01, "the adapters had no effect"
    np.testing.assert_allclose(got, expected, atol=1e-4)


class _Images:
    """Three crops of the astronaut's head (one 64 × 80, so crops move), captioned like training photos."""

    def __init__(self, astronaut: np.ndarray) -> None:
        import cv2

        from easyphoto.config import TRIGGER_CAPTION

        head = astronaut[0:300, 80:380]
        self.images = [cv2.resize(head[s:, s:], (64, 64 + 16 * (s > 0))) for s in (0, 12, 24)]
        self.captions = [TRIGGER_CAPTION] * 3

    def __len__(self) -> int:
        return len(self.images)


def test_sdxl_lora_trainer_step_export_and_clean_up(astronaut: np.ndarray) -> None:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from easyphoto.config import TrainConfig
    from easyphoto.diffusion.lora_trainer_sdxl import SDXLLoraTrainer
    from easyphoto.diffusion.sdxl import SDXLCache, render_template
    from easyphoto.diffusion.tiny_sdxl import tiny_sdxl_components

    cache = SDXLCache.from_components(tiny_sdxl_components(seed=0))
    kw = {"width": 64, "height": 64, "steps": 2, "guidance_scale": 5.0, "seed": 2}
    base = render_template(cache, "easyphoto_face, a person", "", **kw)
    cfg = TrainConfig(
        resolution=64,
        max_steps=4,
        grad_accum=1,
        rank=4,
        alpha=2,
        learning_rate=5e-3,
        gradient_checkpointing=True,
    )
    with pytest.raises(ConfigError, match="use_8bit_adam needs a CUDA GPU"):
        SDXLLoraTrainer(cache, _Images(astronaut), cfg.replace(use_8bit_adam=True))
    assert not getattr(cache.components()["unet"], "peft_config", None), "a refused trainer left adapters"
    frozen = cache.components()["unet"].conv_in.weight.detach().clone()
    trainer = SDXLLoraTrainer(cache, _Images(astronaut), cfg)
    lora = {n: p.detach().clone() for n, p in trainer.unet.named_parameters() if p.requires_grad}
    batch = trainer.sample_batch()
    assert batch["latents"].shape == (1, 4, 8, 8) and batch["time_ids"].shape == (1, 6)
    assert batch["time_ids"][0, 4:].tolist() == [64, 64]  # target size; original size and crop vary
    losses = [trainer.step() for _ in range(6)]
    assert all(np.isfinite(losses)) and trainer.global_step == 6
    assert trainer.vae_encodes <= 6, "latents are cached: at most one encode per image and flip"
    encodes = trainer.vae_encodes
    trainer._latents(0, False), trainer._latents(0, False)
    assert trainer.vae_encodes <= encodes + 1
    moved = [n for n, p in trainer.unet.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])]
    assert moved, "no LoRA weight moved"
    assert torch.equal(cache.components()["unet"].conv_in.weight, frozen), "a base weight changed"
    # the export loads in plain diffusers' SDXL pipeline and reproduces the trained adapters
    state = trainer.kohya_state()
    assert {k.split("_", 2)[1] for k in state} == {"unet", "te1", "te2"}
    for module in (trainer.unet, *trainer.encoders):
        module.eval()
    trained = render_template(cache, "easyphoto_face, a person", "", **kw)
    fresh_parts = tiny_sdxl_components(seed=0)
    fresh_parts.pop("controlnets")
    fresh_parts["scheduler"] = cache.components()["scheduler"]
    fresh = StableDiffusionXLPipeline(**fresh_parts, add_watermarker=False)
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(state)
    out = fresh(
        "easyphoto_face, a person", negative_prompt=None, width=64, height=64, num_inference_steps=2,
        guidance_scale=5.0, output_type="np", generator=torch.Generator("cpu").manual_seed(2),
        original_size=(64, 64), target_size=(64, 64),
    ).images[0]  # fmt: skip
    assert np.abs(trained.astype(int) - base).mean() > 0.5, "training changed nothing"
    assert np.abs(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8).astype(int) - trained).max() <= 1
    # removing the adapters gives the exact base model back
    trainer.remove_adapters()
    assert np.array_equal(render_template(cache, "easyphoto_face, a person", "", **kw), base)
