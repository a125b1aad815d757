"""What the HTTP API and the web UI both call: submit, inspect, cancel and resume jobs; list, show and
delete user models. Here a request becomes a job: the inputs are validated (user ids, every setting,
every image fully decoded once), stored under ``jobs/<id>/inputs/`` with names chosen here (never taken
from a request) and one row is queued. No pipeline logic lives here: the worker runs the workflows.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ServerSettings, easyphoto_home, effective_config
from ..errors import BadImageError, ConfigError, UserBusyError
from ..store import validate_user_id
from ..users import PHOTO_USER, UserModel, delete_user, list_users
from .store import Job, JobNotFoundError, JobStore, log_tail

_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")
_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


@dataclass
class Upload:
    """An uploaded file: the name the client gave (used only as a label) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Limits:
    """What the server accepts (defined once, in :class:`~easyphoto.config.ServerSettings`):
    ``max_file_bytes`` per photo, ``max_pixels`` per image (checked from the header before decoding),
    at most ``max_photos`` training photos and ``max_templates`` templates per request."""

    max_file_bytes: int
    max_pixels: int
    max_photos: int
    max_templates: int

    @classmethod
    def from_settings(cls, settings: ServerSettings | None = None, **changes: Any) -> Limits:
        """The limits of ``settings`` (default: the environment's), with ``changes`` applied."""
        s = settings or ServerSettings()
        values = {
            "max_file_bytes": s.max_file_bytes,
            "max_pixels": s.max_pixels,
            "max_photos": s.max_photos,
            "max_templates": s.max_templates,
        }
        return cls(**(values | changes))


class UploadTooLargeError(BadImageError):
    """An uploaded file is over the size limit (HTTP 413)."""


def safe_label(name: str | None, fallback: str) -> str:
    """A short, safe display name for an uploaded file (no folders, odd characters replaced)."""
    stem = Path(str(name or "")).name
    base, _, ext = stem.rpartition(".")
    stem = base or ext
    cleaned = _SAFE_NAME_RE.sub("_", stem).strip("_")[:40]
    return cleaned or fallback


def check_image(upload: Upload, limits: Limits) -> tuple[str, tuple[int, int]]:
    """Validate one uploaded image fully (decoded once); returns (extension, (width, height)).

    Raises :class:`BadImageError` (or :class:`UploadTooLargeError`) with a message naming the file.
    """
    from PIL import Image

    from ..imageio import load_image

    label = Path(str(upload.name or "upload")).name[:80] or "upload"
    if len(upload.data) > limits.max_file_bytes:
        size_mb, limit_mb = len(upload.data) / 1e6, limits.max_file_bytes / 1e6
        raise UploadTooLargeError(label, code="upload.too_large", size_mb=size_mb, limit_mb=limit_mb)
    image = load_image(upload.data, name=label, max_pixels=limits.max_pixels, max_bytes=limits.max_file_bytes)
    try:
        with Image.open(io.BytesIO(upload.data)) as im:
            fmt = im.format or ""
    except Exception:  # load_image succeeded, so this does not happen; keep a safe default
        fmt = ""
    return _FORMAT_EXT.get(fmt, "img"), (int(image.shape[1]), int(image.shape[0]))


