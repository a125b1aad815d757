"""SDXL users' portraits: cold and warm call, stages, per-step time, loads, and the memory policy between
the two model families; tiny or full-size random SDXL.

Usage::

    python benchmarks/sdxl_portrait.py                      # tiny random SDXL (temp folder), 1024 px crops
    python benchmarks/sdxl_portrait.py --full-size DIR      # SDXL base's architecture, random weights
                                                            # (built into DIR if missing: ~9.5 GB, float16)
    python benchmarks/sdxl_portrait.py --full-size DIR --size 512 --dtype bfloat16
    python benchmarks/sdxl_portrait.py --full-size DIR --device cuda     # default steps, 1024 px
    python benchmarks/sdxl_portrait.py --first-steps 10 --second-steps 6 # fewer steps, extrapolated
    python benchmarks/sdxl_portrait.py --policies-only      # only the memory-policy comparison (3.)

What is measured, with :class:`easyphoto.stages.generate.PortraitGenerator` painting a user whose
``meta.json`` says ``"family": "sdxl"`` on an :class:`easyphoto.diffusion.sdxl.SDXLCache` (SDXL ControlNet
inpainting with the SDXL canny + openpose nets, the user's kohya SDXL LoRA, crops at
``GenerateConfig.sdxl_short_side``):

1. **Cold vs warm** — the first call of a fresh generator (SDXL UNet, VAE, both text encoders, both
   ControlNets, the LoRA and the face models loaded on first use) and a second call with the same
   generator; ``Portrait.timings`` split as first_diffusion, second_diffusion and other (everything
   else); inside each pass every denoising step (ControlNets + UNet, by module hooks, as
   ``generate.py``'s probe); the process' peak RSS; ``SDXLCache.load_count`` after each call (the warm
   call must load nothing) and whether the SD1.5 model was loaded (it must not be).
2. **Steps** — the tiny model and CUDA run the default steps (50 × 0.45 = 22 and 20 × 0.35 = 7 denoising
   steps) at ``--size`` (``sdxl_short_side``, 1024). A full-size model on a CPU runs 512 px crops and one
   denoising step per pass (``--size``, ``--first-steps``, ``--second-steps`` override); the default-step
   time at that size is then extrapolated as ``measured + (default − run) denoising steps × measured
   s/step`` per pass and labelled EXTRAPOLATED.
3. **Memory policy** (``ModelConfig.sdxl_memory``) — text-to-photo's switching: one process per policy
   (``--policies``; CPU: keep, free, none for full size; CUDA: keep, offload, free) paints the SDXL user,
   then an SD1.5 user (tiny SD1.5, ``build_tiny_model``), then the SDXL user again, on the same generator;
   per call: RSS after it, the peak RSS during it (VmHWM, the kernel's high-water mark, reset before each
   call through ``/proc/self/clear_refs``; the process' peak is the largest), on CUDA
   ``max_memory_allocated`` and ``memory_allocated``, the ``gen.memory.moves`` actions and seconds,
   whether the idle family's modules are really gone (weak references) and the loads. These runs use
   ``--policy-steps`` (1: one denoising step per pass; peak memory does not depend on the step count) at
   the same crop sizes; ``--policies-only`` skips 1 and 2. On a CPU "offload" has nowhere to move the
   idle family to: it moves nothing (as "keep"). With tiny weights RSS is activations and libraries: the
   policies differ by the idle family's weights only (full-size in float32: SDXL with its two
   ControlNets ~22 GB, SD1.5 with its four ~9 GB).

Users, in a temporary ``EASYPHOTO_HOME`` made in child processes: the SDXL user's LoRA is not trained, a
peft adapter of rank ``--lora-rank`` (128) on the UNet and both text encoders, freshly loaded from the
model folder (float16 for full-size), seeded random weights, exported with ``save_lora_kohya_sdxl`` as
SDXL training does; the SD1.5 user is ``generate.py``'s ``make_users``. Template: ``obama.jpg`` from
``--faces`` (``../shared/faces``), else skimage's astronaut. Portraits go to ``--out DIR`` if given.
torch uses ``--threads`` threads (1). Prints Markdown rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import peak_rss_gb
from generate import FACES, PASSES, Probe, denoise_steps, make_users

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

XL_USER = "xlalice"
SD15_USER = "alice"
#: What some ``Portrait.timings`` stages hold besides their name.
STAGE_NOTES = {
    "analysis": "template detection; 1st call: the face models load",
    "ip_adapter": "none for SDXL users, but set_lora runs in it",
}
#: The weights an SDXL portrait reads (ControlNets: the two SDXL has).
WEIGHT_DIRS = ("unet", "vae", "text_encoder", "text_encoder_2", "controlnet/canny", "controlnet/openpose")


# ------------------------------------------------------------------------------------------ helpers


def _complete(folder: Path) -> bool:
    """A finished SDXL build: model_index.json and both ControlNets (openpose AND canny)."""
    weights = "diffusion_pytorch_model.safetensors"
    return (folder / "model_index.json").is_file() and all(
        (folder / "controlnet" / n / weights).is_file() for n in ("openpose", "canny")
    )


def _in_child(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a fresh (spawned) process: its memory, and its peak RSS, stay its own."""
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(fn, args)
    finally:
        pool.close()
        pool.join()


