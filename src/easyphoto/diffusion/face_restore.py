"""Face restoration with GFPGAN (v1.3 / v1.4, the "clean" architecture), our own implementation.

GFPGAN (Wang et al., CVPR 2021) restores a face aligned to FFHQ's 512×512 frame: a U-Net reads the
degraded face, its bottleneck becomes one StyleGAN2 style code per layer, and its decoder features
modulate half the channels of a pretrained StyleGAN2 generator (spatial feature transform) that
paints the restored face. This module builds that network with the module names of the published
checkpoints (``GFPGANv1.4.pth``: ``params_ema`` → ``conv_body_first``, ``stylegan_decoder.…``), so
those files load strictly; it is written here because the library that packages it (spandrel) needs
torchvision, which breaks beside our CPU torch wheel. It knows pixels and five points per face, never
how they were found: the generate stage passes the points (eyes, nose tip, mouth corners).

Licence of the weights: GFPGAN's code and models are Apache-2.0 (TencentARC); they were trained on
FFHQ, whose images are CC BY-NC-SA 4.0 — which is why restoration is off unless asked for
(``GenerateConfig.face_restore``) and the registry entry says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelNotFoundError

#: FFHQ's five reference points in its 512×512 frame: image-left eye, image-right eye, nose tip,
#: image-left and image-right mouth corner (the frame GFPGAN and CodeFormer were trained in).
FFHQ_POINTS_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], np.float32,
)  # fmt: skip


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ResBlock(nn.Module):
    """The U-Net's residual block: two 3×3 convs around a bilinear ×2 or ×½, a 1×1 skip."""

    def __init__(self, cin: int, cout: int, factor: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def resize(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=self.factor, mode="bilinear", align_corners=False)

        return _leaky(self.conv2(resize(_leaky(self.conv1(x))))) + self.skip(resize(x))


class ModulatedConv(nn.Module):
    """StyleGAN2's convolution whose weights are scaled per input channel by the style (and
    renormalised per output channel when ``demodulate``), optionally after a bilinear ×2."""

    def __init__(self, cin: int, cout: int, k: int, style: int, demodulate: bool, up: bool) -> None:
        super().__init__()
        self.modulation = nn.Linear(style, cin)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k) / math.sqrt(cin * k * k))
        self.demodulate, self.up, self.cout = demodulate, up, cout

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin, _, _ = x.shape
        w = self.weight * self.modulation(style).view(b, 1, cin, 1, 1)
        if self.demodulate:
            w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + 1e-8).view(b, self.cout, 1, 1, 1)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        k = w.shape[-1]
        out = F.conv2d(
            x.reshape(1, b * cin, *x.shape[2:]), w.view(b * self.cout, cin, k, k), padding=k // 2, groups=b
        )
        return out.view(b, self.cout, *out.shape[2:])


class StyleConv(nn.Module):
    """A modulated 3×3 conv, scaled noise, bias, leaky ReLU (× √2)."""

    def __init__(self, cin: int, cout: int, style: int, up: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv(cin, cout, 3, style, True, up)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2)
        return _leaky(out + self.weight * noise + self.bias)


class ToRGB(nn.Module):
    """A modulated 1×1 conv to RGB, added to the previous level's RGB (bilinear ×2)."""

    def __init__(self, cin: int, style: int, up: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv(cin, 3, 1, style, False, False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.up = up

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.up:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))


class _NormStyle(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


def _channels(multiplier: float, narrow: float) -> dict[int, int]:
    """StyleGAN2's channels per resolution."""
    wide = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * multiplier, 128: 128 * multiplier,
            256: 64 * multiplier, 512: 32 * multiplier, 1024: 16 * multiplier}  # fmt: skip
    return {k: int(v * narrow) for k, v in wide.items()}


