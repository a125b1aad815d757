"""Super-resolution with Real-ESRGAN's network (RRDBNet), our own code, in overlapping tiles.

:class:`RRDBNet` is the generator of ESRGAN (Wang et al., 2018) as Real-ESRGAN (Wang et al., 2021)
ships it: ``conv_first``, a body of RRDB blocks (three residual dense blocks of five 3×3 convs each,
residuals scaled by 0.2), ``conv_body``, two nearest-neighbour ×2 upsamplings each followed by a conv
(``conv_up1``, ``conv_up2``), ``conv_hr`` and ``conv_last``. The ×2 and ×1 models run the same ×4
network on a pixel-unshuffled input (2×2 or 4×4 pixels folded into channels, as in Real-ESRGAN
x2plus). :func:`load_rrdbnet` reads the official state dict layout — a ``.pth`` through
``torch.load(weights_only=True)`` (``params_ema`` / ``params`` wrappers) or a ``.safetensors`` — and
reads the scale, width, depth and growth channels from the keys' shapes. spandrel (what A1111 and
ComfyUI load upscalers with) is not used: it requires torchvision, which fails beside our CPU torch.

:func:`upscale_image` runs the network on tiles of at most ``tile`` px with ``overlap`` px of context
past each edge; neighbouring tiles meet in a linear cross-fade ``overlap`` px wide, so there is no seam
and memory is bounded by the tile size (plus the output image itself).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelNotFoundError
from .weights import WEIGHT_SUFFIXES, read_state_dict, weights_file


class ResidualDenseBlock(nn.Module):
    """Five 3×3 convs, each fed every earlier output (dense), residual scaled by 0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        for i in range(1, 6):
            out = num_feat if i == 5 else num_grow_ch
            setattr(self, f"conv{i}", nn.Conv2d(num_feat + (i - 1) * num_grow_ch, out, 3, 1, 1))
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i in range(1, 5):
            feats.append(self.lrelu(getattr(self, f"conv{i}")(torch.cat(feats, 1))))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN generator; ``scale`` 4, 2 or 1 (the last two via pixel-unshuffle).

    Real-ESRGAN x4plus and x2plus: ``num_feat=64, num_block=23, num_grow_ch=32`` (16.7 M parameters).
    Input and output are RGB in 0..1.
    """

    def __init__(
        self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 64,
        num_block: int = 23, num_grow_ch: int = 32,
    ) -> None:  # fmt: skip
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, not {scale}")
        self.scale = scale
        self.fold = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.fold**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.fold) if self.fold > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


@dataclass(frozen=True)
class RRDBShape:
    """What the keys of a state dict say about its network."""

    scale: int
    num_in_ch: int
    num_out_ch: int
    num_feat: int
    num_block: int
    num_grow_ch: int


_REQUIRED = ("conv_first.weight", "conv_body.weight", "conv_up1.weight", "conv_up2.weight",
             "conv_hr.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")  # fmt: skip


def rrdb_shape(state: dict[str, torch.Tensor], name: str = "weights") -> RRDBShape:
    """The network a Real-ESRGAN-layout state dict describes; :class:`ModelNotFoundError` naming
    ``name`` and what is missing for any other layout."""
    if "model.0.weight" in state or any(k.startswith("RRDB_trunk") for k in state):
        raise ModelNotFoundError(
            f"upscaler {name}: the original ESRGAN key layout (model.0…, RRDB_trunk…) is not supported; "
            "use a Real-ESRGAN file (conv_first, body.N.rdbM…, conv_last)"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        some = ", ".join(sorted(state)[:3]) or "none"
        raise ModelNotFoundError(
            f"upscaler {name}: not a Real-ESRGAN RRDBNet state dict (missing {', '.join(missing[:3])}; "
            f"its keys start {some})"
        )
    first, last = state["conv_first.weight"], state["conv_last.weight"]
    num_out, folded = int(last.shape[0]), int(first.shape[1])
    fold = math.isqrt(max(1, folded // max(1, num_out)))
    if fold not in (1, 2, 4) or fold * fold * num_out != folded:
        raise ModelNotFoundError(
            f"upscaler {name}: conv_first reads {folded} channels for {num_out} output channels: "
            "not a ×4, ×2 or ×1 RRDBNet"
        )
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    return RRDBShape(
        scale={1: 4, 2: 2, 4: 1}[fold], num_in_ch=num_out, num_out_ch=num_out,
        num_feat=int(first.shape[0]), num_block=max(blocks) + 1,
        num_grow_ch=int(state["body.0.rdb1.conv1.weight"].shape[0]),
    )  # fmt: skip


def load_rrdbnet(path: str | Path) -> RRDBNet:
    """An :class:`RRDBNet` (eval mode, CPU, float32) with the weights of ``path``; every failure is a
    :class:`ModelNotFoundError` naming the file and the reason."""
    state = read_state_dict(path, "upscaler")
    shape = rrdb_shape(state, str(path))
    net = RRDBNet(shape.num_in_ch, shape.num_out_ch, shape.scale, shape.num_feat, shape.num_block,
                  shape.num_grow_ch)  # fmt: skip
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelNotFoundError(f"upscaler {path}: weights do not fit an RRDBNet ({detail})") from None
    return net.eval()


def _cells(size: int, tile: int, multiple: int) -> list[int]:
    """Edges of equal cells of at most ``tile`` px covering ``size`` (edges on ``multiple``)."""
    n = max(1, math.ceil(size / tile))
    edges = [min(size, round(i * size / n / multiple) * multiple) for i in range(n + 1)]
    edges[-1] = size
    return sorted(set(edges))


def _ramp(lo: int, hi: int, a: int, b: int, size: int, half: int, s: int) -> np.ndarray:
    """Blend weights (output px ``lo*s .. hi*s``) of a cell ``[a, b)``: 1 inside, linear fades of
    ``2 × half`` px centred on inner edges (a neighbour's fade is the complement)."""
    x = np.arange(lo * s, hi * s, dtype=np.float32) + 0.5
    w = np.ones_like(x)
    if half > 0:
        if a > 0:
            w = np.minimum(w, np.clip((x - (a - half) * s) / (2 * half * s), 0, 1))
        if b < size:
            w = np.minimum(w, np.clip(((b + half) * s - x) / (2 * half * s), 0, 1))
    return w


@torch.no_grad()
def _run(net: RRDBNet, tile: np.ndarray, device: Any, dtype: torch.dtype) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(tile)).to(device)
    x = x.permute(2, 0, 1)[None].to(dtype) / 255.0
    y = net(x).float().clamp_(0, 1)[0].permute(1, 2, 0)
    return y.cpu().numpy() * 255.0