def _status_gb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def rss_now_gb() -> float:
    """Resident memory of this process now, GB (Linux)."""
    return _status_gb("VmRSS")


def hwm_gb() -> float:
    """The peak resident memory of this process since the last :func:`reset_peak_rss`, GB (Linux).

    Not ``ru_maxrss``: the kernel folds the high-water mark into that whenever a thread exits, and the
    reset does not clear what it folded."""
    return _status_gb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def weights_gb(folder: Path, dtype: Any) -> float:
    """GB the weights of an SDXL portrait take in memory at ``dtype`` (the folder stores float16 when
    full-size, float32 when tiny)."""
    import torch
    from safetensors import safe_open

    total = 0.0
    for sub in WEIGHT_DIRS:
        for f in (folder / sub).glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                for key in st.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    total += math.prod(st.get_slice(key).get_shape())
    return total * torch.empty((), dtype=dtype).element_size() / 1024**3


def mem_available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


# --------------------------------------------------------------------------------- child processes


def build_sdxl(folder: str, full: bool) -> float:
    """Build the random SDXL folder (child process); seconds."""
    from easyphoto.diffusion.tiny_sdxl import build_tiny_sdxl

    t0 = time.perf_counter()
    build_tiny_sdxl(Path(folder), seed=0, full_size=full)
    return time.perf_counter() - t0


def build_sd15(folder: str) -> float:
    """Build the tiny SD1.5 folder (child process); seconds."""
    from easyphoto.diffusion.tiny import build_tiny_model

    t0 = time.perf_counter()
    build_tiny_model(Path(folder), seed=0)
    return time.perf_counter() - t0


def make_sdxl_user(
    model_dir: str, home: str, user_id: str, ref_path: str, rank: int, threads: int, half: bool
) -> dict[str, Any]:
    """Write ``users/<user_id>/`` with an untrained rank-``rank`` kohya SDXL LoRA whose shapes are the
    folder's UNet and text encoders' (child process: they are loaded here, float16 when ``half``)."""
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from easyphoto.config import TRIGGER_CAPTION
    from easyphoto.diffusion.lora import lora_config
    from easyphoto.diffusion.lora_sdxl import (
        SDXL_TEXT_ENCODER_TARGETS,
        SDXL_UNET_TARGETS,
        save_lora_kohya_sdxl,
    )
    from easyphoto.face.analyzer import FaceAnalyzer
    from easyphoto.imageio import load_image, save_png
    from easyphoto.users import user_dir

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    dtype = torch.float16 if half else torch.float32
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet", torch_dtype=dtype)
    te1 = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder", dtype=dtype)
    te2 = CLIPTextModelWithProjection.from_pretrained(model_dir, subfolder="text_encoder_2", dtype=dtype)
    alpha = rank / 2  # EasyPhoto: rank 128, alpha 64
    unet.add_adapter(lora_config(rank=rank, alpha=alpha, targets=SDXL_UNET_TARGETS))
    for te in (te1, te2):
        te.add_adapter(lora_config(rank=rank, alpha=alpha, targets=SDXL_TEXT_ENCODER_TARGETS))
    gen = torch.Generator().manual_seed(4321)
    params = 0
    with torch.no_grad():  # seeded random A and B (B starts at zero): the LoRA changes the output
        for model in (unet, te1, te2):
            for name, p in model.named_parameters():
                if "lora_" in name:
                    std = 1.0 / rank if "lora_A" in name else 0.01
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
                    params += p.numel()
    folder = user_dir(user_id, Path(home))
    folder.mkdir(parents=True, exist_ok=True)
    lora = save_lora_kohya_sdxl(
        folder / "lora.safetensors", unet, te1, te2,
        metadata={"ss_network_dim": str(rank), "easyphoto_user_id": user_id, "note": "benchmark"},
    )  # fmt: skip
    ref = load_image(ref_path)
    save_png(ref, folder / "ref.png")
    np.save(folder / "embedding.npy", FaceAnalyzer().largest(ref).embedding)
    meta = {
        "user_id": user_id,
        "family": "sdxl",
        "base_model": model_dir,
        "trigger": TRIGGER_CAPTION,
        "rank": rank,
        "alpha": alpha,
        "note": "benchmark SDXL user: random LoRA weights, not trained",
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {
        "seconds": time.perf_counter() - t0,
        "lora_mb": lora.stat().st_size / 1e6,
        "lora_params": params,
        "peak_rss_gb": peak_rss_gb(),
    }


def _model_config(sdxl_dir: str, device: str | None, dtype: str | None, **kw: Any) -> Any:
    from easyphoto.config import ModelConfig

    extra = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}
    return ModelConfig(template_model=sdxl_dir, local_files_only=True, **extra, **kw)


