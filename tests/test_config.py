"""The settings schema (easyphoto.config) and the public API surface."""

from __future__ import annotations

import subprocess
import sys

import pytest

from easyphoto.config import (
    CONFIG_CLASSES,
    FaceConfig,
    GenerateConfig,
    ModelConfig,
    PrepareConfig,
    ServerSettings,
    TrainConfig,
)
from easyphoto.errors import ConfigError


@pytest.mark.parametrize(
    "cls", [FaceConfig, ModelConfig, TrainConfig, PrepareConfig, GenerateConfig, ServerSettings]
)
def test_every_field_has_a_description_and_its_default_validates(cls: type) -> None:
    missing = [name for name, f in cls.model_fields.items() if not f.description]
    assert missing == [], f"{cls.__name__}: fields without a description: {missing}"
    cls()  # defaults pass their own ranges


def test_settings_are_frozen_and_replace_validates() -> None:
    cfg = TrainConfig()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        cfg.rank = 4  # type: ignore[misc]
    assert cfg.replace(rank=8).rank == 8 and cfg.rank == 128
    with pytest.raises(ConfigError, match="TrainConfig.rank"):
        cfg.replace(rank=-1)


def test_environment_layer_reads_only_its_own_variables(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # Generic variables must never become settings (HOME once became EASYPHOTO_HOME).
    for name, value in {"HOME": "/root", "DEVICE": "cuda", "home": "/x", "base_model": "/bad"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("EASYPHOTO_HOME", raising=False)
    assert ServerSettings().home.name == ".easyphoto"
    assert ModelConfig().device is None and ModelConfig().base_model == ModelConfig.default_of("base_model")
    monkeypatch.setenv("EASYPHOTO_HOME", str(tmp_path))
    monkeypatch.setenv("EASYPHOTO_WORKERS", "3")
    monkeypatch.setenv("EASYPHOTO_LORA_CACHE", "7")
    monkeypatch.setenv("EASYPHOTO_CPU_OFFLOAD", "yes")
    assert ServerSettings().home == tmp_path and ServerSettings().workers == 3
    assert ServerSettings(workers=2).workers == 2  # the constructor wins
    cfg = ModelConfig()
    assert cfg.lora_cache_size == 7 and cfg.cpu_offload is True
    monkeypatch.setenv("EASYPHOTO_WORKERS", "0")
    with pytest.raises(ConfigError, match="ServerSettings.EASYPHOTO_WORKERS|ServerSettings.workers"):
        ServerSettings()


def test_presets_and_request_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    from easyphoto.config import effective_config

    monkeypatch.setenv("EASYPHOTO_GENERATE_DEFAULTS", '{"first_steps": 10, "seed": 1}')
    cfg = effective_config("generate", {"seed": 2})
    assert cfg.first_steps == 10 and cfg.seed == 2
    monkeypatch.setenv("EASYPHOTO_GENERATE_DEFAULTS", '{"first_steps": 0}')
    with pytest.raises(ConfigError, match="GenerateConfig.first_steps"):
        effective_config("generate")
    assert set(CONFIG_CLASSES) == {"train", "prepare", "generate"}
    with pytest.raises(ConfigError, match="expected an object"):
        TrainConfig.from_layers([1, 2])  # type: ignore[arg-type]


def test_unknown_controlnet_names_are_refused() -> None:
    from easyphoto.stages.generate.controls import CONTROLS, check_controlnets

    check_controlnets(GenerateConfig())
    with pytest.raises(ConfigError, match="unknown ControlNet 'depth'; known: " + ", ".join(CONTROLS)):
        check_controlnets(GenerateConfig(first_controlnets=("canny", "depth")))
    with pytest.raises(ConfigError, match="listed twice"):
        check_controlnets(GenerateConfig(second_controlnets=("tile", "tile")))


def test_public_api_is_lazy() -> None:
    code = (
        "import sys, easyphoto as ep\n"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules\n"
        "for name in ('prepare', 'train', 'generate', 'swap', 'load_image', 'FaceAnalyzer', 'similarity'):\n"
        "    assert callable(getattr(ep, name)), name\n"
        "assert 'diffusers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
