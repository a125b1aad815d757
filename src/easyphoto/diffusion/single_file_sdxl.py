"""Write SDXL components as one original-layout checkpoint (Stability's SGM layout, as A1111 / ComfyUI load).

Keys: ``model.diffusion_model.*`` (the UNet in CompVis names, its size embedding as ``label_emb.0.{0,2}``),
``first_stage_model.*`` (VAE), ``conditioner.embedders.0.transformer.text_model.*`` (CLIP ViT-L) and
``conditioner.embedders.1.model.*`` (OpenCLIP bigG: ``transformer.resblocks.N`` with fused
``attn.in_proj_*``, ``ln_final``, ``token_embedding``, ``positional_embedding`` and a transposed
``text_projection``). :meth:`diffusers.StableDiffusionXLPipeline.from_single_file` reads it back exactly;
it is how tests build an SDXL single file offline.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .single_file import text_encoder_to_original, unet_to_original, vae_to_original

_ADD_EMBEDDING = {"add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
_OPENCLIP_LAYER = (
    ("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
)  # fmt: skip


def sdxl_unet_to_original(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """An SDXL ``UNet2DConditionModel`` state dict in CompVis names (the SD1.x renaming plus the size
    embedding ``add_embedding`` → ``label_emb``)."""
    out: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, param = key.rpartition(".")
        if head in _ADD_EMBEDDING:
            out[f"{_ADD_EMBEDDING[head]}.{param}"] = value
        else:
            rest[key] = value
    out.update(unet_to_original(rest, layers_per_block))
    return out


def open_clip_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``CLIPTextModelWithProjection`` state dict in OpenCLIP's names (q/k/v fused into ``in_proj``)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    fixed = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key in fixed:
            out[fixed[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key.startswith("text_model.encoder.layers."):
            n, _, rest = key.removeprefix("text_model.encoder.layers.").partition(".")
            for proj in ("q_proj", "k_proj", "v_proj"):
                if rest.startswith(f"self_attn.{proj}."):
                    kind = rest.rpartition(".")[2]
                    fused.setdefault(f"{n}.{kind}", {})[proj] = value
                    break
            else:
                for new, old in _OPENCLIP_LAYER:
                    rest = rest.replace(new, old)
                out[f"transformer.resblocks.{n}.{rest}"] = value
        else:
            raise ValueError(f"unexpected text-encoder key {key!r}")
    for name, parts in fused.items():
        n, kind = name.split(".")
        out[f"transformer.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0
        )
    return out


def sdxl_original_state_dict(unet, vae, text_encoder, text_encoder_2) -> dict[str, torch.Tensor]:
    """One SGM-layout state dict for the four SDXL models (tensors on CPU, contiguous)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sdxl_unet_to_original(unet.state_dict(), unet.config.layers_per_block).items():
        out[f"model.diffusion_model.{k}"] = v
    for k, v in vae_to_original(vae.state_dict(), len(vae.config.block_out_channels)).items():
        out[f"first_stage_model.{k}"] = v
    for k, v in text_encoder_to_original(text_encoder.state_dict()).items():
        out[f"conditioner.embedders.0.transformer.{k}"] = v
    for k, v in open_clip_to_original(text_encoder_2.state_dict()).items():
        out[f"conditioner.embedders.1.model.{k}"] = v
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def save_sdxl_single_file(path: str | Path, unet, vae, text_encoder, text_encoder_2) -> Path:
    """Save the four SDXL models as one original-layout ``.safetensors`` checkpoint."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        sdxl_original_state_dict(unet, vae, text_encoder, text_encoder_2),
        str(path),
        metadata={"format": "pt"},
    )
    return path


__all__ = [
    "open_clip_to_original",
    "save_sdxl_single_file",
    "sdxl_original_state_dict",
    "sdxl_unet_to_original",
]
