"""The GPU check's portrait paths: the default portrait (both passes, all controls), the IP-Adapter, the
LCM fast mode, VAE tiling and CPU offload. Each is a function of :class:`gpu_check_paths.Ctx` (see there).

Timings come from ``benchmarks/generate.py``: ``Portrait.timings`` per stage and its probe's per-step
UNet + ControlNet times inside ``pipe()`` (CUDA synchronised around each).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gpu_check_paths import TARGET_PORTRAIT_S, Ctx, Skip, free_memory, gb, peak_gb, reset_peak

PASSES = ("first_diffusion", "second_diffusion")


def _config(ctx: Ctx, **changes: Any) -> Any:
    from easyphoto.config import GenerateConfig

    cfg = GenerateConfig(**ctx.generate_config)
    return cfg.replace(**changes) if changes else cfg


def _ensure_user(ctx: Ctx) -> str:
    """The trained user; without one (training failed, or ``--only`` skipped it), a stand-in with an
    untrained rank-128 LoRA, so the portrait paths still run. Returns a note for the detail line."""
    from easyphoto.users import UserModel

    try:
        UserModel.load(ctx.user, ctx.home)
        return ""
    except Exception:  # not trained: UnknownUserError / UserModelError
        pass
    write_standin_user(ctx)
    return " (user: a stand-in with an untrained LoRA: no trained user)"


def write_standin_user(ctx: Ctx, user: str = "standin", rank: int = 128) -> None:
    """A user folder with a rank-``rank`` kohya LoRA of zero effect (peft's gaussian init), made on the
    cache's modules and taken off them again; the stub identity and the template as reference."""
    import json

    from gpu_check_setup import STUB_EMBEDDING
    from peft import LoraConfig

    from easyphoto.diffusion.lora import TEXT_ENCODER_TARGETS, UNET_TARGETS, delete_adapters, save_lora_kohya
    from easyphoto.imageio import save_png
    from easyphoto.store import user_dir

    if ctx.cache is None:
        ctx.cache = ctx.new_cache()
    unet, te = ctx.cache.unet, ctx.cache.text_encoder
    folder = user_dir(user, ctx.home)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for module, targets in ((unet, UNET_TARGETS), (te, TEXT_ENCODER_TARGETS)):
            lora = LoraConfig(
                r=rank, lora_alpha=rank / 2, target_modules=list(targets), init_lora_weights="gaussian"
            )
            module.add_adapter(lora, adapter_name="gpu_check_standin")
        save_lora_kohya(folder / "lora.safetensors", unet, te, adapter_name="gpu_check_standin")
    finally:
        for module in (unet, te):
            delete_adapters(module, names={"gpu_check_standin"})
    save_png(ctx.template, folder / "ref.png")
    np.save(folder / "embedding.npy", STUB_EMBEDDING)
    meta = {"user_id": user, "base_model": str(ctx.model_dir), "rank": rank, "alpha": rank / 2}
    (folder / "meta.json").write_text(json.dumps(meta) + "\n")
    ctx.user = user


def _generator(ctx: Ctx, cache: Any) -> tuple[Any, Any]:
    """A portrait generator on ``cache`` (stub analyzer) and a ``benchmarks/generate.py`` probe on it."""
    import generate as genbench  # benchmarks/generate.py

    from easyphoto import workflows

    gen = workflows.portrait_generator(cache, ctx.analyzer, home=ctx.home)
    cfg = _config(ctx)
    return gen, genbench.Probe(cache, cfg.first_controlnets, ctx.cuda, cfg.second_controlnets)


def _row(ctx: Ctx, gen: Any, probe: Any, cfg: Any) -> dict[str, Any]:
    import generate as genbench

    return genbench.portrait_row(gen, probe, ctx.template, [ctx.user], cfg)


def _check_portrait(ctx: Ctx, row: dict[str, Any], cfg: Any) -> str:
    """The portrait is the template's size, repainted around the face, with the steps asked for."""
    import generate as genbench

    out = row["portrait"].array
    if out.shape != ctx.template.shape or out.dtype != np.uint8:
        raise AssertionError(f"portrait {out.shape} {out.dtype} vs template {ctx.template.shape}")
    changed = (out != ctx.template).any(axis=2)
    if not changed.any():
        raise AssertionError("the portrait equals the template: nothing was repainted")
    first = cfg.fast_first_steps if cfg.fast else cfg.first_steps
    second = cfg.fast_second_steps if cfg.fast else cfg.second_steps
    want = (
        genbench.denoise_steps(first, cfg.first_denoise),
        genbench.denoise_steps(second, cfg.second_denoise),
    )
    got = (row["first_diffusion"]["steps"], row["second_diffusion"]["steps"])
    if got != want:
        raise AssertionError(f"denoising steps per pass {got}, expected {want}")
    region = out[changed]
    if float(region.mean()) < 2.0 or float(region.std()) < 0.5:
        return " WARNING: the repainted face is flat/black (NaN in fp16?)"
    return ""


def _shares(row: dict[str, Any]) -> tuple[float, float]:
    """Share of a portrait's time outside the diffusion stages, and outside the denoising steps."""
    total = row["timings"]["total"]
    steps = sum(row[p]["steps_s"] for p in PASSES)
    return (total - row["diffusion"]) / total, (total - steps) / total


def portrait(ctx: Ctx) -> str:
    """A full portrait at the configured (GPU: default) steps, both passes, all controls; cold then warm."""
    if ctx.cache is None:
        ctx.cache = ctx.new_cache()
    note = _ensure_user(ctx)
    ctx.gen, ctx.probe = _generator(ctx, ctx.cache)
    cfg = _config(ctx)
    reset_peak()
    cold = _row(ctx, ctx.gen, ctx.probe, cfg)
    warm = _row(ctx, ctx.gen, ctx.probe, cfg)
    ctx.portrait_peak_gb = peak_gb()
    warning = _check_portrait(ctx, warm, cfg)
    nets = set(cfg.first_controlnets) | set(cfg.second_controlnets)
    if set(ctx.cache._controlnets) != nets:
        raise AssertionError(f"ControlNets loaded {sorted(ctx.cache._controlnets)}, expected {sorted(nets)}")
    ctx.portrait = warm["portrait"]
    total = warm["timings"]["total"]
    outside, non_step = _shares(warm)
    ctx.metric(
        "portrait_s", total, "s", target=None if ctx.dry_run else TARGET_PORTRAIT_S, note="warm, 1 face"
    )
    ctx.metric("portrait_first_call_s", cold["wall"], "s", note="pipelines built, ControlNets + LoRA loaded")
    ctx.metric("portrait_non_diffusion_share", outside, "", note="total − both diffusion stages")
    ctx.metric("portrait_non_step_share", non_step, "", note="total − UNet+ControlNet denoising steps")
    ctx.metric("portrait_peak_max_memory_allocated", ctx.portrait_peak_gb, "GB")
    f, s = warm["first_diffusion"], warm["second_diffusion"]
    return (
        f"{cfg.first_steps}×{cfg.first_denoise} → {f['steps']} steps with {'+'.join(cfg.first_controlnets)} "
        f"({f['step_s'] * 1000:.0f} ms/step), {cfg.second_steps}×{cfg.second_denoise} → {s['steps']} with "
        f"{'+'.join(cfg.second_controlnets)} at ×{cfg.second_scale} ({s['step_s'] * 1000:.0f} ms/step); "
        f"warm {total:.2f} s, cold {cold['wall']:.2f} s; non-diffusion {outside:.1%}, outside the steps "
        f"{non_step:.1%}; peak {gb(ctx.portrait_peak_gb)}{note}{warning}"
    )


def ip_adapter(ctx: Ctx) -> str:
    """The same portrait with the IP-Adapter (random full-face adapter of the real shapes) at 0.7."""
    if ctx.gen is None:
        raise Skip("needs the portrait path's generator")
    cfg = _config(ctx, ip_adapter_scale=0.7)
    cold = _row(ctx, ctx.gen, ctx.probe, cfg)
    warm = _row(ctx, ctx.gen, ctx.probe, cfg)
    warning = _check_portrait(ctx, warm, cfg)
    if ctx.cache.load_count["ip_adapter"] != 1:
        raise AssertionError(f"IP-Adapter loads: {ctx.cache.load_count['ip_adapter']} (expected 1)")
    total = warm["timings"]["total"]
    ctx.metric("portrait_ip_adapter_s", total, "s", note="warm, adapter at 0.7")
    base = ctx.portrait.timings["total"] if ctx.portrait is not None else float("nan")
    return (
        f"warm {total:.2f} s (without: {base:.2f} s), first call {cold['wall']:.2f} s (adapter load){warning}"
    )


def fast(ctx: Ctx) -> str:
    """The fast mode: LCM scheduler + the LCM-LoRA stacked on the user's, at the fast steps and guidance."""
    if ctx.gen is None:
        raise Skip("needs the portrait path's generator")
    cfg = _config(ctx, fast=True)
    cold = _row(ctx, ctx.gen, ctx.probe, cfg)
    warm = _row(ctx, ctx.gen, ctx.probe, cfg)
    warning = _check_portrait(ctx, warm, cfg)
    if ctx.cache.load_count["lcm_lora"] != 1:
        raise AssertionError(f"LCM-LoRA loads: {ctx.cache.load_count['lcm_lora']} (expected 1)")
    total = warm["timings"]["total"]
    ctx.metric("portrait_fast_s", total, "s", note="warm, LCM")
    steps = (warm["first_diffusion"]["steps"], warm["second_diffusion"]["steps"])
    return (
        f"LCM {cfg.fast_first_steps}/{cfg.fast_second_steps} → {steps[0]}+{steps[1]} steps at guidance "
        f"{cfg.fast_guidance_scale}: warm {total:.2f} s, first call {cold['wall']:.2f} s "
        f"(LCM-LoRA load){warning}"
    )


def _count_tiles(vae: Any) -> dict[str, int]:
    """Count the VAE's tiled encodes and decodes (wrapped on the instance)."""
    counts = {"encode": 0, "decode": 0}
    for attr, key in (("_tiled_encode", "encode"), ("tiled_decode", "decode")):
        original = getattr(vae, attr)

        def wrapped(*args: Any, _original: Any = original, _key: str = key, **kwargs: Any) -> Any:
            counts[_key] += 1
            return _original(*args, **kwargs)

        setattr(vae, attr, wrapped)
    return counts


def vae_tiling(ctx: Ctx) -> str:
    """``ModelConfig(vae_tiling=True)``: the second pass (and larger crops) encode and decode in tiles."""
    cache = ctx.new_cache(vae_tiling=True)
    try:
        if not cache.vae.use_tiling:
            raise AssertionError("ModelConfig(vae_tiling=True) did not enable tiling")
        counts = _count_tiles(cache.vae)
        gen, probe = _generator(ctx, cache)
        cfg = _config(ctx)
        _row(ctx, gen, probe, cfg)
        warm = _row(ctx, gen, probe, cfg)
        warning = _check_portrait(ctx, warm, cfg)
        if counts["decode"] == 0:
            raise AssertionError(f"tiling never engaged: {counts}")
        diff = float("nan")
        if ctx.portrait is not None:
            diff = float(np.abs(warm["portrait"].array.astype(float) - ctx.portrait.array).mean())
        total = warm["timings"]["total"]
        ctx.metric("portrait_vae_tiling_s", total, "s", note="warm")
        tile = cache.vae.tile_sample_min_size
        return (
            f"{counts['encode']} tiled encodes, {counts['decode']} tiled decodes ({tile} px tiles) in 2 "
            f"portraits; warm {total:.2f} s; mean |Δ| vs untiled {diff:.2f} grey levels{warning}"
        )
    finally:
        cache.release()
        del cache
        free_memory()


def cpu_offload(ctx: Ctx) -> str:
    """``ModelConfig(cpu_offload=True)``: models wait on the CPU and move to the GPU when they run."""
    from easyphoto.errors import ConfigError

    if not ctx.cuda:
        try:
            ctx.new_cache(cpu_offload=True).inpaint_controlnet(["canny"])
        except ConfigError as exc:
            raise Skip(f"CUDA only; on CPU ModelCache refuses it ({exc})") from None
        raise AssertionError("cpu_offload on CPU was not refused")
    import torch

    if ctx.cache is not None:  # measure the offloaded portrait alone on the GPU
        ctx.cache.release()
    ctx.cache = ctx.gen = ctx.probe = None
    free_memory()
    resident = torch.cuda.memory_allocated() / 1024**3
    cache = ctx.new_cache(cpu_offload=True)
    try:
        gen, probe = _generator(ctx, cache)
        cfg = _config(ctx)
        reset_peak()
        cold = _row(ctx, gen, probe, cfg)
        warm = _row(ctx, gen, probe, cfg)
        peak = (peak_gb() or 0.0) - resident
        warning = _check_portrait(ctx, warm, cfg)
        where = next(cache.unet.parameters()).device.type
        if where != "cpu":
            raise AssertionError(f"the UNet stays on {where} between calls")
        total = warm["timings"]["total"]
        ctx.metric("portrait_cpu_offload_s", total, "s", note="warm")
        ctx.metric("portrait_cpu_offload_peak_max_memory_allocated", peak, "GB")
        return (
            f"warm {total:.2f} s, first call {cold['wall']:.2f} s; peak {peak:.2f} GB on the GPU "
            f"(without offload {gb(ctx.portrait_peak_gb)}); UNet on the CPU between calls{warning}"
        )
    finally:
        cache.release()
        del cache
        free_memory()


def sdxl_train(ctx: Ctx) -> str:
    """SDXL LoRA training s/step at 1024 px: :mod:`gpu_check_sdxl`."""
    import gpu_check_sdxl

    return gpu_check_sdxl.sdxl_train(ctx)


def sdxl_user(ctx: Ctx) -> str:
    """An SDXL user's portrait on the template: :mod:`gpu_check_sdxl`."""
    import gpu_check_sdxl

    return gpu_check_sdxl.sdxl_user(ctx)


def sdxl(ctx: Ctx) -> str:
    """Text-to-photo (SDXL template, then the portrait): :mod:`gpu_check_sdxl`."""
    import gpu_check_sdxl

    return gpu_check_sdxl.sdxl(ctx)
