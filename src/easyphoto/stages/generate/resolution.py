"""At what size each face is worked on, and how a worked crop returns to the template's pixels.

EasyPhoto always works on a 512 px crop. On a large template that crop is a reduction of the face,
and pasting it back is an enlargement: measured on a 2400 px template (a 290 px face, crop ~870 px)
with the diffusion passes stubbed to return their input, the face's sharpness (variance of the
Laplacian) fell to 0.27 × the template's from the resizing alone. Crops whose short side lies between
``GenerateConfig.short_side`` and the limit below keep the template's own pixels instead (no resampling
on the way in, none on the way out), and the second pass's enlarged copy only replaces the pixels it
repaints (:func:`merge_refined`): 0.86 × on that template at a 1024 px limit. A crop over the limit is
enlarged back through Real-ESRGAN where that is cheap (:func:`enlarge_face`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import GenerateConfig

#: Largest crop short side on a CUDA GPU when ``GenerateConfig.max_short_side`` is unset, as a multiple
#: of ``short_side``: 2 × 512 = 1024 px by default. SD1.5 inpaints a masked face at 1024 px without the
#: duplications it shows in plain text-to-image there (the mask and the ControlNets fix the layout);
#: A1111's "inpaint only masked" users work at this size. The second pass then runs at 1536 px.
GPU_LIMIT_FACTOR = 2
#: The same on a CPU or Apple MPS: 1 (EasyPhoto's fixed ``short_side``, today's cost). A full-size SD1.5
#: UNet costs ~16 s per CFG step at 512 px on our 2-core CPU (DESIGN §5) and at least 4× that at
#: 1024 px (4× the pixels): a one-face portrait would go from ~25 min to well over 1.5 h, on a device
#: that is a preview there. Set ``max_short_side`` to trade time for detail on big templates.
OTHER_LIMIT_FACTOR = 1


def max_crop_side(cfg: GenerateConfig, device: Any) -> int:
    """The largest short side a face crop is worked at: ``cfg.max_short_side``, else by device
    (``short_side`` × :data:`GPU_LIMIT_FACTOR` on CUDA, × :data:`OTHER_LIMIT_FACTOR` elsewhere)."""
    if cfg.max_short_side is not None:
        return cfg.max_short_side
    kind = getattr(device, "type", str(device)).split(":")[0]
    return cfg.short_side * (GPU_LIMIT_FACTOR if kind == "cuda" else OTHER_LIMIT_FACTOR)


def paste_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` (w, h) for pasting back: unchanged when it already is; area averaging
    to reduce, bicubic to enlarge (area averaging enlarges by repeating pixels: blocky)."""
    import cv2

    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image
    interp = cv2.INTER_AREA if size[0] * size[1] < w * h else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interp)


def merge_refined(base: np.ndarray, refined: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The second pass's result ``refined`` (worked at a larger size, inside ``mask`` at that size)
    brought back to ``base``'s size, with ``base``'s own pixels wherever the mask is 0.

    The second pass only repaints a ring along the face edge plus the eyes and mouth; reducing its
    whole (enlarged) input back would blur the rest of the crop for nothing: ×1.5 bicubic up and area
    down cost a third of the sharpness (Laplacian variance) in our measurement.
    """
    import cv2

    from ...face.masks import feather

    h, w = base.shape[:2]
    if refined.shape[:2] == (h, w):
        alpha = feather(mask, max(2.0, 0.01 * max(h, w)))
    else:
        big_h, big_w = refined.shape[:2]
        alpha = feather(mask, max(2.0, 0.01 * max(big_h, big_w)))
        alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
        refined = cv2.resize(refined, (w, h), interpolation=cv2.INTER_AREA)
    a = alpha[..., None]
    return np.clip(base * (1 - a) + refined * a + 0.5, 0, 255).astype(np.uint8)


#: Enlargements of a worked face crop back into the template up to this factor stay bicubic: below it
#: Real-ESRGAN's ×2 (then a reduction) adds cost for little detail.
FACE_UPSCALE_FROM = 1.25


def enlarge_face(
    upscalers: Any, refined: np.ndarray, crop: Any, cfg: GenerateConfig, device: Any, clock: Any = None
) -> np.ndarray:
    """The worked crop at the template's size of its region, ready to paste.

    A crop worked below that size (its short side was over the limit, :func:`max_crop_side`) is
    enlarged by Real-ESRGAN (×2, or ×4 past 2×) and reduced to the exact size, so the face gets
    detail instead of a bicubic blur — with ``cfg.face_upscale`` "on", or with "auto" on CUDA if the
    model is on this machine (no download; never on a CPU: 4–11 min per megapixel at ×2 there, by load).
    Else bicubic.
    """
    x0, y0, x1, y1 = crop.box
    size = (x1 - x0, y1 - y0)
    h, w = refined.shape[:2]
    factor = max(size[0] / w, size[1] / h)
    if factor <= FACE_UPSCALE_FROM:
        return paste_resize(refined, size)
    scale = 2 if factor <= 2 else 4
    use = cfg.face_upscale == "on"
    if cfg.face_upscale == "auto":
        from ...diffusion.upscale import upscaler_present

        kind = getattr(device, "type", str(device)).split(":")[0]
        use = kind == "cuda" and upscaler_present(upscalers.config, scale)
    if not use:
        return paste_resize(refined, size)
    big = upscalers.upscale(refined, scale, cfg.upscale_tile, cfg.upscale_overlap)
    if clock is not None:
        clock.tick("face_upscale")
    return paste_resize(big, size)


def upscale_portrait(
    upscalers: Any, image: np.ndarray, cfg: GenerateConfig, on_event: Any = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The finished portrait enlarged ``cfg.upscale`` × by the Real-ESRGAN network (tiled: see
    :func:`easyphoto.diffusion.upscale.upscale_image`), and what to record of it in the PNG.

    ``upscalers``: a :class:`~easyphoto.diffusion.upscale.Upscalers`. ``on_event`` gets ``{"type":
    "step", "pass": "upscale", "step": k, "steps": n}`` per tile. ``cfg.upscale`` 1: unchanged, ``{}``.
    """
    if cfg.upscale == 1:
        return image, {}
    _, path = upscalers.get(cfg.upscale)
    on_tile = (
        (lambda k, n: on_event({"type": "step", "pass": "upscale", "step": k, "steps": n}))
        if on_event
        else None
    )
    out = upscalers.upscale(image, cfg.upscale, cfg.upscale_tile, cfg.upscale_overlap, on_tile=on_tile)
    return out, {
        "upscaler": {"file": str(path), "scale": cfg.upscale, "input_size": list(image.shape[1::-1])}
    }


__all__ = [
    "FACE_UPSCALE_FROM",
    "GPU_LIMIT_FACTOR",
    "OTHER_LIMIT_FACTOR",
    "enlarge_face",
    "max_crop_side",
    "merge_refined",
    "paste_resize",
    "upscale_portrait",
]
