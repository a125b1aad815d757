"""The ControlNet-inpaint call both portrait passes make, on a lean diffusers pipeline.

:func:`controlnet_inpaint` checks that every ControlNet has its control image and weight, makes sure
at least one denoising step runs, and keeps the input outside the mask (the VAE round trip of a
4-channel UNet changes those pixels otherwise).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


@functools.cache
def lean_inpaint_class(sdxl: bool = False) -> type:
    """diffusers' ControlNet inpainting pipeline (SD1.5's, or SDXL's with ``sdxl``) without its unused
    VAE pass.

    The pipeline always VAE-encodes the masked image, but only a 9-channel inpainting UNet reads
    those latents; a 4-channel UNet blends the original latents outside the mask instead. The
    encode costs as much as the one that is needed (measured: 8.8 s at 512×592 and 21.6 s at 768×888
    on one CPU core, full-size SD1.5 VAE), so for a 4-channel UNet it is skipped: SD1.5's pipeline gets
    a zero latent in its place, SDXL's (which accepts none) gets no masked image.
    """
    if sdxl:
        from diffusers import StableDiffusionXLControlNetInpaintPipeline as Base
    else:
        from diffusers import StableDiffusionControlNetInpaintPipeline as Base

    class LeanControlNetInpaintPipeline(Base):  # type: ignore[misc, valid-type]
        def prepare_mask_latents(self, mask, masked_image, batch_size, height, width, dtype, *args, **kw):
            if self.unet.config.in_channels == 4 and masked_image is not None and masked_image.shape[1] != 4:
                if sdxl:
                    masked_image = None
                else:
                    f = self.vae_scale_factor
                    masked_image = masked_image.new_zeros((masked_image.shape[0], 4, height // f, width // f))
            return super().prepare_mask_latents(
                mask, masked_image, batch_size, height, width, dtype, *args, **kw
            )

    LeanControlNetInpaintPipeline.__name__ = "Lean" + Base.__name__
    return LeanControlNetInpaintPipeline


def controlnet_inpaint(
    cache: Any,
    names: Sequence[str],
    image: np.ndarray,
    mask: np.ndarray,
    controls: Sequence[np.ndarray],
    scales: Sequence[float],
    *,
    steps: int,
    strength: float,
    prompt: str,
    negative_prompt: str,
    guidance_scale: float,
    seed: int,
    lcm: bool = False,
    ip_embeds: Any = None,
    ip_scale: float = 0.0,
    on_step: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Repaint ``image`` inside ``mask`` guided by the ControlNets ``names``; returns RGB uint8 at its size.

    ``cache`` is a :class:`~easyphoto.diffusion.models.ModelCache` or, for SDXL users, an
    :class:`~easyphoto.diffusion.sdxl.SDXLCache` (its current LoRAs apply). diffusers
    runs ``int(steps × strength)`` steps: ``steps`` is raised so that at least one runs. ``lcm``: sample
    with the LCM scheduler (the fast mode). ``ip_embeds`` (a ``FaceEmbeds`` of :mod:`.ip_adapter`) at
    ``ip_scale`` > 0: IP-Adapter face conditioning; once the adapter is in the UNet, a call without them
    runs it at scale 0 (the plain output). ``on_step(k, n)`` is called after each of the ``n`` steps.
    The output is the raw diffusion result: pixels outside the mask went through the VAE too, so callers
    blend the input back there.
    """
    import cv2
    import torch
    from PIL import Image

    from .models import check_control_inputs

    check_control_inputs(names, controls, scales)
    steps = max(int(steps), math.ceil(1.0 / max(strength, 1e-3)))
    from .ip_adapter import face_adapter

    pipe = cache.inpaint_controlnet(names)
    if lcm:
        pipe.scheduler = cache.new_scheduler("lcm")
    use_ip = ip_embeds is not None and ip_scale > 0
    extra: dict[str, Any] = {}
    if getattr(cache, "family", "sd15") == "sd15":  # the IP-Adapter is SD1.5's (refused for SDXL users)
        extra = face_adapter(cache).pipeline_kwargs(
            ip_embeds if use_ip else None, ip_scale, guidance_scale > 1
        )
    if on_step is not None:
        total = max(1, min(int(steps * strength), int(steps)))  # the steps img2img runs at this strength

        def step_end(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(min(i + 1, total), total)
            return kwargs

        extra["callback_on_step_end"] = step_end
    many = len(names) > 1
    h, w = image.shape[:2]
    out = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt,
        image=Image.fromarray(image),
        mask_image=Image.fromarray(mask),
        control_image=[Image.fromarray(c) for c in controls] if many else Image.fromarray(controls[0]),
        controlnet_conditioning_scale=[float(s) for s in scales] if many else float(scales[0]),
        num_inference_steps=int(steps),
        strength=float(strength),
        guidance_scale=float(guidance_scale),
        height=h,
        width=w,
        generator=torch.Generator(device="cpu").manual_seed(int(seed)),
        output_type="np",
        **extra,
    ).images[0]
    result = np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
    if result.shape[:2] != (h, w):
        result = cv2.resize(result, (w, h), interpolation=cv2.INTER_CUBIC)
    return result


__all__ = ["controlnet_inpaint", "lean_inpaint_class"]
