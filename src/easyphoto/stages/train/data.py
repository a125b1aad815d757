"""The training set as the trainer reads it: images, captions, the identity to score against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import TRIGGER_CAPTION, TrainConfig
from ...errors import ConfigError
from ...imageio import load_image


@dataclass
class TrainingData:
    """Images and captions to train on, plus the identity the validation is scored against."""

    images: list[np.ndarray]
    captions: list[str]
    mean_embedding: np.ndarray | None
    ref_image: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.images)


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def load_training_data(dataset: str | Path) -> TrainingData:
    """Read a prepared dataset folder (Hugging Face imagefolder: ``metadata.jsonl`` + images).

    The mean embedding (``embedding.npy`` / ``mean_embedding.npy``) and the reference image
    (``ref.png``) are looked for in the folder and its parent.
    """
    root = Path(dataset)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        if (root / "train" / "metadata.jsonl").is_file():
            return load_training_data(root / "train")
        raise ConfigError(
            f"{root}: not a prepared dataset (no metadata.jsonl); run `easyphoto prepare` first"
        )
    images, captions = [], []
    for n, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = row["file_name"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{meta}:{n}: expected a JSON object with 'file_name'") from None
        path = (root / name).resolve()
        if root.resolve() not in path.parents:
            raise ConfigError(f"{meta}:{n}: file_name {name!r} points outside the dataset")
        images.append(load_image(path))
        captions.append(str(row.get("text") or TRIGGER_CAPTION))
    if not images:
        raise ConfigError(f"{root}: the dataset has no images")
    emb_path = _first_existing(
        *(d / n for d in (root, root.parent) for n in ("embedding.npy", "mean_embedding.npy"))
    )
    ref_path = _first_existing(root / "ref.png", root.parent / "ref.png")
    return TrainingData(
        images=images,
        captions=captions,
        mean_embedding=np.load(emb_path).astype(np.float32).ravel() if emb_path else None,
        ref_image=load_image(ref_path) if ref_path else None,
        source=str(root),
    )


def resolve_max_steps(config: TrainConfig, n_photos: int) -> int:
    """Optimizer steps to run: ``config.max_steps`` or ``min(n × steps_per_photo, cap)``."""
    if config.max_steps is not None:
        return int(config.max_steps)
    return max(1, min(n_photos * config.steps_per_photo, config.max_steps_cap))


__all__ = ["TrainingData", "load_training_data", "resolve_max_steps"]
