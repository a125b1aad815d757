"""The exact LoRA checkpoint fusion (ΔW averaging) versus EasyPhoto's naive up/down averaging."""

from __future__ import annotations

import pytest
import torch

from easyphoto.diffusion.lora_fuse import delta_weight, fuse_lora_state_dicts, naive_average


def _random_state(seed: int, rank: int = 4, alpha: float = 2.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "lora_unet_attn_to_q.lora_down.weight": torch.randn(rank, 16, generator=g),
        "lora_unet_attn_to_q.lora_up.weight": torch.randn(24, rank, generator=g),
        "lora_unet_attn_to_q.alpha": torch.tensor(alpha),
        "lora_unet_conv.lora_down.weight": torch.randn(rank, 8, 3, 3, generator=g),
        "lora_unet_conv.lora_up.weight": torch.randn(12, rank, 1, 1, generator=g),
        "lora_unet_conv.alpha": torch.tensor(alpha),
    }


MODULES = ["lora_unet_attn_to_q", "lora_unet_conv"]


def test_exact_fusion_equals_mean_of_updates() -> None:
    states = [_random_state(i, rank=4, alpha=a) for i, a in enumerate([2.0, 4.0, 1.0])]
    fused, report = fuse_lora_state_dicts(states)
    assert report.rank == 12 and report.max_relative_error == 0.0
    for m in MODULES:
        expected = sum(delta_weight(s, m) for s in states) / 3
        assert torch.allclose(delta_weight(fused, m), expected, atol=1e-4)
        assert float(fused[m + ".alpha"]) == 12.0  # scale 1
    assert fused["lora_unet_conv.lora_down.weight"].shape == (12, 8, 3, 3)
    assert fused["lora_unet_conv.lora_up.weight"].shape == (12, 12, 1, 1)


def test_naive_average_is_not_the_mean_update() -> None:
    states = [_random_state(i) for i in range(3)]
    naive = naive_average(states)
    m = MODULES[0]
    expected = sum(delta_weight(s, m) for s in states) / 3
    err = (delta_weight(naive, m) - expected).norm() / expected.norm()
    assert err > 0.3  # the cross terms up_i @ down_j make it a different update altogether


def test_weighted_fusion() -> None:
    states = [_random_state(i) for i in range(2)]
    fused, _ = fuse_lora_state_dicts(states, weights=[0.25, 0.75])
    m = MODULES[0]
    expected = 0.25 * delta_weight(states[0], m) + 0.75 * delta_weight(states[1], m)
    assert torch.allclose(delta_weight(fused, m), expected, atol=1e-4)
    with pytest.raises(ValueError):
        fuse_lora_state_dicts(states, weights=[1.0])


def test_svd_recompression_is_optimal_and_exact_at_full_rank() -> None:
    states = [_random_state(i) for i in range(3)]
    m = MODULES[0]
    expected = sum(delta_weight(s, m) for s in states) / 3
    # Rank 12 (= 3 × 4) holds the sum exactly even after the SVD route.
    exact, rep = fuse_lora_state_dicts(states, rank=12)
    assert torch.allclose(delta_weight(exact, m), expected, atol=1e-4) and rep.rank == 12
    # Rank 4: the error is exactly the norm of the dropped singular values (Eckart–Young).
    small, rep4 = fuse_lora_state_dicts(states, rank=4)
    assert small[m + ".lora_down.weight"].shape == (4, 16)
    s = torch.linalg.svdvals(expected)
    best = float(s[4:].norm())
    got = float((delta_weight(small, m) - expected).norm())
    assert got == pytest.approx(best, rel=1e-3)
    assert rep4.relative_error[m] == pytest.approx(best / float(s.norm()), rel=1e-3)


def test_mismatched_modules_refused() -> None:
    a = _random_state(0)
    b = {k: v for k, v in _random_state(1).items() if not k.startswith("lora_unet_conv")}
    with pytest.raises(ValueError):
        fuse_lora_state_dicts([a, b])
