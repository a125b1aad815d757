"""Portrait generation benchmark: time per template by stage, non-diffusion overhead, cold vs warm calls.

Usage::

    python benchmarks/generate.py                        # tiny random model (built in a temp folder)
    python benchmarks/generate.py --full-size DIR        # real SD1.5 architecture, random weights
                                                         # (built into DIR if missing: ~10 GB)
    python benchmarks/generate.py --full-size DIR --device cuda   # end-to-end GPU time, default steps

What is measured, with :class:`easyphoto.stages.generate.PortraitGenerator` at the default
:class:`~easyphoto.config.GenerateConfig` (512 px short side, first pass 50 steps × 0.45 denoise = 22
denoising steps, second pass 20 × 0.35 = 7 steps at 1.5× resolution):

1. **Stages** — ``Portrait.timings`` as ``generate()`` records them (analysis, fusion, controls,
   first_diffusion, second_diffusion, paste_back, score, total; "unattributed" = total − the stages,
   e.g. loading the user's reference face). Templates: one face (``identities/obama/obama.jpg``) and
   two faces (``groups/two_people.jpg``) from ``--faces`` (``../shared/faces``). Inside each diffusion
   stage the script also times the ``pipe()`` call itself and every denoising step (UNet + ControlNets,
   by module hooks), without changing the library.
2. **Non-diffusion overhead per face** = (total − first_diffusion − second_diffusion) / faces, against
   the 0.5 s target. Random weights paint noise, so the face is not found again after the first pass
   (no second fusion, no identity embedding). The row "diffusion stubbed" reruns the same templates
   with the two diffusion passes replaced by a pass-through, so the face stays a face and every
   non-diffusion step runs as it would with trained weights.
3. **Cold vs warm** — the first call of a fresh ``PortraitGenerator`` (constructor, model, face-model
   and LoRA loading included) against a second call with the same generator (target ≥ 5× faster on
   tiny), with ``ModelCache.load_count`` after each (it must not grow); then switching to a second
   user (the LoRA switch alone, and a whole portrait except full-size on a CPU). ``--short-side 96
   --first-steps 4 --second-steps 3`` gives the tests' fast config, where loading weighs more.
4. **Memory** — peak RSS of this process (``resource.getrusage``; the users are made in a child
   process); on CUDA also ``torch.cuda.max_memory_allocated``, and wall times are taken after
   ``torch.cuda.synchronize()``.

Users: two ``users/<id>/`` folders (``ref.png``, ``embedding.npy``, ``meta.json``,
``lora.safetensors``) in a temporary ``EASYPHOTO_HOME``. The LoRA is not trained: a peft adapter of
rank ``--lora-rank`` (128, EasyPhoto's) on the repo's UNet and text-encoder targets with seeded random
weights, exported in kohya format as training does — same shapes, same file, same loading path.

Steps: the tiny model and CUDA run the default steps. A full-size model on a CPU runs each pass with
the fewest steps (one denoising step each; ``--first-steps`` / ``--second-steps`` / ``--steps-scale``
override) and one face only; the default-step time is then extrapolated as
``measured + (default steps − run steps) × measured time per denoising step`` and labelled so.
Portraits go to ``--out DIR`` (else a temp folder that is deleted). torch uses ``--threads`` threads (1).
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

from common import add_model_args, ensure_model, peak_rss_gb

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("EASYPHOTO_TEST_FACES", REPO.parent / "shared" / "faces"))
STAGES = (
    "analysis", "lora", "ip_adapter", "fusion", "controls", "first_diffusion", "second_diffusion",
    "paste_back", "score",
)  # fmt: skip
#: Networks outside the two passes (``--upscale``, Real-ESRGAN on a face, a background mode): shown as
#: stages, not counted in the non-diffusion overhead per face.
PORTRAIT_STAGES = ("upscale", "face_upscale", "background", "face_restore")
PASSES = ("first_diffusion", "second_diffusion")
TARGET_OVERHEAD_S = 0.5  # per face, at 512 px, this CPU
TARGET_SPEEDUP = 5.0  # second call vs first call, tiny
TARGET_GPU_S = 5.0  # one portrait, default steps, one H100
USERS = ("alice", "bob")


# ------------------------------------------------------------------------------------------ helpers


def denoise_steps(steps: int, strength: float) -> int:
    """Denoising steps one pass runs: ``generate`` raises ``steps`` so that diffusers'
    ``int(steps × strength)`` is at least one."""
    steps = max(int(steps), math.ceil(1.0 / max(strength, 1e-3)))
    return min(int(steps * strength), steps)


def make_users(model_dir: str, home: str, refs: dict[str, str], rank: int, threads: int) -> None:
    """Write ``users/<id>/`` folders with an untrained rank-``rank`` kohya LoRA (runs in a child process)."""
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel

    from easyphoto.config import TRIGGER_CAPTION
    from easyphoto.diffusion.lora import TEXT_ENCODER_TARGETS, UNET_TARGETS, save_lora_kohya
    from easyphoto.face.analyzer import FaceAnalyzer
    from easyphoto.imageio import load_image, save_png
    from easyphoto.store import user_dir

    torch.set_num_threads(threads)
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
    alpha = rank / 2  # EasyPhoto: rank 128, alpha 64
    for model, targets in ((unet, UNET_TARGETS), (text_encoder, TEXT_ENCODER_TARGETS)):
        model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets)))
    lora = [(n, p) for m in (unet, text_encoder) for n, p in m.named_parameters() if "lora_" in n]
    analyzer = FaceAnalyzer()
    for i, (user_id, ref_path) in enumerate(refs.items()):
        gen = torch.Generator().manual_seed(1234 + i)
        with torch.no_grad():  # seeded random A and B, so the LoRA changes the output and users differ
            for name, p in lora:
                std = 1.0 / rank if "lora_A" in name else 0.01
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        folder = user_dir(user_id, Path(home))
        folder.mkdir(parents=True, exist_ok=True)
        save_lora_kohya(
            folder / "lora.safetensors",
            unet,
            text_encoder,
            metadata={"ss_network_dim": str(rank), "easyphoto_user_id": user_id, "note": "benchmark"},
        )
        ref = load_image(ref_path)
        save_png(ref, folder / "ref.png")
        np.save(folder / "embedding.npy", analyzer.largest(ref).embedding)
        meta = {
            "user_id": user_id,
            "base_model": model_dir,
            "trigger": TRIGGER_CAPTION,
            "rank": rank,
            "alpha": alpha,
            "note": "benchmark user: random LoRA weights, not trained",
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


class Probe:
    """Times, without changing the library, what happens inside a generator's diffusion stages.

    Wraps the generator's ``cache.inpaint_controlnet`` (pipeline construction, then each ``pipe()``
    call with hooks that time every denoising step: ControlNets' pre-hook → UNet's post-hook) and
    ``cache.set_lora``. :meth:`take` returns and clears what was recorded.
    """

    def __init__(
        self, cache: Any, first_names: tuple[str, ...], sync: bool, second_names: tuple[str, ...] = ()
    ) -> None:
        self.sync = sync
        self.records: list[dict[str, Any]] = []
        self.lora_s: list[float] = []
        build, set_lora = cache.inpaint_controlnet, cache.set_lora
        probe = self

        def inpaint_controlnet(names):
            t0 = probe.now()
            pipe = build(names)
            if tuple(names) == tuple(first_names):
                label = PASSES[0]
            elif tuple(names) == tuple(second_names) or not second_names:
                label = PASSES[1]
            else:  # the background passes (tile + canny, or canny) are none of the two
                label = "background"
            return _TimedPipe(pipe, label, probe.now() - t0, probe)

        def timed_set_lora(path, weight=0.9):
            t0 = probe.now()
            set_lora(path, weight)
            probe.lora_s.append(probe.now() - t0)

        cache.inpaint_controlnet = inpaint_controlnet
        cache.set_lora = timed_set_lora

    def now(self) -> float:
        if self.sync:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def take(self) -> tuple[list[dict[str, Any]], list[float]]:
        out = (self.records, self.lora_s)
        self.records, self.lora_s = [], []
        return out


class _TimedPipe:
    def __init__(self, pipe: Any, label: str, build_s: float, probe: Probe) -> None:
        self.pipe, self.label, self.build_s, self.probe = pipe, label, build_s, probe

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        steps: list[float] = []
        start: list[float] = []

        def pre(_module, _inputs):
            start.append(self.probe.now())

        def post(_module, _inputs, _output):
            steps.append(self.probe.now() - start[-1])

        hooks = [
            self.pipe.controlnet.register_forward_pre_hook(pre),
            self.pipe.unet.register_forward_hook(post),
        ]
        try:
            t0 = self.probe.now()
            out = self.pipe(*args, **kwargs)
            call_s = self.probe.now() - t0
        finally:
            for h in hooks:
                h.remove()
        self.probe.records.append(
            {"pass": self.label, "build_s": self.build_s, "call_s": call_s, "steps": steps}
        )
        return out


# --------------------------------------------------------------------------------------- measuring


def portrait_row(gen: Any, probe: Probe, template: Any, ids: list[str], cfg: Any) -> dict:
    """One ``gen.generate`` call: wall time, timings, probe records, load counts."""
    t0 = probe.now()
    portrait = gen.generate(template, ids, cfg)
    return finish_row(portrait, probe.now() - t0, gen, probe)


def finish_row(portrait: Any, wall: float, gen: Any, probe: Probe) -> dict:
    records, lora_s = probe.take()
    t = dict(portrait.timings)
    faces = len(portrait.scores)
    row: dict[str, Any] = {"wall": wall, "timings": t, "faces": faces, "portrait": portrait}
    row["unattributed"] = t["total"] - sum(t.get(s, 0.0) for s in (*STAGES, *PORTRAIT_STAGES))
    row["diffusion"] = sum(t.get(p, 0.0) for p in PASSES)
    whole = sum(t.get(s, 0.0) for s in PORTRAIT_STAGES)
    row["overhead_per_face"] = (t["total"] - row["diffusion"] - whole) / max(faces, 1)
    for p in PASSES:
        recs = [r for r in records if r["pass"] == p]
        steps = [s for r in recs for s in r["steps"]]
        row[p] = {
            "calls": len(recs),
            "pipe_s": sum(r["call_s"] for r in recs),
            "build_s": sum(r["build_s"] for r in recs),
            "steps": len(steps) // max(len(recs), 1),
            "step_s": statistics.median(steps) if steps else float("nan"),
            "steps_s": sum(steps),
        }
    row["background_calls"] = sum(1 for r in records if r["pass"] == "background")
    row["lora_s"] = sum(lora_s)
    row["loads"] = dict(gen.cache.load_count)
    row["found_again"] = sum(1 for s in portrait.scores if s.similarity > 0)
    return row


def extrapolate(row: dict, cfg: Any, default: Any) -> dict[str, float]:
    """Stage times at the default steps: measured + (default − run) denoising steps × measured step."""
    out: dict[str, float] = {}
    extra = 0.0
    for p, prefix in zip(PASSES, ("first", "second"), strict=True):
        run = denoise_steps(getattr(cfg, f"{prefix}_steps"), getattr(cfg, f"{prefix}_denoise"))
        want = denoise_steps(getattr(default, f"{prefix}_steps"), getattr(default, f"{prefix}_denoise"))
        add = (want - run) * row[p]["step_s"] * row[p]["calls"]
        out[p] = row["timings"].get(p, 0.0) + add
        extra += add
    out["total"] = row["timings"]["total"] + extra
    return out


def stub_diffusion(gen: Any):
    """Replace the generator's two diffusion passes with a pass-through (returns the input crop)."""

    from easyphoto.stages.generate.controls import control_images

    def passthrough(names, inputs, mask, cfg, second, seed, clock, ip=(None, 0.0)):
        controls, _ = control_images(names, inputs, cfg, second)  # controls are drawn as in a real pass
        clock.tick("controls")
        return inputs.image.copy(), dict(zip(names, controls, strict=True))

    gen._diffuse = passthrough


