"""The paths the GPU check runs, each once: a function of the shared :class:`Ctx` that returns a one-line
detail (PASS), raises :class:`Skip` (SKIP, with the reason) or raises anything else (FAIL).

Training goes through :func:`easyphoto.workflows.train` and portraits through
:func:`easyphoto.workflows.portrait_generator`, on one :class:`~easyphoto.diffusion.ModelCache` (the
stub face analyzer of :mod:`gpu_check_setup` injected), so what runs is the studio's own code. The
training benchmark is ``benchmarks/train.py``'s ``run``; the portrait timings use
``benchmarks/generate.py``'s probe (per-step UNet + ControlNet times inside ``pipe()``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

USER = "gpucheck"
#: EasyPhoto's training length: what s/optimizer step is extrapolated to.
FULL_STEPS = 800
TARGET_TRAIN_S = 180.0  # 800 steps on one H100
TARGET_TRAIN_GB = 12.0  # peak max_memory_allocated while training
TARGET_PORTRAIT_S = 3.0  # one portrait, default steps, one H100


class Skip(Exception):
    """Raised by a path that cannot run here; the message says why."""


@dataclass
class Ctx:
    """What the paths share: the plan, where things are, the loaded models and earlier results."""

    dry_run: bool
    device: str
    model_dir: Path
    work: Path
    train_config: dict[str, Any]
    generate_config: dict[str, Any]
    bench: dict[str, int]
    template_size: int
    metric: Callable[..., None]
    details: list[tuple[str, str]]
    analyzer: Any = None
    dataset: Path | None = None
    template: Any = None
    lcm_path: Path | None = None
    cache: Any = None
    gen: Any = None
    probe: Any = None
    user: str = USER
    portrait: Any = None
    portrait_peak_gb: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def home(self) -> Path:
        return self.work / "home"

    def model_config(self, **changes: Any) -> Any:
        from easyphoto.config import ModelConfig

        lcm = str(self.lcm_path) if self.lcm_path else None
        return ModelConfig(base_model=str(self.model_dir), local_files_only=True, lcm_lora=lcm, **changes)

    def new_cache(self, **changes: Any) -> Any:
        from easyphoto.diffusion.models import ModelCache

        return ModelCache(self.model_config(**changes), device=self.device)


# ---------------------------------------------------------------------------------------------- helpers


def sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float | None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 1024**3
    return None


def free_memory() -> None:
    """Collect garbage and give cached CUDA blocks back (between paths)."""
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def gb(value: float | None) -> str:
    return "n/a (CPU)" if value is None else f"{value:.2f} GB"


# ------------------------------------------------------------------------------------------------ setup


def env(ctx: Ctx) -> str:
    """Versions, the device, and that the studio's modules import (diffusers and our package)."""
    import importlib.metadata as md

    import cv2
    import torch

    import easyphoto.workflows  # noqa: F401  (our package imports with the carried wheels)
    from easyphoto.diffusion.models import ModelCache  # noqa: F401  (diffusers imports)

    if not ctx.dry_run and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: run benchmarks/gpu_check.sh --dry-run on a CPU machine")
    names = ("diffusers", "transformers", "peft", "accelerate", "huggingface_hub", "pydantic", "numpy")
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            versions.append(f"{name} missing")
    try:
        import bitsandbytes

        versions.append(f"bitsandbytes {bitsandbytes.__version__}")
    except Exception:  # ImportError, or a CUDA library it cannot load
        versions.append("bitsandbytes absent")
    dev = "CPU"
    if torch.cuda.is_available() and not ctx.dry_run:
        props = torch.cuda.get_device_properties(0)
        dev = f"{props.name}, {props.total_memory / 1024**3:.0f} GiB, CUDA {torch.version.cuda}"
    return f"torch {torch.__version__} on {dev}; opencv {cv2.__version__}; " + ", ".join(versions)