def upscale_image(
    net: RRDBNet,
    image: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 16,
    device: Any = "cpu",
    dtype: torch.dtype = torch.float32,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``image`` (H×W×3 uint8) enlarged ``net.scale`` ×, in tiles of at most ``tile`` px.

    Each tile is run with ``overlap`` px of the image around it as context; neighbours cross-fade over
    ``overlap`` px centred on their shared edge. Memory: one tile on the device plus one band of tiles
    in float32 beside the uint8 output. ``on_tile(k, n)`` after each of the ``n`` tiles.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"upscale_image needs an H×W×3 uint8 image, not {image.shape} {image.dtype}")
    if not 0 <= 2 * overlap < tile:
        raise ValueError(f"overlap ({overlap}) must be under half of the tile ({tile})")
    s, m = net.scale, net.fold
    h0, w0 = image.shape[:2]
    pad_y, pad_x = -h0 % m, -w0 % m  # pixel-unshuffle needs sides on the fold
    img = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="reflect") if pad_y or pad_x else image
    H, W = img.shape[:2]
    ctx = -(-overlap // m) * m
    half = ctx // 2
    ys, xs = _cells(H, tile, m), _cells(W, tile, m)
    out = np.empty((H * s, W * s, 3), np.uint8)
    n, k = (len(ys) - 1) * (len(xs) - 1), 0
    carry, carry_from = None, 0  # float rows of the previous band not final yet, from output row
    for a, b in zip(ys[:-1], ys[1:], strict=True):
        lo, hi = max(0, a - half), min(H, b + half)
        band = np.zeros(((hi - lo) * s, W * s, 3), np.float32)
        if carry is not None:
            band[: carry.shape[0]] += carry
        wy = _ramp(lo, hi, a, b, H, half, s)[:, None, None]
        for c, d in zip(xs[:-1], xs[1:], strict=True):
            y0, y1, x0, x1 = max(0, a - ctx), min(H, b + ctx), max(0, c - ctx), min(W, d + ctx)
            res = _run(net, img[y0:y1, x0:x1], device, dtype)
            left, right = max(0, c - half), min(W, d + half)
            part = res[(lo - y0) * s : (hi - y0) * s, (left - x0) * s : (right - x0) * s]
            wx = _ramp(left, right, c, d, W, half, s)[None, :, None]
            band[:, left * s : right * s] += part * (wy * wx)
            k += 1
            if on_tile:
                on_tile(k, n)
        done = min(H, b - half) if b < H else H  # rows below this still get the next band's share
        rows = (done - lo) * s
        out[lo * s : done * s] = np.clip(band[:rows] + 0.5, 0, 255).astype(np.uint8)
        carry, carry_from = band[rows:], done
    assert carry_from == H
    return out[: h0 * s, : w0 * s]


def tiny_rrdbnet(
    scale: int, seed: int = 0, num_feat: int = 16, num_block: int = 2, std: float = 0.02
) -> RRDBNet:
    """A small RRDBNet of the real layout for tests (``easyphoto tiny-model``): its weights pass the
    image through (nearest-neighbour enlargement: identity taps in ``conv_first``, the three upper convs
    and ``conv_last``) plus random weights everywhere (``std``; the body fully random), so its output
    is the picture with a random texture — content that a tiling seam would show. (The GPU check
    builds the real width this way with a smaller ``std`` and a damped trunk.)"""
    gen = torch.Generator().manual_seed(seed * 1000 + scale)
    torch.manual_seed(seed * 1000 + scale)
    net = RRDBNet(scale=scale, num_feat=num_feat, num_block=num_block, num_grow_ch=num_feat // 2)
    fold2 = net.fold**2
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not name.startswith("body."):
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        for c in range(3):
            net.conv_first.weight[c, c * fold2, 1, 1] += 1.0
            for conv in (net.conv_up1, net.conv_up2, net.conv_hr):
                conv.weight[c, c, 1, 1] += 1.0
            net.conv_last.weight[c, c, 1, 1] += 1.0
    return net.eval()


def write_tiny_upscalers(folder: str | Path, seed: int = 0) -> list[Path]:
    """``folder/x2/RealESRGAN_x2plus.pth`` and ``folder/x4/RealESRGAN_x4plus.pth``: tiny RRDBNets
    (:func:`tiny_rrdbnet`) saved in Real-ESRGAN's release layout (``{"params_ema": state_dict}``)."""
    out = []
    for scale in (2, 4):
        path = Path(folder) / f"x{scale}" / f"RealESRGAN_x{scale}plus.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"params_ema": tiny_rrdbnet(scale, seed).state_dict()}, path)
        out.append(path)
    return out


def upscaler_present(config: Any, scale: int) -> bool:
    """Whether the ×``scale`` upscaler can load without a download."""
    try:
        upscaler_file(config, scale, download=False)
    except ModelNotFoundError:
        return False
    return True


def upscaler_file(config: Any, scale: int, *, download: bool = True) -> Path:
    """The weights file ``ModelConfig.upscaler_x{scale}`` means: a file, a folder holding one weights
    file (as ``easyphoto tiny-model`` writes under ``upscaler/x{scale}/``), or the registry's URL —
    downloaded on first use with progress unless offline (or ``download`` is false).
    :class:`ModelNotFoundError` says what to do (:func:`~easyphoto.diffusion.weights.weights_file`)."""
    return weights_file(config, f"upscaler_x{scale}", "upscaler", download=download)


class Upscalers:
    """The super-resolution networks of one :class:`~easyphoto.config.ModelConfig`, loaded once each
    on ``device`` (float16 on CUDA, float32 on CPU, where half-precision convs are not supported)."""

    def __init__(self, config: Any, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = torch.float32 if self.device.type == "cpu" else dtype
        self._nets: dict[int, tuple[RRDBNet, Path]] = {}

    def get(self, scale: int) -> tuple[RRDBNet, Path]:
        """The ×``scale`` network and its file; :class:`ModelNotFoundError` when the file is not
        a ×``scale`` RRDBNet."""
        if scale not in self._nets:
            path = upscaler_file(self.config, scale)
            net = load_rrdbnet(path)
            if net.scale != scale:
                raise ModelNotFoundError(
                    f"upscaler {path}: a ×{net.scale} network where ×{scale} was asked for "
                    f"(EASYPHOTO_UPSCALER_X{scale})"
                )
            self._nets[scale] = (net.to(self.device, self.dtype), path)
        return self._nets[scale]

    def upscale(self, image: np.ndarray, scale: int, tile: int, overlap: int, **kw: Any) -> np.ndarray:
        """``image`` enlarged ``scale`` × (1: returned as is), see :func:`upscale_image`."""
        if scale == 1:
            return image
        net, _ = self.get(scale)
        return upscale_image(
            net, image, tile=tile, overlap=overlap, device=self.device, dtype=self.dtype, **kw
        )


__all__ = [
    "RRDB",
    "RRDBNet",
    "RRDBShape",
    "ResidualDenseBlock",
    "Upscalers",
    "WEIGHT_SUFFIXES",
    "load_rrdbnet",
    "read_state_dict",
    "rrdb_shape",
    "upscale_image",
    "tiny_rrdbnet",
    "upscaler_file",
    "upscaler_present",
    "write_tiny_upscalers",
]
