"""THE user-model contract: what a trained user is on disk, and the only code that reads or writes it.

A user model is one folder, replaced as a whole when a training finishes (:func:`save_user_model`
writes a staging folder and swaps it in, so a crash leaves the previous model)::

    EASYPHOTO_HOME/users/<id>/
        lora.safetensors   kohya/A1111 keys (lora_unet_…, lora_te_…; SDXL lora_te1_/2_…), alphas, metadata
        meta.json          versioned metadata (:class:`UserMeta`): family, base model, scores, settings
        face_id.png        the best validation render (or the reference photo: ``face_id_source``)
        ref.png            the reference photo the face is taken from in generation
        embedding.npy      mean identity embedding of the training photos (128 floats)
        validation/        every validation image         train.log   the run's log

An unfinished training keeps its resumable state in ``EASYPHOTO_HOME/work/<id>/`` (:class:`TrainingState`).
Every other module asks this one for file names, summaries and checks; a missing or corrupt file is a
:class:`~easyphoto.errors.UserModelError` naming the user and the file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import TRIGGER_CAPTION, easyphoto_home
from .errors import BadImageError, EasyPhotoError, UnknownUserError, UserModelError
from .store import atomic_dir, replace_path, user_dir, users_dir, validate_user_id, write_json_atomic

#: Version of ``meta.json``. 1: the first versioned layout (models without ``format_version`` are read
#: as version 0, which had the same files and keys).
FORMAT_VERSION = 1
#: Base-model families a user model can be trained for.
FAMILIES = ("sd15", "sdxl")

LORA_FILE = "lora.safetensors"
META_FILE = "meta.json"
FACE_ID_FILE = "face_id.png"
REF_FILE = "ref.png"
EMBEDDING_FILE = "embedding.npy"
IP_EMBEDS_FILE = "ip_embeds.safetensors"  # the reference face as the IP-Adapter sees it (a cache)
#: Id of a person given as photos rather than a trained model (portraits without training).
PHOTO_USER = "photo"
VALIDATION_DIR = "validation"
TRAIN_LOG = "train.log"
#: Files of a user model that may be handed to a client (the API, the web UI).
PUBLIC_FILES = (LORA_FILE, FACE_ID_FILE, REF_FILE)

# The work folder of an unfinished training.
STATE_FILE = "state.json"
RESUME_FILE = "resume.safetensors"  # resume-step-NNNNN.safetensors since checkpoints are per step
OPTIMIZER_FILE = "optimizer.pt"  # optimizer-step-NNNNN.pt likewise
CHECKPOINTS_DIR = "checkpoints"


class UserMeta(BaseModel):
    """``meta.json`` of a user model. Unknown keys are kept (written by newer versions)."""

    model_config = ConfigDict(extra="allow")

    format_version: int = Field(FORMAT_VERSION, ge=0, description="Layout version of the user model.")
    family: Literal["sd15", "sdxl"] = Field("sd15", description="Base-model family the LoRA is for.")
    user_id: str
    easyphoto_version: str | None = None
    created: str | None = Field(None, description="UTC time the model was written (ISO 8601).")
    base_model: str | None = Field(None, description="Base model it was trained on.")
    trigger: str = TRIGGER_CAPTION
    rank: int | None = Field(None, description="Rank of the saved (fused) LoRA.")
    train_rank: int | None = None
    alpha: float | None = None
    steps: int | None = None
    photos: int | None = None
    fused_steps: list[int] = Field(default_factory=list)
    fusion: dict[str, Any] = Field(default_factory=dict)
    best_step: int | None = None
    best_score: float | None = None
    face_id_source: Literal["validation", "reference"] | None = Field(
        None, description="face_id.png is the best validation render, or the reference photo."
    )
    validations: list[dict[str, Any]] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class UserModel:
    """A trained user on disk. :meth:`load` checks that the model is complete and readable."""

    user_id: str
    path: Path
    meta: UserMeta

    @property
    def lora_path(self) -> Path:
        return self.path / LORA_FILE

    @property
    def face_id_path(self) -> Path:
        return self.path / FACE_ID_FILE

    @property
    def ref_path(self) -> Path:
        return self.path / REF_FILE

    @classmethod
    def load(cls, user_id: str, home: Path | None = None) -> UserModel:
        """The user model of ``user_id``.

        Raises:
            UnknownUserError: no trained model for this user.
            UserModelError: the model is there but a file is missing, empty or corrupt.
        """
        user_id = validate_user_id(user_id)
        folder = user_dir(user_id, home)
        lora = folder / LORA_FILE
        if not lora.is_file():
            raise UnknownUserError.coded("user.unknown", user_id=user_id)
        if lora.stat().st_size == 0:
            raise UserModelError(user_id, LORA_FILE, "the file is empty")
        return cls(user_id, folder, read_meta(user_id, folder))

    def ref_image(self) -> np.ndarray:
        """The reference photo (``ref.png``; ``face_id.png`` for models written without one)."""
        from .imageio import load_image

        for name in (REF_FILE, FACE_ID_FILE):
            path = self.path / name
            if path.is_file():
                try:
                    return load_image(path)
                except BadImageError as exc:
                    raise UserModelError(self.user_id, name, exc.reason) from None
        raise UserModelError(self.user_id, REF_FILE, "missing (no reference photo to take the face from)")

    def embedding(self) -> np.ndarray | None:
        """The mean identity embedding (``None`` when the model has none)."""
        path = self.path / EMBEDDING_FILE
        if not path.is_file():
            return None
        try:
            vector = np.load(path, allow_pickle=False).astype(np.float32).ravel()
        except (OSError, ValueError, EOFError) as exc:
            raise UserModelError(self.user_id, EMBEDDING_FILE, f"unreadable ({exc})") from None
        if vector.shape != (128,) or not np.all(np.isfinite(vector)):
            raise UserModelError(
                self.user_id, EMBEDDING_FILE, f"expected 128 finite numbers, got {vector.shape}"
            )
        return vector

    def file(self, name: str) -> Path:
        """One of :data:`PUBLIC_FILES` (:class:`UnknownUserError` when it is absent)."""
        if name not in PUBLIC_FILES:
            raise UnknownUserError(f"user models have no file {name!r}")
        path = self.path / name
        if not path.is_file():
            raise UnknownUserError(f"user {self.user_id!r} has no {name}")
        return path

    def summary(self) -> dict[str, Any]:
        """What the UI and API list about a user."""
        m = self.meta
        return {
            "user_id": self.user_id,
            "family": m.family,
            "created": m.created,
            "best_score": m.best_score,
            "steps": m.steps,
            "photos": m.photos,
            "rank": m.rank,
            "base_model": m.base_model,
            "face_id_source": m.face_id_source,
            "validations": [{"step": v.get("step"), "score": v.get("score")} for v in m.validations],
            "lora_bytes": self.lora_path.stat().st_size if self.lora_path.is_file() else None,
        }


def read_meta(user_id: str, folder: Path) -> UserMeta:
    """``meta.json`` of a user model folder, validated (a model without one gets minimal metadata)."""
    path = folder / META_FILE
    if not path.is_file():
        return UserMeta(user_id=user_id, format_version=0)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserModelError(user_id, META_FILE, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserModelError(user_id, META_FILE, "expected a JSON object")
    data.setdefault("format_version", 0)
    data["user_id"] = user_id
    try:
        meta = UserMeta.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise UserModelError(user_id, META_FILE, f"{where}: {first.get('msg')}") from None
    if meta.format_version > FORMAT_VERSION:
        raise UserModelError(
            user_id,
            META_FILE,
            f"format {meta.format_version} is newer than this EasyPhoto ({FORMAT_VERSION})",
        )
    return meta


def save_user_model(
    user_id: str,
    *,
    lora_state: dict[str, Any],
    lora_metadata: dict[str, str],
    meta: UserMeta,
    ref_image: np.ndarray | None,
    embedding: np.ndarray | None,
    face_id: Path | None,
    validation_images: Iterable[Path] = (),
    log_file: Path | None = None,
    home: Path | None = None,
) -> UserModel:
    """Write a whole user model atomically: it replaces the previous one in one swap, or nothing.

    ``face_id``: the best validation render; without one the reference photo stands in, and
    ``meta.face_id_source`` says which it is.
    """
    from safetensors.torch import save_file

    from .imageio import save_png

    user_id = validate_user_id(user_id)
    target = user_dir(user_id, home)
    meta = meta.model_copy(update={"user_id": user_id, "format_version": FORMAT_VERSION})
    if meta.created is None:
        meta = meta.model_copy(update={"created": _now()})
    with atomic_dir(target) as stage:
        save_file(
            {k: v.contiguous() for k, v in lora_state.items()}, str(stage / LORA_FILE), metadata=lora_metadata
        )
        (stage / VALIDATION_DIR).mkdir()
        for src in validation_images:
            if Path(src).is_file():
                shutil.copy2(src, stage / VALIDATION_DIR / Path(src).name)
        if face_id is not None and Path(face_id).is_file():
            shutil.copy2(face_id, stage / FACE_ID_FILE)
            meta = meta.model_copy(update={"face_id_source": "validation"})
        elif ref_image is not None:
            save_png(ref_image, stage / FACE_ID_FILE)
            meta = meta.model_copy(update={"face_id_source": "reference"})
        if ref_image is not None:
            save_png(ref_image, stage / REF_FILE)
        if embedding is not None:
            np.save(stage / EMBEDDING_FILE, np.asarray(embedding, dtype=np.float32))
        if log_file is not None and Path(log_file).is_file():
            shutil.copy2(log_file, stage / TRAIN_LOG)
        (stage / META_FILE).write_text(meta.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return UserModel(user_id, target, meta)


def is_trained(user_id: str, home: Path | None = None) -> bool:
    """Whether ``user_id`` has a user model (its LoRA file exists)."""
    return (user_dir(user_id, home) / LORA_FILE).is_file()


def lora_mtime(user_id: str, home: Path | None = None) -> float:
    """Modification time of the user's LoRA (-1 when absent): changes when the user is retrained."""
    path = user_dir(user_id, home) / LORA_FILE
    return path.stat().st_mtime if path.is_file() else -1.0


