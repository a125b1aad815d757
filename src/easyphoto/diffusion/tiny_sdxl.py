"""Random Stable Diffusion XL pipelines built offline: tiny ones for tests, full-size ones for benchmarks.

:func:`build_tiny_sdxl` writes a standard diffusers SDXL folder (``model_index.json``, ``unet/``,
``vae/``, ``text_encoder/``, ``text_encoder_2/``, ``tokenizer/``, ``tokenizer_2/``, ``scheduler/``)
plus ``controlnet/openpose/`` and ``controlnet/canny/`` (SDXL ControlNets made from the UNet). Like
:mod:`.tiny`, everything is random: images are noise, but shapes, code paths and file formats are SDXL's own.

What makes SDXL differ from SD1.5, and what the tiny build keeps:

* two text encoders, ``CLIPTextModel`` and ``CLIPTextModelWithProjection``; their penultimate hidden
  states are concatenated, so the UNet's ``cross_attention_dim`` is the sum of both hidden sizes;
* the UNet's ``addition_embed_type="text_time"``: six size numbers (original size, crop corner,
  target size) each embedded in ``addition_time_embed_dim`` plus the second encoder's pooled projection,
  so ``projection_class_embeddings_input_dim = addition_time_embed_dim * 6 + projection_dim``;
* the VAE's ``scaling_factor`` 0.13025 and the Euler scheduler of SDXL base 1.0.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .tiny import randomize_zero_convs, write_tiny_tokenizer

log = logging.getLogger(__name__)

#: SDXL ControlNets the tiny build writes under ``DIR/controlnet/`` (text-to-photo's pose net; the
#: portraits of SDXL users use both).
SDXL_CONTROLNET_NAMES: tuple[str, ...] = ("openpose", "canny")

#: SDXL base 1.0's ``scheduler/scheduler_config.json`` (Euler, "leading" spacing, epsilon).
SDXL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
    "use_karras_sigmas": False,
}
#: SDXL's VAE latent scale (SD1.5's is 0.18215).
SDXL_VAE_SCALE = 0.13025
#: Per-number size embedding width of the tiny UNet (SDXL: 256).
TINY_TIME_EMBED_DIM = 8


def _text_configs(full_size: bool, vocab_size: int) -> tuple[Any, Any]:
    """CLIP ViT-L (encoder 1) and OpenCLIP bigG (encoder 2) configs, or two tiny ones (32 and 48 wide)."""
    from transformers import CLIPTextConfig

    bos, eos = vocab_size - 2, vocab_size - 1
    ids = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos, "max_position_embeddings": 77}
    if full_size:
        one = CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
            num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768, **ids,
        )  # fmt: skip
        two = CLIPTextConfig(
            vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
            num_hidden_layers=32, hidden_act="gelu", projection_dim=1280, **ids,
        )  # fmt: skip
        return one, two
    # Two widths, like ViT-L's 768 and bigG's 1280: single-file loaders tell the encoders apart by width.
    tiny = {
        "vocab_size": vocab_size,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
    }
    return (
        CLIPTextConfig(hidden_act="quick_gelu", hidden_size=32, projection_dim=32, **tiny, **ids),
        CLIPTextConfig(hidden_act="gelu", hidden_size=48, projection_dim=48, **tiny, **ids),
    )


def _unet(full_size: bool, cross_dim: int, pooled_dim: int) -> Any:
    """SDXL base's UNet (2.6 B parameters), or a two-level 32/64-channel one with the same conditioning."""
    from diffusers import UNet2DConditionModel

    if full_size:
        return UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
            cross_attention_dim=cross_dim, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=256 * 6 + pooled_dim,
        )  # fmt: skip
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1), attention_head_dim=(2, 4),
        cross_attention_dim=cross_dim, use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=TINY_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TINY_TIME_EMBED_DIM * 6 + pooled_dim,
    )  # fmt: skip


def _vae(full_size: bool) -> Any:
    """SDXL's VAE (SD1.5's architecture, scale 0.13025), or a 4-level 32-channel one (also 1/8 scale)."""
    from diffusers import AutoencoderKL

    channels = (128, 256, 512, 512) if full_size else (32, 32, 32, 32)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=channels, layers_per_block=2 if full_size else 1, norm_num_groups=32,
        sample_size=1024 if full_size else 64, scaling_factor=SDXL_VAE_SCALE,
        force_upcast=False,  # like madebyollin/sdxl-vae-fp16-fix, the default VAE (no fp32 decode)
    )  # fmt: skip


