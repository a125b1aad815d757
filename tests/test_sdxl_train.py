"""SDXL user models: face-LoRA training on the tiny random SDXL (CPU, one thread), end to end.

The tiny SDXL draws noise, in which no detector finds a face: :class:`helpers.PlacedFaces` reports the
astronaut's face there, so validation scores are real numbers and the best checkpoints are fused as in
a real run.
"""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch

from easyphoto.config import FAMILY_RESOLUTION, ModelConfig, TrainConfig
from easyphoto.errors import ConfigError, TrainingInterrupted
from easyphoto.users import work_dir
from easyphoto.workflows import train

TINY_XL = TrainConfig(
    resolution=64,
    max_steps=4,
    grad_accum=1,
    rank=4,
    alpha=2.0,  # alpha ≠ rank: the scale must survive fusion and export
    learning_rate=5e-3,
    validate_every=2,
    validation_size=64,
    validation_steps=2,
    validation_seeds=(1,),
    fuse_top_k=2,
)
PROMPT = "easyphoto_face, a person"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, analyzer) -> Path:
    """Three 64 px crops of the astronaut's head plus her mean embedding, in imagefolder layout."""
    return helpers.make_dataset(tmp_path_factory.mktemp("dataset"), astronaut, analyzer)


@pytest.fixture(scope="module")
def placed(analyzer, astronaut: np.ndarray) -> helpers.PlacedFaces:
    return helpers.PlacedFaces(analyzer, astronaut)


def _render(pipe, seed: int = 2) -> np.ndarray:
    return pipe(
        PROMPT, width=64, height=64, num_inference_steps=2, guidance_scale=5.0, output_type="np",
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]  # fmt: skip


@pytest.mark.slow
def test_sdxl_training_writes_an_sdxl_user_that_diffusers_loads(
    sdxl_dir: Path, dataset: Path, placed, astronaut: np.ndarray, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    from easyphoto.diffusion.families import lora_family
    from easyphoto.users import UserModel

    events: list[dict] = []
    mc = ModelConfig(base_model=str(sdxl_dir), device="cpu", dtype="float32")
    result = train(
        "xl", dataset, TINY_XL, model_config=mc, analyzer=placed, on_event=events.append, home=tmp_path
    )

    folder = tmp_path / "users" / "xl"
    assert result.path == folder
    assert {"lora.safetensors", "meta.json", "ref.png", "face_id.png", "embedding.npy", "train.log"} <= {
        p.name for p in folder.iterdir()
    }
    assert sorted(p.name for p in (folder / "validation").iterdir()) == [
        "step-00002-seed1.png",
        "step-00004-seed1.png",
    ]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["family"] == "sdxl" and meta["base_model"] == str(sdxl_dir)
    assert UserModel.load("xl", tmp_path).meta.family == "sdxl"
    assert meta["config"]["resolution"] == 64 and meta["config"]["validation_size"] == 64
    # both checkpoints showed "a face": both are fused (exactly, then SVD back to the training rank)
    assert sorted(meta["fused_steps"]) == [2, 4] and meta["fusion"]["method"].startswith("exact")
    assert meta["rank"] == 4 and meta["face_id_source"] == "validation"
    assert events[0]["type"] == "start" and events[0]["family"] == "sdxl" and events[-1]["type"] == "done"
    assert "(SDXL): resolution 64 px, validation renders 64 px" in (folder / "train.log").read_text()

    lora = folder / "lora.safetensors"
    with safe_open(str(lora), "pt") as f:
        md, keys = f.metadata(), list(f.keys())
    assert {k.split("_", 2)[1] for k in keys} == {"unet", "te1", "te2"}
    assert md["ss_base_model_version"] == "sdxl_base_v1-0" and md["easyphoto_family"] == "sdxl"
    assert md["ss_sd_model_name"] == str(sdxl_dir) and md["easyphoto_user_id"] == "xl"
    assert lora_family(lora) == "sdxl"
    assert not work_dir("xl", tmp_path).exists(), "the work folder is removed after success"

    # The user model is a standard SDXL LoRA: plain diffusers loads it, and it changes the output.
    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl_dir))
    pipe.set_progress_bar_config(disable=True)
    base = _render(pipe)
    pipe.load_lora_weights(str(lora))
    assert np.abs(_render(pipe) - base).mean() > 1e-3

    # … and the portrait pipeline paints the new user on the SDXL model.
    from easyphoto.config import GenerateConfig
    from easyphoto.imageio import save_png
    from easyphoto.stages.generate import read_png_params
    from easyphoto.workflows import generate_batch

    template = save_png(astronaut, tmp_path / "astronaut.png")
    xl = GenerateConfig(short_side=96, sdxl_short_side=96, first_steps=3, second_steps=0, seed=7)
    made = generate_batch([(template, "astronaut.png")], ["xl"], xl, tmp_path / "out", model_config=mc,
                          home=tmp_path)  # fmt: skip
    assert made.errors == [] and read_png_params(made.images[0]["path"])["families"] == {"xl": "sdxl"}


