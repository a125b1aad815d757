"""The operator's presets (``EASYPHOTO_*_DEFAULTS``) and the effective settings of a request."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import ConfigError
from .base import _Settings
from .stages import GenerateConfig, PrepareConfig, TrainConfig

#: Environment variables holding JSON objects of the operator's default settings.
PRESET_ENV = {
    "train": "EASYPHOTO_TRAIN_DEFAULTS",
    "prepare": "EASYPHOTO_PREPARE_DEFAULTS",
    "generate": "EASYPHOTO_GENERATE_DEFAULTS",
}
CONFIG_CLASSES: dict[str, type[_Settings]] = {
    "train": TrainConfig,
    "prepare": PrepareConfig,
    "generate": GenerateConfig,
}


def preset(kind: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The operator's default ``kind`` settings (``EASYPHOTO_TRAIN_DEFAULTS`` etc.), as given."""
    env = os.environ if environ is None else environ
    raw = env.get(PRESET_ENV[kind], "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{PRESET_ENV[kind]} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{PRESET_ENV[kind]} must be a JSON object of {kind} settings")
    return data


def effective_config(kind: str, *layers: dict[str, Any] | None, environ: dict[str, str] | None = None) -> Any:
    """``kind`` settings: defaults, then the operator's preset, then ``layers`` (validated)."""
    return CONFIG_CLASSES[kind].from_layers(preset(kind, environ), *layers)