class JobService:
    """The operations the HTTP API and the web UI share: one object per server.

    ``home``: ``EASYPHOTO_HOME``. ``limits``: upload limits (default: :class:`ServerSettings`'). Every
    setting is validated and resolved (defaults, then the operator's presets, then the request) when a
    job is submitted, so a bad value is refused at once and the job row records exactly the settings
    it runs with. ``store``: the job table (default: SQLite under ``home``; a fleet passes its
    :class:`~easyphoto.jobs.redis_store.RedisJobStore`, which has the same methods).
    """

    def __init__(self, home: Path | None = None, limits: Limits | None = None, store: Any = None) -> None:
        self.home = Path(home or easyphoto_home())
        self.limits = limits or Limits.from_settings()
        self.store = store if store is not None else JobStore(self.home)
        self.templates_dir = self.home / "templates"
        self._analyzer: Any = None  # the face picker's, loaded on first use (~1.6 s, no torch)

    # ------------------------------------------------------------------ defaults
    def defaults(self, kind: str) -> Any:
        """Effective default settings of ``train``, ``prepare`` or ``generate``."""
        return effective_config(kind)

    # ------------------------------------------------------------------ submit
    def _store_uploads(
        self, folder: Path, uploads: Sequence[Upload], prefix: str, what: str, limit: int, sub: str = ""
    ) -> list[dict[str, Any]]:
        """Check and write ``uploads`` as ``inputs/[sub/]NN_label.ext``; their names, labels and sizes."""
        if not uploads:
            raise BadImageError(what, code="upload.none")
        if len(uploads) > limit:
            raise ConfigError.coded("upload.too_many", what=what, n=len(uploads), limit=limit)
        stored = []
        for i, up in enumerate(uploads):
            ext, size = check_image(up, self.limits)
            label = safe_label(up.name, f"{prefix}{i:02d}")
            name = f"{sub}/{i:02d}_{label}.{ext}" if sub else f"{i:02d}_{label}.{ext}"
            (folder / "inputs" / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "inputs" / name).write_bytes(up.data)
            stored.append({"file": name, "name": label, "width": size[0], "height": size[1]})
        return stored

    def submit_train(
        self,
        user_id: str,
        photos: Sequence[Upload],
        train: dict[str, Any] | None = None,
        prepare: dict[str, Any] | None = None,
        *,
        notes: Sequence[str] = (),
        base_model: str | None = None,
    ) -> Job:
        """Validate the user id, settings and photos, store the photos and queue a training.

        ``base_model``: one of :meth:`base_models` by name (default: the configured one). Sizes left
        unset are the base model's family's (:meth:`TrainConfig.for_family`) when its files tell it here;
        else the training resolves them."""
        user_id = validate_user_id(user_id)
        base = self.resolve_base_model(base_model)
        if train and train.get("validation_templates"):
            raise ConfigError(
                "validation_templates names files on the server: only the operator may set it "
                "(EASYPHOTO_TRAIN_DEFAULTS), not a request"
            )
        family = _family(base)
        tcfg = effective_config("train", train).for_family(family)  # the row records the sizes
        pcfg = effective_config("prepare", prepare).for_family(family)
        active = self.store.active_for_user(user_id)
        if active:
            raise UserBusyError.coded("user.busy_job", user_id=user_id, job_id=active[0].id)
        job_id, folder = self.store.new_job_dir()
        try:
            stored = self._store_uploads(folder, photos, "photo", "photos", self.limits.max_photos)
            params = {
                "user_id": user_id,
                "photos": stored,
                "train": tcfg.to_dict(),
                "prepare": pcfg.to_dict(),
                "resume": False,
                "notes": list(notes),
            }
            if base:
                params["base_model"] = base
            return self.store.submit(job_id, "train", params, user_id=user_id)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def list_templates(self) -> list[str]:
        """Image files in ``EASYPHOTO_HOME/templates`` (a folder the user can fill; a new one starts
        with two public-domain samples, :func:`easyphoto.samples.seed_templates`)."""
        from ..samples import seed_templates

        seed_templates(self.templates_dir)
        if not self.templates_dir.is_dir():
            return []
        exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
        return sorted(
            p.name
            for p in self.templates_dir.iterdir()
            if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")
        )

    def template_thumbnails(self, side: int = 192, limit: int = 48) -> list[tuple[Any, str]]:
        """Small copies of the library templates, ``(RGB array, name)``, for a clickable gallery (the
        files themselves are not served: only what the UI makes is)."""
        import numpy as np

        from ..errors import BadImageError
        from ..imageio import fit_within, load_image

        out = []
        for name in self.list_templates()[:limit]:  # one entry per listed name, in listing order
            try:
                out.append((fit_within(load_image(self.templates_dir / name), side)[0], name))
            except BadImageError:  # a grey tile: generating with it says what is wrong
                out.append((np.full((side, side, 3), 200, np.uint8), name))
        return out

    def template_path(self, name: str) -> Path:
        """A library template by name: only names in the folder's listing are accepted."""
        listing = self.list_templates()
        if name not in listing:
            raise ConfigError(f"no template named {name!r} in the templates folder")
        return self.templates_dir / listing[listing.index(name)]

    def submit_generate(
        self,
        user_ids: Sequence[str],
        templates: Sequence[Upload] = (),
        library_templates: Sequence[str] = (),
        generate: dict[str, Any] | None = None,
        *,
        notes: Sequence[str] = (),
        photos: Sequence[Upload] = (),
        ip_image: Upload | None = None,
        base_model: str | None = None,
        background_image: Upload | None = None,
    ) -> Job:
        """Validate user ids (trained), settings and templates, store the templates, queue a generation.

        ``photos``: a person to paint without training, as the user ``"photo"`` (the default when no
        user id is given). ``ip_image``: the face the IP-Adapter sees instead of each user's own.
        ``background_image``: the picture put behind the people (``background="replace"``).
        """
        from ..workflows import check_generation, with_picture

        gcfg = effective_config("generate", generate)
        base = self.resolve_base_model(base_model)
        named = [PHOTO_USER] if photos else []
        gcfg = with_picture(gcfg, background_image is not None)  # keep + a picture: replace
        ids = check_generation(
            list(user_ids) or named,
            gcfg,
            self.home,
            photo_users=named,
            background_picture=background_image is not None,
        )
        uploads = list(templates)
        for name in library_templates:
            uploads.append(Upload(name=name, data=self.template_path(name).read_bytes()))
        job_id, folder = self.store.new_job_dir()
        try:
            stored = self._store_uploads(folder, uploads, "template", "templates", self.limits.max_templates)
            params = {
                "user_ids": ids,
                "templates": stored,
                "generate": gcfg.to_dict(),
                "notes": list(notes),
            }
            params |= self._store_people(folder, photos, ip_image, background_image)
            if base:
                params["base_model"] = base
            first = next((u for u in ids if u.lower() != "none" and u not in named), None)
            return self.store.submit(job_id, "generate", params, user_id=first)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _store_people(
        self, folder: Path, photos: Sequence[Upload], ip_image: Upload | None, background: Upload | None
    ) -> dict[str, Any]:
        """A generation's person-as-photos, IP-Adapter image and background picture, stored in the job's
        folder; the job params that name them."""
        params: dict[str, Any] = {}
        if photos:
            lim = self.limits.max_photos
            params["photos"] = self._store_uploads(folder, photos, "person", "photos", lim, sub="photos")
        if ip_image is not None:
            params["ip_image"] = self._store_uploads(folder, [ip_image], "ip", "ip_image", 1, sub="ip")[0]
        if background is not None:
            params["background_image"] = self._store_uploads(
                folder, [background], "background", "background_image", 1, sub="background"
            )[0]
        return params

    def submit_text2photo(
        self,
        user_ids: Sequence[str],
        text2photo: dict[str, Any] | None = None,
        generate: dict[str, Any] | None = None,
        *,
        pose: Upload | None = None,
        pose_name: str | None = None,
        notes: Sequence[str] = (),
        base_model: str | None = None,
        photos: Sequence[Upload] = (),
        ip_image: Upload | None = None,
        background_image: Upload | None = None,
    ) -> Job:
        """Validate users (trained, SD1.5), both settings, the scene LoRA's name and the pose, then queue
        a text-to-photo generation (a ``generate`` job whose params hold ``text2photo``). ``photos``,
        ``ip_image``, ``background_image``: as for :meth:`submit_generate` (no template, no training)."""
        from ..config import Text2PhotoConfig
        from ..text_to_photo import check_text_to_photo, resolve_scene_lora, text2photo_presets
        from ..workflows import with_picture

        t2p = Text2PhotoConfig.from_layers(text2photo)
        gcfg = effective_config("generate", generate)
        base = self.resolve_base_model(base_model)
        gcfg = with_picture(gcfg, background_image is not None)  # keep + a picture: replace
        ids = check_text_to_photo(
            user_ids, gcfg, self.home, photos=bool(photos), background_picture=background_image is not None
        )
        resolve_scene_lora(t2p.scene_lora)
        if pose_name and pose_name not in text2photo_presets()["poses"]:
            known = ", ".join(text2photo_presets()["poses"])
            raise ConfigError(f"pose {pose_name!r} is not a shipped pose; known: {known}")
        job_id, folder = self.store.new_job_dir()
        try:
            params: dict[str, Any] = {"user_ids": ids, "templates": [], "generate": gcfg.to_dict()}
            params.update(text2photo=t2p.to_dict(), notes=list(notes), pose_name=pose_name)
            if pose is not None:
                params["pose"] = self._store_uploads(folder, [pose], "pose", "pose", 1, sub="pose")[0]
            params |= self._store_people(folder, photos, ip_image, background_image)
            if base:
                params["base_model"] = base
            named = [PHOTO_USER] if photos else []  # a person given as photos holds no user lock
            first = next((u for u in ids if u.lower() != "none" and u not in named), None)
            return self.store.submit(job_id, "generate", params, user_id=first)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    # ------------------------------------------------------------------ inspect
    def template_faces(self, source: str | Path) -> list[dict[str, Any]]:
        """The faces of a template photo (an upload's path or a name in the templates folder), left
        to right, with a crop each: what the face picker shows (``workflows.template_faces``)."""
        from ..face.analyzer import FaceAnalyzer
        from ..workflows import template_faces

        path = Path(source)
        if not path.is_absolute() and not path.exists():
            path = self.template_path(str(source))
        if self._analyzer is None:
            self._analyzer = FaceAnalyzer()
        return template_faces(path, self._analyzer)

    def base_models(self) -> list[str]:
        """The base models a request may choose, by name (the configured one first; see
        :func:`easyphoto.registry.base_model_choices`)."""
        from ..config import ModelConfig
        from ..registry import base_model_choices

        return list(base_model_choices(ModelConfig().base_model))

    def resolve_base_model(self, name: str | None) -> str | None:
        """What a requested base model name loads (``None``: the configured one); a name that is not
        offered is a :class:`ConfigError` listing the choices."""
        from ..config import ModelConfig
        from ..registry import resolve_base_model

        if not name or not name.strip():
            return None
        configured = ModelConfig().base_model
        try:
            value = resolve_base_model(name.strip(), configured)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
        return None if value == configured else value

    def active_job(self, kind: str) -> str | None:
        """The newest queued or running job of ``kind`` (a reloaded page re-attaches to it)."""
        for job in self.store.list(kind=kind, limit=20):
            if job.state in ("queued", "running"):
                return job.id
        return None

    def recent_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest jobs, as the Jobs panel lists them: id, kind, user, state, progress, created."""
        out = []
        for job in self.store.list(limit=limit):
            view = job.to_dict()
            out.append({k: view.get(k) for k in ("id", "kind", "user_id", "state", "progress", "created")})
        return out

    def job_view(
        self, job_id: str, *, events_since: int | None = None, log_lines: int = 40
    ) -> dict[str, Any]:
        """Everything a client shows about a job: state, progress, log tail, result, errors."""
        job = self.store.get(job_id)
        out = job.to_dict()
        out["queue_position"] = self.store.queue_position(job)
        out["log_tail"] = log_tail(job.log_path, log_lines) if log_lines else ""
        out["notes"] = job.params.get("notes", [])
        if events_since is not None:
            out["events"] = self.store.events(job_id, since=events_since)
        return out

    def job_file(self, job_id: str, name: str) -> Path:
        """A file a job produced, by name: only names in the job's ``files/`` listing are served."""
        folder = self.store.files_dir(job_id)
        self.store.get(job_id)
        listing = os.listdir(folder) if folder.is_dir() else []
        if name not in listing or name.startswith("."):
            raise JobNotFoundError(f"job {job_id} has no file {name!r}")
        return folder / listing[listing.index(name)]

    def cancel(self, job_id: str) -> Job:
        """Cancel (queued) or ask to stop (running)."""
        return self.store.request_cancel(job_id)

    def resume(self, job_id: str) -> Job:
        """Requeue an interrupted training (continues from its checkpoint)."""
        return self.store.resume(job_id)

    # ------------------------------------------------------------------ users
    def list_users(self) -> list[dict[str, Any]]:
        """Every trained user with their scores and dates, newest first."""
        return list_users(self.home)

    def user_ids(self) -> list[str]:
        """Trained user ids, sorted (models that cannot be read are left out)."""
        return sorted(u["user_id"] for u in self.list_users() if "error" not in u)

    def user(self, user_id: str) -> dict[str, Any]:
        """One trained user's summary."""
        return UserModel.load(user_id, self.home).summary()

    def user_file(self, user_id: str, name: str) -> Path:
        """One of a trained user's public files (``lora.safetensors``, ``face_id.png``, ``ref.png``)."""
        return UserModel.load(user_id, self.home).file(name)

    def delete_user(self, user_id: str) -> None:
        """Delete a user model (refused while a training of this user is queued or running)."""
        active = self.store.active_for_user(user_id)
        if active:
            raise UserBusyError.coded("user.busy_job", user_id=user_id, job_id=active[0].id)
        delete_user(user_id, self.home)


def _family(base_model: str | None) -> str | None:
    """The family of a training's base model (``None``: the configured one), from its files here;
    ``None`` when they do not tell (a hub id not downloaded on this machine)."""
    from ..config import ModelConfig
    from ..diffusion.families import model_family

    config = ModelConfig()
    return model_family(base_model or str(config.base_model), local_files_only=True)


__all__ = ["JobService", "Limits", "Upload", "UploadTooLargeError", "check_image", "safe_label"]
