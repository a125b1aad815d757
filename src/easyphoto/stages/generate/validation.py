"""Training validation on the user's own templates: the portrait pipeline's first pass, scored.

:class:`TemplateValidation` is what :mod:`easyphoto.workflows` hands the training stage as its extra
validation (the training stage never imports generation). Each validation paints the user being trained
into every template with the LoRA that is training (already active on the shared modules: no file is
written or read), and scores the result by face-ID; those scores count in checkpoint selection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...config import GenerateConfig, TrainConfig
from ...errors import ConfigError, NoFaceError
from ...imageio import load_image


@dataclass
class ValidationTemplate:
    """A template photo that validation paints the user into (its largest face)."""

    name: str
    image: np.ndarray
    face: Any


def template_validation_config(cfg: TrainConfig) -> GenerateConfig:
    """The :class:`GenerateConfig` of template validation: first pass only, fixed seed."""
    return GenerateConfig(
        first_steps=cfg.validation_template_steps,
        second_steps=0,
        seed=int(cfg.validation_seeds[0]) if cfg.validation_seeds else 0,
    )


def load_validation_templates(paths: Sequence[str | Path], analyzer: Any) -> list[ValidationTemplate]:
    """Read validation templates; each must show a face (the largest one is repainted)."""
    out = []
    for p in paths:
        image = load_image(p)
        face = analyzer.largest(image)
        if face is None:
            raise NoFaceError(str(p), code="face.none_in_validation")
        out.append(ValidationTemplate(Path(p).name, image, face))
    return out


def validation_user(data: Any, analyzer: Any, family: str = "sd15") -> Any:
    """The training user as the portrait pipeline sees it (reference face, identity, no LoRA file: the
    training adapters are active on the modules of ``family``'s cache)."""
    from . import PortraitUser

    candidates = ([data.ref_image] if data.ref_image is not None else []) + list(data.images)
    for image in candidates:
        face = analyzer.largest(image)
        if face is not None:
            embedding = data.mean_embedding if data.mean_embedding is not None else face.embedding
            return PortraitUser("training", None, image, face, embedding, family=family)
    raise ConfigError(f"{data.source}: no face in the dataset's reference or training images")


class TemplateValidation:
    """Paints the user being trained into ``paths`` at each validation (see the module docstring)."""

    def __init__(self, paths: Sequence[str | Path], config: TrainConfig) -> None:
        self.paths = list(paths)
        self.config = config
        self.gen_cfg = template_validation_config(config)
        self.templates: list[ValidationTemplate] = []

    def check(self, analyzer: Any) -> None:
        """Read the templates now (each must show a face: :class:`NoFaceError` naming the file), so a
        bad one stops a run before its photos are prepared; :meth:`prepare` then reuses them."""
        self.templates = load_validation_templates(self.paths, analyzer)

    def prepare(self, data: Any, cache: Any, analyzer: Any, folder: Path) -> None:
        """Templates must show a face, the dataset too, and the first pass's ControlNets must load.

        ``cache`` is the training's (SD1.5 or SDXL): the user is painted on it with its family's nets
        (:func:`~.controls.family_config`); an SDXL training's crops are ``validation_size`` (SDXL's
        1024 unless set), the size its text-to-image validation renders at."""
        from . import PortraitGenerator
        from .controls import family_config

        family = getattr(cache, "family", "sd15")
        if family == "sdxl":
            size = self.config.for_family(family).validation_size
            self.gen_cfg = self.gen_cfg.replace(sdxl_short_side=size)
        if not self.templates:
            self.templates = load_validation_templates(self.paths, analyzer)
        self.user = validation_user(data, analyzer, family)
        for name in family_config(self.gen_cfg, cache).first_controlnets:
            cache.controlnet(name)
        if family == "sdxl":  # its SD1.5 cache is never loaded: every face is the SDXL training user's
            self.generator = PortraitGenerator(analyzer=analyzer, model_config=cache.config, sdxl_cache=cache)
        else:
            self.generator = PortraitGenerator(cache=cache, analyzer=analyzer)

    def render(self, step: int) -> list[tuple[str, np.ndarray, float]]:
        """One first-pass portrait per template with the current adapters, and its face-ID score."""
        out = []
        for i, tpl in enumerate(self.templates):
            image, score = self.generator.face(
                tpl.image, tpl.face, self.user, self.gen_cfg, int(self.gen_cfg.seed or 0) + i, timings={}
            )
            stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(tpl.name).stem)[:40]
            out.append((f"step-{step:05d}-template{i}-{stem}.png", image, float(score)))
        return out


__all__ = [
    "TemplateValidation",
    "ValidationTemplate",
    "load_validation_templates",
    "template_validation_config",
    "validation_user",
]
