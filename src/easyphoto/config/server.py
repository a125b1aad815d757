"""What the server and its workers read from the environment (:class:`ServerSettings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .base import DEFAULT_MAX_PIXELS, _env, _Validated, easyphoto_home

MB = 1024 * 1024


class ServerSettings(_Validated, BaseSettings):
    """What the server needs to know; read from its ``EASYPHOTO_*`` variables, keyword arguments win.

    ``max_file_mb`` 32 covers a 40 MP JPEG; ``max_request_mb`` 512 a JSON body of EasyPhoto's API with
    20 base64 photos. ``workers``: worker processes, i.e. GPU-heavy jobs at once.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
        env_prefix="EASYPHOTO_",
        case_sensitive=True,
    )

    home: Path = Field(
        default_factory=easyphoto_home,
        validation_alias=_env("home", "EASYPHOTO_HOME"),
        description="Models, jobs and templates (EASYPHOTO_HOME).",
    )
    token: str | None = Field(
        None,
        validation_alias=_env("token", "EASYPHOTO_API_TOKEN"),
        description="Bearer token required on every request once set (EASYPHOTO_API_TOKEN).",
    )
    max_file_mb: float = Field(
        32,
        gt=0,
        le=4096,
        validation_alias=_env("max_file_mb", "EASYPHOTO_MAX_UPLOAD_MB"),
        description="Largest uploaded photo, MB (EASYPHOTO_MAX_UPLOAD_MB).",
    )
    max_request_mb: float = Field(
        512,
        gt=0,
        le=65536,
        validation_alias=_env("max_request_mb", "EASYPHOTO_MAX_REQUEST_MB"),
        description="Largest request body, MB (EASYPHOTO_MAX_REQUEST_MB).",
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        validation_alias=_env("max_pixels", "EASYPHOTO_MAX_PIXELS"),
        description="Largest image, pixels, checked before decoding (EASYPHOTO_MAX_PIXELS).",
    )
    max_photos: int = Field(50, ge=1, le=1000, description="Most training photos per request.")
    max_templates: int = Field(20, ge=1, le=1000, description="Most templates per request.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        validation_alias=_env("workers", "EASYPHOTO_WORKERS"),
        description="Worker processes (EASYPHOTO_WORKERS).",
    )
    start_workers: bool = Field(True, description="Start the worker processes with the server.")
    queue: str | None = Field(
        None,
        validation_alias=_env("queue", "EASYPHOTO_QUEUE"),
        description="Redis URL of a job fleet (redis://HOST:6379/0): jobs go to `easyphoto worker` "
        "processes on any machine instead of local workers (EASYPHOTO_QUEUE).",
    )
    ui: bool = Field(True, description="Serve the web UI at /.")
    ui_lang: Literal["auto", "en", "zh-CN"] = Field(
        "auto",
        validation_alias=_env("ui_lang", "EASYPHOTO_UI_LANG"),
        description="UI language: the browser's, en or zh-CN (EASYPHOTO_UI_LANG; zh, zh_CN, cn… accepted).",
    )
    job_retention_days: float = Field(
        30,
        ge=0,
        le=36500,
        validation_alias=_env("job_retention_days", "EASYPHOTO_JOB_RETENTION_DAYS"),
        description="Finished jobs (their uploads, portraits and logs) are deleted after this many days; "
        "0 keeps them (EASYPHOTO_JOB_RETENTION_DAYS).",
    )
    compat_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="How long EasyPhoto-compatible endpoints wait for their job, s."
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerSettings:
        """Settings from the environment; keyword arguments that are not ``None`` win."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    @field_validator("queue")
    @classmethod
    def _queue_url(cls, value: str | None) -> str | None:
        """Empty means none; anything else must be a Redis URL."""
        if value is None or not value.strip():
            return None
        if value.split("://", 1)[0] not in ("redis", "rediss", "unix"):
            raise ValueError("expected a Redis URL: redis://HOST:6379/0 (or rediss://, unix://)")
        return value.strip()

    @field_validator("ui_lang", mode="before")
    @classmethod
    def _language_alias(cls, value: Any) -> Any:
        """The usual spellings of our two languages (``zh``, ``zh_CN``, ``zh-Hans``, ``cn``, ``en-US``,
        any case) mean them; anything else is refused naming the choices."""
        if not isinstance(value, str):
            return value
        tag = value.strip().replace("_", "-").lower()
        if tag in ("zh", "cn", "chinese", "zh-cn", "zh-hans", "zh-sg") or tag.startswith("zh-hans-"):
            return "zh-CN"
        if tag == "english" or tag.split("-")[0] == "en":
            return "en"
        return "auto" if tag in ("", "auto") else value

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MB)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * MB)
