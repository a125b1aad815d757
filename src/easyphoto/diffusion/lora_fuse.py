"""Fusing LoRA checkpoints exactly.

A kohya LoRA module stores ``down`` (r×in), ``up`` (out×r) and ``alpha``; its weight update is
``ΔW = (alpha / r) · up @ down``. EasyPhoto "fuses" its best checkpoints by averaging ``up`` and
``down`` separately, which gives ``mean(up) @ mean(down)`` — not the mean of the updates (the cross
terms ``up_i @ down_j`` appear). Here the average is exact:

* **Concatenate ranks**: ``up* = [w₁s₁·up₁ | … | wₙsₙ·upₙ]`` and ``down* = [down₁; …; downₙ]`` give
  ``up* @ down* = Σ wᵢ sᵢ upᵢ downᵢ = Σ wᵢ ΔWᵢ`` exactly, at rank ``n·r`` with alpha = rank (scale 1).
* **Optionally re-compress** to a target rank by a truncated SVD of that product, computed through QR
  factors of ``up*`` and ``down*ᵀ`` so the full ``out×in`` matrix is never formed. By Eckart–Young this
  is the best rank-k approximation; its Frobenius error is the norm of the dropped singular values,
  which :func:`fuse_lora_state_dicts` reports per module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

DOWN = ".lora_down.weight"
UP = ".lora_up.weight"
ALPHA = ".alpha"


def _modules(state: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k[: -len(DOWN)] for k in state if k.endswith(DOWN))


def _scale(state: dict[str, torch.Tensor], module: str) -> float:
    rank = state[module + DOWN].shape[0]
    alpha = state.get(module + ALPHA)
    return float(alpha) / rank if alpha is not None else 1.0


def delta_weight(state: dict[str, torch.Tensor], module: str) -> torch.Tensor:
    """The full weight update ``(alpha/r) · up @ down`` of one kohya module (2-d, out×in·k·k)."""
    down = state[module + DOWN].float()
    up = state[module + UP].float()
    return _scale(state, module) * (up.flatten(1) @ down.flatten(1))


@dataclass
class FusionReport:
    """What :func:`fuse_lora_state_dicts` did: the output rank and the relative SVD error per module."""

    rank: int
    weights: list[float]
    relative_error: dict[str, float] = field(default_factory=dict)

    @property
    def max_relative_error(self) -> float:
        return max(self.relative_error.values(), default=0.0)


def fuse_lora_state_dicts(
    states: Sequence[dict[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    rank: int | None = None,
) -> tuple[dict[str, torch.Tensor], FusionReport]:
    """Average several kohya LoRA state dicts exactly: ``ΔW = Σ wᵢ ΔWᵢ`` for every module.

    Args:
        states: kohya state dicts with the same modules (``.lora_down.weight``, ``.lora_up.weight``,
            ``.alpha``); ranks and alphas may differ between them.
        weights: weight of each state (default: equal, summing to 1).
        rank: re-compress each module to this rank by truncated SVD (default: keep the exact
            concatenated rank ``Σ rᵢ``). A rank ≥ the true rank of the sum is still exact.

    Returns:
        The fused state dict (alpha = rank, so the scale is 1) and a :class:`FusionReport`.
    """
    if not states:
        raise ValueError("nothing to fuse")
    n = len(states)
    w = [1.0 / n] * n if weights is None else [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"{n} state dicts but {len(w)} weights")
    modules = _modules(states[0])
    for i, st in enumerate(states[1:], 1):
        if _modules(st) != modules:
            raise ValueError(f"state dict {i} adapts different modules than state dict 0")
    out: dict[str, torch.Tensor] = {}
    report = FusionReport(rank=0, weights=w)
    out_rank = 0
    for module in modules:
        downs = [st[module + DOWN] for st in states]
        dtype = downs[0].dtype
        down_shape = downs[0].shape  # (r, in) or (r, in, kh, kw)
        up_shape = states[0][module + UP].shape  # (out, r) or (out, r, 1, 1)
        ups = [
            wi * _scale(st, module) * st[module + UP].float().flatten(1)
            for wi, st in zip(w, states, strict=True)
        ]
        up_cat = torch.cat(ups, dim=1)  # out × R
        down_cat = torch.cat([d.float().flatten(1) for d in downs], dim=0)  # R × in
        total = up_cat.shape[1]
        if rank is not None and rank < total:
            q1, r1 = torch.linalg.qr(up_cat)  # out×R, R×R
            q2, r2 = torch.linalg.qr(down_cat.T)  # in×R, R×R
            u, s, vh = torch.linalg.svd(r1 @ r2.T)
            k = rank
            root = s[:k].sqrt()
            new_up = (q1 @ u[:, :k]) * root  # out × k
            new_down = root[:, None] * (vh[:k] @ q2.T)  # k × in
            full_norm = float(s.norm())
            report.relative_error[module] = float(s[k:].norm()) / full_norm if full_norm > 0 else 0.0
        else:
            new_up, new_down, k = up_cat, down_cat, total
            report.relative_error[module] = 0.0
        out[module + UP] = new_up.reshape(up_shape[0], k, *up_shape[2:]).to(dtype).contiguous()
        out[module + DOWN] = new_down.reshape(k, *down_shape[1:]).to(dtype).contiguous()
        out[module + ALPHA] = torch.tensor(float(k), dtype=dtype)
        out_rank = max(out_rank, k)
    report.rank = out_rank
    return out, report


def naive_average(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """EasyPhoto's fusion — average ``up`` and ``down`` separately. Kept only to show in tests and
    docs why it is wrong (``mean(up) @ mean(down) ≠ mean(up @ down)``)."""
    out: dict[str, torch.Tensor] = {}
    for key in states[0]:
        out[key] = torch.stack([st[key].float() for st in states]).mean(0).to(states[0][key].dtype)
    return out
