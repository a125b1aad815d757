"""Write SD1.5 components as one original-layout checkpoint (the ``.safetensors`` A1111 and ComfyUI load).

The key layout is CompVis' ``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE) and
``cond_stage_model.transformer.text_model.*`` (CLIP), the inverse of diffusers' single-file conversion;
:meth:`diffusers.StableDiffusionPipeline.from_single_file` reads it back bit for bit. A ControlNet
becomes ControlNet 1.x's layout (:func:`controlnet_original_state_dict`), which
:meth:`diffusers.ControlNetModel.from_single_file` reads back the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_TOP = {"conv_norm_out": "norm_out"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_first(suffix: str, table: dict[str, str]) -> str:
    head, _, rest = suffix.partition(".")
    if suffix.startswith("to_out.0."):
        head, rest = "to_out.0", suffix[len("to_out.0.") :]
    return f"{table.get(head, head)}.{rest}" if rest else table.get(head, head)


def unet_to_original(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers SD1.x ``UNet2DConditionModel`` state dict to CompVis keys (without prefix)."""
    per = layers_per_block + 1
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(
            r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", key
        )
        if m:
            kind, b, part, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            if kind == "down_blocks":
                if part == "resnets":
                    new = f"input_blocks.{1 + b * per + j}.0.{_rename_first(rest, _UNET_RESNET)}"
                elif part == "attentions":
                    new = f"input_blocks.{1 + b * per + j}.1.{rest}"
                else:  # downsamplers.0.conv.*
                    new = f"input_blocks.{(b + 1) * per}.0.op.{rest.removeprefix('conv.')}"
            else:
                if part == "resnets":
                    new = f"output_blocks.{b * per + j}.0.{_rename_first(rest, _UNET_RESNET)}"
                elif part == "attentions":
                    new = f"output_blocks.{b * per + j}.1.{rest}"
                else:  # upsamplers.0.conv.*: after the attention when the block has one
                    has_attn = any(k.startswith(f"up_blocks.{b}.attentions.") for k in state)
                    new = f"output_blocks.{b * per + per - 1}.{2 if has_attn else 1}.{rest}"
        elif key.startswith("mid_block."):
            m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
            if not m:
                raise ValueError(f"unexpected UNet key {key!r}")
            part, j, rest = m.group(1), int(m.group(2)), m.group(3)
            if part == "resnets":
                new = f"middle_block.{2 * j}.{_rename_first(rest, _UNET_RESNET)}"
            else:
                new = f"middle_block.1.{rest}"
        else:
            head, _, rest = key.rpartition(".")
            if head not in _UNET_TOP:
                raise ValueError(f"unexpected UNet key {key!r} (only SD1.x UNets are supported)")
            new = f"{_UNET_TOP[head]}.{rest}"
        out[new] = value
    return out


def controlnet_to_original(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers SD1.x ``ControlNetModel`` state dict to ControlNet-1.x keys (without prefix).

    The encoder copy keeps the UNet's names (``input_blocks``, ``middle_block``, ``time_embed``); the
    ControlNet parts become ``input_hint_block.{0,2,…,14}`` (convs between SiLUs), ``zero_convs.N.0``
    and ``middle_block_out.0``, the layout of lllyasviel's and A1111's ``.pth`` files.
    """
    out: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    n_blocks = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    hint = {"conv_in": 0, "conv_out": 2 * (n_blocks + 1)}
    for key, value in state.items():
        m = re.match(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(.+)", key)
        if m:
            idx = hint[m.group(1)] if m.group(2) is None else 2 * (int(m.group(2)) + 1)
            out[f"input_hint_block.{idx}.{m.group(3)}"] = value
        elif key.startswith("controlnet_down_blocks."):
            _, i, param = key.split(".")
            out[f"zero_convs.{i}.0.{param}"] = value
        elif key.startswith("controlnet_mid_block."):
            out[f"middle_block_out.0.{key.rpartition('.')[2]}"] = value
        else:
            rest[key] = value
    out.update(unet_to_original(rest, layers_per_block))
    return out


def controlnet_original_state_dict(controlnet, prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    """A ``ControlNetModel`` as an original-format state dict (``control_model.*`` like ControlNet 1.0
    and EasyPhoto's colour net; ``prefix=""`` for ControlNet 1.1's files), tensors on CPU, contiguous."""
    state = controlnet_to_original(controlnet.state_dict(), controlnet.config.layers_per_block)
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous() for k, v in state.items()}


def vae_to_original(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``AutoencoderKL`` state dict to CompVis keys (attention as 1×1 convs)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(
            r"(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)",
            key,
        )
        m_mid = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
        if m:
            side, kind, i, part, j, rest = m.groups()
            i, j = int(i), int(j)
            level = i if kind == "down_blocks" else num_blocks - 1 - i
            name = "down" if kind == "down_blocks" else "up"
            if part == "resnets":
                new = f"{side}.{name}.{level}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                sample = "downsample" if part == "downsamplers" else "upsample"
                new = f"{side}.{name}.{level}.{sample}.{rest}"
        elif m_mid:
            side, part, j, rest = m_mid.groups()
            if part == "resnets":
                new = f"{side}.mid.block_{int(j) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                new = f"{side}.mid.attn_1.{_rename_first(rest, _VAE_ATTN)}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        else:
            parts = key.split(".")
            if parts[0] in ("encoder", "decoder") and parts[1] in _VAE_TOP:
                parts[1] = _VAE_TOP[parts[1]]
            new = ".".join(parts)
        out[new] = value
    return out


def text_encoder_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP text-encoder keys as SD1.x stores them (``text_model.`` kept, ``position_ids`` dropped)."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        out[key if key.startswith("text_model.") else f"text_model.{key}"] = value
    return out


def original_state_dict(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """One CompVis-layout state dict for the three SD1.x models (tensors moved to CPU, contiguous)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in unet_to_original(unet.state_dict(), unet.config.layers_per_block).items():
        out[f"model.diffusion_model.{k}"] = v
    for k, v in vae_to_original(vae.state_dict(), len(vae.config.block_out_channels)).items():
        out[f"first_stage_model.{k}"] = v
    for k, v in text_encoder_to_original(text_encoder.state_dict()).items():
        out[f"cond_stage_model.transformer.{k}"] = v
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def save_single_file(path: str | Path, unet, vae, text_encoder, dtype: torch.dtype | None = None) -> Path:
    """Save the three models as one original-layout ``.safetensors`` checkpoint (``dtype`` casts floats)."""
    from safetensors.torch import save_file

    state = original_state_dict(unet, vae, text_encoder)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


__all__ = [
    "controlnet_original_state_dict",
    "controlnet_to_original",
    "original_state_dict",
    "save_single_file",
    "text_encoder_to_original",
    "unet_to_original",
    "vae_to_original",
]