def build(ctx: Ctx) -> str:
    """The random SD1.5 folder, the LCM-LoRA of the right shapes, the dataset and the template."""
    from gpu_check_setup import build_model, make_template, stub_analyzer, write_dataset, write_lcm_lora

    took, what = build_model(ctx.model_dir, full_size=not ctx.dry_run)
    ctx.lcm_path = ctx.work / "lcm-lora" / "pytorch_lora_weights.safetensors"
    modules, params = write_lcm_lora(ctx.model_dir, ctx.lcm_path)
    ctx.dataset = write_dataset(ctx.work / "dataset", int(ctx.train_config.get("resolution", 512)))
    ctx.template = make_template(ctx.template_size)
    ctx.analyzer = stub_analyzer()
    mb = ctx.lcm_path.stat().st_size / 1e6
    built = f"built in {took:.1f} s" if took is not None else "already there"
    return (
        f"{what} ({built}); LCM-LoRA rank 64 on {modules} UNet modules, {params / 1e6:.1f} M params, "
        f"{mb:.0f} MB fp16; dataset of 3 synthetic photos; face analysis: stub (no dlib)"
    )


# --------------------------------------------------------------------------------------------- training


def train_benchmark(ctx: Ctx) -> str:
    """``benchmarks/train.py``: s per optimizer step (grad_accum 4), the bare-UNet ratio, peak memory."""
    import train as bench  # benchmarks/train.py

    from easyphoto.config import TrainConfig

    args = argparse.Namespace(
        device=ctx.device, resolution=int(ctx.train_config.get("resolution", 512)), batch_size=1,
        gradient_checkpointing=False, warmup=ctx.bench["warmup"], steps=ctx.bench["steps"],
        grad_accum=TrainConfig().grad_accum, accum_steps=None, verbose=False,
    )  # fmt: skip
    label = "tiny" if ctx.dry_run else "full-size"
    row = bench.run(args, ctx.model_dir, label)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench.report(row, args, None)
    ctx.details.append(("training benchmark (benchmarks/train.py report)", out.getvalue()))
    t: dict[str, float] = row["times"]  # type: ignore[assignment]
    per_step = float(row["accum_s"])  # type: ignore[arg-type]
    ratio = t["step"] / t["bare_unet"]
    target = None if ctx.dry_run else TARGET_TRAIN_S
    ctx.metric("train_s_per_optimizer_step", per_step, "s", note=f"grad_accum {row['accum']}, batch 1")
    ctx.metric(f"train_{FULL_STEPS}_steps_extrapolated", FULL_STEPS * per_step, "s", target=target)
    ctx.metric(
        "train_loop_vs_bare_unet_ratio",
        ratio,
        "",
        target=None if ctx.dry_run else 1.15,
        note="LoraTrainer.step / UNet fwd+bwd",
    )
    ctx.metric(
        "train_loop_vs_bare_unet_te_ratio", t["step"] / t["bare_unet_te"], "", note="TE LoRA trained too"
    )
    vram = row.get("vram_gb")
    ctx.metric("train_peak_max_memory_allocated", vram, "GB", target=None if ctx.dry_run else TARGET_TRAIN_GB)
    return (
        f"{row['lora_params_m']:.1f} M LoRA params, mixed precision {row['mixed_precision']}: "
        f"{per_step:.3f} s/optimizer step → {FULL_STEPS} steps ≈ {FULL_STEPS * per_step / 60:.1f} min; "
        f"ratio to bare UNet {ratio:.2f}; peak {gb(vram)}"  # type: ignore[arg-type]
    )


def train_workflow(ctx: Ctx) -> str:
    """``workflows.train``: steps, validation renders (autocast on CUDA), checkpoints, fusion, user model."""
    import torch

    from easyphoto import workflows
    from easyphoto.config import TrainConfig

    ctx.cache = ctx.new_cache()
    cfg = TrainConfig(**ctx.train_config)
    calls = {"train": 0, "render": 0, "render_autocast": 0}

    def count(_module: Any, _args: Any) -> None:
        if torch.is_grad_enabled():
            calls["train"] += 1
        else:
            calls["render"] += 1
            calls["render_autocast"] += int(torch.is_autocast_enabled("cuda" if ctx.cuda else "cpu"))

    hook = ctx.cache.unet.register_forward_pre_hook(count)
    events: list[dict[str, Any]] = []
    reset_peak()
    t0 = time.perf_counter()
    try:
        result = workflows.train(
            ctx.user, ctx.dataset, cfg, cache=ctx.cache, analyzer=ctx.analyzer, home=ctx.home,
            on_event=events.append,
        )  # fmt: skip
    finally:
        hook.remove()
    wall = time.perf_counter() - t0
    peak = peak_gb()
    losses = [e["loss"] for e in events if e["type"] == "step"]
    if not losses or not all(np.isfinite(losses)):
        raise AssertionError(f"training losses not finite: {losses}")
    if not result.lora_path.is_file():
        raise AssertionError("no lora.safetensors written")
    if len(result.fused_steps) < 2:
        raise AssertionError(f"fusion not exercised: fused steps {result.fused_steps}")
    if ctx.cuda and calls["render_autocast"] != calls["render"]:
        raise AssertionError(f"validation renders outside autocast: {calls}")
    val_s = _validation_seconds(events)
    ctx.metric("train_workflow_peak_max_memory_allocated", peak, "GB", note="with validation renders")
    ctx.metric("validation_render_s", val_s, "s", note=f"{len(cfg.validation_seeds)} renders per validation")
    fusion = result.meta.get("fusion", {})
    return (
        f"{result.steps} optimizer steps × grad_accum {cfg.grad_accum} at {cfg.resolution} px, "
        f"{len(result.validations)} validations ({calls['render']} UNet calls, "
        f"{calls['render_autocast']} under autocast, {val_s:.2f} s each), fused steps {result.fused_steps} "
        f"({fusion.get('method')}, rank {fusion.get('rank')}, SVD error {fusion.get('max_relative_error')}); "
        f"{wall:.1f} s in all; peak {gb(peak)}"
    )