def list_users(home: Path | None = None) -> list[dict[str, Any]]:
    """Summaries of every trained user, newest first (a broken model is listed with its error)."""
    root = users_dir(home)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if not p.is_dir() or p.name.startswith(".") or not (p / LORA_FILE).is_file():
            continue
        try:
            out.append(UserModel.load(validate_user_id(p.name), home).summary())
        except UserModelError as exc:
            out.append({"user_id": p.name, "error": str(exc)})
        except EasyPhotoError:
            continue
    return sorted(out, key=lambda u: (u.get("created") or "", u["user_id"]), reverse=True)


def delete_user(user_id: str, home: Path | None = None) -> None:
    """Delete a user model at once (one rename), under the user's lock."""
    from .store import user_lock

    folder = user_dir(user_id, home)
    if not folder.is_dir():
        raise UnknownUserError(f"no trained model for user {user_id!r}")
    with user_lock(user_id, home, what="deletion"):
        trash = folder.parent / f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}.old"
        replace_path(folder, trash)  # the model disappears at once, never half
        shutil.rmtree(trash, ignore_errors=True)


def recover(home: Path | None = None) -> list[str]:
    """Repair what a crashed process left under ``EASYPHOTO_HOME`` (called at start-up by the server,
    the worker and a training): a user model between its two renames is restored, stale staging and
    ``.old`` folders of dead processes are deleted, folders of mixed-case ids (written before ids were
    case-insensitive) get their lower-case name. Returns what it did, one line each."""
    from .store import lowercase_user_dirs, recover_stale

    root = home or easyphoto_home()
    done: list[str] = []
    for name in ("users", "datasets", "work"):
        folder = root / name
        if folder.is_dir():
            done += lowercase_user_dirs(folder)
            done += recover_stale(folder)
    work = root / "work"
    if work.is_dir():
        for sub in work.iterdir():
            if sub.is_dir() and not sub.name.startswith("."):
                done += recover_stale(sub)
    return done