# -------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--faces", type=Path, default=FACES, help="shared face photos (../shared/faces)")
    parser.add_argument("--first-steps", type=int, default=None, help="first pass steps (default: 50)")
    parser.add_argument("--second-steps", type=int, default=None, help="second pass steps (default: 20)")
    parser.add_argument("--short-side", type=int, default=None, help="crop short side in px (512)")
    parser.add_argument(
        "--steps-scale", type=float, default=None, help="scale both passes' default steps (e.g. 0.1)"
    )
    parser.add_argument(
        "--two-person",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the two-person template (default: yes, except full-size on CPU)",
    )
    parser.add_argument("--lora-rank", type=int, default=128, help="rank of the users' LoRA (128)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--device", default=None, help="cpu / cuda / mps (auto)")
    parser.add_argument("--out", type=Path, default=None, help="write the portraits here (PNG)")
    parser.add_argument("--seed", type=int, default=7, help="generation seed (7)")
    parser.add_argument(
        "--upscale", type=int, default=None, help="super-resolution 2 or 4 (the tiny folder has tiny nets; "
        "--full-size needs the Real-ESRGAN files: EASYPHOTO_UPSCALER_X2/_X4); 'upscale' stage row"
    )  # fmt: skip
    parser.add_argument("--max-short-side", type=int, default=None, help="largest face crop, px")
    parser.add_argument(
        "--background", choices=("keep", "restore", "replace"), default=None,
        help="background mode ('replace' paints 'a sunny beach'); 'background' stage row",
    )  # fmt: skip
    parser.add_argument(
        "--face-restore", action="store_true", help="GFPGAN after the passes ('face_restore' row)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = os.getloadavg()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import multiprocessing

    from easyphoto.config import GenerateConfig, ModelConfig
    from easyphoto.diffusion.models import ModelCache, pick_device_dtype
    from easyphoto.imageio import load_image
    from easyphoto.stages.generate import PortraitGenerator

    full = args.full_size is not None
    label = "full-size" if full else "tiny"
    device, dtype = pick_device_dtype(args.device)
    cuda = device.type == "cuda"
    tmp = tempfile.TemporaryDirectory(prefix="easyphoto-genbench-")
    work = Path(tmp.name)
    model_dir, build_s, _ = ensure_model(args, work)

    # Templates and users' reference photos.
    faces_ok = (args.faces / "SOURCES.md").is_file()
    if not faces_ok:
        print(f"note: {args.faces} not found: astronaut as the one-face template, no two-person template")
    astronaut = work / "astronaut.png"
    from skimage import data

    from easyphoto.imageio import save_png

    save_png(data.astronaut(), astronaut)
    single = args.faces / "identities" / "obama" / "obama.jpg" if faces_ok else astronaut
    two = args.faces / "groups" / "two_people.jpg"
    refs = {"alice": str(astronaut)}
    refs["bob"] = str(args.faces / "identities" / "biden" / "biden1.jpg") if faces_ok else str(astronaut)
    home = work / "home"
    start = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(
        target=make_users, args=(str(model_dir), str(home), refs, args.lora_rank, args.threads)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"making the benchmark users failed (exit code {child.exitcode})")
    users_s = time.perf_counter() - start
    lora_mb = (home / "users" / "alice" / "lora.safetensors").stat().st_size / 1e6

    # Steps: default, unless full-size on a CPU (fewest steps) or asked otherwise.
    default = GenerateConfig()
    cfg = default.replace(seed=args.seed)
    slow = full and not cuda
    if args.steps_scale is not None:
        cfg = cfg.replace(
            first_steps=max(1, round(default.first_steps * args.steps_scale)),
            second_steps=max(1, round(default.second_steps * args.steps_scale)),
        )
    elif slow:
        cfg = cfg.replace(first_steps=1, second_steps=1)
    if args.first_steps is not None:
        cfg = cfg.replace(first_steps=args.first_steps)
    if args.second_steps is not None:
        cfg = cfg.replace(second_steps=args.second_steps)
    if args.short_side is not None:
        cfg = cfg.replace(short_side=args.short_side)
    if args.upscale is not None or args.max_short_side is not None:
        cfg = cfg.replace(upscale=args.upscale or 1, max_short_side=args.max_short_side)
    if args.background or args.face_restore:
        prompt = "a sunny beach" if args.background == "replace" else ""
        cfg = cfg.replace(
            background=args.background or "keep", background_prompt=prompt, face_restore=args.face_restore
        )
    reduced = (cfg.first_steps, cfg.second_steps) != (default.first_steps, default.second_steps)
    do_two = (not slow) if args.two_person is None else args.two_person
    do_two = do_two and faces_ok
    out_dir = args.out or work / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    template = load_image(single)
    template2 = load_image(two) if do_two else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    # 1. Cold: a fresh generator (models, face models, user and LoRA load on first use).
    model_config = ModelConfig(base_model=str(model_dir), local_files_only=True)
    t0 = time.perf_counter()
    gen = PortraitGenerator(ModelCache(model_config, device=args.device), home=home)
    probe = Probe(gen.cache, cfg.first_controlnets, cuda, cfg.second_controlnets)
    portrait = gen.generate(template, ["alice"], cfg)
    cold = finish_row(portrait, probe.now() - t0, gen, probe)
    cold["rss"] = peak_rss_gb()
    # 2. Warm: the same generator again.
    warm = portrait_row(gen, probe, template, ["alice"], cfg)
    # 3. Switch user: the LoRA switch alone, then (not on full-size CPU) a whole portrait.
    t0 = probe.now()
    bob = gen.user("bob")
    t1 = probe.now()
    gen.cache.set_lora(bob.lora, cfg.lora_weight)
    switch_s = probe.now() - t1
    user_s = t1 - t0
    probe.take()
    switch_loads = dict(gen.cache.load_count)
    gen.cache.set_lora(gen.user("alice").lora, cfg.lora_weight)  # back, so the next call switches again
    probe.take()
    switched = None if slow else portrait_row(gen, probe, template, ["bob"], cfg)
    # 4. Two people (two users: the LoRA switches once per face).
    pair = portrait_row(gen, probe, template2, list(USERS), cfg) if do_two else None
    diffusion_rss = peak_rss_gb()
    cuda_peak = torch.cuda.max_memory_allocated() / 1024**3 if cuda else None
    # 5. Diffusion stubbed: the non-diffusion work with a face that stays detectable.
    stub_diffusion(gen)
    stubs = [portrait_row(gen, probe, template, ["alice"], cfg) for _ in range(2)][-1:]
    if do_two:
        stubs.append(portrait_row(gen, probe, template2, list(USERS), cfg))

    names = {"single_cold": cold, "single_warm": warm, "single_bob": switched, "two_person": pair}
    for name, row in [*names.items(), ("single_stubbed", stubs[0])]:
        if row is not None:
            row["portrait"].save(out_dir / f"{name}.png")

    # ------------------------------------------------------------------------------------ report
    dev = f"{device} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} thread(s)"
    if cuda:
        dev += f", {torch.cuda.get_device_name(device)}"
    steps1 = denoise_steps(cfg.first_steps, cfg.first_denoise)
    steps2 = denoise_steps(cfg.second_steps, cfg.second_denoise)
    d1 = denoise_steps(default.first_steps, default.first_denoise)
    d2 = denoise_steps(default.second_steps, default.second_denoise)
    h, w = template.shape[:2]
    print(f"\nEasyPhoto generate benchmark — {label} model, {dev}")
    print(
        f"model: {model_dir} ({f'built in {build_s:.1f} s' if build_s is not None else 'existing'}); "
        f"users made in {users_s:.1f} s (child process; untrained rank-{args.lora_rank} kohya LoRA, "
        f"{lora_mb:.1f} MB)"
    )
    print(
        f"templates: {single.name} {w}×{h} (1 face)"
        + (f", {two.name} {template2.shape[1]}×{template2.shape[0]} (2 faces)" if do_two else "")
        + f"; crop short side {cfg.short_side} px, second pass ×{cfg.second_scale}"
    )
    steps_line = (
        f"steps: first {cfg.first_steps} × {cfg.first_denoise} → {steps1} denoising, "
        f"second {cfg.second_steps} × {cfg.second_denoise} → {steps2}"
    )
    if reduced:
        steps_line += (
            f"  — REDUCED (default {default.first_steps}/{default.second_steps} → {d1}/{d2} denoising "
            "steps); default-step times below are EXTRAPOLATED"
        )
    else:
        steps_line += " (GenerateConfig defaults)"
    print(steps_line)

    cols = [("single 1st call", cold), ("single 2nd call", warm)]
    if switched is not None:
        cols.append(("single, user switch", switched))
    if pair is not None:
        cols.append(("two-person", pair))
    cols.append(("single, diffusion stubbed", stubs[0]))
    if len(stubs) > 1:
        cols.append(("two-person, stubbed", stubs[1]))
    ext = extrapolate(warm, cfg, default) if reduced else None

    def fmt(v: float | None, nd: int = 3) -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"

    print("\nStage times, seconds (Portrait.timings; a stage that repeats per face is summed):\n")
    head = "| stage | " + " | ".join(c for c, _ in cols)
    head += " | single 2nd call at default steps (EXTRAPOLATED) |" if ext else " |"
    print(head)
    print("|---" * (len(cols) + 1 + (1 if ext else 0)) + "|")
    seen = list(dict.fromkeys([*STAGES, *(k for _, r in cols for k in r["timings"] if k != "total")]))

    def stage_value(r: dict, stage: str) -> float | None:
        return r["unattributed"] if stage == "unattributed" else r["timings"].get(stage)

    for stage in [*seen, "unattributed", "total"]:
        line = f"| {stage} | " + " | ".join(fmt(stage_value(r, stage)) for _, r in cols)
        if ext:
            line += " | " + fmt(ext[stage] if stage in ext else stage_value(warm, stage))
        print(line + " |")

    print("\nInside the diffusion stages (probe), seconds:\n")
    diff_cols = [(c, r) for c, r in cols if "stubbed" not in c]
    print("| measure | " + " | ".join(c for c, _ in diff_cols) + " |")
    print("|---" * (len(diff_cols) + 1) + "|")
    for p in PASSES:
        short = p.removesuffix("_diffusion")
        rows = [
            ("denoising steps per pass", lambda r, p=p: str(r[p]["steps"])),
            ("s per step (UNet + ControlNets, median)", lambda r, p=p: fmt(r[p]["step_s"])),
            ("pipe() s", lambda r, p=p: fmt(r[p]["pipe_s"])),
            ("pipe() − steps (text enc., VAE, prep)", lambda r, p=p: fmt(r[p]["pipe_s"] - r[p]["steps_s"])),
            (
                "stage − pipe() (build, LoRA, blend)",
                lambda r, p=p: fmt(r["timings"].get(p, 0) - r[p]["pipe_s"]),
            ),
            ("of which pipeline build", lambda r, p=p: fmt(r[p]["build_s"])),
        ]
        for name, get in rows:
            print(f"| {short}: {name} | " + " | ".join(get(r) for _, r in diff_cols) + " |")
    print("| set_lora s (all faces) | " + " | ".join(fmt(r["lora_s"]) for _, r in diff_cols) + " |")
    print(
        "| faces found again after diffusion | "
        + " | ".join(f"{r['found_again']}/{r['faces']}" for _, r in diff_cols)
        + " |"
    )

    print(
        f"\nNon-diffusion overhead per face (total − diffusion passes) / faces, {cfg.short_side} px crop, "
        f"target ≤ {TARGET_OVERHEAD_S} s at 512 px:"
    )
    for name, r in cols:
        if name == "single 1st call":
            continue
        ok = "OK" if r["overhead_per_face"] <= TARGET_OVERHEAD_S else "ABOVE TARGET"
        print(
            f"  {name:28s} {r['overhead_per_face']:.3f} s/face  ({r['faces']} face(s), "
            f"{r['found_again']} found again after diffusion)  {ok}"
        )

    speedup = cold["wall"] / warm["wall"]
    print("\nCold vs warm (same generator):")
    print(
        f"  1st call of a fresh PortraitGenerator: {cold['wall']:.2f} s (constructor, model, face models, "
        f"user, LoRA loading included); peak RSS after it {cold['rss']:.2f} GB"
    )
    same = "identical" if np.array_equal(cold["portrait"].array, warm["portrait"].array) else "DIFFERENT"
    print(f"  2nd call:                              {warm['wall']:.2f} s → {speedup:.1f}× faster", end="")
    print(
        f" (target ≥ {TARGET_SPEEDUP:.0f}× on tiny: {'OK' if speedup >= TARGET_SPEEDUP else 'NOT MET'})"
        if not full
        else ""
    )
    grew = {k: v - cold["loads"].get(k, 0) for k, v in warm["loads"].items() if v != cold["loads"].get(k, 0)}
    print(f"  portraits of the 1st and 2nd call (same seed): {same}")
    print(f"  load_count after 1st call: {cold['loads']}")
    print(
        f"  load_count after 2nd call: {warm['loads']}  → {'unchanged (OK)' if not grew else f'GREW {grew}'}"
    )
    base_grew = {
        k: v - warm["loads"].get(k, 0) for k, v in switch_loads.items() if v != warm["loads"].get(k, 0)
    }
    print(
        f"  switch to user bob: set_lora {switch_s:.3f} s (LoRA switch only) + first gen.user('bob') "
        f"{user_s:.3f} s (reference face, embedding; cached afterwards); loads added: {base_grew}"
    )
    if switched is not None:
        print(
            f"  whole portrait for bob (LoRA switch included): {switched['wall']:.2f} s "
            f"(warm alice: {warm['wall']:.2f} s); load_count {switched['loads']}"
        )
    if pair is not None:
        print(
            f"  two-person call (alice, bob): set_lora {pair['lora_s']:.3f} s in total for "
            f"{pair['faces']} faces; load_count {pair['loads']}"
        )
    print("\nMemory:")
    print(
        f"  peak RSS: {diffusion_rss:.2f} GB (after the diffusion calls); at the end {peak_rss_gb():.2f} GB"
    )
    if cuda:
        print(f"  torch.cuda.max_memory_allocated: {cuda_peak:.2f} GB")

    per_portrait = ext["total"] if ext else warm["timings"]["total"]
    tag = " (EXTRAPOLATED)" if ext else ""
    if cuda:
        ok = "OK" if per_portrait <= TARGET_GPU_S else "ABOVE TARGET"
        print(
            f"\nGPU end-to-end per portrait (warm, 1 face): {per_portrait:.2f} s{tag}; "
            f"target ≤ {TARGET_GPU_S} s: {ok}"
        )

    # README table.
    print("\nMarkdown row(s) for benchmarks/README.md:\n")
    print(
        "| model | device | template | denoising steps (1st/2nd) | total s | diffusion s | "
        "overhead/face s (≤ 0.5) | overhead/face, stubbed s | 1st call s | 2nd call s | LoRA switch s | "
        "peak RSS GB |"
    )
    print("|---" * 12 + "|")
    dshort = f"{device.type} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} thr"
    stub1 = stubs[0]["overhead_per_face"]
    print(
        f"| {label} | {dshort} | 1 face | {steps1}/{steps2} | {warm['timings']['total']:.2f} | "
        f"{warm['diffusion']:.2f} | {warm['overhead_per_face']:.3f} | {stub1:.3f} | {cold['wall']:.2f} | "
        f"{warm['wall']:.2f} ({speedup:.1f}×) | {switch_s:.3f} | {diffusion_rss:.2f} |"
    )
    if ext:
        print(
            f"| {label} | {dshort} | 1 face | {d1}/{d2} EXTRAPOLATED | {ext['total']:.1f} | "
            f"{ext['total'] - (warm['timings']['total'] - warm['diffusion']):.1f} | "
            f"{warm['overhead_per_face']:.3f} | {stub1:.3f} | – | – | – | – |"
        )
    if pair is not None:
        stub2 = stubs[1]["overhead_per_face"] if len(stubs) > 1 else None
        print(
            f"| {label} | {dshort} | 2 faces | {steps1}/{steps2} | {pair['timings']['total']:.2f} | "
            f"{pair['diffusion']:.2f} | {pair['overhead_per_face']:.3f} | {fmt(stub2)} | – | – | "
            f"{pair['lora_s']:.3f} (2 switches) | {diffusion_rss:.2f} |"
        )
    load_after = os.getloadavg()
    print(
        f"\nload average (1 min) at start {load_before[0]:.2f}, at end {load_after[0]:.2f} "
        f"({os.cpu_count()} CPUs; other processes share them)"
    )
    print(f"\nportraits: {out_dir}" + ("" if args.out else " (temporary, deleted)"))
    print(f"benchmark wall time: {time.perf_counter() - started:.1f} s")
    tmp.cleanup()


if __name__ == "__main__":
    main()
