"""IP-Adapter face conditioning on the cache's shared UNet, through diffusers' own IP-Adapter support.

An IP-Adapter adds a second cross-attention to every UNet attention block, fed with a CLIP image
encoder's view of a reference face: identity from one photo, no training. EasyPhoto offers it on top of
the user LoRA (``ipa_control`` / ``ipa_weight``) and for portraits without a LoRA. The default is the
SD1.5 *full-face* adapter of ``h94/IP-Adapter`` (Apache-2.0) with its CLIP ViT-H encoder: it reads the
encoder's patch tokens, so it carries more of the face than the plain adapter's pooled vector. Adapters
whose embeddings need insightface (FaceID, InstantID) are not used: insightface's models are
non-commercial.

:class:`FaceAdapter` loads the adapter once per :class:`~easyphoto.diffusion.models.ModelCache`
(:func:`face_adapter`), encodes a face once (the embeddings are cached by the caller — with the user
model for trained users) and turns embeddings and a scale into the pipeline arguments. Once loaded,
every UNet call needs image embeddings, so a pass without a reference face gets zero embeddings at
scale 0 — which leaves the attention output exactly as without the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from easyphoto.errors import ModelNotFoundError
from easyphoto.registry import effective_source

#: Folder of the adapter weights and their image encoder in a repo laid out like ``h94/IP-Adapter``.
SUBFOLDER = "models"
ENCODER_FOLDER = "image_encoder"


@dataclass(frozen=True)
class FaceEmbeds:
    """A reference face as the adapter sees it: conditional and unconditional image embeddings."""

    positive: torch.Tensor
    negative: torch.Tensor
    adapter: str  # which adapter made them (embeddings of another adapter do not fit)

    def to_file(self, path: Path) -> None:
        """Write both tensors (and the adapter name) as one ``.safetensors`` file, atomically."""
        from safetensors.torch import save_file

        from easyphoto.store import atomic_path

        tensors = {k: getattr(self, k).float().cpu().contiguous() for k in ("positive", "negative")}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"adapter": self.adapter})

    @classmethod
    def from_file(cls, path: Path) -> FaceEmbeds | None:
        """Embeddings written by :meth:`to_file`; ``None`` when unreadable."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                return cls(fh.get_tensor("positive"), fh.get_tensor("negative"), meta.get("adapter", ""))
        except (OSError, ValueError, RuntimeError, KeyError):
            return None


class FaceAdapter:
    """The IP-Adapter of one model cache: load once, encode faces, make the pipeline arguments."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.loaded = False
        #: How many faces went through the image encoder (a cached user embedding costs none).
        self.encoder_calls = 0

    @property
    def name(self) -> str:
        """``<repo or folder>/models/<file>``: identifies the adapter (and the embeddings it made)."""
        return f"{self.source()}/{SUBFOLDER}/{self.cache.config.ip_adapter_file}"

    def source(self) -> str:
        """Repo id or local folder (a local base's ``ip_adapter/`` wins over the default)."""
        return effective_source(self.cache.config, "ip_adapter")

    def load(self) -> None:
        """Load the adapter weights into the shared UNet and its image encoder (once)."""
        if self.loaded:
            return
        from .sources import _explain_missing

        src, file = self.source(), self.cache.config.ip_adapter_file
        host = self.cache._host()
        hint = (
            "download it with `easyphoto models download ip-adapter-sd15-face` or pass a local folder "
            "laid out like h94/IP-Adapter (models/<file>, models/image_encoder/) with EASYPHOTO_IP_ADAPTER"
        )
        if Path(src).expanduser().is_dir() and not (Path(src).expanduser() / SUBFOLDER / file).is_file():
            raise ModelNotFoundError(f"IP-Adapter: {src}/{SUBFOLDER}/{file} does not exist; {hint}")
        with _explain_missing("IP-Adapter", src, hint):
            host.load_ip_adapter(
                str(Path(src).expanduser()) if Path(src).expanduser().is_dir() else src,
                subfolder=SUBFOLDER,
                weight_name=file,
                image_encoder_folder=ENCODER_FOLDER,
                local_files_only=bool(self.cache.config.local_files_only),
            )
        host.image_encoder.to(self.cache.device, self.cache.dtype)
        self.cache.load_count["ip_adapter"] += 1
        self.loaded = True

    def unload(self) -> None:
        """Take the adapter out of the UNet (training needs the plain UNet back)."""
        if self.loaded:
            self.cache._host().unload_ip_adapter()
            self.loaded = False

    @torch.no_grad()
    def encode(self, face_rgb: np.ndarray) -> FaceEmbeds:
        """The embeddings of one face crop (RGB uint8); loads the adapter if needed."""
        from PIL import Image

        self.load()
        host = self.cache._host()
        hidden = not _pooled(host.unet)
        image = Image.fromarray(face_rgb)
        pos, neg = host.encode_image(image, self.cache.device, 1, output_hidden_states=hidden)
        self.encoder_calls += 1
        return FaceEmbeds(pos.detach(), neg.detach(), self.name)

    def pipeline_kwargs(self, embeds: FaceEmbeds | None, scale: float, guidance: bool) -> dict[str, Any]:
        """``ip_adapter_image_embeds`` for a pipeline call, with the adapter scale set on the UNet.

        ``embeds=None`` (or scale 0) with the adapter loaded: zero embeddings at scale 0, i.e. the plain
        UNet's output. ``guidance``: classifier-free guidance is on (negative and positive stacked).
        """
        if not self.loaded:
            return {}
        if embeds is None:
            shape = self._shape()
            embeds = FaceEmbeds(torch.zeros(shape), torch.zeros(shape), self.name)
            scale = 0.0
        self.cache._host().set_ip_adapter_scale(float(scale))
        pos = embeds.positive.to(self.cache.device, self.cache.dtype)
        neg = embeds.negative.to(self.cache.device, self.cache.dtype)
        return {"ip_adapter_image_embeds": [torch.cat([neg, pos]) if guidance else pos]}

    def _shape(self) -> tuple[int, ...]:
        enc = self.cache._host().image_encoder.config
        if _pooled(self.cache._host().unet):
            return (1, enc.projection_dim)
        tokens = (enc.image_size // enc.patch_size) ** 2 + 1
        return (1, tokens, enc.hidden_size)


def _pooled(unet: Any) -> bool:
    """The adapter reads the encoder's pooled projection (plain adapter) rather than its patch tokens."""
    from diffusers.models.embeddings import ImageProjection

    layers = getattr(getattr(unet, "encoder_hid_proj", None), "image_projection_layers", [])
    return bool(layers) and isinstance(layers[0], ImageProjection)


def face_adapter(cache: Any) -> FaceAdapter:
    """The cache's :class:`FaceAdapter` (created on first use, loaded on first :meth:`FaceAdapter.load`)."""
    adapter = getattr(cache, "_face_adapter", None)
    if adapter is None:
        adapter = FaceAdapter(cache)
        cache._face_adapter = adapter
    return adapter


def unload_face_adapter(cache: Any) -> None:
    """Take the IP-Adapter out of the cache's UNet if it is in (before training)."""
    adapter = getattr(cache, "_face_adapter", None)
    if adapter is not None:
        adapter.unload()


__all__ = ["FaceAdapter", "FaceEmbeds", "face_adapter", "unload_face_adapter"]