class StyleDecoder(nn.Module):
    """The StyleGAN2 generator (without its own mapping network in use: styles come from the U-Net)
    whose features at each level get the U-Net's scale and shift on half their channels."""

    def __init__(self, size: int, style: int, mlp: int, multiplier: float, narrow: float) -> None:
        super().__init__()
        ch = _channels(multiplier, narrow)
        layers: list[nn.Module] = [_NormStyle()]
        for _ in range(mlp):  # the mapping network: in every checkpoint, unused with given styles
            layers += [nn.Linear(style, style), nn.LeakyReLU(0.2, True)]
        self.style_mlp = nn.Sequential(*layers)
        self.constant_input = ConstantInput(ch[4])
        self.style_conv1 = StyleConv(ch[4], ch[4], style, False)
        self.to_rgb1 = ToRGB(ch[4], style, False)
        log = int(math.log2(size))
        self.noises = nn.Module()
        for i in range((log - 2) * 2 + 1):
            side = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, side, side))
        self.style_convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        cin = ch[4]
        for i in range(3, log + 1):
            cout = ch[2**i]
            self.style_convs += [StyleConv(cin, cout, style, True), StyleConv(cout, cout, style, False)]
            self.to_rgbs.append(ToRGB(cout, style, True))
            cin = cout

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        noise = [getattr(self.noises, f"noise{i}") for i in range(len(self.style_convs) + 1)]
        out = self.constant_input.weight.repeat(latent.shape[0], 1, 1, 1)
        out = self.style_conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1], None)
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            out = self.style_convs[2 * j](out, latent[:, i], noise[i])
            kept, modulated = out.split(out.shape[1] // 2, dim=1)
            out = torch.cat([kept, modulated * conditions[2 * j] + conditions[2 * j + 1]], 1)
            out = self.style_convs[2 * j + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


def _sft(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(c, c, 3, 1, 1))


class GFPGAN(nn.Module):
    """GFPGANv1Clean: U-Net encoder/decoder + SFT-conditioned StyleGAN2 decoder (``size`` px faces).

    ``multiplier`` 2 and ``narrow`` 1 are the released models'; the U-Net is half as wide as the
    decoder, whose SFT covers half its channels (``sft_half``), and every layer has its own style.
    """

    def __init__(
        self, size: int = 512, style: int = 512, mlp: int = 8, multiplier: float = 2, narrow: float = 1
    ):
        super().__init__()
        ch = _channels(multiplier, narrow * 0.5)
        log = int(math.log2(size))
        self.size, self.style = size, style
        self.conv_body_first = nn.Conv2d(3, ch[size], 1)
        self.conv_body_down = nn.ModuleList(
            ResBlock(ch[2**i], ch[2 ** (i - 1)], 0.5) for i in range(log, 2, -1)
        )
        self.final_conv = nn.Conv2d(ch[4], ch[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(ResBlock(ch[2 ** (i - 1)], ch[2**i], 2) for i in range(3, log + 1))
        self.toRGB = nn.ModuleList(nn.Conv2d(ch[2**i], 3, 1) for i in range(3, log + 1))  # noqa: N815 (checkpoint name)
        self.final_linear = nn.Linear(ch[4] * 16, (2 * log - 2) * style)
        self.stylegan_decoder = StyleDecoder(size, style, mlp, multiplier, narrow)
        self.condition_scale = nn.ModuleList(_sft(ch[2**i]) for i in range(3, log + 1))
        self.condition_shift = nn.ModuleList(_sft(ch[2**i]) for i in range(3, log + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: RGB in [-1, 1], ``size``×``size``; returns the restored face in [-1, 1]."""
        feat = _leaky(self.conv_body_first(x))
        skips = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.insert(0, feat)
        feat = _leaky(self.final_conv(feat))
        latent = self.final_linear(feat.flatten(1)).view(x.shape[0], -1, self.style)
        conditions = []
        for skip, up, scale, shift in zip(
            skips, self.conv_body_up, self.condition_scale, self.condition_shift, strict=True
        ):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
        return self.stylegan_decoder(latent, conditions)


def gfpgan_from_state(state: dict[str, torch.Tensor], name: str) -> GFPGAN:
    """A :class:`GFPGAN` shaped by the tensors of a checkpoint and loaded with them (strictly);
    :class:`ModelNotFoundError` naming ``name`` for any other layout."""
    try:
        downs = {int(k.split(".")[1]) for k in state if k.startswith("conv_body_down.")}
        size = 2 ** (max(downs) + 3)
        decoder_ch4 = state["stylegan_decoder.constant_input.weight"].shape[1]
        style = state["stylegan_decoder.style_mlp.1.weight"].shape[0]
        mlp = sum(1 for k in state if k.startswith("stylegan_decoder.style_mlp.") and k.endswith(".weight"))
        narrow = decoder_ch4 / 512
        multiplier = 2.0
        if size >= 64:  # the decoder's width at 64 px says the channel multiplier
            multiplier = state["stylegan_decoder.to_rgbs.3.modulated_conv.weight"].shape[2] / (256 * narrow)
        net = GFPGAN(size, style, mlp, multiplier, narrow)
        net.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelNotFoundError(
            f"face restorer {name}: not a GFPGAN v1.3/v1.4 checkpoint ({detail})"
        ) from None
    return net.eval()


def load_face_restorer(config: Any, *, download: bool = True) -> GFPGAN:
    """The GFPGAN ``ModelConfig.face_restorer`` names (fetched on first use unless offline), on the CPU
    in float32; :class:`ModelNotFoundError` names the file and what is wrong."""
    from .weights import read_state_dict, weights_file

    path = weights_file(config, "face_restorer", "face restorer", download=download)
    return gfpgan_from_state(read_state_dict(path, "face restorer"), str(path))


def write_tiny_face_restorer(folder: str | Path, seed: int = 0) -> Path:
    """``folder/GFPGANv1.4.pth``: a :func:`tiny_gfpgan` in the release layout (``{"params_ema": …}``)."""
    path = Path(folder) / "GFPGANv1.4.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": tiny_gfpgan(seed).state_dict()}, path)
    return path


def tiny_gfpgan(seed: int = 0) -> GFPGAN:
    """A GFPGAN of the released layout at 64 px and 1/32 of the width (tests, ``tiny-model``)."""
    torch.manual_seed(seed)
    return GFPGAN(size=64, style=32, mlp=8, multiplier=2, narrow=1 / 32).eval()


def five_point_frame(points: np.ndarray, size: int) -> np.ndarray:
    """The 2×3 similarity transform taking a face's five points to FFHQ's, in a ``size`` px frame."""
    matrix, _ = cv2.estimateAffinePartial2D(
        np.asarray(points, np.float32), FFHQ_POINTS_512 * (size / 512.0), method=cv2.LMEDS
    )
    if matrix is None:
        raise ValueError("the five face points are degenerate")
    return matrix


@torch.no_grad()
def restore_faces(
    net: GFPGAN, image: np.ndarray, faces: list[np.ndarray], weight: float, device: Any = "cpu"
) -> np.ndarray:
    """``image`` (RGB uint8) with each face (its five points, image coordinates) restored and blended
    in at ``weight`` (0: unchanged, 1: the network's face) over a feathered mask of its frame."""
    out = image.astype(np.float32)
    h, w = image.shape[:2]
    size = net.size
    for points in faces:
        matrix = five_point_frame(points, size)
        crop = cv2.warpAffine(
            image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
        face = net.to(device)(x)[0].clamp(-1, 1).add(1).mul(127.5).permute(1, 2, 0).cpu().numpy()
        back = cv2.invertAffineTransform(matrix)
        restored = cv2.warpAffine(face, back, (w, h), flags=cv2.INTER_LINEAR)
        frame = np.zeros((size, size), np.float32)
        edge = max(2, size // 32)  # keep the frame's border out: the warp smears it
        frame[edge:-edge, edge:-edge] = 1.0
        mask = cv2.warpAffine(frame, back, (w, h), flags=cv2.INTER_LINEAR)
        scale = math.sqrt(abs(np.linalg.det(back[:, :2])))
        blur = max(1.0, 0.04 * size * scale)
        mask = cv2.GaussianBlur(cv2.erode(mask, np.ones((3, 3), np.uint8)), (0, 0), blur) * weight
        out = out * (1 - mask[..., None]) + restored * mask[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


__all__ = [
    "FFHQ_POINTS_512",
    "GFPGAN",
    "five_point_frame",
    "gfpgan_from_state",
    "restore_faces",
    "tiny_gfpgan",
]
