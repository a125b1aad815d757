"""Base models a request may pick by name: the configured one, models/checkpoints, EASYPHOTO_BASE_MODELS."""

from __future__ import annotations

from pathlib import Path

import pytest

from easyphoto.config import ModelConfig
from easyphoto.errors import ConfigError
from easyphoto.registry import base_model_choices, checkpoints_dir, resolve_base_model


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EASYPHOTO_MODELS_DIR", str(tmp_path / "models"))
    folder = checkpoints_dir()
    folder.mkdir(parents=True)
    (folder / "Chilloutmix-Ni-pruned-fp16-fix.safetensors").write_bytes(b"x")
    (folder / "realistic").mkdir()
    (folder / "realistic" / "model_index.json").write_text("{}")
    (folder / "notes.txt").write_text("not a model")
    (folder / "empty_dir").mkdir()
    return folder


def test_choices_are_the_configured_model_the_checkpoints_folder_and_the_env(
    checkpoints, monkeypatch
) -> None:
    monkeypatch.setenv("EASYPHOTO_BASE_MODELS", "someone/sd15-finetune, ")
    choices = base_model_choices("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert list(choices) == [
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "Chilloutmix-Ni-pruned-fp16-fix.safetensors",
        "realistic",
        "someone/sd15-finetune",
    ]
    assert choices["realistic"] == str(checkpoints / "realistic")
    # EasyPhoto's sd_model_checkpoint names the file, with or without the extension
    cfg = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    file = str(checkpoints / "Chilloutmix-Ni-pruned-fp16-fix.safetensors")
    assert resolve_base_model("Chilloutmix-Ni-pruned-fp16-fix.safetensors", cfg) == file
    assert resolve_base_model("Chilloutmix-Ni-pruned-fp16-fix", cfg) == file


def test_a_name_that_is_not_offered_is_refused_with_the_choices(checkpoints, tmp_path) -> None:
    cfg = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    elsewhere = tmp_path / "secret.safetensors"
    elsewhere.write_bytes(b"x")
    for name in ("nope", str(elsewhere), "../checkpoints/realistic", "notes.txt", "empty_dir"):
        with pytest.raises(KeyError, match="choose one of: stable-diffusion-v1-5"):
            resolve_base_model(name, cfg)


def test_the_service_records_the_resolved_model_and_compat_notes_a_missing_one(checkpoints, tmp_path) -> None:
    import io

    from PIL import Image

    from easyphoto.jobs import JobService, Upload
    from easyphoto.server.compat import checkpoint_by_name

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(buf, "PNG")
    photo = Upload("a.png", buf.getvalue())
    service = JobService(tmp_path / "home")
    with pytest.raises(ConfigError, match="not available here"):
        service.submit_train("alice", [photo], base_model="nope")
    job = service.submit_train("alice", [photo], base_model="realistic")
    assert job.params["base_model"] == str(checkpoints / "realistic")
    default = service.submit_train("bob", [photo], base_model=service.base_models()[0])
    assert "base_model" not in default.params  # the configured one: nothing to switch
    notes: list[str] = []
    assert (
        checkpoint_by_name(service, "Chilloutmix-Ni-pruned-fp16-fix", notes)
        == "Chilloutmix-Ni-pruned-fp16-fix"
    )
    assert notes == []
    assert checkpoint_by_name(service, "majicmixRealistic_v7.safetensors", notes) is None
    assert "not on this server" in notes[0] and "realistic" in notes[0]


def test_the_worker_switches_its_models_to_the_jobs_base_model_and_back(tmp_path: Path) -> None:
    from easyphoto.jobs.worker import Worker

    worker = Worker(tmp_path, model_config=ModelConfig(base_model="/models/a", device="cpu"))
    first = worker.cache
    worker._use_base_model(None)
    assert worker.cache is first  # same base model: models stay loaded
    worker._use_base_model("/models/b")
    assert worker.cache is not first and worker.cache.config.base_model == "/models/b"
    assert worker.cache.config.device == "cpu"  # the worker's other settings are kept
    second = worker.cache
    worker._use_base_model("/models/b")
    assert worker.cache is second
    worker._use_base_model(None)
    assert worker.cache.config.base_model == "/models/a"
