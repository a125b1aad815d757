"""The users a portrait paints: a trained user's model, or a person given as photos only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, NoFaceError
from ...imageio import ImageSource, load_image
from ...users import PHOTO_USER, UserModel


@dataclass
class PortraitUser:
    """A user as generation needs them: LoRA, reference face and identity.

    ``photo_only``: given as photos, no LoRA (identity from fusion and the IP-Adapter). ``folder``: the
    user model's folder, where the IP-Adapter embeddings of the reference face are cached.
    """

    user_id: str
    lora: Path | None  # None: the LoRA is already active on the cache's modules (training validation)
    ref_image: np.ndarray
    ref_face: Any
    embedding: np.ndarray
    base_model: str | None = None
    photo_only: bool = False
    family: str = "sd15"
    folder: Path | None = None
    ip_embeds: Any = None


def load_user(user_id: str, analyzer: Any, home: Path | None = None) -> PortraitUser:
    """A trained user's LoRA path, reference face and identity embedding (from :mod:`easyphoto.users`)."""
    model = UserModel.load(user_id, home)
    ref = model.ref_image()
    face = analyzer.largest(ref)
    if face is None:
        raise NoFaceError(f"user {user_id!r}", code="face.none_in_reference")
    embedding = model.embedding()
    return PortraitUser(
        user_id, model.lora_path, ref, face, embedding if embedding is not None else face.embedding,
        model.meta.base_model, folder=model.path, family=model.meta.family,
    )  # fmt: skip


def photo_user(photos: Sequence[ImageSource], analyzer: Any, name: str = PHOTO_USER) -> PortraitUser:
    """A user given as one or more photos, no training: the largest face of each photo; the largest of
    all is the reference, the identity is the mean of their embeddings.

    Raises :class:`NoFaceError` naming the photo without a face, :class:`BadImageError` for one that
    cannot be read.
    """
    if not photos:
        raise ConfigError("give at least one photo of the person")
    best: tuple[np.ndarray, Any] | None = None
    embeddings = []
    for i, src in enumerate(photos):
        label = str(src) if isinstance(src, (str, Path)) else f"photo {i + 1}"
        image = load_image(src, name=label)
        face = analyzer.largest(image)
        if face is None:
            raise NoFaceError(label, code="face.none_in_photo")
        embeddings.append(face.embedding)
        if best is None or face.area > best[1].area:
            best = (image, face)
    assert best is not None
    mean = np.mean(embeddings, axis=0).astype(np.float32)
    return PortraitUser(name, None, best[0], best[1], mean, photo_only=True)


__all__ = ["PortraitUser", "load_user", "photo_user"]
