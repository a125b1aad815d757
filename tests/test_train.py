"""Face-LoRA training on the tiny random SD1.5 (CPU, one thread)."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch
from PIL import Image

from easyphoto import UserBusyError
from easyphoto.config import TRIGGER_CAPTION, ModelConfig, TrainConfig
from easyphoto.diffusion.lora_trainer import LoraTrainer
from easyphoto.errors import ConfigError
from easyphoto.stages.train import TrainingInterrupted, load_training_data
from easyphoto.users import work_dir
from easyphoto.workflows import train

TINY = TrainConfig(
    resolution=64,
    max_steps=4,
    grad_accum=2,
    rank=4,
    alpha=2.0,  # alpha ≠ rank: the scale 0.5 must survive export and reload
    learning_rate=1e-3,
    validate_every=2,
    validation_size=64,
    validation_steps=2,
    validation_seeds=(1,),
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, analyzer) -> Path:
    """Three 64 px crops of the astronaut's head plus her mean embedding, in imagefolder layout."""
    return helpers.make_dataset(tmp_path_factory.mktemp("dataset"), astronaut, analyzer)


def _cache(tiny_model_dir: Path):
    from easyphoto.diffusion.models import ModelCache

    return ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")


@pytest.mark.slow
def test_loss_falls_when_overfitting_one_image(tiny_model_dir: Path, dataset: Path) -> None:
    data = load_training_data(dataset)
    data.images, data.captions = data.images[:1], data.captions[:1]
    cfg = TrainConfig(resolution=64, rank=8, alpha=8, grad_accum=1, learning_rate=3e-3, random_flip=False)
    trainer = LoraTrainer(_cache(tiny_model_dir), data, cfg)
    torch.manual_seed(0)
    batch = trainer.sample_batch()
    noise = torch.randn_like(batch["latents"])
    timesteps = torch.tensor([500])
    losses = [trainer.step(batch, noise, timesteps) for _ in range(25)]
    assert trainer.global_step == 25
    assert losses[-1] < 0.8 * losses[0], losses
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