def sdxl_components(full_size: bool, vocab_size: int, dtype: Any = None) -> dict[str, Any]:
    """Random SDXL modules: ``unet``, ``vae``, ``text_encoder``, ``text_encoder_2``, ``scheduler``;
    each cast to ``dtype`` as soon as it is made (full size: the peak stays near the float32 UNet alone)."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    def cast(module: Any) -> Any:
        return module.to(dtype=dtype) if dtype is not None else module

    one, two = _text_configs(full_size, vocab_size)
    text_encoder = cast(CLIPTextModel(one))
    text_encoder_2 = cast(CLIPTextModelWithProjection(two))
    unet = cast(_unet(full_size, one.hidden_size + two.hidden_size, two.projection_dim))
    return {
        "unet": unet,
        "vae": cast(_vae(full_size)),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "scheduler": EulerDiscreteScheduler(**SDXL_SCHEDULER),
    }


def sdxl_controlnet(unet: Any, seed: int, index: int = 0, full_size: bool = False) -> Any:
    """An SDXL ControlNet made from ``unet`` (its ``text_time`` embedding included) with random
    conditioning and output convs, so that, untrained, it still changes the output measurably."""
    import torch
    from diffusers import ControlNetModel

    gen = torch.Generator().manual_seed(seed * 1000 + 500 + index)
    cond_channels = (16, 32, 96, 256) if full_size else (16, 16, 32, 32)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cond_channels)
    with torch.no_grad():
        for p in net.controlnet_cond_embedding.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if p.ndim > 1 else 0.01))
    randomize_zero_convs(net, gen, std=0.02 if full_size else 0.05)
    return net


def tiny_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """A tiny random SDXL set in memory (``unet``, ``vae``, two text encoders, two tokenizers,
    ``scheduler`` and ``controlnets``: ``{"openpose": net, "canny": net}``); only the tokenizer files
    pass through a temporary folder."""
    import tempfile

    import torch
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_tiny_tokenizer(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
        tokenizer_2 = CLIPTokenizer.from_pretrained(tmp)
    torch.manual_seed(seed)
    parts = sdxl_components(False, vocab_size)
    parts.update(tokenizer=tokenizer, tokenizer_2=tokenizer_2)
    parts["controlnets"] = {
        name: sdxl_controlnet(parts["unet"], seed, i) for i, name in enumerate(SDXL_CONTROLNET_NAMES)
    }
    return parts


def build_tiny_sdxl(out_dir: str | Path, *, seed: int = 0, full_size: bool = False) -> Path:
    """Build a random SDXL-architecture diffusers folder with its ControlNets, fully offline.

    ``out_dir`` receives the folder ``StableDiffusionXLPipeline.from_pretrained(out_dir)`` loads, plus
    ``controlnet/openpose/`` and ``controlnet/canny/``. The tiny build (UNet 32/64 channels, text
    encoders 32 and 48 wide) takes about a second and ~5 MB and renders 64 px in well under a second on
    one CPU thread.
    ``full_size=True`` builds SDXL base 1.0's real architecture (UNet 2.6 B, encoders 123 M + 695 M,
    VAE 84 M parameters) with random weights, stored in float16 (~7 GB rather than ~14 GB in float32;
    the loader casts to the run's dtype), and its ControlNets (~1.25 B each): for benchmarks only.
    """
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if full_size:
        log.warning("building full-size random SDXL in %s: about 9.5 GB on disk", out)
    vocab_size = write_tiny_tokenizer(out / "tokenizer")
    write_tiny_tokenizer(out / "tokenizer_2")
    torch.manual_seed(seed)
    dtype = torch.float16 if full_size else None
    parts = sdxl_components(full_size, vocab_size, dtype)
    pipe = StableDiffusionXLPipeline(
        **parts,
        tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(out / "tokenizer_2"),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    unet = parts["unet"]
    del pipe, parts  # only the UNet is needed for the ControlNets
    for i, name in enumerate(SDXL_CONTROLNET_NAMES):
        net = sdxl_controlnet(unet, seed, i, full_size)
        if dtype is not None:
            net.to(dtype=dtype)
        net.save_pretrained(out / "controlnet" / name, safe_serialization=True)
        del net
    return out


__all__ = [
    "SDXL_CONTROLNET_NAMES",
    "SDXL_SCHEDULER",
    "SDXL_VAE_SCALE",
    "build_tiny_sdxl",
    "sdxl_components",
    "sdxl_controlnet",
    "tiny_sdxl_components",
]
