"""The GPU check's ``finishing`` path: what a portrait can do after its two face passes, on the device.

One portrait with every finishing stage at once, cold then warm — ``background="restore"`` (ControlNet
tile + canny over the whole portrait, in tiles), the face crop worked below its template size and
brought back by Real-ESRGAN (``max_short_side`` set under the crop, ``face_upscale="on"``),
``upscale=2`` (Real-ESRGAN x2plus over the finished portrait, in tiles) and ``face_restore`` (GFPGAN
v1.4) — then one ``background="replace"`` with a painted background (the person segmenter is LiteRT on
the CPU: skipped, saying so, when ``ai_edge_litert`` was not carried).

On the GPU the networks are the real architectures with random weights, written next to the random
SD1.5 (``upscaler/x2``, ``upscaler/x4``, ``face_restorer/``) where a local base folder's files win, as
``easyphoto tiny-model`` writes its tiny ones; the Real-ESRGAN body is random but its outer convs pass
the picture through (:func:`easyphoto.diffusion.upscale.tiny_rrdbnet` at full width, the trunk's last
conv scaled down), so the output is the picture with a faint texture and a NaN or overflow would
show. The dry run uses the tiny model's tiny networks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from gpu_check_paths import Ctx, Skip, gb, peak_gb, reset_peak
from gpu_check_portrait import _check_portrait, _config, _row

#: The stages a finishing portrait must time (``Portrait.timings``).
FINISHING_STAGES = ("background", "face_upscale", "upscale", "face_restore")


def write_full_size_finishers(model_dir: Path) -> str:
    """Real-size Real-ESRGAN x2plus / x4plus (23 RRDB blocks, 64 features) and GFPGAN v1.4 (512 px)
    with random weights in ``model_dir``, in the release layout, unless already there."""
    import torch

    from easyphoto.diffusion.face_restore import GFPGAN
    from easyphoto.diffusion.upscale import tiny_rrdbnet

    wrote = []
    for scale in (2, 4):
        path = model_dir / "upscaler" / f"x{scale}" / f"RealESRGAN_x{scale}plus.pth"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            net = tiny_rrdbnet(scale, seed=0, num_feat=64, num_block=23, std=0.004)
            with torch.no_grad():  # 23 random blocks would drown the pass-through: a faint texture
                net.conv_body.weight.mul_(0.01)
                net.conv_body.bias.zero_()
            torch.save({"params_ema": net.state_dict()}, path)
            wrote.append(path.name)
    path = model_dir / "face_restorer" / "GFPGANv1.4.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save({"params_ema": GFPGAN().state_dict()}, path)
        wrote.append(path.name)
    return f"wrote {', '.join(wrote)}" if wrote else "networks already there"


def _check_finished(ctx: Ctx, row: dict[str, Any], scale: int) -> str:
    """The portrait is ``scale`` × the template, finite and not flat; every finishing stage timed."""
    out = row["portrait"].array
    h, w = ctx.template.shape[:2]
    if out.shape != (h * scale, w * scale, 3):
        raise AssertionError(f"portrait {out.shape}, expected {(h * scale, w * scale, 3)} (upscale {scale})")
    missing = [s for s in FINISHING_STAGES if s not in row["timings"]]
    if missing:
        raise AssertionError(f"stages not run: {missing} (timed: {sorted(row['timings'])})")
    if float(out.std()) < 1.0:
        return " WARNING: the finished portrait is flat (NaN in fp16?)"
    return ""


def finishing(ctx: Ctx) -> str:
    """Background restore + face upscale + ×2 super-resolution + face restore in one portrait, cold and
    warm; then a painted background replacement."""
    if ctx.gen is None:
        raise Skip("needs the portrait path's generator")
    wrote = "tiny networks of the tiny model"
    if not ctx.dry_run:
        wrote = write_full_size_finishers(ctx.model_dir)
    base = _config(ctx)
    cfg = base.replace(
        background="restore", upscale=2, face_restore=True, face_upscale="on", max_short_side=base.short_side
    )
    reset_peak()
    cold = _row(ctx, ctx.gen, ctx.probe, cfg)
    warm = _row(ctx, ctx.gen, ctx.probe, cfg)
    tiles = warm["background_calls"]
    if tiles == 0:
        raise AssertionError("background restore ran no diffusion pass")
    peak = peak_gb()
    warning = _check_finished(ctx, warm, 2)
    t = warm["timings"]
    for stage in FINISHING_STAGES:
        ctx.metric(f"finishing_{stage}_s", t[stage], "s", note="warm")
    ctx.metric("portrait_finishing_s", t["total"], "s", note="warm, all finishing stages, 1 face")
    ctx.metric("portrait_finishing_peak_max_memory_allocated", peak, "GB")
    line = (
        f"{wrote}; restore ({tiles} tile(s) at {cfg.background_strength}) + face crop at "
        f"{cfg.max_short_side} px back through Real-ESRGAN + ×2 + GFPGAN at {cfg.face_restore_weight}: "
        + ", ".join(f"{s} {t[s]:.2f} s" for s in FINISHING_STAGES)
        + f"; warm {t['total']:.2f} s, cold {cold['wall']:.2f} s; peak {gb(peak)}{warning}"
    )
    try:
        import ai_edge_litert.interpreter  # noqa: F401  (the person segmenter's runtime)
    except Exception as exc:  # not carried (gpu_wheels.sh --no-litert), or it does not load there
        return line + f"; replace: SKIPPED (ai_edge_litert does not import: {type(exc).__name__}: {exc})"
    replace = base.replace(background="replace", background_prompt="a sunny beach at noon")
    start = time.perf_counter()
    row = _row(ctx, ctx.gen, ctx.probe, replace)
    wall = time.perf_counter() - start
    warning = _check_portrait(ctx, row, replace)
    out = row["portrait"].array
    corner = float(np.abs(out[:8, :8].astype(int) - ctx.template[:8, :8]).mean())
    if corner == 0:
        raise AssertionError("replace left the background's corner unchanged")
    painted = row["background_calls"]
    if painted != 1:
        raise AssertionError(f"replace ran {painted} painting passes, expected 1")
    ctx.metric("finishing_background_replace_s", row["timings"]["background"], "s", note="segment + paint")
    return line + (
        f"; replace: {painted} painting pass(es), background stage {row['timings']['background']:.2f} s, "
        f"portrait {wall:.2f} s, corner mean |Δ| {corner:.0f}{warning}"
    )


__all__ = ["finishing", "write_full_size_finishers"]
