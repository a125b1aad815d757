"""The shared frame of every settings class: validation errors that name the field, copies, layers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import ConfigError

S = TypeVar("S", bound="_Validated")

#: Default pixel limit for decoding a photo (40 megapixels). Checked from the header, before decoding.
DEFAULT_MAX_PIXELS = 40_000_000

#: Caption every training image gets (EasyPhoto's fixed trigger caption).
TRIGGER_CAPTION = "easyphoto_face, easyphoto, 1person"

#: EasyPhoto's positive prompt additions and negative prompt for portraits.
PORTRAIT_PROMPT = (
    TRIGGER_CAPTION + ", upper body, look at viewer, best quality, realistic, photo-realistic, "
    "detailed skin, natural lighting"
)
PORTRAIT_NEGATIVE_PROMPT = (
    "lowres, blurry, bad anatomy, deformed face, asymmetric eyes, extra teeth, watermark, text, "
    "cartoon, painting, illustration, worst quality, low quality"
)


def easyphoto_home() -> Path:
    """Folder that holds user models, jobs and caches: ``$EASYPHOTO_HOME`` or ``~/.easyphoto``."""
    env = os.environ.get("EASYPHOTO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".easyphoto"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def config_error(cls: type, exc: ValidationError) -> ConfigError:
    """One readable :class:`ConfigError` for a pydantic validation failure (fields named, input shown)."""
    parts, names, coded = [], [], []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        names.append(loc.split(".")[0] if loc else "")
        kind = err.get("type")
        msg = "unknown setting" if kind == "extra_forbidden" else err.get("msg", "invalid value")
        msg = msg.removeprefix("Value error, ")
        got = (
            f", got {_short(err['input'])}"
            if "input" in err and kind not in ("missing", "extra_forbidden")
            else ""
        )
        parts.append(f"{cls.__name__}.{loc}: {msg}{got}" if loc else f"{cls.__name__}: {msg}")
        ctx = {k: v if isinstance(v, (int, float)) else str(v) for k, v in (err.get("ctx") or {}).items()}
        coded.append({"field": names[-1], "type": kind, "ctx": ctx, "msg": msg})
    error = ConfigError("; ".join(parts))
    error.fields = [n for n in names if n]
    error.code, error.params = "config.fields", {"errors": coded}  # translated field by field in the UI
    return error


class _Validated:
    """Shared behaviour of our settings models: readable errors, validated copies, JSON dicts."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise config_error(type(self), exc) from None

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied, validated like a new object."""
        return type(self)(**{**self.model_dump(), **changes})  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return self.model_dump(mode="json")  # type: ignore[attr-defined]

    @classmethod
    def from_layers(cls: type[S], *layers: dict[str, Any] | None) -> S:
        """The defaults plus ``layers`` of overrides (later layers win); unknown keys are refused."""
        values: dict[str, Any] = {}
        for layer in layers:
            if layer is not None and not isinstance(layer, dict):
                raise ConfigError(f"{cls.__name__}: expected an object of settings, got {_short(layer)}")
            values.update(layer or {})
        return cls(**values)

    @classmethod
    def describe(cls, name: str) -> str:
        """The one-line description of field ``name``."""
        return cls.model_fields[name].description or name  # type: ignore[attr-defined]


class _Settings(_Validated, BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: Any) -> Any:
        """A list field may be given as comma-separated text (forms, environment): ``"1, 2"``."""
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, str) and get_origin(f.annotation) is tuple:
                    data = {**data, name: tuple(x.strip() for x in value.split(",") if x.strip())}
        return data


def _multiple_of_8(value: int) -> int:
    """Image sizes in pixels: SD1.5's VAE works on 8×8 blocks."""
    if value % 8:
        raise ValueError("must be a multiple of 8")
    return value


def _env(field: str, var: str) -> str:
    """The environment variable of a settings field (the constructor still takes the field's name).

    Only the exact, upper-case ``EASYPHOTO_*`` name is read: a bare ``HOME`` or ``DEVICE`` in the
    environment must never become a setting.
    """
    return var
