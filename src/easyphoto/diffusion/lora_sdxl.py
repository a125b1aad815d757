"""SDXL LoRA files: the layers adapted on SDXL and the kohya/A1111 export (the first piece of SDXL user
models; the SDXL trainer builds on it).

SDXL has two text encoders: kohya names the first ``lora_te1_text_model_…`` and the second
``lora_te2_text_model_…`` (SD1.5's one encoder is ``lora_te_…``); UNet modules are
``lora_unet_<diffusers module path>``, the naming kohya's own tools write and diffusers' SDXL
``load_lora_weights`` converts. Each module carries ``lora_down`` (peft's A), ``lora_up`` (B) and its
``alpha``, so the scale alpha / rank survives in every loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .lora import TEXT_ENCODER_TARGETS, UNET_TARGETS, kohya_part

#: Prefixes of the three models in a kohya SDXL file.
SDXL_KOHYA_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
#: The layers adapted on SDXL: the same kinds as on SD1.5 (EasyPhoto's SDXL trainer adapts both
#: encoders' attention and MLP, and the UNet's attention and transformer linears).
SDXL_UNET_TARGETS = UNET_TARGETS
SDXL_TEXT_ENCODER_TARGETS = TEXT_ENCODER_TARGETS


def sdxl_kohya_state_dict(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None = None,
    text_encoder_2: torch.nn.Module | None = None,
    adapter_name: str = "default",
) -> dict[str, torch.Tensor]:
    """The ``adapter_name`` adapters of an SDXL UNet and (when they have one) its two text encoders, as
    one kohya state dict."""
    out = kohya_part(SDXL_KOHYA_PREFIXES["unet"], unet, adapter_name)
    for key, model in (("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)):
        if model is not None and adapter_name in getattr(model, "peft_config", {}):
            out.update(kohya_part(SDXL_KOHYA_PREFIXES[key], model, adapter_name))
    return out


def save_lora_kohya_sdxl(
    path: str | Path,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None = None,
    text_encoder_2: torch.nn.Module | None = None,
    adapter_name: str = "default",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save the SDXL adapters as a kohya/A1111 ``.safetensors`` (float16 tensors stay float16, others are
    written as float32); ``metadata`` adds to kohya's ``ss_network_module`` and ``ss_base_model_version``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", torch.float32 if v.dtype != torch.float16 else v.dtype).contiguous()
        for k, v in sdxl_kohya_state_dict(unet, text_encoder, text_encoder_2, adapter_name).items()
    }
    meta: dict[str, Any] = {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0"}
    meta.update(metadata or {})
    meta["format"] = "pt"
    save_file(
        state, str(path), metadata={k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    )
    return path


__all__ = [
    "SDXL_KOHYA_PREFIXES",
    "SDXL_TEXT_ENCODER_TARGETS",
    "SDXL_UNET_TARGETS",
    "save_lora_kohya_sdxl",
    "sdxl_kohya_state_dict",
]