def test_interrupted_sdxl_training_resumes_on_sdxl_only(
    sdxl_dir: Path, tiny_model_dir: Path, dataset: Path, placed, tmp_path: Path
) -> None:
    xl = ModelConfig(base_model=str(sdxl_dir), device="cpu", dtype="float32")
    cfg = TINY_XL.replace(max_steps=6)
    events: list[dict] = []

    def stop_after_two() -> bool:
        return any(e["type"] == "step" and e["step"] >= 2 for e in events)

    with pytest.raises(TrainingInterrupted):
        train("bob", dataset, cfg, model_config=xl, analyzer=placed, on_event=events.append,
              should_stop=stop_after_two, home=tmp_path)  # fmt: skip
    assert not (tmp_path / "users" / "bob").exists(), "an interrupted run must not look like a model"
    state_file = work_dir("bob", tmp_path) / "state.json"
    state = json.loads(state_file.read_text())
    assert state["step"] == 2 and state["family"] == "sdxl" and state["config"]["resolution"] == 64

    # Families cannot be mixed: the SDXL run does not resume on SD1.5 (refused before loading) …
    sd15 = ModelConfig(base_model=str(tiny_model_dir), device="cpu", dtype="float32")
    with pytest.raises(
        ConfigError, match=r"interrupted training of user 'bob' is SDXL but base model .* is SD1\.5"
    ):
        train("bob", dataset, cfg, model_config=sd15, resume=True, home=tmp_path)
    # … nor does an SD1.5 run (a state without "family" was written before SDXL training) on SDXL.
    state_file.write_text(json.dumps({k: v for k, v in state.items() if k != "family"}))
    with pytest.raises(
        ConfigError, match=r"interrupted training of user 'bob' is SD1\.5 but base model .* is SDXL"
    ):
        train("bob", dataset, cfg, model_config=xl, resume=True, home=tmp_path)
    state_file.write_text(json.dumps(state))

    resumed: list[dict] = []
    result = train("bob", dataset, cfg.replace(learning_rate=0.5), model_config=xl, analyzer=placed,
                   on_event=resumed.append, resume=True, home=tmp_path)  # fmt: skip
    assert resumed[0]["type"] == "start" and resumed[0]["step"] == 2
    assert [e["step"] for e in resumed if e["type"] == "step"] == [3, 4, 5, 6]
    assert [v.step for v in result.validations] == [2, 4, 6]  # the pre-interruption validation is kept
    assert result.meta["family"] == "sdxl" and result.meta["config"]["learning_rate"] == cfg.learning_rate
    assert result.lora_path.is_file()


def test_training_cache_follows_the_base_models_family(sdxl_dir: Path, tiny_model_dir: Path) -> None:
    from easyphoto.diffusion.models import ModelCache
    from easyphoto.diffusion.sdxl import SDXLCache
    from easyphoto.stages.train import training_cache

    # a worker's cache is built from the job's base model, whatever its family: an SDXL one is replaced
    xl = training_cache(ModelCache(ModelConfig(base_model=str(sdxl_dir))))
    assert isinstance(xl, SDXLCache) and xl.config.template_model == str(sdxl_dir) and not xl.loaded
    assert training_cache(xl) is xl
    assert isinstance(training_cache(None, ModelConfig(base_model=str(sdxl_dir))), SDXLCache)
    sd15 = ModelCache(ModelConfig(base_model=str(tiny_model_dir)))
    assert training_cache(sd15) is sd15
    assert type(training_cache(None, ModelConfig(base_model=str(tiny_model_dir)))) is ModelCache


def test_sdxl_training_validates_on_its_templates_with_sdxl(
    sdxl_dir: Path, dataset: Path, placed, astronaut: np.ndarray, tmp_path: Path
) -> None:
    """``validation_templates`` of an SDXL training: the user being trained is painted on SDXL (its
    canny + openpose nets, crops at the validation size) at each validation, and scored."""
    from PIL import Image

    from easyphoto.diffusion.sdxl import SDXLCache

    Image.fromarray(astronaut).save(tmp_path / "tpl.png")
    cfg = TINY_XL.replace(validation_templates=(str(tmp_path / "tpl.png"),), max_steps=2, validate_every=2)
    cache = SDXLCache(ModelConfig(template_model=str(sdxl_dir), device="cpu", dtype="float32"))
    result = train("tplxl", dataset, cfg, cache=cache, analyzer=placed, home=tmp_path / "home")
    [validation] = result.validations
    assert len(validation.scores) == len(cfg.validation_seeds) + 1  # the renders and the template
    painted = [n for n in validation.images if "template0" in n]
    assert painted and result.meta["family"] == "sdxl"
    nets = {k for k in cache.load_count if "controlnet" in k}
    assert nets == {"sdxl:controlnet:canny", "sdxl:controlnet:openpose"}, cache.load_count
    from easyphoto.imageio import load_image
    from easyphoto.users import user_dir

    image = load_image(user_dir("tplxl", tmp_path / "home") / "validation" / painted[0])
    assert image.shape == astronaut.shape  # the whole template, its face repainted