def policy_run(
    policy: str, sd15_dir: str, sdxl_dir: str, home: str, template_path: str,
    xl_kw: dict[str, Any], sd_kw: dict[str, Any], device: str | None, dtype: str | None, threads: int,
) -> dict[str, Any]:  # fmt: skip
    """SDXL portrait → SD1.5 portrait → SDXL portrait on one generator under ``policy`` (child process)."""
    import gc
    import weakref

    import torch

    from easyphoto.config import GenerateConfig
    from easyphoto.diffusion.memory import _modules
    from easyphoto.imageio import load_image
    from easyphoto.stages.generate import PortraitGenerator

    torch.set_num_threads(threads)
    mc = _model_config(sdxl_dir, device, dtype, base_model=sd15_dir, sdxl_memory=policy)
    gen = PortraitGenerator(model_config=mc, home=Path(home))
    cuda = gen.cache.device.type == "cuda"
    template = load_image(template_path)
    xl_cfg, sd_cfg = GenerateConfig().replace(**xl_kw), GenerateConfig().replace(**sd_kw)
    out: dict[str, Any] = {"policy": policy, "start_rss": rss_now_gb(), "phases": []}
    peaks_ok = True
    refs: dict[str, list[Any]] = {}
    for label, user, cfg in (
        ("SDXL", XL_USER, xl_cfg), ("SD1.5", SD15_USER, sd_cfg), ("SDXL again", XL_USER, xl_cfg)
    ):  # fmt: skip
        gc.collect()
        peaks_ok = reset_peak_rss() and peaks_ok
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        switches = gen.memory.switches
        loads0 = gen.cache.loads + gen.sdxl_cache.loads
        t0 = time.perf_counter()
        gen.generate(template, [user], cfg)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        gc.collect()
        idle = "sd15" if label.startswith("SDXL") else "sdxl"
        alive = refs.get(idle)  # weak references to the idle family's modules, taken when it last ran
        idle_modules = _modules(gen.memory.caches[idle]) if idle in gen.memory.caches else []
        out["phases"].append(
            {
                "call": label,
                "wall": wall,
                "rss": rss_now_gb(),
                "peak": hwm_gb() if peaks_ok else None,
                "cuda_peak": torch.cuda.max_memory_allocated() / 1024**3 if cuda else None,
                "cuda_now": torch.cuda.memory_allocated() / 1024**3 if cuda else None,
                "moves": gen.memory.moves_since(switches),
                "loads": gen.cache.loads + gen.sdxl_cache.loads - loads0,
                "idle_alive": None
                if alive is None
                else f"{sum(r() is not None for r in alive)}/{len(alive)}",
                "idle_device": {p.device.type for m in idle_modules for p in m.parameters()},
            }
        )
        family = "sdxl" if label.startswith("SDXL") else "sd15"
        refs[family] = [weakref.ref(m) for m in _modules(gen.memory.caches[family])]
    out["peaks_ok"] = peaks_ok
    out["process_peak"] = max(
        [out["start_rss"], *(p["peak"] or p["rss"] for p in out["phases"])]
    )  # the high-water mark was reset before each call: the process' peak is the largest of them
    return out


