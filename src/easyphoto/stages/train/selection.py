"""Which checkpoints make the user model: validation scores, selection, and the saved file's metadata."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config import TRIGGER_CAPTION
from ...errors import EasyPhotoError

log = logging.getLogger("easyphoto.train")

#: kohya's ``ss_base_model_version`` of each model family.
KOHYA_BASE_VERSIONS = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}


@dataclass
class ValidationResult:
    """Scores of one checkpoint's validation images."""

    step: int
    scores: list[float]
    images: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else 0.0


def score_images(images: list[np.ndarray], mean_embedding: np.ndarray | None, analyzer: Any) -> list[float]:
    """Face-ID similarity of each image's largest face to the user (no face or no identity → 0)."""
    from ...face.analyzer import similarity

    scores = []
    for img in images:
        if mean_embedding is None:
            scores.append(0.0)
            continue
        face = analyzer.largest(img, fallback=False)
        scores.append(similarity(face, mean_embedding) if face is not None else 0.0)
    return scores


def select_checkpoints(
    validations: list[ValidationResult], top_k: int
) -> tuple[list[ValidationResult], ValidationResult]:
    """The checkpoints to fuse (the ``top_k`` best with a face) and the best one.

    When no validation image showed a recognisable face, the last checkpoint alone is used.
    """
    ranked = sorted(validations, key=lambda v: (v.score, v.step), reverse=True)
    if not ranked:
        raise EasyPhotoError("no checkpoint was validated")
    if ranked[0].score <= 0.0:
        log.warning("no validation image showed a recognisable face: using the last checkpoint")
        return [max(validations, key=lambda v: v.step)], ranked[0]
    return [v for v in ranked[: max(1, top_k)] if v.score > 0.0], ranked[0]


def best_face_image(best: ValidationResult, folder: Path) -> Path | None:
    """The best checkpoint's best image: a text-to-image render (the user alone) when one shows a
    face, a template portrait otherwise; ``None`` when no image has a face."""
    if best.score <= 0 or not best.images:
        return None
    renders = [i for i, n in enumerate(best.images) if "-seed" in n and best.scores[i] > 0]
    pool = renders or list(range(len(best.scores)))
    path = folder / best.images[max(pool, key=lambda i: best.scores[i])]
    return path if path.is_file() else None


def saved_alpha(lora_state: dict[str, Any]) -> float:
    """The alpha stored in a kohya state dict (a fused LoRA has alpha = rank, a single checkpoint the
    training alpha); what ``ss_network_alpha`` must say."""
    alphas = {round(float(v), 6) for k, v in lora_state.items() if k.endswith(".alpha")}
    return max(alphas) if alphas else float("nan")


def kohya_metadata(
    user_id: str,
    base_model: str,
    rank: int,
    alpha: float,
    steps: int,
    photos: int,
    validations: list[ValidationResult],
    fused_steps: list[int],
    family: str = "sd15",
) -> dict[str, str]:
    """The ``ss_*`` metadata A1111/kohya tools read, plus ours. ``family`` ("sd15" / "sdxl") gives
    kohya's ``ss_base_model_version`` (``sd_v1`` / ``sdxl_base_v1-0``, the values kohya's scripts write;
    A1111 tells SDXL LoRAs by it) and our ``easyphoto_family``."""
    return {
        "ss_base_model_version": KOHYA_BASE_VERSIONS[family],
        "ss_sd_model_name": base_model,
        "ss_network_dim": str(rank),
        "ss_network_alpha": f"{alpha:g}",
        "ss_network_module": "networks.lora",
        "ss_tag_frequency": json.dumps({"easyphoto": {TRIGGER_CAPTION: photos}}),
        "ss_max_train_steps": str(steps),
        "easyphoto_user_id": user_id,
        "easyphoto_trigger": TRIGGER_CAPTION,
        "easyphoto_scores": json.dumps({str(v.step): round(v.score, 4) for v in validations}),
        "easyphoto_fused_steps": json.dumps(fused_steps),
        "easyphoto_family": family,
        "format": "pt",
    }


__all__ = [
    "KOHYA_BASE_VERSIONS",
    "ValidationResult",
    "best_face_image",
    "kohya_metadata",
    "saved_alpha",
    "score_images",
    "select_checkpoints",
]