def test_kohya_file_reproduces_trained_model_in_plain_diffusers(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    cache = _cache(tiny_model_dir)
    trainer = LoraTrainer(cache, load_training_data(dataset), TINY)
    for _ in range(6):
        trainer.step()
    assert trainer.global_step == 3
    state = trainer.kohya_state()
    assert any(k.startswith("lora_unet_") for k in state) and any(k.startswith("lora_te_") for k in state)
    assert all(float(v) == 2.0 for k, v in state.items() if k.endswith(".alpha"))
    path = tmp_path / "lora.safetensors"
    save_file(state, str(path))

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=g)
    ids = cache.tokenizer(TRIGGER_CAPTION, padding="max_length", max_length=77, return_tensors="pt").input_ids
    t = torch.tensor([300])
    with torch.no_grad():
        trainer.unet.eval()
        trainer.text_encoder.eval()
        te_trained = trainer.text_encoder(ids)[0]
        out_trained = trainer.unet(latents, t, te_trained).sample

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), safety_checker=None)
    with torch.no_grad():
        out_base = pipe.unet(latents, t, pipe.text_encoder(ids)[0]).sample
    pipe.load_lora_weights(str(path))
    with torch.no_grad():
        te_loaded = pipe.text_encoder(ids)[0]
        out_loaded = pipe.unet(latents, t, te_loaded).sample
    assert (out_trained - out_base).abs().max() > 1e-3, "training changed nothing"
    torch.testing.assert_close(te_loaded, te_trained, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_loaded, out_trained, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_train_writes_complete_user_model_and_leaves_base_clean(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    from safetensors import safe_open

    cache = _cache(tiny_model_dir)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    cond = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        before = cache.unet(x, 10, cond).sample
    events: list[dict] = []
    result = train("alice", dataset, TINY, cache=cache, on_event=events.append, home=tmp_path)

    folder = tmp_path / "users" / "alice"
    assert result.path == folder
    names = {p.name for p in folder.iterdir()}
    assert {"lora.safetensors", "meta.json", "ref.png", "face_id.png", "embedding.npy", "train.log"} <= names
    assert sorted(p.name for p in (folder / "validation").iterdir()) == [
        "step-00002-seed1.png",
        "step-00004-seed1.png",
    ]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["steps"] == 4 and meta["user_id"] == "alice" and meta["trigger"] == TRIGGER_CAPTION
    assert [v["step"] for v in meta["validations"]] == [2, 4]
    assert meta["format_version"] == 1 and meta["family"] == "sd15"
    assert meta["face_id_source"] in ("validation", "reference")
    with safe_open(str(folder / "lora.safetensors"), "pt") as f:
        md = f.metadata()
        keys = list(f.keys())
        alphas = {round(float(f.get_tensor(k)), 6) for k in keys if k.endswith(".alpha")}
    assert md["easyphoto_user_id"] == "alice" and md["ss_network_module"] == "networks.lora"
    # ss_network_alpha says the alpha stored in the file (it used to repeat the rank).
    assert len(alphas) == 1 and float(md["ss_network_alpha"]) == alphas.pop()
    assert md["ss_network_dim"] == str(meta["rank"])
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in keys)
    assert any(k.startswith("lora_unet_down_blocks_") for k in keys)
    assert not (tmp_path / "work" / "alice").exists(), "work folder must be cleaned after success"

    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    assert all("loss" in e and "eta_s" in e for e in events if e["type"] == "step")
    assert [e["step"] for e in events if e["type"] == "validation"] == [2, 4]

    # The shared cache's UNet is the base model again …
    with torch.no_grad():
        after = cache.unet(x, 10, cond).sample
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # … and the user LoRA loads through the cache and changes its output.
    cache.set_lora(folder / "lora.safetensors", 1.0)
    with torch.no_grad():
        with_lora = cache.unet(x, 10, cond).sample
    assert (with_lora - before).abs().max() > 1e-4
    cache.unload_lora()


@pytest.mark.slow
def test_interrupted_training_resumes_and_leaves_no_half_model(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    cfg = TrainConfig(**{**TINY.__dict__, "max_steps": 6})
    events: list[dict] = []

    def stop_after_two() -> bool:
        return any(e["type"] == "step" and e["step"] >= 2 for e in events)

    with pytest.raises(TrainingInterrupted):
        train(
            "bob",
            dataset,
            cfg,
            model_config=ModelConfig(base_model=str(tiny_model_dir)),
            on_event=events.append,
            should_stop=stop_after_two,
            home=tmp_path,
        )
    assert not (tmp_path / "users" / "bob").exists(), "an interrupted run must not look like a model"
    state = json.loads((work_dir("bob", tmp_path) / "state.json").read_text())
    assert state["step"] == 2

    # A fresh start that cannot work (no dataset there) fails before it touches the interrupted run.
    with pytest.raises(ConfigError, match="not a prepared dataset"):
        train(
            "bob",
            tmp_path / "nowhere",
            cfg,
            model_config=ModelConfig(base_model=str(tiny_model_dir)),
            home=tmp_path,
        )
    assert json.loads((work_dir("bob", tmp_path) / "state.json").read_text()) == state
    # A damaged checkpoint is one clear error that offers a fresh start (and is left as it was).
    weights = work_dir("bob", tmp_path) / state["resume_file"]
    assert state["resume_file"] == "resume-step-00002.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match="checkpoint of user 'bob' cannot be read.*fresh training"):
        train(
            "bob",
            dataset,
            cfg,
            model_config=ModelConfig(base_model=str(tiny_model_dir)),
            resume=True,
            home=tmp_path,
        )
    weights.write_bytes(good)

    resumed: list[dict] = []
    result = train(
        "bob",
        dataset,
        cfg.replace(grad_accum=1, learning_rate=0.5),  # ignored: a resume continues with the run's settings
        model_config=ModelConfig(base_model=str(tiny_model_dir)),
        on_event=resumed.append,
        resume=True,
        home=tmp_path,
    )
    assert resumed[0]["type"] == "start" and resumed[0]["step"] == 2
    assert [e["step"] for e in resumed if e["type"] == "step"] == [3, 4, 5, 6]
    assert result.steps == 6 and result.lora_path.is_file()
    assert [v.step for v in result.validations] == [2, 4, 6]  # the pre-interruption validation is kept
    assert result.meta["config"]["grad_accum"] == cfg.grad_accum
    assert result.meta["config"]["learning_rate"] == cfg.learning_rate


def test_resume_without_checkpoint_is_a_clear_error(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(
            "carol",
            dataset,
            TINY,
            model_config=ModelConfig(base_model=str(tiny_model_dir)),
            resume=True,
            home=tmp_path,
        )


def test_second_training_of_same_user_is_refused(tiny_model_dir: Path, dataset: Path, tmp_path: Path) -> None:
    from easyphoto.store import user_lock

    with user_lock("dave", tmp_path, what="training"), pytest.raises(UserBusyError, match="busy"):
        train("dave", dataset, TINY, model_config=ModelConfig(base_model=str(tiny_model_dir)), home=tmp_path)


def test_bad_dataset_and_user_id(tmp_path: Path) -> None:
    from easyphoto import InvalidUserIdError

    with pytest.raises(ConfigError, match="metadata.jsonl"):
        load_training_data(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "../../etc/passwd"}\n')
    with pytest.raises(ConfigError, match="outside the dataset"):
        load_training_data(tmp_path)
    with pytest.raises(InvalidUserIdError):
        train("../evil", tmp_path, TINY, home=tmp_path)


@pytest.mark.slow
def test_end_to_end_obama_prepare_then_train(
    faces_dir: Path, tiny_model_dir: Path, tmp_path: Path, analyzer
) -> None:
    """Real photos → prepared dataset → a few training steps with validation → complete user model."""
    import time

    from easyphoto.config import PrepareConfig
    from easyphoto.stages.prepare import prepare

    t0 = time.perf_counter()
    photos = sorted((faces_dir / "identities" / "obama").glob("*.jpg"))
    prepared = prepare(photos, tmp_path / "ds", PrepareConfig(resolution=64), analyzer=analyzer)
    assert len(prepared.kept) >= 3
    result = train(
        "obama",
        prepared,
        TINY,
        model_config=ModelConfig(base_model=str(tiny_model_dir)),
        analyzer=analyzer,
        home=tmp_path,
    )
    folder = result.path
    assert {"lora.safetensors", "ref.png", "embedding.npy", "meta.json", "face_id.png"} <= {
        p.name for p in folder.iterdir()
    }
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["photos"] == len(prepared.kept) and meta["steps"] == 4
    emb = np.load(folder / "embedding.npy")
    assert emb.shape == (128,)
    assert time.perf_counter() - t0 < 120


@pytest.mark.slow
def test_validation_templates_are_painted_with_the_lora_being_trained(
    tiny_model_dir: Path, dataset: Path, astronaut: np.ndarray, analyzer, tmp_path: Path
) -> None:
    """Template validation runs the portrait first pass with the live training adapter."""
    from easyphoto.stages.generate.validation import TemplateValidation

    Image.fromarray(astronaut).save(tmp_path / "astro tpl.png")
    cfg = TINY.replace(validation_templates=(str(tmp_path / "astro tpl.png"),), validation_template_steps=3)
    data = load_training_data(dataset)
    cache = _cache(tiny_model_dir)
    validation = TemplateValidation(cfg.validation_templates, cfg)
    validation.prepare(data, cache, analyzer, tmp_path)
    templates = validation.templates
    trainer = LoraTrainer(cache, data, cfg)
    try:
        with trainer.inference():
            ((_, before, _),) = validation.render(0)
        for _ in range(4):
            trainer.step()
        with trainer.inference():
            ((_, after, score),) = validation.render(4)
        scores = [score]
    finally:
        trainer.remove_adapters()
    assert before.shape == after.shape == astronaut.shape
    x0, y0, x1, y1 = (int(v) for v in templates[0].face.box)
    changed = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 0
    # The trained adapter changes the repainted face (gaussian-init LoRA starts as the identity) …
    assert changed[y0:y1, x0:x1].mean() > 0.2
    # … and nothing far from the face (bottom rows of the photo, 3 face sizes down).
    assert not changed[min(511, y1 + 3 * (y1 - y0)) :].any()
    assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0

    # In a training run the template portraits are saved, scored and kept in the user model.
    result = train("tpl", dataset, cfg, cache=_cache(tiny_model_dir), analyzer=analyzer, home=tmp_path)
    names = sorted(p.name for p in (result.path / "validation").iterdir())
    assert names == [
        "step-00002-seed1.png",
        "step-00002-template0-astro_tpl.png",
        "step-00004-seed1.png",
        "step-00004-template0-astro_tpl.png",
    ]
    assert all(len(v.scores) == 2 for v in result.validations)
    saved = np.asarray(Image.open(result.path / "validation" / "step-00004-template0-astro_tpl.png"))
    assert saved.shape == astronaut.shape


def test_validation_template_without_face_fails_before_training(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    from easyphoto.errors import NoFaceError

    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    cfg = TINY.replace(validation_templates=(str(tmp_path / "wall.png"),))
    events: list[dict] = []
    with pytest.raises(NoFaceError, match="wall.png"):
        train("bob", dataset, cfg, cache=_cache(tiny_model_dir), on_event=events.append, home=tmp_path)
    assert not any(e["type"] == "step" for e in events)
    assert not (tmp_path / "users" / "bob").exists()


def test_non_square_photos_are_encoded_once_and_cropped_in_latent_space(
    tiny_model_dir: Path, dataset: Path
) -> None:
    data = load_training_data(dataset)
    data.images = [np.concatenate([data.images[0], data.images[1][:, :40]], axis=1)]  # 64×104
    data.captions = data.captions[:1]
    cfg = TrainConfig(resolution=64, rank=4, alpha=4, grad_accum=1, random_flip=False)
    trainer = LoraTrainer(_cache(tiny_model_dir), data, cfg)
    try:
        calls = []
        hook = trainer.vae.encoder.register_forward_hook(lambda *a: calls.append(1))
        crops = [trainer.sample_batch()["latents"] for _ in range(12)]
        hook.remove()
        assert len(calls) == 1, "one VAE pass per (photo, flip), not per step"
        assert all(c.shape == (1, 4, 8, 8) for c in crops)
        mean, _ = trainer._latent_cache[(0, False)]
        assert tuple(mean.shape[-2:]) == (8, 13)  # the whole 64×104 photo, cropped per sample
        offsets = set()
        for _ in range(12):
            crop, _ = trainer._latent_dist(0, False)
            matches = [x for x in range(6) if torch.equal(crop, mean[..., :, x : x + 8])]
            assert len(matches) >= 1, "a crop is an 8×8 window of the cached latents"
            offsets.add(matches[0])
        assert len(offsets) > 1, "crops move across the photo"
        with pytest.raises(ConfigError, match="multiple of 8"):
            LoraTrainer(_cache(tiny_model_dir), data, TrainConfig(resolution=100))
    finally:
        trainer.remove_adapters()
