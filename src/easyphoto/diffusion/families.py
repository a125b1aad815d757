"""Which model family (``sd15`` or ``sdxl``) a base model or a LoRA file belongs to, read cheaply.

A LoRA trained on one family does not fit the other's UNet, and a base model of the wrong family makes
every later step fail with a shape error deep inside diffusers. These functions answer from metadata
only, never loading weights: a diffusers folder's ``model_index.json`` / ``unet/config.json``, a
single file's tensor names (the safetensors header), a hub id's cached ``model_index.json``. They
return ``None`` when they cannot tell; :func:`check_family` turns a known mismatch into a
:class:`~easyphoto.errors.ConfigError` that names both sides, before anything is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from easyphoto.errors import ConfigError

Family = Literal["sd15", "sdxl"]
#: Human names of the families (error messages).
FAMILY_NAMES: dict[str, str] = {"sd15": "SD1.5", "sdxl": "SDXL"}
#: Hub ids whose family is known without their files (the defaults and their common siblings).
KNOWN_IDS: dict[str, Family] = {
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15",
    "runwayml/stable-diffusion-v1-5": "sd15",
    "benjamin-paine/stable-diffusion-v1-5": "sd15",
}


def _from_folder(path: Path) -> Family | None:
    index = path / "model_index.json"
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{index}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            if "text_encoder_2" in data or "XL" in str(data.get("_class_name", "")):
                return "sdxl"
            if "text_encoder" in data:
                return "sd15"
    unet = path / "unet" / "config.json"
    if unet.is_file():
        try:
            cfg = json.loads(unet.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{unet}: not valid JSON ({exc})") from None
        return "sdxl" if cfg.get("addition_embed_type") == "text_time" else "sd15"
    return None


def _from_keys(keys: list[str]) -> Family | None:
    """A checkpoint's family from its tensor names (original CompVis / SGM layouts)."""
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.") for k in keys):
        return "sd15"
    if any(k.startswith(("model.diffusion_model.label_emb.", "add_embedding.")) for k in keys):
        return "sdxl"
    return None


def safetensors_keys(path: str | Path) -> list[str]:
    """Tensor names of a ``.safetensors`` file, read from its header only (no weights loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise ConfigError(f"{path}: not a readable .safetensors file ({exc})") from None


def model_family(source: str, *, local_files_only: bool = True) -> Family | None:
    """The family of a base model given as a diffusers folder, a single ``.safetensors`` checkpoint or a
    hub id (from the hub cache only, unless ``local_files_only`` is off); ``None`` when unknown
    (a ``.ckpt`` pickle, a hub id not downloaded yet)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        return _from_keys(safetensors_keys(path)) if path.suffix == ".safetensors" else None
    if source in KNOWN_IDS:
        return KNOWN_IDS[source]
    if source.count("/") == 1 and not source.startswith(("/", ".", "~")):
        try:
            from huggingface_hub import hf_hub_download

            index = hf_hub_download(source, "model_index.json", local_files_only=local_files_only)
        except Exception:  # not cached / offline / no such repo: the loader reports that itself
            return None
        return _from_folder(Path(index).parent)
    return None


def lora_family(path: str | Path) -> Family | None:
    """The family a LoRA file was trained for, from its key names and shapes; ``None`` when unsure.

    Kohya files name SDXL's text encoders ``lora_te1_``/``lora_te2_`` and SD1.5's ``lora_te_``;
    diffusers files name SDXL's second encoder ``text_encoder_2.``. A UNet-only file is told by the
    input width of its cross-attention keys (SD1.5 768, SDXL 2048, the widths of the public models).
    """
    from safetensors import safe_open

    keys = safetensors_keys(path)
    if any(k.startswith(("lora_te2_", "lora_te1_", "text_encoder_2.", "te2.")) for k in keys):
        return "sdxl"
    if any(k.startswith("lora_te_") for k in keys):
        return "sd15"
    widths = {768: "sd15", 1024: None, 2048: "sdxl"}
    with safe_open(str(path), framework="pt") as f:
        for k in keys:
            if ("attn2_to_k" in k or "attn2.to_k" in k) and ("lora_down" in k or "lora_A" in k):
                return widths.get(f.get_slice(k).get_shape()[-1])  # type: ignore[return-value]
    return None


def check_family(expected: str, found: str | None, what: str, against: str) -> None:
    """Raise :class:`ConfigError` when ``found`` is a known family other than ``expected``.

    ``what``: the thing checked ("user 'alice''s LoRA"), ``against``: what it would be used with
    ("the SDXL model 'stabilityai/…'"). ``found=None`` (unknown) passes: the loader reports a real
    incompatibility itself.
    """
    if found is not None and found != expected:
        raise ConfigError(
            f"{what} is {FAMILY_NAMES.get(found, found)} but {against} is "
            f"{FAMILY_NAMES.get(expected, expected)}: model families cannot be mixed (an SD1.5 LoRA does "
            "not fit an SDXL base, nor the reverse)"
        )


__all__ = [
    "FAMILY_NAMES",
    "KNOWN_IDS",
    "Family",
    "check_family",
    "lora_family",
    "model_family",
    "safetensors_keys",
]