# --------------------------------------------------------------------------------------- measuring


def portrait_row(
    gen: Any, probe: Probe, template: Any, cfg: Any, cuda: bool, t0: float | None = None
) -> dict:
    """One ``gen.generate`` call of the SDXL user (from ``t0`` when given: a cold call counts its
    constructor): wall time, stages, per-step times of each pass, load counts, peak memory."""
    import torch

    from easyphoto.stages.generate.controls import family_config

    t0 = probe.now() if t0 is None else t0
    portrait = gen.generate(template, [XL_USER], cfg, keep_intermediates=True)
    wall = probe.now() - t0
    records, lora_s = probe.take()
    t = dict(portrait.timings)
    row: dict[str, Any] = {"wall": wall, "timings": t, "portrait": portrait, "lora_s": sum(lora_s)}
    row["other"] = t["total"] - sum(t.get(p, 0.0) for p in PASSES)
    for p in PASSES:
        recs = [r for r in records if r["pass"] == p]
        steps = [s for r in recs for s in r["steps"]]
        row[p] = {
            "calls": len(recs),
            "steps": len(steps) // max(len(recs), 1),
            "step_s": statistics.median(steps) if steps else float("nan"),
            "steps_s": sum(steps),
            "pipe_s": sum(r["call_s"] for r in recs),
            "build_s": sum(r["build_s"] for r in recs),
        }
    row["loads"] = dict(gen.sdxl_cache.load_count)
    row["sd15_loaded"] = gen.cache._base is not None
    row["rss"] = peak_rss_gb()
    row["cuda_peak"] = torch.cuda.max_memory_allocated() / 1024**3 if cuda else None
    inter = portrait.intermediates
    row["crop"] = inter["face0_crop"].shape[:2] if "face0_crop" in inter else None
    row["crop2"] = inter["face0_refine_mask"].shape[:2] if "face0_refine_mask" in inter else None
    xl_cfg = family_config(cfg, gen.sdxl_cache)
    row["nets"] = (xl_cfg.first_controlnets, xl_cfg.second_controlnets)
    return row


def extrapolate(row: dict, cfg: Any, default: Any) -> dict[str, float]:
    """Times at the default steps: measured + (default − run) denoising steps × measured s/step, per pass."""
    out: dict[str, float] = {}
    extra = 0.0
    for p, prefix in zip(PASSES, ("first", "second"), strict=True):
        run = denoise_steps(getattr(cfg, f"{prefix}_steps"), getattr(cfg, f"{prefix}_denoise"))
        want = denoise_steps(getattr(default, f"{prefix}_steps"), getattr(default, f"{prefix}_denoise"))
        add = (want - run) * row[p]["step_s"] * max(row[p]["calls"], 1)
        out[p] = row["timings"].get(p, 0.0) + add
        extra += add
    out["total"] = row["timings"]["total"] + extra
    out["wall"] = row["wall"] + extra
    return out


