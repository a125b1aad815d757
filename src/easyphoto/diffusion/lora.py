"""LoRA files for SD1.5: which layers get adapters, and saving them in diffusers or kohya/A1111 format.

Both formats load with :meth:`easyphoto.diffusion.ModelCache.set_lora` (diffusers'
``load_lora_weights``). The diffusers file keeps peft's adapter metadata so an alpha different from the
rank survives the round trip; the kohya file stores the alpha per module, as A1111 and ComfyUI expect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

#: UNet layers EasyPhoto adapts: attention projections and the transformer blocks' linears (DESIGN §4).
UNET_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
)
#: CLIP text-encoder layers: attention projections and the MLP.
TEXT_ENCODER_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def lora_config(rank: int = 128, alpha: float = 64, targets: tuple[str, ...] = UNET_TARGETS, **kwargs: Any):
    """A ``peft.LoraConfig`` (EasyPhoto trains rank 128, alpha 64; the scale is alpha / rank)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), **kwargs)


def _peft_state(model: torch.nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)


def _adapter_config(model: torch.nn.Module, adapter_name: str):
    cfg = getattr(model, "peft_config", {}).get(adapter_name)
    if cfg is None:
        raise ValueError(f"model has no LoRA adapter named {adapter_name!r}")
    return cfg


def save_lora_diffusers(
    path: str | Path,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None = None,
    adapter_name: str = "default",
) -> Path:
    """Save the peft adapters of ``unet`` (and ``text_encoder``) as one diffusers LoRA ``.safetensors``.

    The adapters' peft configs (rank, alpha, targets) are stored as metadata, so reloading keeps the
    scale ``alpha / rank`` even when alpha differs from the rank.
    """
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "unet_lora_layers": _peft_state(unet, adapter_name),
        "unet_lora_adapter_metadata": _adapter_config(unet, adapter_name).to_dict(),
    }
    if text_encoder is not None and adapter_name in getattr(text_encoder, "peft_config", {}):
        kwargs["text_encoder_lora_layers"] = _peft_state(text_encoder, adapter_name)
        kwargs["text_encoder_lora_adapter_metadata"] = _adapter_config(text_encoder, adapter_name).to_dict()
    StableDiffusionPipeline.save_lora_weights(
        path.parent, weight_name=path.name, safe_serialization=True, **kwargs
    )
    return path


def kohya_state_dict(
    unet: torch.nn.Module, text_encoder: torch.nn.Module | None = None, adapter_name: str = "default"
) -> dict[str, torch.Tensor]:
    """The adapters as a kohya/A1111 state dict for SD1.5.

    Keys: ``lora_unet_<module>`` and ``lora_te_text_model_<module>`` (dots → underscores), each with
    ``.lora_down.weight`` (peft's A), ``.lora_up.weight`` (B) and ``.alpha``.
    """
    out = kohya_part("lora_unet_", unet, adapter_name)
    if text_encoder is not None and adapter_name in getattr(text_encoder, "peft_config", {}):
        out.update(kohya_part("lora_te_", text_encoder, adapter_name))
    return out


def kohya_part(prefix: str, model: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """One model's adapter in kohya keys: ``<prefix><module, dots → underscores>.lora_down.weight``
    (peft's A), ``.lora_up.weight`` (B) and ``.alpha``. Text encoders (``lora_te…`` prefixes) are named
    from ``text_model.``, as kohya names them."""
    out: dict[str, torch.Tensor] = {}
    alpha = float(_adapter_config(model, adapter_name).lora_alpha)
    rank_pattern = _adapter_config(model, adapter_name).rank_pattern or {}
    alpha_pattern = _adapter_config(model, adapter_name).alpha_pattern or {}
    if rank_pattern or alpha_pattern:
        raise ValueError("per-module rank/alpha patterns are not supported in the kohya export")
    for key, tensor in _peft_state(model, adapter_name).items():
        module, _, kind = key.rpartition(".lora_")
        if prefix.startswith("lora_te") and not module.startswith("text_model."):
            module = "text_model." + module  # transformers ≥ 5.6 flattens CLIPTextModel
        name = prefix + module.replace(".", "_")
        if kind == "A.weight":
            out[f"{name}.lora_down.weight"] = tensor.contiguous()
            out[f"{name}.alpha"] = torch.tensor(alpha, dtype=tensor.dtype)
        elif kind == "B.weight":
            out[f"{name}.lora_up.weight"] = tensor.contiguous()
        else:
            raise ValueError(f"unexpected LoRA tensor {key!r} (only lora_A / lora_B are exported)")
    return out


def save_lora_kohya(
    path: str | Path,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None = None,
    adapter_name: str = "default",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save the adapters in kohya/A1111 format (loads in A1111, ComfyUI and diffusers)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", torch.float32 if v.dtype != torch.float16 else v.dtype).contiguous()
        for k, v in kohya_state_dict(unet, text_encoder, adapter_name).items()
    }
    meta = {"ss_network_module": "networks.lora", "format": "pt"}
    meta.update(metadata or {})
    save_file(
        state, str(path), metadata={k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    )
    return path


def delete_adapters(
    module: torch.nn.Module, names: set[str] | None = None, keep: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Delete LoRA adapters from a peft-wrapped module: ``names``, or (``names=None``) every adapter not
    in ``keep``. Its ``peft_config`` follows. Returns the deleted names, sorted."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    present = {n for layer in layers for n in getattr(layer, "lora_A", {})}
    doomed = sorted((present & names) if names is not None else (present - set(keep)))
    for name in doomed:
        for layer in layers:
            if name in getattr(layer, "lora_A", {}):
                layer.delete_adapter(name)
    config = getattr(module, "peft_config", None)
    if config is not None:
        for name in [n for n in config if (n in names if names is not None else n not in keep)]:
            config.pop(name)
        if not config:
            del module.peft_config
            module._hf_peft_config_loaded = False
    return doomed


def clean_for_inference(modules: dict[str, torch.nn.Module], keep: set[str], label: str = "") -> list[str]:
    """What a model cache's ``reset`` does to each of its shared ``modules`` (by name): delete every LoRA
    adapter not in ``keep`` (a failed job's), switch training mode, gradients and gradient checkpointing
    off. Returns what was cleaned, one line each, prefixed with ``label``."""
    from .lora_trainer import disable_checkpointing

    cleaned: list[str] = []
    for part, module in modules.items():
        name = f"{label}{part}"
        cleaned += [f"{name}: adapter {n}" for n in delete_adapters(module, keep=keep)]
        if module.training or any(p.requires_grad for p in module.parameters()):
            cleaned.append(f"{name}: training mode")
        module.eval()
        module.requires_grad_(False)
        if disable_checkpointing(module):
            cleaned.append(f"{name}: gradient checkpointing")
    return cleaned


__all__ = [
    "clean_for_inference",
    "delete_adapters",
    "TEXT_ENCODER_TARGETS",
    "UNET_TARGETS",
    "kohya_part",
    "kohya_state_dict",
    "lora_config",
    "save_lora_diffusers",
    "save_lora_kohya",
]
