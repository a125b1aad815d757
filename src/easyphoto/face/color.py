"""Colour transfer in CIE LAB (Reinhard et al. 2001), made robust for faces.

Plain Reinhard transfer matches the mean *and* the standard deviation of each LAB channel. Under
tinted light (a warm stage light, a blue screen) the reference's chroma spread is large and matching
it makes skin look painted; under flat light the spread is tiny and matching it makes a face look
grey. :func:`match_color` therefore clamps the ratio of standard deviations (lightness and chroma
separately) and computes statistics only over the pixels a mask selects (skin, not hair or
background).

Arrays: RGB ``uint8`` images in, same dtype out. LAB arrays are ``float32`` with L in 0..100 and a, b
in about -128..127 (OpenCV's float convention).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Clamp of std(reference) / std(image) for lightness. 0.7–1.3 keeps contrast plausible: a face
#: photographed in flat light is not flattened further than 0.7×, nor stretched beyond 1.3×.
L_STD_CLAMP = (0.7, 1.3)
#: Clamp of the std ratio for the a/b chroma channels. Asymmetric on purpose: tinted light widens the
#: reference's chroma spread, and matching it fully over-saturates lips and cheeks (so at most
#: 1.15×); a blotchy (sunburnt, flushed) source onto even skin must calm down a lot (so down to 0.45×).
CHROMA_STD_CLAMP = (0.45, 1.15)
#: A reference whose a/b mean and spread are both under this (LAB units) is black-and-white (a grey
#: or sepia-free photo): its chroma is matched exactly, i.e. removed. Without this the 0.45× floor of
#: :data:`CHROMA_STD_CLAMP` left a colour face on a grey template (seen in the demo's swap preview);
#: JPEG noise on a grey photo measured a/b spread < 0.6.
ACHROMATIC = 2.0


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """``uint8`` (or 0..1 float) RGB to ``float32`` LAB (L 0..100, a/b about ±127)."""
    arr = np.asarray(image)
    f = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    return cv2.cvtColor(f, cv2.COLOR_RGB2LAB)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """``float32`` LAB to ``uint8`` RGB (rounded and clipped)."""
    rgb = cv2.cvtColor(np.asarray(lab, dtype=np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def lab_stats(lab: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of a LAB image, over ``mask > 0.5`` if given."""
    pix = lab.reshape(-1, 3)
    if mask is not None:
        sel = np.asarray(mask).reshape(-1) > 0.5
        if sel.sum() >= 16:
            pix = pix[sel]
    mean = pix.mean(axis=0)
    std = pix.std(axis=0)
    return mean.astype(np.float32), std.astype(np.float32)


def transfer_lab(
    lab: np.ndarray,
    source_stats: tuple[np.ndarray, np.ndarray],
    target_stats: tuple[np.ndarray, np.ndarray],
    *,
    l_clamp: tuple[float, float] = L_STD_CLAMP,
    chroma_clamp: tuple[float, float] = CHROMA_STD_CLAMP,
) -> np.ndarray:
    """Move ``lab`` from ``source_stats`` (mean, std) to ``target_stats`` with clamped std ratios."""
    (mu_s, sd_s), (mu_t, sd_t) = source_stats, target_stats
    ratio = sd_t / np.maximum(sd_s, 1e-3)
    ratio[0] = np.clip(ratio[0], *l_clamp)
    ratio[1:] = np.clip(ratio[1:], *chroma_clamp)
    if float(np.hypot(mu_t[1], mu_t[2])) < ACHROMATIC and float(sd_t[1:].max()) < ACHROMATIC:
        ratio[1:] = 0.0  # a black-and-white reference: no colour at all
    out = (lab - mu_s) * ratio + mu_t
    out[..., 0] = np.clip(out[..., 0], 0.0, 100.0)
    return out.astype(np.float32)


def match_color(
    image: np.ndarray,
    reference: np.ndarray,
    image_mask: np.ndarray | None = None,
    reference_mask: np.ndarray | None = None,
    *,
    l_clamp: tuple[float, float] = L_STD_CLAMP,
    chroma_clamp: tuple[float, float] = CHROMA_STD_CLAMP,
) -> np.ndarray:
    """Recolour ``image`` so its LAB statistics match ``reference`` (robust Reinhard transfer).

    Args:
        image: RGB ``uint8`` image to recolour.
        reference: RGB ``uint8`` image whose colours to take (any size).
        image_mask, reference_mask: optional masks (``> 0.5`` selects) of the pixels the statistics
            are computed on, e.g. the skin of each face.
        l_clamp, chroma_clamp: bounds of the std ratio for lightness and chroma (see module notes).

    Returns:
        The recoloured image, ``uint8`` RGB, same size as ``image``.
    """
    lab = rgb_to_lab(image)
    ref = rgb_to_lab(reference)
    out = transfer_lab(
        lab,
        lab_stats(lab, image_mask),
        lab_stats(ref, reference_mask),
        l_clamp=l_clamp,
        chroma_clamp=chroma_clamp,
    )
    return lab_to_rgb(out)


__all__ = [
    "ACHROMATIC",
    "CHROMA_STD_CLAMP",
    "L_STD_CLAMP",
    "lab_stats",
    "lab_to_rgb",
    "match_color",
    "rgb_to_lab",
    "transfer_lab",
]
