"""Helpers the tests share (no test module imports another test module).

* :func:`txt2img` / :func:`img2img`: diffusers pipelines on a :class:`ModelCache`'s shared modules
  (the studio itself only builds ControlNet-inpaint pipelines).
* :func:`png_bytes`: a small encoded image.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _parts(cache: Any) -> dict[str, Any]:
    return {
        "vae": cache.vae,
        "text_encoder": cache.text_encoder,
        "tokenizer": cache.tokenizer,
        "unet": cache.unet,
        "scheduler": cache.new_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def txt2img(cache: Any) -> Any:
    """A text-to-image pipeline on the cache's shared modules (fresh scheduler)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**_parts(cache))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def img2img(cache: Any) -> Any:
    """An image-to-image pipeline on the cache's shared modules."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**_parts(cache))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def png_bytes(w: int = 64, h: int = 64, value: int = 128) -> bytes:
    """A flat grey PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def tiny_cache(seed: int = 0) -> Any:
    """A :class:`ModelCache` over tiny random components built in memory (no model folder)."""
    from easyphoto.diffusion.models import ModelCache
    from easyphoto.diffusion.tiny import tiny_components

    return ModelCache.from_components(tiny_components(seed))


def make_dataset(root: Any, astronaut: np.ndarray, analyzer: Any) -> Any:
    """A tiny prepared training set in ``root``: three 64 px crops of the astronaut's head, her mean
    embedding and a reference photo (imagefolder layout, like ``easyphoto prepare`` writes)."""
    import json
    from pathlib import Path

    import cv2
    from PIL import Image

    from easyphoto.config import TRIGGER_CAPTION

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    head = astronaut[0:300, 80:380]
    rows = []
    for i, shift in enumerate((0, 12, 24)):
        img = cv2.resize(head[shift:, shift:], (64, 64), interpolation=cv2.INTER_AREA)
        Image.fromarray(img).save(root / f"{i:02d}.png")
        rows.append(json.dumps({"file_name": f"{i:02d}.png", "text": TRIGGER_CAPTION}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    np.save(root / "embedding.npy", analyzer.largest(astronaut).embedding)
    Image.fromarray(cv2.resize(head, (128, 128))).save(root / "ref.png")
    return root


def make_tiny_dataset(ds: Any, astronaut: np.ndarray, analyzer: Any) -> Any:
    """A prepared dataset folder of two 64 px crops of the astronaut photo (caption, embedding, ref)."""
    import json

    import cv2
    from PIL import Image

    from easyphoto.config import TRIGGER_CAPTION
    from easyphoto.imageio import save_png

    head = astronaut[0:300, 80:380]
    for i in range(2):
        Image.fromarray(cv2.resize(head[i * 10 :, i * 10 :], (64, 64))).save(ds / f"{i}.png")
    (ds / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"{i}.png", "text": TRIGGER_CAPTION}) + "\n" for i in range(2))
    )
    np.save(ds / "embedding.npy", analyzer.largest(astronaut).embedding)
    save_png(head, ds / "ref.png")
    return ds


def tiny_train_config(**changes: Any) -> Any:
    """Two optimizer steps at 64 px, rank 4: a tiny LoRA in about a second."""
    from easyphoto.config import TrainConfig

    cfg = TrainConfig(
        resolution=64, max_steps=2, grad_accum=1, rank=4, alpha=4, validate_every=2, validation_size=64,
        validation_steps=2, validation_seeds=(1,), learning_rate=1e-3,
    )  # fmt: skip
    return cfg.replace(**changes) if changes else cfg


def train_tiny_users(
    tmp_path_factory: Any, tiny_model_dir: Any, astronaut: np.ndarray, analyzer: Any, users: Any
) -> Any:
    """An EASYPHOTO_HOME with tiny users trained for 2 steps on crops of the astronaut photo."""
    from easyphoto.config import ModelConfig
    from easyphoto.stages.train import train

    home = tmp_path_factory.mktemp("home")
    ds = make_tiny_dataset(tmp_path_factory.mktemp("ds"), astronaut, analyzer)
    for user in users:
        train(
            user, ds, tiny_train_config(), model_config=ModelConfig(base_model=str(tiny_model_dir)),
            analyzer=analyzer, home=home,
        )  # fmt: skip
    return home


#: Tiny settings so a CPU trains and generates in seconds (the server's defaults, like a preset).
TINY_TRAIN = {
    "resolution": 64,
    "max_steps": 4,
    "grad_accum": 1,
    "rank": 4,
    "alpha": 4,
    "validate_every": 2,
    "validation_size": 64,
    "validation_steps": 2,
    "validation_seeds": [1],
    "learning_rate": 1e-3,
}
#: The five test photos are crops and edits of one shot: near-duplicate detection is off, GrabCut too (speed).
TINY_PREPARE = {"grabcut": False, "duplicate_correlation": 1.01}


class PlacedFaces:
    """The real face analyzer, except that where it finds no face it reports the astronaut's face scaled
    into the picture. The tiny random SDXL draws noise, in which no detector finds a face; this lets the
    portrait half run on that template all the same (every other call is the real analyzer's)."""

    def __init__(self, real, source: np.ndarray) -> None:
        self.real = real
        self.source_face = real.largest(source)
        self.source_shape = source.shape
        self.placed = 0

    def detect(self, image: np.ndarray, **kwargs):
        faces = self.real.detect(image, **kwargs)
        if faces:
            return faces
        from easyphoto.face.analyzer import Face

        f = self.source_face
        s = np.array([image.shape[1] / self.source_shape[1], image.shape[0] / self.source_shape[0]])
        box = (f.box[0] * s[0], f.box[1] * s[1], f.box[2] * s[0], f.box[3] * s[1])
        self.placed += 1
        return [Face(box, f.score, f.landmarks * s, f.kps * s, f.detector, _embedding=f.embedding)]

    def largest(self, image: np.ndarray, **kwargs):
        faces = self.detect(image, **kwargs)
        return max(faces, key=lambda f: f.area) if faces else None

    def __getattr__(self, name: str):
        return getattr(self.real, name)
