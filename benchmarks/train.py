"""Face-LoRA training benchmark: seconds per optimizer step, peak memory, and what the loop costs.

Usage::

    python benchmarks/train.py                           # tiny random model (built in a temp folder)
    python benchmarks/train.py --full-size DIR --steps 2 # real SD1.5 architecture, random weights
                                                         # (built into DIR if missing: ~10 GB)

The trainer is :class:`easyphoto.diffusion.lora_trainer.LoraTrainer` with the default
:class:`~easyphoto.config.TrainConfig`
(LoRA rank 128 / alpha 64 on the UNet *and* the text encoder, AdamW, gradient clipping) at
``--resolution`` px (512), batch ``--batch-size`` (1), on a synthetic dataset of two images. Device and
dtype are :class:`~easyphoto.diffusion.ModelCache`'s choice (CUDA float16 with fp16 mixed precision when
available, else CPU float32); ``--gradient-checkpointing`` is passed through ``TrainConfig``.

Measured after ``--warmup`` (1) untimed rounds, median of ``--steps`` rounds; in each round the four
timings below run one after the other, their order rotated from round to round (CUDA is synchronised
around every timing):

* **train step**: ``LoraTrainer.step()`` with ``grad_accum=1`` (one micro-batch = one optimizer step:
  ``sample_batch``, text encoder + UNet forward, backward, clipping, AdamW step, ``zero_grad``);
* **bare UNet**: forward + ``loss.backward()`` of the same UNet (LoRA adapters attached, same
  latents shape, timesteps, encoder hidden states precomputed) — no text encoder, no optimizer, no
  clipping, no sampling;
* **UNet + TE**: the same with the text encoder (and its LoRA) run forward and backward as well;
* **instrumented step**: a copy of ``LoraTrainer.step`` with a clock between its parts (the text
  encoder's forward is timed by hooks), to show where the time beyond the bare UNet goes.

The ratio ``train step / bare UNet`` is the loop's overhead (target ≤ 1.15); training the text encoder's
LoRA is an intentional cost (EasyPhoto does it), so ``train step / (UNet + TE)`` is printed too.
Then a trainer with the default ``--grad-accum`` (4) is timed per optimizer step (on a CPU with the
full-size model this is estimated from the micro-batch parts instead, unless ``--accum-steps N``), and
EasyPhoto's 800-step run is extrapolated as 800 × that (validation renders, VAE encoding, load and
fusion excluded; the output says so). The latents of the dataset are encoded before timing (the trainer
caches them), and that one-off cost is printed per image.

Peak memory is the process' peak RSS (``resource.getrusage``) and, on CUDA,
``torch.cuda.max_memory_allocated``. torch uses ``--threads`` threads (1).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from pathlib import Path

from common import add_model_args, ensure_model, peak_rss_gb, synced_clock

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ("step", "bare_unet", "bare_unet_te", "te_fwd_bwd", "instrumented")
PARTS = ("sample_batch", "te_forward", "unet_forward", "backward", "clip", "optimizer", "zero_grad", "other")


def synthetic_data(n: int, size: int):
    """``n`` smooth pictures with a face-sized disc, ``size`` px square (so the trainer caches latents)."""
    import numpy as np

    from easyphoto.config import TRIGGER_CAPTION
    from easyphoto.stages.train import TrainingData

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    images = []
    for i in range(n):
        pic = np.stack([x * 255 // size, y * 255 // size, 255 - x * 128 // size], axis=2).astype(np.uint8)
        cx = size // 2 + (i - n // 2) * size // 16
        pic[(x - cx) ** 2 + (y - size // 2) ** 2 < (size // 4) ** 2] = (230, 180, 150)
        noise = rng.integers(-8, 9, pic.shape)
        images.append(np.clip(pic.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return TrainingData(
        images=images,
        captions=[TRIGGER_CAPTION] * n,
        mean_embedding=None,
        ref_image=None,
        source="synthetic",
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(args: argparse.Namespace, model_dir: Path, label: str) -> dict[str, object]:
    import torch
    import torch.nn.functional as F

    from easyphoto.config import ModelConfig, TrainConfig
    from easyphoto.diffusion.lora_trainer import LoraTrainer
    from easyphoto.diffusion.models import ModelCache

    row: dict[str, object] = {"model": label}
    start = time.perf_counter()
    cache = ModelCache(ModelConfig(base_model=str(model_dir), local_files_only=True), device=args.device)
    cache.unet  # noqa: B018  (load the base model now, not inside a timing)
    row["load_s"] = time.perf_counter() - start
    dev, dtype = cache.device, cache.dtype
    cuda = dev.type == "cuda"
    now = synced_clock(dev)

    data = synthetic_data(2, args.resolution)
    cfg = TrainConfig(
        resolution=args.resolution,
        batch_size=args.batch_size,
        grad_accum=1,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    row["config"] = cfg

    def new_trainer(config: TrainConfig) -> tuple[LoraTrainer, float]:
        trainer = LoraTrainer(cache, data, config)
        # Encode every (image, flip) posterior now: the trainer caches them, so in a real run this is
        # a one-off cost per image, not a per-step one.
        t0 = now()
        for i in range(len(data)):
            for flip in (False, True):
                trainer._latent_dist(i, flip)
        return trainer, (now() - t0) / (2 * len(data))

    trainer, row["vae_encode_s"] = new_trainer(cfg)
    row["lora_params_m"] = sum(p.numel() for p in trainer.params) / 1e6
    acc = trainer.accelerator
    unet, te = trainer.unet, trainer.text_encoder
    unet_dtype = trainer._unwrap(unet).dtype

    # One fixed batch for the bare forward/backward passes, prepared exactly as LoraTrainer.loss does.
    gen = torch.Generator().manual_seed(0)
    batch = trainer.sample_batch()
    latents = batch["latents"].to(acc.device)
    noise = torch.randn(latents.shape, generator=gen).to(acc.device)
    n_train = trainer.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, n_train, (latents.shape[0],), generator=gen).to(acc.device).long()
    noisy = trainer.noise_scheduler.add_noise(latents, noise, timesteps).to(unet_dtype)
    input_ids = batch["input_ids"].to(acc.device)
    with torch.no_grad():
        hidden = te(input_ids, return_dict=False)[0].to(unet_dtype)

    def clear_grads() -> None:
        for p in trainer.params:
            p.grad = None

    # Text encoder alone: forward, then backward of a fixed random projection of its output (the UNet's
    # cross-attention would send a gradient of this shape back).
    te_grad = torch.randn(hidden.shape, generator=gen).to(acc.device) / hidden.numel() ** 0.5

    def te_only() -> float:
        t0 = now()
        out = te(input_ids, return_dict=False)[0]
        (out.float() * te_grad).sum().backward()
        elapsed = now() - t0
        clear_grads()
        return elapsed

    def bare(with_te: bool) -> float:
        t0 = now()
        cond = te(input_ids, return_dict=False)[0].to(unet_dtype) if with_te else hidden
        pred = unet(noisy, timesteps, cond, return_dict=False)[0]
        F.mse_loss(pred.float(), noise.float(), reduction="mean").backward()
        elapsed = now() - t0
        clear_grads()
        return elapsed

    # Text-encoder forward time, by hooks (only while the instrumented step runs).
    te_clock: dict[str, float] = {}
    te_module = trainer._unwrap(te)
    hooks = [
        te_module.register_forward_pre_hook(
            lambda *_: te_clock.__setitem__("start", now()) if te_clock else None
        ),
        te_module.register_forward_hook(lambda *_: te_clock.__setitem__("end", now()) if te_clock else None),
    ]
    skipped = [0]

    def instrumented() -> dict[str, float]:
        """LoraTrainer.step, line by line, with a clock between the parts."""
        parts: dict[str, float] = {}
        te_clock["on"] = 1.0
        t0 = now()
        b = trainer.sample_batch()
        t1 = now()
        with acc.accumulate(unet, te):
            loss = trainer.loss(b)
            t2 = now()
            acc.backward(loss)
            t3 = now()
            if acc.sync_gradients:
                acc.clip_grad_norm_(trainer.params, trainer.config.grad_clip)
            t4 = now()
            trainer.optimizer.step()
            t5 = now()
            trainer.optimizer.zero_grad(set_to_none=True)
            t6 = now()
        skipped[0] += int(acc.optimizer_step_was_skipped)
        if acc.sync_gradients:
            trainer.global_step += 1
        float(loss.detach())
        t7 = now()
        parts["sample_batch"] = t1 - t0
        parts["te_forward"] = te_clock["end"] - te_clock["start"]
        parts["unet_forward"] = (t2 - t1) - parts["te_forward"]
        parts["backward"] = t3 - t2
        parts["clip"] = t4 - t3
        parts["optimizer"] = t5 - t4
        parts["zero_grad"] = t6 - t5
        parts["other"] = t7 - t6
        parts["total"] = t7 - t0
        te_clock.clear()
        return parts

    def step() -> float:
        t0 = now()
        trainer.step()
        return now() - t0

    times: dict[str, list[float]] = {k: [] for k in KINDS}
    last: dict[str, float] = {}
    breakdown: dict[str, list[float]] = {k: [] for k in (*PARTS, "total")}
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    for r in range(args.warmup + args.steps):
        order = KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]
        for kind in order:
            if kind == "step":
                t = step()
            elif kind == "bare_unet":
                t = bare(False)
            elif kind == "bare_unet_te":
                t = bare(True)
            elif kind == "te_fwd_bwd":
                t = te_only()
            else:
                parts = instrumented()
                t = parts["total"]
                if r >= args.warmup:
                    for k, v in parts.items():
                        breakdown[k].append(v)
            last[kind] = t
            if r >= args.warmup:
                times[kind].append(t)
        if args.verbose:
            tag = " (warm-up)" if r < args.warmup else ""
            print(f"round {r}{tag}: " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()), flush=True)
    row["times"] = {k: median(v) for k, v in times.items()}
    row["all_times"] = times
    row["parts"] = {k: median(v) for k, v in breakdown.items()}
    row["skipped"] = skipped[0]
    row["rss_accum1_gb"] = peak_rss_gb()
    if cuda:
        row["vram_accum1_gb"] = torch.cuda.max_memory_allocated(dev) / 1024**3

    # Default gradient accumulation: seconds per optimizer step.
    accum = args.grad_accum
    accum_steps = args.accum_steps
    if accum_steps is None:
        accum_steps = 0 if (label != "tiny" and not cuda) else args.steps
    parts = row["parts"]
    opt_part = parts["clip"] + parts["optimizer"] + parts["zero_grad"]
    micro = row["times"]["step"] - opt_part
    row["accum"] = accum
    row["accum_estimate_s"] = accum * micro + opt_part
    for hook in hooks:
        hook.remove()
    if accum_steps > 0 and accum > 1:
        trainer.remove_adapters()
        del trainer, acc, unet, te, te_module
        gc.collect()
        trainer4, _ = new_trainer(cfg.replace(grad_accum=accum))
        per_opt: list[float] = []
        for r in range(args.warmup + accum_steps):
            before = trainer4.global_step
            t0 = now()
            for _ in range(accum):
                trainer4.step()
            elapsed = now() - t0
            assert trainer4.global_step == before + 1, "one optimizer step per grad_accum micro-batches"
            if r >= args.warmup:
                per_opt.append(elapsed)
        row["accum_s"] = median(per_opt)
        row["accum_measured"] = True
    else:
        row["accum_s"] = row["accum_estimate_s"] if accum > 1 else row["times"]["step"]
        row["accum_measured"] = accum == 1
    row["peak_rss_gb"] = peak_rss_gb()
    if cuda:
        row["vram_gb"] = torch.cuda.max_memory_allocated(dev) / 1024**3
        row["vram_reserved_gb"] = torch.cuda.max_memory_reserved(dev) / 1024**3
    row["device"] = f"{dev} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} thread(s)"
    row["mixed_precision"] = cfg.mixed_precision or ("fp16" if cuda else "no")
    return row


def report(row: dict[str, object], args: argparse.Namespace, build_s: float | None) -> None:
    from easyphoto.config import TrainConfig

    cfg: TrainConfig = row["config"]  # type: ignore[assignment]
    t: dict[str, float] = row["times"]  # type: ignore[assignment]
    p: dict[str, float] = row["parts"]  # type: ignore[assignment]
    target_steps = TrainConfig().max_steps_cap
    step, bare_u, bare_ute = t["step"], t["bare_unet"], t["bare_unet_te"]
    ratio, ratio_te = step / bare_u, step / bare_ute
    rounds: dict[str, list[float]] = row["all_times"]  # type: ignore[assignment]
    paired = median([a / b for a, b in zip(rounds["step"], rounds["bare_unet"], strict=True)])
    paired_te = median([a / b for a, b in zip(rounds["step"], rounds["bare_unet_te"], strict=True)])

    print(
        f"\nEasyPhoto LoRA training benchmark — {row['device']}, mixed precision {row['mixed_precision']}, "
        f"{cfg.resolution}×{cfg.resolution} px, batch {cfg.batch_size}"
    )
    print(
        f"LoRA rank {cfg.rank} / alpha {cfg.alpha:g} on UNet + text encoder: {row['lora_params_m']:.1f} M "
        f"trainable parameters; gradient checkpointing {'on' if cfg.gradient_checkpointing else 'off'}"
    )
    build = f"built in {build_s:.1f} s" if build_s is not None else "existing folder"
    print(
        f"model {row['model']} ({build}), load {row['load_s']:.2f} s; VAE encode {row['vae_encode_s']:.3f} s "
        f"per image (once: latents are cached); median of {args.steps} after {args.warmup} warm-up round(s)\n"
    )
    print("| model | s/optimizer step | bare UNet fwd+bwd s | ratio | ratio vs UNet+TE | peak RSS GB |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {row['model']} | {step:.3f} | {bare_u:.3f} | {ratio:.2f} | {ratio_te:.2f} | "
        f"{row['rss_accum1_gb']:.2f} |"
    )
    print(
        f"\n(s/optimizer step: LoraTrainer.step with grad_accum=1; UNet + TE fwd+bwd: {bare_ute:.3f} s; "
        f"target ratio ≤ 1.15: {'met' if ratio <= 1.15 else 'NOT met'})"
    )

    print(
        "\nWhere a training step goes (instrumented copy of LoraTrainer.step, median, "
        f"total {p['total']:.3f} s):\n"
    )
    print("| part | s | share |")
    print("|---|---|---|")
    for name in PARTS:
        print(f"| {name} | {p[name]:.4f} | {100 * p[name] / p['total']:.1f}% |")
    te_fb = t["te_fwd_bwd"]
    overhead = step - bare_u
    opt = p["clip"] + p["optimizer"] + p["zero_grad"]
    rest = overhead - te_fb - opt - p["sample_batch"]
    print(
        f"\nOverhead over the bare UNet: {overhead:.3f} s ({100 * overhead / bare_u:.1f}%) = text encoder "
        f"fwd+bwd with LoRA {te_fb:.3f} s (timed alone; TE forward in the step {p['te_forward']:.4f} s; "
        f"UNet+TE − UNet {bare_ute - bare_u:.3f} s) + clip + AdamW + zero_grad {opt:.4f} s + sample_batch "
        f"{p['sample_batch']:.4f} s + rest {rest:.4f} s (loss.item, accumulate context, timing noise)"
    )
    spread = ", ".join(f"{k} {min(v):.3f}–{max(v):.3f}" for k, v in rounds.items())
    print(
        f"Ratios of the medians above; medians of the per-round ratios: {paired:.2f} vs UNet, "
        f"{paired_te:.2f} vs UNet+TE. Spread over rounds (s): {spread}"
    )
    if row["skipped"]:
        print(f"(fp16: {row['skipped']} instrumented optimizer step(s) skipped by the gradient scaler)")

    accum = row["accum"]
    how = (
        "measured"
        if row["accum_measured"]
        else "estimated as grad_accum × (step − clip − AdamW − zero_grad) + those"
    )
    total = target_steps * row["accum_s"]  # type: ignore[operator]
    arch = "SD1.5" if row["model"] == "full-size" else "tiny-model"
    print(
        f"\nDefault grad_accum={accum} (batch {cfg.batch_size}): {row['accum_s']:.3f} s per optimizer step "
        f"({how}; estimate {row['accum_estimate_s']:.3f} s)"
    )
    print(
        f"{target_steps} steps of {arch} LoRA at {cfg.resolution} px ≈ {total:.0f} s = {total / 60:.1f} min "
        f"(extrapolated: {target_steps} × s/optimizer step; validation renders, VAE encoding, load and "
        "fusion not included)"
    )
    mem = f"peak RSS {row['peak_rss_gb']:.2f} GB"
    if "vram_gb" in row:
        mem += (
            f"; peak VRAM {row['vram_gb']:.2f} GB allocated ({row['vram_reserved_gb']:.2f} GB reserved), "
            f"{row['vram_accum1_gb']:.2f} GB in the grad_accum=1 part"
        )
    print(mem)
    if args.verbose:
        print("\nall timings:", {k: [round(x, 4) for x in v] for k, v in row["all_times"].items()})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--resolution", type=int, default=512, help="training resolution in px (512)")
    parser.add_argument("--batch-size", type=int, default=1, help="micro-batch size (1)")
    parser.add_argument("--steps", type=int, default=None, help="timed rounds (tiny: 10, full-size: 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (1)")
    parser.add_argument(
        "--grad-accum", type=int, default=None, help="grad_accum for s/optimizer step (TrainConfig's: 4)"
    )
    parser.add_argument(
        "--accum-steps",
        type=int,
        default=None,
        help="optimizer steps to time with --grad-accum (default --steps; 0 = estimate; CPU full-size: 0)",
    )
    parser.add_argument("--gradient-checkpointing", action="store_true", help="TrainConfig option")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--device", default=None, help="cpu / cuda / mps (auto)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every round")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from easyphoto.config import TrainConfig

    if args.grad_accum is None:
        args.grad_accum = TrainConfig().grad_accum
    full = args.full_size is not None
    args.steps = args.steps or (2 if full else 10)
    model_dir, build_s, _keep = ensure_model(args)
    row = run(args, model_dir, "full-size" if full else "tiny")
    report(row, args, build_s)


if __name__ == "__main__":
    main()
