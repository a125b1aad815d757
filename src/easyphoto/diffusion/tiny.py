"""Random Stable Diffusion 1.5 pipelines built offline: tiny ones for tests, full-size ones for benchmarks.

:func:`build_tiny_model` writes a standard diffusers folder (``model_index.json``, ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) plus ``controlnet/{canny,openpose,color,tile}/`` and
``ip_adapter/`` (:func:`write_ip_adapter`), ``upscaler/{x2,x4}/`` (tiny Real-ESRGAN RRDBNets,
:func:`easyphoto.diffusion.upscale.write_tiny_upscalers`) and ``face_restorer/`` (a tiny GFPGAN,
:func:`easyphoto.diffusion.face_restore.write_tiny_face_restorer`).
Everything is random: the pictures are noise, but every shape, every code path and every file format is
the real one, so commands run end to end with ``--base-model DIR`` in about a second per image.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from easyphoto.config import TRIGGER_CAPTION

log = logging.getLogger(__name__)

#: ControlNet names EasyPhoto uses (DESIGN §4); each gets a folder under ``DIR/controlnet/``.
CONTROLNET_NAMES: tuple[str, ...] = ("canny", "openpose", "color", "tile")

#: SD1.5's scheduler settings (the ``scheduler/`` folder of the public checkpoint).
SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

# Words the tiny BPE learns merges from, so common prompts stay well under 77 tokens.
_BPE_CORPUS = (
    f"{TRIGGER_CAPTION} a photo of a person portrait face woman man girl boy smiling "
    "best quality masterpiece realistic detailed skin high resolution photograph of the with and in "
    "background light lighting studio outdoor indoor wearing shirt dress hair eyes looking at camera "
    "worst low quality blurry ugly deformed bad anatomy lowres watermark text"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode table (256 entries)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tiny_vocab(num_merges: int = 200) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small byte-level BPE vocabulary in CLIP's format.

    Every byte is a token on its own and with the ``</w>`` end-of-word suffix, so any text tokenizes;
    ``num_merges`` merges are learned greedily from a short built-in English corpus. Returns
    ``(vocab, merges)``; the special tokens are the last two ids like in CLIP.
    """
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    byte_enc = _bytes_to_unicode()
    words = Counter(w for w in _BPE_CORPUS.lower().replace(",", " ").split())
    seqs = {w: [byte_enc[b] for b in w.encode()] for w in words}
    for w in seqs:
        seqs[w][-1] += "</w>"
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, seq in seqs.items():
            for a, b in zip(seq[:-1], seq[1:], strict=True):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        vocab_list.append(best[0] + best[1])
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_tiny_tokenizer(folder: str | Path) -> int:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` for ``CLIPTokenizer``.

    Returns the vocabulary size (the text encoder's ``vocab_size`` must be at least this).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_tiny_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    special = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return len(vocab)


def _components(full_size: bool, vocab_size: int) -> dict:
    import torch  # noqa: F401  (diffusers needs it; imported here to keep this module light)
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    bos, eos = vocab_size - 2, vocab_size - 1
    if full_size:
        # The public SD1.5 configs: UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder 123M.
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_cfg = CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    else:
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            # Attention only at the lower resolution keeps a 512 px image at ~0.1 s per UNet call.
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        # Four blocks like SD1.5's VAE, so the latent is 1/8 of the image.
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(32, 32, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=64,
        )
        text_cfg = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=32,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    text_encoder = CLIPTextModel(text_cfg)
    scheduler = PNDMScheduler(**SD15_SCHEDULER)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def randomize_zero_convs(controlnet, generator, std: float = 0.05) -> None:
    """Give the zero-initialised output convs of a fresh ControlNet random weights (in place).

    ``ControlNetModel.from_unet`` zero-initialises the convs that feed the UNet, so an untrained net has
    no effect at all; random weights make each tiny net change the output measurably.
    """
    import torch

    modules = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    modules.append(controlnet.controlnet_cond_embedding.conv_out)
    with torch.no_grad():
        for module in modules:
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * std)


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """A tiny random SD1.5 set in memory: ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``
    and ``controlnets`` (the four nets), for :meth:`~easyphoto.diffusion.models.ModelCache.from_components`
    (only the tokenizer's two small vocabulary files pass through a temporary folder)."""
    import tempfile

    import torch
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_tiny_tokenizer(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    torch.manual_seed(seed)
    parts = _components(False, vocab_size)
    parts["tokenizer"] = tokenizer
    parts["controlnets"] = {
        name: _controlnet(parts["unet"], seed, i, False) for i, name in enumerate(CONTROLNET_NAMES)
    }
    return parts


def _controlnet(unet: Any, seed: int, index: int, full_size: bool) -> Any:
    """A ControlNet made from ``unet`` with random conditioning and output convs (so it has an effect)."""
    import torch
    from diffusers import ControlNetModel

    gen = torch.Generator().manual_seed(seed * 1000 + index + 1)
    cond_channels = (16, 32, 96, 256) if full_size else (16, 16, 32, 32)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cond_channels)
    # Different random conditioning embeddings make the four nets differ from each other.
    with torch.no_grad():
        for p in net.controlnet_cond_embedding.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if p.ndim > 1 else 0.01))
    randomize_zero_convs(net, gen, std=0.02 if full_size else 0.05)
    return net


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, full_size: bool = False) -> Path:
    """Build a random SD1.5-architecture diffusers folder with four ControlNets, fully offline.

    ``out_dir`` receives ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
    ``scheduler/`` and ``controlnet/{canny,openpose,color,tile}/``; it loads with plain diffusers
    (``StableDiffusionPipeline.from_pretrained(out_dir)``) and with :class:`~easyphoto.diffusion.ModelCache`.
    The tiny build (UNet channels 32/64, text hidden size 32) takes about a second and 10 MB.
    ``full_size=True`` builds SD1.5's real architecture with random weights instead: ~10 GB on disk
    (fp32) and a few minutes; meant for benchmarks only. ``seed`` makes the weights reproducible.
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if full_size:
        log.warning("building full-size random SD1.5 in %s: about 10 GB on disk", out)
    tok_dir = out / "tokenizer"
    vocab_size = write_tiny_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    torch.manual_seed(seed)
    parts = _components(full_size, vocab_size)
    pipe = StableDiffusionPipeline(
        **parts,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)

    for i, name in enumerate(CONTROLNET_NAMES):
        net = _controlnet(parts["unet"], seed, i, full_size)
        net.save_pretrained(out / "controlnet" / name, safe_serialization=True)
        del net
    write_ip_adapter(out / "ip_adapter", parts["unet"], seed=seed, full_size=full_size)
    if not full_size:  # a full-size run uses the real Real-ESRGAN and GFPGAN files
        from .face_restore import write_tiny_face_restorer
        from .upscale import write_tiny_upscalers

        write_tiny_upscalers(out / "upscaler", seed=seed)
        write_tiny_face_restorer(out / "face_restorer", seed=seed)
    return out


#: Name of the IP-Adapter weights file (``h94/IP-Adapter``'s SD1.5 full-face adapter).
IP_ADAPTER_FILE = "ip-adapter-full-face_sd15.safetensors"


def write_ip_adapter(folder: str | Path, unet: Any, *, seed: int = 0, full_size: bool = False) -> Path:
    """A random SD1.5 *full-face* IP-Adapter for ``unet``, laid out like ``h94/IP-Adapter``.

    Writes ``models/image_encoder/`` (a ``CLIPVisionModelWithProjection``: ViT-H/14 at full size, a
    2-layer ViT at tiny size) and ``models/ip-adapter-full-face_sd15.safetensors`` in the original key
    layout (``image_proj.proj.{0,2,3}.*``, ``ip_adapter.<n>.to_{k,v}_ip.weight`` for the n-th
    cross-attention, odd n) that diffusers' ``load_ip_adapter`` converts. The full-face projection
    always reads 257 encoder tokens, so the tiny encoder sees 64 px in 4 px patches (16² + 1 tokens).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    models = Path(folder) / "models"
    gen = torch.Generator().manual_seed(seed * 1000 + 77)
    if full_size:
        vision = CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
            image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu",
        )  # fmt: skip
    else:
        vision = CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=64, patch_size=4, projection_dim=32,
        )  # fmt: skip
    CLIPVisionModelWithProjection(vision).save_pretrained(models / "image_encoder", safe_serialization=True)
    dim, cross = vision.hidden_size, unet.config.cross_attention_dim

    def rand(*shape: int, std: float = 0.05) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std

    state = {
        "image_proj.proj.0.weight": rand(dim, dim, std=dim**-0.5),
        "image_proj.proj.0.bias": rand(dim, std=0.01),
        "image_proj.proj.2.weight": rand(cross, dim, std=dim**-0.5),
        "image_proj.proj.2.bias": rand(cross, std=0.01),
        "image_proj.proj.3.weight": torch.ones(cross),
        "image_proj.proj.3.bias": torch.zeros(cross),
    }
    key = 1
    for name, module in unet.named_modules():
        if name.endswith("attn2") and hasattr(module, "to_k"):
            for proj in ("to_k", "to_v"):
                weight = getattr(module, proj).weight
                state[f"ip_adapter.{key}.{proj}_ip.weight"] = rand(
                    *weight.shape, std=0.02 if full_size else 0.2
                )
            key += 2
    models.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(models / IP_ADAPTER_FILE))
    return Path(folder)


__all__ = [
    "CONTROLNET_NAMES",
    "IP_ADAPTER_FILE",
    "SD15_SCHEDULER",
    "build_tiny_model",
    "build_tiny_vocab",
    "tiny_components",
    "randomize_zero_convs",
    "write_ip_adapter",
    "write_tiny_tokenizer",
]
