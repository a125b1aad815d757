"""Every setting of EasyPhoto in one typed, validated schema (pydantic).

Each field has its type, its range and a one-line description (with its unit); the class docstrings
say why the defaults are what they are (EasyPhoto's published values, DESIGN.md §4, or what we
measured). Out-of-range values are refused where they enter: constructing a settings object with a
bad value raises :class:`~easyphoto.errors.ConfigError` naming the field (the CLI turns that into
``exit 2`` naming the flag, the API into a 422 naming the field), never later in a worker.

Three layers, later wins: the defaults here; the operator's presets (``EASYPHOTO_TRAIN_DEFAULTS`` /
``_PREPARE_`` / ``_GENERATE_`` JSON objects, :func:`preset`); the request or command line.
:class:`ModelConfig` and :class:`ServerSettings` also read their ``EASYPHOTO_*`` environment variables
(pydantic-settings; each field's variable is listed in its description).

Split by what each part configures: :mod:`.base` (the shared frame), :mod:`.models`, :mod:`.stages`,
:mod:`.server`, :mod:`.presets`; import everything from ``easyphoto.config``.
"""

from __future__ import annotations

from .base import (
    DEFAULT_MAX_PIXELS,
    PORTRAIT_NEGATIVE_PROMPT,
    PORTRAIT_PROMPT,
    TRIGGER_CAPTION,
    config_error,
    easyphoto_home,
)
from .models import ModelConfig
from .presets import CONFIG_CLASSES, PRESET_ENV, effective_config, preset
from .server import MB, ServerSettings
from .stages import (
    FAMILY_RESOLUTION,
    FaceConfig,
    GenerateConfig,
    PrepareConfig,
    Text2PhotoConfig,
    TrainConfig,
)

__all__ = [
    "CONFIG_CLASSES",
    "MB",
    "DEFAULT_MAX_PIXELS",
    "PORTRAIT_NEGATIVE_PROMPT",
    "PORTRAIT_PROMPT",
    "PRESET_ENV",
]
__all__ += ["TRIGGER_CAPTION", "FaceConfig", "GenerateConfig", "ModelConfig", "PrepareConfig", "TrainConfig"]
__all__ += ["ServerSettings", "Text2PhotoConfig", "config_error", "easyphoto_home", "effective_config"]
__all__ += ["FAMILY_RESOLUTION", "preset"]