def test_cli_train_with_an_sdxl_base_model_writes_an_sdxl_user(
    sdxl_dir: Path, dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from easyphoto.cli import app
    from easyphoto.users import UserModel

    monkeypatch.setenv("EASYPHOTO_HOME", str(tmp_path))
    args = ["train", "--user-id", "clixl", "--dataset", str(dataset), "--base-model", str(sdxl_dir),
            "--device", "cpu", "--dtype", "float32", "--max-steps", "2", "--resolution", "64", "--rank", "4",
            "--alpha", "2", "--grad-accum", "1", "--validate-every", "2", "--validation-steps", "1",
            "--validation-size", "64"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "user model 'clixl' written" in res.output
    meta = UserModel.load("clixl", tmp_path).meta
    assert meta.family == "sdxl" and meta.base_model == str(sdxl_dir) and meta.steps == 2
    assert "SDXL" in CliRunner().invoke(app, ["train", "--help"]).output


def test_a_queued_training_on_an_sdxl_base_runs_on_the_workers_sdxl_cache(
    sdxl_dir: Path, tiny_model_dir: Path, astronaut: np.ndarray, placed, tmp_path: Path, monkeypatch
) -> None:
    """The web UI and the API queue a training; the worker's cache is built from the job's base model,
    and for an SDXL one the training runs on the generator's SDXL cache (shared with text-to-photo)."""
    import cv2

    from easyphoto.jobs import JobService, Worker
    from easyphoto.jobs.service import Upload
    from easyphoto.users import UserModel

    monkeypatch.setenv("EASYPHOTO_BASE_MODELS", str(sdxl_dir))
    photos = []
    for i, (image, scale) in enumerate(
        [(astronaut, 1.6), (astronaut[10:, 30:], 1.8), (astronaut[:, ::-1], 1.7)]
    ):
        big = cv2.resize(np.ascontiguousarray(image), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        photos.append(
            Upload(f"a{i}.png", cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))[1].tobytes())
        )
    service = JobService(tmp_path)
    prepare = {**helpers.TINY_PREPARE, "resolution": 64}
    job = service.submit_train("wxl", photos, helpers.TINY_TRAIN, prepare, base_model=sdxl_dir.name)
    worker = Worker(
        tmp_path, model_config=ModelConfig(base_model=str(tiny_model_dir), device="cpu", dtype="float32")
    )
    worker._analyzer = placed
    worker.run_job(worker.store.claim_next(worker.pid))
    view = service.job_view(job.id)
    assert view["state"] == "succeeded", view
    meta = UserModel.load("wxl", tmp_path).meta
    assert meta.family == "sdxl" and meta.base_model == str(sdxl_dir)
    assert worker.generator.sdxl_cache.loaded and worker.generator.memory.active == "sdxl"
    assert worker.cache.loads == 0, "the SD1.5 cache of the job's (SDXL) base model never loads"
    assert worker.generator.sdxl_cache.reset() == [], "the training took its adapters off the SDXL model"


# ------------------------------------------------------------------ sizes and the trainer itself
def test_unset_sizes_are_the_familys_and_explicit_ones_win(
    sdxl_dir: Path, monkeypatch, tmp_path: Path
) -> None:
    from easyphoto.jobs.service import JobService, Upload

    assert FAMILY_RESOLUTION == {"sd15": 512, "sdxl": 1024}
    unset = TrainConfig()
    assert unset.resolution is None and unset.validation_size is None
    for family, size in FAMILY_RESOLUTION.items():
        resolved = unset.for_family(family)
        assert (resolved.resolution, resolved.validation_size) == (size, size)
        explicit = TrainConfig(resolution=64, validation_size=128).for_family(family)
        assert (explicit.resolution, explicit.validation_size) == (64, 128)
    assert TrainConfig(resolution=768).for_family("sdxl").validation_size == 1024
    assert unset.for_family(None) == unset  # family unknown yet: left to the training
    with pytest.raises(ConfigError, match="unknown model family 'sd3'"):
        unset.for_family("sd3")
    with pytest.raises(ConfigError, match="TrainConfig.resolution: must be a multiple of 8"):
        TrainConfig(resolution=100)

    # A queued job records the sizes it runs with: the chosen base model's family's.
    monkeypatch.setenv("EASYPHOTO_BASE_MODELS", str(sdxl_dir))
    service = JobService(tmp_path)
    photo = [Upload("me.png", helpers.png_bytes())]
    job = service.submit_train("xluser", photo, {"rank": 4}, base_model=sdxl_dir.name)
    assert job.params["base_model"] == str(sdxl_dir)
    assert job.params["train"]["resolution"] == 1024 and job.params["train"]["validation_size"] == 1024
    job = service.submit_train("xlsmall", photo, {"resolution": 64}, base_model=sdxl_dir.name)
    assert job.params["train"]["resolution"] == 64 and job.params["train"]["validation_size"] == 1024


@pytest.mark.slow
def test_sdxl_trainer_defaults_resume_state_and_exact_fusion(astronaut: np.ndarray, dataset: Path) -> None:
    """The trainers resolve unset sizes themselves; the SDXL trainer's peft state round-trips (UNet and
    both encoders); two of its kohya checkpoints fuse exactly; training starts with its adapter on even
    after the cache switched its LoRAs off."""
    from easyphoto.diffusion.lora_fuse import delta_weight, fuse_lora_state_dicts
    from easyphoto.diffusion.lora_trainer import LoraTrainer
    from easyphoto.diffusion.lora_trainer_sdxl import SDXLLoraTrainer
    from easyphoto.diffusion.sdxl import SDXLCache
    from easyphoto.diffusion.tiny_sdxl import tiny_sdxl_components
    from easyphoto.stages.train import load_training_data

    data = load_training_data(dataset)
    sd15 = LoraTrainer(helpers.tiny_cache(), data, TrainConfig(rank=4, alpha=4))
    assert (sd15.config.resolution, sd15.config.validation_size) == (512, 512)
    sd15.remove_adapters()

    cache = SDXLCache.from_components(tiny_sdxl_components(seed=0))
    trainer = SDXLLoraTrainer(cache, data, TrainConfig(rank=4, alpha=4))
    assert (trainer.config.resolution, trainer.config.validation_size) == (1024, 1024)
    trainer.remove_adapters()

    # a cache that switched its LoRAs off leaves its layers disabled: the training adapter is on anyway
    from peft.tuners.tuners_utils import BaseTunerLayer

    trainer = SDXLLoraTrainer(cache, data, TINY_XL)
    for module in (trainer.unet, *trainer.encoders):
        for layer in module.modules():
            if isinstance(layer, BaseTunerLayer):
                layer.enable_adapters(False)
    trainer.remove_adapters()
    trainer = SDXLLoraTrainer(cache, data, TINY_XL)
    try:
        layers = [
            m
            for mod in (trainer.unet, *trainer.encoders)
            for m in mod.modules()
            if isinstance(m, BaseTunerLayer)
        ]
        assert layers and not any(layer.disable_adapters for layer in layers)
        for _ in range(2):
            trainer.step()
        first = {k: v.clone() for k, v in trainer.kohya_state().items()}  # the live tensors move on
        for _ in range(2):
            trainer.step()
        second = {k: v.clone() for k, v in trainer.kohya_state().items()}
        saved = {k: v.clone() for k, v in trainer.peft_state().items()}
        assert {k.split(".", 1)[0] for k in saved} == {"unet", "text_encoder", "text_encoder_2"}
        before = trainer.render_validation()
        assert len(before) == 1 and before[0].shape == (64, 64, 3) and before[0].dtype == np.uint8
        assert trainer.unet.training, "the renders run in eval mode, then training mode is back"
        trainer.load_peft_state({k: torch.zeros_like(v) for k, v in saved.items()})
        assert all(float(v.abs().max()) == 0 for v in trainer.peft_state().values())
        trainer.load_peft_state(saved)
        assert all(torch.equal(trainer.peft_state()[k], v) for k, v in saved.items())
        assert np.array_equal(trainer.render_validation()[0], before[0]), "a restored state renders the same"
    finally:
        trainer.remove_adapters()

    fused, report = fuse_lora_state_dicts([first, second])  # exact: rank 8, alpha = rank
    assert report.max_relative_error == 0.0
    for module in ("lora_unet_", "lora_te1_", "lora_te2_"):
        name = next(k for k in first if k.startswith(module) and k.endswith(".lora_down.weight"))
        name = name.removesuffix(".lora_down.weight")
        mean = (delta_weight(first, name) + delta_weight(second, name)) / 2
        torch.testing.assert_close(delta_weight(fused, name), mean, rtol=1e-4, atol=1e-6)