def _validation_seconds(events: list[dict[str, Any]]) -> float:
    """Median time from a step event to the validation event right after it."""
    spans = [
        b["time"] - a["time"]
        for a, b in zip(events[:-1], events[1:], strict=True)
        if a["type"] == "step" and b["type"] == "validation"
    ]
    return float(np.median(spans)) if spans else float("nan")


def optimizer(ctx: Ctx, eight_bit: bool) -> str:
    """A few optimizer steps with fused AdamW (CUDA) or bitsandbytes' 8-bit AdamW: weights move, finite."""
    import torch

    from easyphoto.config import TrainConfig
    from easyphoto.diffusion.lora_trainer import LoraTrainer
    from easyphoto.errors import ConfigError
    from easyphoto.stages.train import load_training_data

    if ctx.cache is None:
        ctx.cache = ctx.new_cache()
    data = load_training_data(ctx.dataset)
    cfg = TrainConfig(**ctx.train_config).replace(grad_accum=1, use_8bit_adam=eight_bit)
    if eight_bit and not ctx.cuda:
        try:
            LoraTrainer(ctx.cache, data, cfg).remove_adapters()
        except ConfigError as exc:
            raise Skip(f"8-bit AdamW needs CUDA; on CPU the trainer refuses it ({exc})") from None
        raise AssertionError("use_8bit_adam on CPU was not refused")
    if eight_bit:
        try:
            import bitsandbytes  # noqa: F401
        except Exception as exc:  # not carried, or its CUDA library does not load
            raise Skip(
                f"bitsandbytes not importable ({type(exc).__name__}: {exc}); see gpu_wheels.sh"
            ) from None
    trainer = LoraTrainer(ctx.cache, data, cfg)
    try:
        acc = trainer.accelerator
        opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        before = torch.cat([p.detach().float().flatten() for p in trainer.params])
        skipped, steps, t0 = 0, 0, time.perf_counter()
        for steps in range(1, 9):  # fp16's gradient scaler may skip the first steps (inf gradients)
            trainer.step()
            skipped += int(acc.optimizer_step_was_skipped)
            if steps > skipped:
                break
        sync()
        per_step = (time.perf_counter() - t0) / steps
        after = torch.cat([p.detach().float().flatten() for p in trainer.params])
        moved = float((after - before).abs().max())
        scaler = getattr(acc, "scaler", None)
        detail = (
            f"{type(opt).__name__} (fused={opt.defaults.get('fused')}), mixed precision "
            f"{acc.mixed_precision}{', grad scaler ' + str(scaler.get_scale()) if scaler else ''}: "
            f"{steps} step(s), {skipped} skipped, {per_step:.3f} s/step, max |Δw| {moved:.2e}"
        )
    finally:
        trainer.remove_adapters()
    if not torch.isfinite(after).all() or moved == 0.0:
        raise AssertionError(f"LoRA weights did not move or are not finite: {detail}")
    if (
        ctx.cuda
        and not eight_bit
        and (opt.defaults.get("fused") is not True or acc.mixed_precision != "fp16")
    ):
        raise AssertionError(f"expected fused AdamW under fp16 mixed precision: {detail}")
    if not ctx.cuda:
        raise Skip(f"fused AdamW is CUDA-only; the same check ran on CPU with {detail}")
    return detail
