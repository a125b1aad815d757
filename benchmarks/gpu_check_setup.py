"""What the GPU check sets up before it runs a path: a face-analysis stub, the model folder, data, users.

* **Face analysis is stubbed** (:class:`StubFaceBackend`): dlib is not on the GPU machine (its model
  wheel alone is ~100 MB, over what can travel there) and face analysis is CPU work that
  ``benchmarks/faces.py`` measures. The stub "finds" one face in the middle of any image, places a mean
  68-point face shape (measured on tests/faces with dlib) in its box and gives every face the same
  identity vector, so every stage runs its real code on fixed faces: crops, masks, fusion, controls,
  validation scoring (similarity ~1.0, so several checkpoints are fused) and the portrait's score.
* **The model** is SD1.5's real architecture with random weights (:func:`easyphoto.diffusion.tiny.
  build_tiny_model`, ``full_size=True``), or the tiny one in the dry run.
* **The LCM-LoRA** of the fast mode has the shapes of ``latent-consistency/lcm-lora-sdv1-5`` (rank 64 on
  the UNet's attention, transformer linears, resnet convs, time projections and resamplers, kohya keys)
  with random weights (:func:`write_lcm_lora`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Side of the stub's face box as a fraction of the image's short side (the box is centred).
FACE_FRACTION = 0.25

#: Mean dlib 68-point face shape relative to its detection box (x, y in box widths / heights), measured
#: on 11 level faces of tests/faces (the chin lies below the box, as dlib's boxes are tight).
MEAN_SHAPE = np.array([
    [0.043, 0.33], [0.046, 0.456], [0.059, 0.581], [0.082, 0.704], [0.122, 0.824], [0.185, 0.93],
    [0.271, 1.019], [0.372, 1.085], [0.493, 1.105], [0.621, 1.09], [0.737, 1.028], [0.841, 0.947],
    [0.924, 0.844], [0.979, 0.725], [1.008, 0.594], [1.026, 0.461], [1.031, 0.326], [0.117, 0.223],
    [0.172, 0.166], [0.253, 0.148], [0.338, 0.157], [0.419, 0.186], [0.573, 0.181], [0.663, 0.15],
    [0.757, 0.14], [0.847, 0.162], [0.912, 0.223], [0.494, 0.279], [0.491, 0.358], [0.488, 0.439],
    [0.484, 0.522], [0.39, 0.589], [0.436, 0.602], [0.488, 0.615], [0.541, 0.602], [0.593, 0.589],
    [0.209, 0.3], [0.257, 0.266], [0.32, 0.265], [0.373, 0.305], [0.318, 0.317], [0.257, 0.319],
    [0.635, 0.304], [0.687, 0.261], [0.752, 0.262], [0.806, 0.294], [0.755, 0.315], [0.692, 0.314],
    [0.31, 0.771], [0.37, 0.727], [0.439, 0.706], [0.487, 0.718], [0.538, 0.706], [0.61, 0.726],
    [0.682, 0.768], [0.612, 0.825], [0.542, 0.852], [0.489, 0.858], [0.434, 0.852], [0.37, 0.827],
    [0.336, 0.77], [0.438, 0.753], [0.488, 0.758], [0.539, 0.752], [0.651, 0.77], [0.539, 0.784],
    [0.488, 0.792], [0.436, 0.785],
], dtype=np.float32)  # fmt: skip

#: The one identity every stub face has (a fixed 128-d vector, like dlib's descriptor).
STUB_EMBEDDING = (np.random.default_rng(18).standard_normal(128) * 0.05).astype(np.float32)

#: Modules of SD1.5's UNet that latent-consistency/lcm-lora-sdv1-5 adapts (diffusers' LCM-LoRA script).
LCM_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
    "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)  # fmt: skip


class StubFaceBackend:
    """A :class:`easyphoto.face.analyzer.FaceBackend` without dlib: one centred face per image."""

    name = "stub"

    def detect(self, image: np.ndarray, upsample: int) -> list[tuple[tuple[float, ...], float]]:
        """One square box of ``FACE_FRACTION`` × the short side, in the middle of ``image``."""
        h, w = image.shape[:2]
        side = FACE_FRACTION * min(h, w)
        cx, cy = w / 2, h / 2
        return [((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 1.0)]

    def detect_fallback(self, image: np.ndarray, upsample: int) -> list[tuple[tuple[float, ...], float]]:
        return self.detect(image, upsample)

    def landmarks(self, image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        x0, y0, x1, y1 = box
        return (MEAN_SHAPE * np.array([x1 - x0, y1 - y0]) + np.array([x0, y0])).astype(np.float32)

    def embed(self, image: np.ndarray, box: tuple[float, ...], jitters: int) -> np.ndarray:
        return STUB_EMBEDDING.copy()


def stub_analyzer() -> Any:
    """A :class:`~easyphoto.face.analyzer.FaceAnalyzer` on :class:`StubFaceBackend`."""
    from easyphoto.face.analyzer import FaceAnalyzer

    return FaceAnalyzer(backend=StubFaceBackend())


def make_template(size: int) -> np.ndarray:
    """A ``size``² template photo: a soft background and a drawn face where the stub finds it."""
    import cv2

    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([x * 200 // size + 30, y * 160 // size + 60, 220 - x * 100 // size], axis=2)
    img = img.astype(np.uint8)
    c, r = size // 2, int(FACE_FRACTION * size * 1.25 / 2)
    cv2.ellipse(img, (c, c + r // 8), (int(r * 0.8), r), 0, 0, 360, (225, 180, 150), -1)
    for dx in (-0.35, 0.35):  # eyes
        cv2.circle(img, (int(c + dx * r), int(c - 0.2 * r)), max(2, r // 10), (60, 40, 30), -1)
    cv2.ellipse(img, (c, int(c + 0.45 * r)), (max(3, r // 4), max(2, r // 12)), 0, 0, 360, (150, 60, 60), -1)
    return img


def write_dataset(folder: Path, size: int, n: int = 3) -> Path:
    """A prepared dataset as ``easyphoto prepare`` writes it: ``n`` synthetic ``size``² photos, captions,
    the stub identity as the mean embedding, and a reference photo."""
    from train import synthetic_data  # benchmarks/train.py

    from easyphoto.imageio import save_png

    folder.mkdir(parents=True, exist_ok=True)
    data = synthetic_data(n, size)
    rows = []
    for i, (image, caption) in enumerate(zip(data.images, data.captions, strict=True)):
        save_png(image, folder / f"{i:02d}.png")
        rows.append(json.dumps({"file_name": f"{i:02d}.png", "text": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    np.save(folder / "embedding.npy", STUB_EMBEDDING)
    save_png(make_template(size), folder / "ref.png")
    return folder


def build_model(folder: Path, full_size: bool) -> tuple[float | None, str]:
    """The random SD1.5 folder (+ ControlNets, IP-Adapter), built unless already complete there.

    Returns ``(build seconds or None when reused, description)``.
    """
    from common import model_complete  # benchmarks/common.py

    from easyphoto.diffusion.sources import quiet_libraries
    from easyphoto.diffusion.tiny import build_tiny_model

    quiet_libraries()  # no "Writing model shards" bars
    if model_complete(folder):
        return None, f"reused {folder}"
    start = time.perf_counter()
    build_tiny_model(folder, seed=0, full_size=full_size)
    took = time.perf_counter() - start
    gb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9
    return took, f"{'SD1.5' if full_size else 'tiny'} random weights, {gb:.2f} GB on disk"


def write_lcm_lora(model_dir: Path, path: Path, rank: int = 64, alpha: float = 8.0) -> tuple[int, int]:
    """Random LCM-LoRA weights with the real file's layout for the UNet in ``model_dir``.

    Kohya keys (``lora_unet_<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``), a rank
    ``rank`` down/up pair for every Linear and Conv2d named in :data:`LCM_TARGETS` (a conv's down keeps
    its kernel, its up is 1×1), fp16. The UNet is made on the meta device (no weights are read).
    Returns ``(modules, parameters)``.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model_dir, subfolder="unet"))
    gen = torch.Generator().manual_seed(64)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not any(name == t or name.endswith("." + t) for t in LCM_TARGETS):
            continue
        if isinstance(module, torch.nn.Linear):
            down_shape, up_shape = (rank, module.in_features), (module.out_features, rank)
        elif isinstance(module, torch.nn.Conv2d):
            down_shape = (rank, module.in_channels, *module.kernel_size)
            up_shape = (module.out_channels, rank, 1, 1)
        else:
            continue
        fan_in = int(np.prod(down_shape[1:]))
        key = "lora_unet_" + name.replace(".", "_")
        state[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=gen) / fan_in**0.5
        state[f"{key}.lora_up.weight"] = torch.randn(up_shape, generator=gen) * 0.01
        state[f"{key}.alpha"] = torch.tensor(alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(path))
    params = sum(v.numel() for k, v in state.items() if not k.endswith(".alpha"))
    return len(state) // 3, params


__all__ = [
    "FACE_FRACTION",
    "LCM_TARGETS",
    "MEAN_SHAPE",
    "STUB_EMBEDDING",
    "StubFaceBackend",
    "build_model",
    "make_template",
    "stub_analyzer",
    "write_dataset",
    "write_lcm_lora",
]
