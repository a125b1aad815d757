"""SDXL face-LoRA training benchmark: seconds per optimizer step against a bare SDXL UNet forward+backward.

Usage::

    python benchmarks/train_sdxl.py                            # tiny random SDXL, in memory, 64 px
    python benchmarks/train_sdxl.py --resolution 1024          # tiny at SDXL's training size
    python benchmarks/train_sdxl.py --full-size --resolution 128 --rank 16 --steps 2
                                                               # SDXL base 1.0's architecture, random
                                                               # weights made in memory (no folder)

The trainer is :class:`easyphoto.diffusion.lora_trainer_sdxl.SDXLLoraTrainer` with the default
:class:`~easyphoto.config.TrainConfig` (LoRA rank 128 / alpha 64 on the UNet and *both* text encoders,
AdamW, gradient clipping) except ``--resolution``, ``--rank`` and ``--gradient-checkpointing``, on a
synthetic dataset of two images, with ``grad_accum=1`` (one micro-batch = one optimizer step). The cache
is an :class:`~easyphoto.diffusion.sdxl.SDXLCache` over modules built in memory: on a CPU float32, on CUDA
float16 (fp16 mixed precision, trainable LoRA weights float32).

In each round, after ``--warmup`` (1) untimed rounds, three timings run one after the other, their order
rotated from round to round (CUDA synchronised around each); the median of ``--steps`` rounds is printed:

* **train step**: ``SDXLLoraTrainer.step()`` (``sample_batch`` from the cached latents, both encoders +
  UNet forward, backward, clipping, AdamW step, ``zero_grad``);
* **bare UNet**: forward + ``loss.backward()`` of the same UNet (adapters attached) on the same noisy
  latents with the prompt embeddings, pooled embedding and size numbers precomputed: no text encoders,
  no optimizer, no clipping, no sampling;
* **UNet + TEs**: the same with both text encoders (and their LoRAs) run forward and backward too.

``train step / bare UNet`` is the loop's overhead (target ≤ 1.15, as for SD1.5); training both text
encoders' LoRAs is an intentional cost (EasyPhoto does), so ``train step / (UNet + TEs)`` is printed too.
The VAE encode (once per image and flip: the latents are cached) and one validation render
(``--validation-steps`` steps at the training size, tiny only unless ``--render``) are printed beside.
Peak memory is the process' peak RSS and, on CUDA, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from common import peak_rss_gb, synced_clock

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ("step", "bare_unet", "bare_unet_te")


def components(full_size: bool, dtype: object) -> tuple[dict[str, object], float]:
    """Random SDXL modules (tiny or full-size; full-size made in ``dtype`` at once, so the peak stays
    near one float32 UNet) and two tokenizers, built in memory; seconds taken."""
    import torch
    from transformers import CLIPTokenizer

    from easyphoto.diffusion.tiny import write_tiny_tokenizer
    from easyphoto.diffusion.tiny_sdxl import sdxl_components

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_tiny_tokenizer(tmp)
        tokenizers = [CLIPTokenizer.from_pretrained(tmp) for _ in range(2)]
    torch.manual_seed(0)
    parts = sdxl_components(full_size, vocab_size, dtype if full_size else None)
    parts.update(tokenizer=tokenizers[0], tokenizer_2=tokenizers[1])
    return parts, time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, object]:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from train import synthetic_data

    from easyphoto.config import ModelConfig, TrainConfig
    from easyphoto.diffusion.lora_trainer_sdxl import SDXLLoraTrainer
    from easyphoto.diffusion.sdxl import SDXLCache
    from easyphoto.diffusion.sources import pick_device_dtype

    row: dict[str, object] = {"model": "full-size" if args.full_size else "tiny"}
    device, dtype = pick_device_dtype(args.device, None)
    parts, row["build_s"] = components(args.full_size, dtype)
    cache = SDXLCache.from_components(
        parts, config=ModelConfig(template_model="<in memory>"), device=str(device)
    )
    dev = cache.device
    cuda = dev.type == "cuda"
    now = synced_clock(dev)

    data = synthetic_data(2, args.resolution)
    cfg = TrainConfig(
        resolution=args.resolution,
        validation_size=args.resolution,
        validation_steps=args.validation_steps,
        validation_seeds=(1,),
        grad_accum=1,
        rank=args.rank,
        alpha=args.rank / 2,  # EasyPhoto's scale 0.5 (rank 128, alpha 64)
        gradient_checkpointing=args.gradient_checkpointing,
    )
    row["config"] = cfg
    trainer = SDXLLoraTrainer(cache, data, cfg)
    t0 = now()
    for i in range(len(data)):
        for flip in (False, True):
            trainer._latents(i, flip)  # cached: a one-off cost per image and flip
    row["vae_encode_s"] = (now() - t0) / (2 * len(data))
    row["lora_params_m"] = sum(p.numel() for p in trainer.params["unet"] + trainer.params["text"]) / 1e6
    params = trainer.params["unet"] + trainer.params["text"]

    # One fixed batch for the bare passes, prepared exactly as SDXLLoraTrainer.loss does.
    gen = torch.Generator().manual_seed(0)
    batch = trainer.sample_batch()
    acc = trainer.accelerator
    unet = trainer.unet
    dtype = unet.dtype
    latents = batch["latents"].to(acc.device)
    noise = torch.randn(latents.shape, generator=gen).to(acc.device)
    n_train = trainer.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, n_train, (latents.shape[0],), generator=gen).to(acc.device).long()
    noisy = trainer.noise_scheduler.add_noise(latents, noise, timesteps).to(dtype)
    time_ids = batch["time_ids"].to(acc.device, dtype)
    with torch.no_grad():
        embeds, pooled = trainer.encode_prompt(batch["captions"])

    def bare(with_te: bool) -> float:
        t0 = now()
        if with_te:
            e, p = trainer.encode_prompt(batch["captions"])
        else:
            e, p = embeds, pooled
        added = {"text_embeds": p.to(dtype), "time_ids": time_ids}
        pred = unet(noisy, timesteps, e.to(dtype), added_cond_kwargs=added, return_dict=False)[0]
        F.mse_loss(pred.float(), noise.float(), reduction="mean").backward()
        elapsed = now() - t0
        for p_ in params:
            p_.grad = None
        return elapsed

    def step() -> float:
        t0 = now()
        trainer.step()
        return now() - t0

    times: dict[str, list[float]] = {k: [] for k in KINDS}
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    for r in range(args.warmup + args.steps):
        order = KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]
        last = {}
        for kind in order:
            t = step() if kind == "step" else bare(kind == "bare_unet_te")
            last[kind] = t
            if r >= args.warmup:
                times[kind].append(t)
        if args.verbose:
            tag = " (warm-up)" if r < args.warmup else ""
            print(f"round {r}{tag}: " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()), flush=True)
    row["times"] = {k: statistics.median(v) for k, v in times.items()}
    row["all_times"] = times
    if args.render if args.render is not None else not args.full_size:
        t0 = now()
        image = trainer.render_validation()[0]
        row["render_s"] = now() - t0
        row["render_ok"] = bool(
            image.shape == (args.resolution, args.resolution, 3) and np.isfinite(image).all()
        )
    trainer.remove_adapters()
    row["peak_rss_gb"] = peak_rss_gb()
    if cuda:
        row["vram_gb"] = torch.cuda.max_memory_allocated(dev) / 1024**3
    row["device"] = f"{dev} {str(cache.dtype).removeprefix('torch.')}, {torch.get_num_threads()} thread(s)"
    row["mixed_precision"] = acc.mixed_precision
    return row


def report(row: dict[str, object], args: argparse.Namespace) -> None:
    from easyphoto.config import TrainConfig

    cfg: TrainConfig = row["config"]  # type: ignore[assignment]
    t: dict[str, float] = row["times"]  # type: ignore[assignment]
    rounds: dict[str, list[float]] = row["all_times"]  # type: ignore[assignment]
    ratio, ratio_te = t["step"] / t["bare_unet"], t["step"] / t["bare_unet_te"]
    paired = statistics.median([a / b for a, b in zip(rounds["step"], rounds["bare_unet"], strict=True)])
    size = f"{cfg.resolution}×{cfg.resolution} px"
    print(
        f"\nEasyPhoto SDXL LoRA training benchmark — {row['device']}, mixed precision "
        f"{row['mixed_precision']}, {size}, batch {cfg.batch_size}, grad_accum 1"
    )
    print(
        f"LoRA rank {cfg.rank} / alpha {cfg.alpha:g} on UNet + both text encoders: "
        f"{row['lora_params_m']:.1f} M trainable parameters; gradient checkpointing "
        f"{'on' if cfg.gradient_checkpointing else 'off'}"
    )
    print(
        f"model {row['model']} (random weights built in memory in {row['build_s']:.1f} s); VAE encode "
        f"{row['vae_encode_s']:.3f} s per image (once: latents are cached); median of {args.steps} rounds "
        f"after {args.warmup} warm-up\n"
    )
    print(
        "| model | px | s/optimizer step | bare UNet fwd+bwd s | ratio | UNet+TEs fwd+bwd s "
        "| ratio vs UNet+TEs | peak RSS GB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| SDXL {row['model']} | {cfg.resolution} | {t['step']:.3f} | {t['bare_unet']:.3f} | {ratio:.2f} "
        f"| {t['bare_unet_te']:.3f} | {ratio_te:.2f} | {row['peak_rss_gb']:.2f} |"
    )
    met = "met" if ratio <= 1.15 else "NOT met"
    print(f"\n(target ratio ≤ 1.15: {met}; median of the per-round ratios {paired:.2f})")
    spread = ", ".join(f"{k} {min(v):.3f}–{max(v):.3f}" for k, v in rounds.items())
    print(f"spread over rounds (s): {spread}")
    if "render_s" in row:
        ok = "ok" if row["render_ok"] else "NOT ok"
        print(
            f"one validation render ({cfg.validation_steps} steps, CFG, {cfg.validation_size} px): "
            f"{row['render_s']:.2f} s ({ok})"
        )
    if "vram_gb" in row:
        print(f"peak VRAM {row['vram_gb']:.2f} GB allocated")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--full-size", action="store_true", help="SDXL base 1.0's architecture (random weights)"
    )
    parser.add_argument(
        "--resolution", type=int, default=64, help="training resolution in px (64; SDXL's: 1024)"
    )
    parser.add_argument(
        "--rank", type=int, default=128, help="LoRA rank (TrainConfig's 128; alpha = rank / 2)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed rounds (tiny: 10, full-size: 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (1)")
    parser.add_argument("--validation-steps", type=int, default=2, help="steps of the validation render (2)")
    parser.add_argument(
        "--render", action=argparse.BooleanOptionalAction, default=None, help="time a validation render"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true", help="TrainConfig option")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--device", default=None, help="cpu / cuda (auto)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every round")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    args.steps = args.steps or (2 if args.full_size else 10)
    report(run(args), args)


if __name__ == "__main__":
    main()