# --------------------------------------------------------------------------- unfinished trainings


def work_dir(user_id: str, home: Path | None = None) -> Path:
    """Where an unfinished training of ``user_id`` keeps its checkpoints, state and log."""
    return (home or easyphoto_home()) / "work" / validate_user_id(user_id)


@dataclass
class TrainingState:
    """The resumable state of an unfinished training (``work/<id>/state.json``).

    A checkpoint is committed by writing ``state.json`` last: the adapter weights and optimizer state
    it names (``resume_file``, ``optimizer_file``, one pair per step) are already on disk, so a crash at
    any moment leaves a state whose files all belong to the same step. ``family``: the base model's
    family (a resume continues on the same one; states written before SDXL training are ``sd15``).
    """

    step: int
    max_steps: int
    config: dict[str, Any]
    validations: list[dict[str, Any]]
    dataset: str
    resume_file: str = RESUME_FILE
    optimizer_file: str = OPTIMIZER_FILE
    family: str = "sd15"

    @classmethod
    def load(cls, user_id: str, home: Path | None = None) -> TrainingState:
        """The saved state; :class:`UserModelError` when it is missing or unreadable."""
        path = work_dir(user_id, home) / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = cls(
                step=int(data["step"]),
                max_steps=int(data["max_steps"]),
                config=dict(data.get("config") or {}),
                validations=list(data.get("validations") or []),
                dataset=str(data.get("dataset") or ""),
                resume_file=Path(str(data.get("resume_file") or RESUME_FILE)).name,
                optimizer_file=Path(str(data.get("optimizer_file") or OPTIMIZER_FILE)).name,
                family=str(data.get("family") or "sd15"),
            )
            if state.family not in FAMILIES:
                raise ValueError(f"family {state.family!r}")
            return state
        except FileNotFoundError:
            raise UserModelError(user_id, f"work/{STATE_FILE}", "no interrupted training to resume") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserModelError(
                user_id, f"work/{STATE_FILE}", f"unreadable resume state ({type(exc).__name__}); start afresh"
            ) from None

    def save(self, user_id: str, home: Path | None = None) -> None:
        write_json_atomic(work_dir(user_id, home) / STATE_FILE, self.__dict__)


def has_checkpoint(user_id: str | None, home: Path | None = None) -> bool:
    """Whether an unfinished training of ``user_id`` can be resumed."""
    if not user_id:
        return False
    try:
        return (work_dir(user_id, home) / STATE_FILE).is_file()
    except EasyPhotoError:
        return False


__all__ = [
    "CHECKPOINTS_DIR",
    "EMBEDDING_FILE",
    "FACE_ID_FILE",
    "FAMILIES",
    "FORMAT_VERSION",
    "LORA_FILE",
    "META_FILE",
    "OPTIMIZER_FILE",
    "PUBLIC_FILES",
    "REF_FILE",
    "RESUME_FILE",
    "STATE_FILE",
    "TRAIN_LOG",
    "TrainingState",
    "UserMeta",
    "UserModel",
    "VALIDATION_DIR",
    "delete_user",
    "has_checkpoint",
    "is_trained",
    "list_users",
    "lora_mtime",
    "read_meta",
    "recover",
    "save_user_model",
    "work_dir",
]