# -------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--full-size", metavar="DIR", type=Path, help="full-size random SDXL folder (built if absent)"
    )
    parser.add_argument(
        "--size", type=int, default=None,
        help="sdxl_short_side, px (default: GenerateConfig's 1024; full-size on a CPU: 512)",
    )  # fmt: skip
    parser.add_argument("--first-steps", type=int, default=None, help="first pass steps (50; full CPU: 1)")
    parser.add_argument("--second-steps", type=int, default=None, help="second pass steps (20; full CPU: 1)")
    parser.add_argument(
        "--policies", default=None,
        help="memory policies, comma-separated, or 'none' (CPU: keep,free, full size none; CUDA: all three)",
    )  # fmt: skip
    parser.add_argument(
        "--policy-steps", type=int, default=1, help="both passes' steps in the policy runs (1: one step each)"
    )
    parser.add_argument("--lora-rank", type=int, default=128, help="rank of the users' LoRA (128)")
    parser.add_argument("--faces", type=Path, default=FACES, help="shared face photos (../shared/faces)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--device", default=None, help="cpu / cuda / mps (auto)")
    parser.add_argument("--dtype", default=None, help="float32 / float16 / bfloat16 (CPU: float32)")
    parser.add_argument("--seed", type=int, default=7, help="generation seed (7)")
    parser.add_argument("--out", type=Path, default=None, help="write the portraits here (PNG)")
    parser.add_argument(
        "--policies-only", action="store_true", help="only the memory-policy runs (section 3)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = os.getloadavg()

    import torch

    from easyphoto.config import GenerateConfig
    from easyphoto.diffusion.models import ModelCache, pick_device_dtype
    from easyphoto.diffusion.sdxl import SDXLCache
    from easyphoto.imageio import load_image, save_png
    from easyphoto.stages.generate import PortraitGenerator
    from easyphoto.stages.generate.controls import family_config

    torch.set_num_threads(args.threads)
    full = args.full_size is not None
    label = "full-size SDXL (random weights)" if full else "tiny SDXL (random weights)"
    device, dtype = pick_device_dtype(args.device, args.dtype)
    cuda = device.type == "cuda"
    slow = full and not cuda
    tmp = tempfile.TemporaryDirectory(prefix="easyphoto-sdxl-portrait-")
    work = Path(tmp.name)

    # Model, template, users (children: their memory is not this process').
    sdxl_dir = args.full_size if full else work / "tiny-sdxl"
    build_s = None if _complete(sdxl_dir) else _in_child(build_sdxl, str(sdxl_dir), full)
    need = weights_gb(sdxl_dir, dtype)
    avail = mem_available_gb()
    if not cuda and need > 0.8 * avail:
        print(
            f"WARNING: the SDXL portrait's weights take ~{need:.1f} GB in "
            f"{str(dtype).removeprefix('torch.')} and {avail:.1f} GB are available: expect swapping or the "
            "OOM killer (try --dtype bfloat16)",
            flush=True,
        )
    faces_ok = (args.faces / "identities" / "obama" / "obama.jpg").is_file()
    from skimage import data

    astronaut = save_png(data.astronaut(), work / "astronaut.png")
    template_path = args.faces / "identities" / "obama" / "obama.jpg" if faces_ok else astronaut
    if not faces_ok:
        print(f"note: {args.faces} not found: the astronaut is the template", flush=True)
    home = work / "home"
    user = _in_child(
        make_sdxl_user, str(sdxl_dir), str(home), XL_USER, str(astronaut), args.lora_rank, args.threads, full
    )

    default = GenerateConfig()
    size = args.size or (512 if slow else default.sdxl_short_side)
    cfg = default.replace(seed=args.seed, sdxl_short_side=size)
    if slow:
        cfg = cfg.replace(first_steps=1, second_steps=1)
    if args.first_steps is not None:
        cfg = cfg.replace(first_steps=args.first_steps)
    if args.second_steps is not None:
        cfg = cfg.replace(second_steps=args.second_steps)
    template = load_image(template_path)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    print(f"set up in {time.perf_counter() - started:.1f} s; measuring…", flush=True)

    # 1. Cold: a fresh generator (SDXL, its ControlNets, face models, user and LoRA load on first use).
    cold = warm = None
    if not args.policies_only:
        mc = _model_config(str(sdxl_dir), args.device, args.dtype)
        t0 = time.perf_counter()
        xl = SDXLCache(mc)
        gen = PortraitGenerator(ModelCache(mc), home=home, sdxl_cache=xl)
        xl_cfg = family_config(cfg, xl)
        probe = Probe(xl, xl_cfg.first_controlnets, cuda, xl_cfg.second_controlnets)
        cold = portrait_row(gen, probe, template, cfg, cuda, t0)
        print(f"1st call {cold['wall']:.1f} s", flush=True)
        # 2. Warm: the same generator again.
        warm = portrait_row(gen, probe, template, cfg, cuda)
        print(f"2nd call {warm['wall']:.1f} s", flush=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            cold["portrait"].save(args.out / "sdxl_cold.png")
            warm["portrait"].save(args.out / "sdxl_warm.png")
        del gen, xl, probe
    main_peak = peak_rss_gb()

    # 3. Memory policies, each in its own process: SDXL portrait → SD1.5 portrait → SDXL portrait.
    policies = args.policies or ("keep,offload,free" if cuda else "none" if slow else "keep,free")
    if slow and not args.policies:
        print("memory policies: not run for full size on a CPU (3 calls each); --policies keep,free to run")
    policies = [] if policies == "none" else [p.strip() for p in policies.split(",") if p.strip()]
    runs: list[dict[str, Any]] = []
    sd15_s = None
    if policies:
        sd15_dir = work / "tiny-sd15"
        sd15_s = _in_child(build_sd15, str(sd15_dir))
        _in_child(
            make_users, str(sd15_dir), str(home), {SD15_USER: str(astronaut)}, args.lora_rank, args.threads
        )
        n = args.policy_steps
        xl_kw = {"seed": args.seed, "sdxl_short_side": size, "first_steps": n, "second_steps": n}
        sd_kw = {"seed": args.seed, "first_steps": n, "second_steps": n}
        for policy in policies:
            t0 = time.perf_counter()
            runs.append(
                _in_child(
                    policy_run,
                    policy,
                    str(sd15_dir),
                    str(sdxl_dir),
                    str(home),
                    str(template_path),
                    xl_kw,
                    sd_kw,
                    args.device,
                    args.dtype,
                    args.threads,
                )  # fmt: skip
            )
            print(f"policy {policy}: {time.perf_counter() - t0:.1f} s (child process)", flush=True)

    # ------------------------------------------------------------------------------------ report
    dev = f"{device} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} thread(s)"
    if cuda:
        dev += f", {torch.cuda.get_device_name(device)}"
    h, w = template.shape[:2]
    print(f"\nSDXL users' portraits — {label}, {dev}")
    print(
        f"model: {sdxl_dir} ({f'built in {build_s:.1f} s' if build_s is not None else 'existing'}; weights "
        f"of a portrait ~{need:.2f} GB in memory); SDXL user made in {user['seconds']:.1f} s (child process; "
        f"untrained rank-{args.lora_rank} kohya SDXL LoRA, {user['lora_params'] / 1e6:.1f} M params, "
        f"{user['lora_mb']:.1f} MB)"
    )
    print(f"template: {template_path.name} {w}×{h} (1 face); sdxl_short_side {size} px")
    if cold is not None and warm is not None:
        report_portraits(cold, warm, cfg, default, cuda, label, main_peak, dshort(device, dtype))
    if runs:
        report_policies(runs, policies, args.policy_steps, cfg, default, cuda, sd15_s)
    load_after = os.getloadavg()
    print(
        f"\nload average (1 min) at start {load_before[0]:.2f}, at end {load_after[0]:.2f} "
        f"({os.cpu_count()} CPUs; other processes share them)"
    )
    print(f"benchmark wall time: {time.perf_counter() - started:.1f} s")
    tmp.cleanup()


def dshort(device: Any, dtype: Any) -> str:
    import torch

    return f"{device.type} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} thr"


def fmt(v: float | None, nd: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def report_portraits(
    cold: dict, warm: dict, cfg: Any, default: Any, cuda: bool, label: str, main_peak: float, dev: str
) -> None:
    """Sections 1 and 2: cold and warm call, stages, inside the passes, loads, README rows."""
    import numpy as np

    steps1 = denoise_steps(cfg.first_steps, cfg.first_denoise)
    steps2 = denoise_steps(cfg.second_steps, cfg.second_denoise)
    d1 = denoise_steps(default.first_steps, default.first_denoise)
    d2 = denoise_steps(default.second_steps, default.second_denoise)
    reduced = (cfg.first_steps, cfg.second_steps) != (default.first_steps, default.second_steps)
    crop = "×".join(map(str, cold["crop"][::-1])) if cold["crop"] else "?"
    crop2 = "×".join(map(str, cold["crop2"][::-1])) if cold["crop2"] else "–"
    print(
        f"crop {crop} px, second pass {crop2} px (×{cfg.second_scale}); ControlNets: first "
        f"{'+'.join(cold['nets'][0])}, second {'+'.join(cold['nets'][1])}; CFG {cfg.guidance_scale} (batch 2)"
    )
    steps_line = (
        f"steps: first {cfg.first_steps} × {cfg.first_denoise} → {steps1} denoising, "
        f"second {cfg.second_steps} × {cfg.second_denoise} → {steps2}"
    )
    if reduced:
        steps_line += (
            f"  — REDUCED (default {default.first_steps}/{default.second_steps} → {d1}/{d2} denoising "
            f"steps); default-step rows below are EXTRAPOLATED at {cfg.sdxl_short_side} px"
        )
    else:
        steps_line += " (GenerateConfig defaults)"
    print(steps_line)

    rows = [("1st call (cold: loading included)", cold, None), ("2nd call (warm)", warm, None)]
    if reduced:
        rows += [
            (f"1st call, {d1}/{d2} steps (EXTRAPOLATED)", cold, extrapolate(cold, cfg, default)),
            (f"2nd call, {d1}/{d2} steps (EXTRAPOLATED)", warm, extrapolate(warm, cfg, default)),
        ]
    print("\nCalls, seconds (Portrait.timings; other = total − the two passes):\n")
    print(
        "| call | wall s | total s | first_diffusion s | second_diffusion s | other s | s/step 1st | "
        "s/step 2nd | peak RSS GB |" + (" max_memory_allocated GB |" if cuda else "")
    )
    print("|---" * (10 if cuda else 9) + "|")
    for name, r, ext in rows:
        t = r["timings"]
        first = ext["first_diffusion"] if ext else t.get("first_diffusion")
        second = ext["second_diffusion"] if ext else t.get("second_diffusion")
        wall, total = (ext["wall"], ext["total"]) if ext else (r["wall"], t["total"])
        step1, step2 = r["first_diffusion"]["step_s"], r["second_diffusion"]["step_s"]
        line = (
            f"| {name} | {fmt(wall)} | {fmt(total)} | {fmt(first)} | {fmt(second)} | {fmt(r['other'])} | "
            f"{fmt(step1, 3)} | {fmt(step2, 3)} | {fmt(r['rss'])} |"
        )
        print(line + (f" {fmt(r['cuda_peak'])} |" if cuda else ""))

    print("\nInside (seconds):\n")
    print("| measure | 1st call | 2nd call |")
    print("|---|---|---|")
    others = sorted({k for r in (cold, warm) for k in r["timings"]} - {*PASSES, "total"})
    for k in others:
        what = f"{k} ({STAGE_NOTES[k]})" if k in STAGE_NOTES else k
        print(f"| other: {what} | {fmt(cold['timings'].get(k), 3)} | {fmt(warm['timings'].get(k), 3)} |")
        if k == "ip_adapter":
            vals = f"{fmt(cold['lora_s'], 3)} | {fmt(warm['lora_s'], 3)}"
            print(f"| of which SDXLCache.set_lora (1st call: SDXL base + LoRA load) | {vals} |")
    for r in (cold, warm):  # total − every stage timed (the user's files, …)
        r["unattributed"] = r["timings"]["total"] - sum(v for k, v in r["timings"].items() if k != "total")
    vals = f"{fmt(cold['unattributed'], 3)} | {fmt(warm['unattributed'], 3)}"
    print(f"| other: unattributed (the user's reference face, embedding) | {vals} |")
    before = fmt(cold["wall"] - cold["timings"]["total"], 3)
    print(f"| before generate() (constructors, face models) | {before} | – |")
    for p in PASSES:
        short = p.removesuffix("_diffusion")
        for what, key in (
            ("denoising steps", "steps"), ("pipeline build (ControlNets on 1st use)", "build_s"),
            ("pipe()", "pipe_s"), ("steps (ControlNets + UNet)", "steps_s"),
        ):  # fmt: skip
            vals = [str(r[p][key]) if key == "steps" else fmt(r[p][key], 3) for r in (cold, warm)]
            print(f"| {short}: {what} | " + " | ".join(vals) + " |")
        vals = [fmt(r[p]["pipe_s"] - r[p]["steps_s"], 3) for r in (cold, warm)]
        print(f"| {short}: pipe() − steps (text encoders, VAE encode/decode) | " + " | ".join(vals) + " |")

    grew = {k: v - cold["loads"].get(k, 0) for k, v in warm["loads"].items() if v != cold["loads"].get(k, 0)}
    same = np.array_equal(cold["portrait"].array, warm["portrait"].array)
    print("\nCold vs warm (same generator):")
    print(
        f"  1st call {cold['wall']:.2f} s, 2nd call {warm['wall']:.2f} s → {cold['wall'] / warm['wall']:.2f}×"
    )
    print(f"  SDXL load_count after 1st call: {cold['loads']}")
    print(
        f"  SDXL load_count after 2nd call: {warm['loads']}  → "
        + ("unchanged: the warm call loaded nothing (OK)" if not grew else f"GREW {grew} (possible bug)")
    )
    sd15 = "YES (possible bug)" if warm["sd15_loaded"] else "no (OK)"
    print(
        f"  SD1.5 model loaded for the SDXL user: {sd15}; portraits of both calls (same seed): "
        + ("identical" if same else "DIFFERENT")
    )
    print(f"  peak RSS of this process: {main_peak:.2f} GB")

    print("\nMarkdown row(s) for benchmarks/README.md:\n")
    print(
        "| model | device | crop px | denoising steps (1st/2nd) | 1st call s | 2nd call s | "
        "first_diffusion s | second_diffusion s | other s | s/step 1st / 2nd | peak RSS GB | "
        "loads by 2nd call |"
    )
    print("|---" * 12 + "|")
    tw = warm["timings"]
    steps_s = f"{fmt(warm['first_diffusion']['step_s'], 3)} / {fmt(warm['second_diffusion']['step_s'], 3)}"
    head = f"| {label} | {dev} | {crop} → {crop2} |"
    print(
        f"{head} {steps1}/{steps2} | {cold['wall']:.1f} | {warm['wall']:.1f} | "
        f"{fmt(tw.get('first_diffusion'), 1)} | {fmt(tw.get('second_diffusion'), 1)} | "
        f"{fmt(warm['other'])} | {steps_s} | {main_peak:.2f} | {sum(grew.values())} |"
    )
    if reduced:
        ec, ew = extrapolate(cold, cfg, default), extrapolate(warm, cfg, default)
        print(
            f"{head} {d1}/{d2} EXTRAPOLATED | {ec['wall']:.1f} | {ew['wall']:.1f} | "
            f"{ew['first_diffusion']:.1f} | {ew['second_diffusion']:.1f} | {fmt(warm['other'])} | – | – | – |"
        )


def report_policies(
    runs: list[dict],
    policies: list[str],
    steps: int,
    cfg: Any,
    default: Any,
    cuda: bool,
    sd15_s: float | None,
) -> None:
    """Section 3: the memory policies, per call and per process."""
    print(
        f"\nMemory policy (sdxl_memory), one process each: SDXL portrait → SD1.5 portrait (tiny SD1.5, "
        f"{default.short_side} px) → SDXL portrait; {steps} step(s) per pass "
        f"({denoise_steps(steps, cfg.first_denoise)}/{denoise_steps(steps, cfg.second_denoise)} denoising) "
        f"at sdxl_short_side {cfg.sdxl_short_side}; tiny SD1.5 built in {fmt(sd15_s, 1)} s. Peak RSS in a "
        "call: VmHWM, reset before each call"
        + ("" if all(r["peaks_ok"] for r in runs) else " (NOT resettable here: process peaks only)")
        + ".\n"
    )
    head = "| policy | call | s | RSS after GB | peak RSS in call GB |"
    head += " max_memory_allocated GB | memory_allocated after GB |" if cuda else ""
    head += " moves (actions, s) | idle family's modules still alive | loads |"
    print(head)
    print("|---" * (10 if cuda else 8) + "|")
    for r in runs:
        for ph in r["phases"]:
            moves = "; ".join(
                f"{', '.join(m['actions']) or 'nothing'} ({m['seconds']:.3f})" for m in ph["moves"]
            )
            alive = ph["idle_alive"] or "–"
            if ph["idle_device"]:
                alive += f" (on {'/'.join(sorted(ph['idle_device']))})"
            line = (
                f"| {r['policy']} | {ph['call']} | {ph['wall']:.1f} | {ph['rss']:.2f} | {fmt(ph['peak'])} |"
            )
            if cuda:
                line += f" {fmt(ph['cuda_peak'])} | {fmt(ph['cuda_now'])} |"
            print(line + f" {moves or '–'} | {alive} | {ph['loads']} |")
    print("\n| policy | process peak RSS GB | RSS at start GB |")
    print("|---|---|---|")
    for r in runs:
        print(f"| {r['policy']} | {r['process_peak']:.2f} | {r['start_rss']:.2f} |")
    if not cuda and "offload" not in policies:
        print("offload: not run — on a CPU there is nowhere to offload to: FamilyMemory moves nothing")


if __name__ == "__main__":
    main()
