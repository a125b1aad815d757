"""The ``easyphoto`` command line: thin adapters over the library functions.

Every command prints a one-line message naming the file and the reason on bad input and exits with
status 2; ``--debug`` shows the full traceback instead. Heavy libraries (torch, diffusers, gradio)
are imported inside the commands that need them, so ``easyphoto --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from .errors import EasyPhotoError

app = typer.Typer(
    name="easyphoto",
    help="EasyPhoto: train a face LoRA from a few photos and paint yourself into template photos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}

EXIT_BAD_INPUT = 2


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr and return an Exit to raise."""
    _err(message)
    return typer.Exit(code)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def faces(
    images: Annotated[list[Path], typer.Argument(help="Photos to analyse.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object for all files).")] = False,
    landmarks: Annotated[bool, typer.Option("--landmarks", help="Include the 68 landmarks.")] = False,
) -> None:
    """Detect faces: box, detector score and 5 keypoints per face, left to right.

    Files that cannot be read are reported one line each and skipped; the exit status is 2 if any
    file failed.
    """
    from . import FaceAnalyzer, load_image

    analyzer = FaceAnalyzer()
    results: list[dict] = []
    failed = 0
    for path in images:
        try:
            image = load_image(path)
            found = analyzer.detect(image)
        except EasyPhotoError as exc:
            failed += 1
            results.append({"file": str(path), "error": str(exc)})
            if not as_json:
                _err(str(exc))
            continue
        entry = {
            "file": str(path),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "faces": [f.to_dict(landmarks=landmarks) for f in found],
        }
        results.append(entry)
        if not as_json:
            typer.echo(f"{path}: {len(found)} face(s) in {image.shape[1]}x{image.shape[0]}")
            for i, f in enumerate(found):
                x0, y0, x1, y1 = (int(round(v)) for v in f.box)
                kps = " ".join(f"({x:.0f},{y:.0f})" for x, y in f.kps)
                typer.echo(
                    f"  #{i}: box=({x0},{y0},{x1},{y1}) size={f.size:.0f}px score={f.score:.2f} "
                    f"[{f.detector}] kps={kps}"
                )
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def similarity(
    a: Annotated[Path, typer.Argument(help="First photo.", show_default=False)],
    b: Annotated[Path, typer.Argument(help="Second photo.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    threshold: Annotated[
        float, typer.Option(help="Descriptor distance below which the faces are the same person.")
    ] = 0.6,
) -> None:
    """Compare the largest face in two photos: calibrated similarity (0..1) and a verdict."""
    from . import FaceAnalyzer, NoFaceError, face_distance, load_image
    from .face.analyzer import distance_to_similarity

    analyzer = FaceAnalyzer()
    chosen = []
    for path in (a, b):
        face = analyzer.largest(load_image(path))
        if face is None:
            raise NoFaceError(str(path))
        chosen.append(face)
    dist = face_distance(chosen[0], chosen[1])
    score = distance_to_similarity(dist)
    same = dist < threshold
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "a": str(a),
                    "b": str(b),
                    "similarity": round(score, 4),
                    "distance": round(dist, 4),
                    "same_person": same,
                    "threshold": threshold,
                }
            )
        )
    else:
        verdict = "same person" if same else "different people"
        typer.echo(f"similarity {score:.3f} (distance {dist:.3f}): {verdict}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo outputs.")] = Path("easyphoto-demo"),
) -> None:
    """Run the studio offline on a public-domain photo (no downloads) and write the results."""
    from .demo import run_demo

    run_demo(out, echo=typer.echo)


def _model_config(base_model: str | None, device: str | None, dtype: str | None):
    from dataclasses import replace

    from .config import ModelConfig, env_overrides

    cfg = env_overrides(ModelConfig())
    changes = {k: v for k, v in {"base_model": base_model, "device": device, "dtype": dtype}.items() if v}
    return replace(cfg, **changes) if changes else cfg


@app.command()
def train(
    user_id: Annotated[str, typer.Option("--user-id", help="Id of the user model to create.")],
    photos: Annotated[
        list[Path] | None, typer.Argument(help="Photos of the user (prepared first).", show_default=False)
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="A folder made by `easyphoto prepare` instead of photos.")
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="HF id, diffusers folder or .safetensors file.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (default: min(200 x photos, 800)).")
    ] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 128,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / rank).")] = 64.0,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate (text encoder: half).")] = 1e-4,
    resolution: Annotated[int, typer.Option(help="Training resolution in pixels.")] = 512,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 4,
    validate_every: Annotated[int, typer.Option(help="Validate and checkpoint every N steps.")] = 100,
    validation_steps: Annotated[int, typer.Option(help="Inference steps per validation image.")] = 20,
    validation_size: Annotated[int, typer.Option(help="Validation image size in pixels.")] = 512,
    validation_template: Annotated[
        list[Path] | None,
        typer.Option(
            "--validation-template",
            help="Template photo to paint the user into at each validation (repeatable; needs ControlNets).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    no_text_encoder: Annotated[bool, typer.Option("--no-text-encoder", help="Train the UNet only.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Save memory (CUDA).")] = False,
    use_8bit_adam: Annotated[bool, typer.Option(help="8-bit AdamW (CUDA, bitsandbytes).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted training.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default: best).")] = None,
    dtype: Annotated[str | None, typer.Option(help="float16, bfloat16, float32.")] = None,
    json_events: Annotated[
        bool, typer.Option("--json-events", help="Print progress events as JSON lines.")
    ] = False,
) -> None:
    """Train a user's face LoRA (prepares the photos first when photos are given)."""
    from .config import TrainConfig
    from .store import validate_user_id
    from .train import train as run_train

    validate_user_id(user_id)
    if bool(photos) == bool(dataset) and not resume:
        raise fail("give either photos or --dataset DIR")
    if photos:
        from .config import PrepareConfig
        from .prepare import prepare
        from .store import dataset_dir

        out = dataset_dir(user_id)
        prepared = prepare(photos, out, PrepareConfig(resolution=resolution), user_id=user_id)
        typer.echo(f"prepared {len(prepared.kept)} photo(s) into {out}", err=True)
        dataset = Path(prepared.dataset_dir)
    elif dataset is None:
        from .train import work_dir

        state = work_dir(user_id) / "state.json"
        dataset = Path(json.loads(state.read_text())["dataset"]) if state.is_file() else Path(".")
    cfg = TrainConfig(
        resolution=resolution,
        max_steps=max_steps,
        rank=rank,
        alpha=alpha,
        learning_rate=learning_rate,
        grad_accum=grad_accum,
        validate_every=validate_every,
        validation_steps=validation_steps,
        validation_size=validation_size,
        validation_templates=tuple(str(p) for p in validation_template or ()),
        seed=seed,
        train_text_encoder=not no_text_encoder,
        gradient_checkpointing=gradient_checkpointing,
        use_8bit_adam=use_8bit_adam,
    )
    bar = None

    def on_event(event: dict) -> None:
        nonlocal bar
        if json_events:
            typer.echo(json.dumps(event))
            return
        from tqdm import tqdm

        if event["type"] == "start":
            bar = tqdm(
                total=event["max_steps"], initial=event["step"], desc=f"training {user_id}", unit="step"
            )
        elif event["type"] == "step" and bar is not None:
            bar.update(event["step"] - bar.n)
            bar.set_postfix(loss=f"{event['loss']:.4f}")
        elif event["type"] == "validation" and bar is not None:
            bar.write(f"step {event['step']}: validation face-ID scores {event['scores']}")
        elif event["type"] == "done" and bar is not None:
            bar.close()

    result = run_train(
        user_id,
        dataset,
        cfg,
        model_config=_model_config(base_model, device, dtype),
        on_event=on_event,
        resume=resume,
    )
    typer.echo(
        f"user model {user_id!r} written to {result.path} (steps {result.steps}, fused checkpoints "
        f"{result.fused_steps}, best face-ID score {result.best_score:.3f})"
    )


@app.command()
def generate(
    user_id: Annotated[
        list[str], typer.Option("--user-id", help="User id per template face, left to right ('none' skips).")
    ],
    template: Annotated[list[Path], typer.Option("--template", help="Template photo(s).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("portraits"),
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default: random, recorded in the PNG).")
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="HF id, diffusers folder or .safetensors file.")
    ] = None,
    lora_weight: Annotated[float, typer.Option(help="Weight of the user LoRA.")] = 0.9,
    first_steps: Annotated[int, typer.Option(help="Steps of the first diffusion.")] = 50,
    first_denoise: Annotated[float, typer.Option(help="Denoising strength of the first diffusion.")] = 0.45,
    second_steps: Annotated[int, typer.Option(help="Steps of the second diffusion (0: skip).")] = 20,
    second_denoise: Annotated[float, typer.Option(help="Denoising strength of the second diffusion.")] = 0.35,
    second_scale: Annotated[float, typer.Option(help="Resolution factor of the second diffusion.")] = 1.5,
    short_side: Annotated[int, typer.Option(help="Short side of each face crop, pixels.")] = 512,
    crop_ratio: Annotated[float, typer.Option(help="Face crop size in face sizes.")] = 3.0,
    before_fusion_ratio: Annotated[float, typer.Option(help="Face fusion before diffusion (0: off).")] = 0.5,
    after_fusion_ratio: Annotated[
        float, typer.Option(help="Face fusion after the first pass (0: off).")
    ] = 0.5,
    guidance_scale: Annotated[float, typer.Option(help="Classifier-free guidance.")] = 7.0,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="LCM sampler + LCM-LoRA (EASYPHOTO_LCM_LORA), 8 steps per pass: several times faster.",
        ),
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default: best).")] = None,
    dtype: Annotated[str | None, typer.Option(help="float16, bfloat16, float32.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    save_intermediates: Annotated[
        bool,
        typer.Option(
            "--save-intermediates",
            help="Also write each face's stages (fused crop, controls, masks, passes) to OUT/<name>-steps/.",
        ),
    ] = False,
) -> None:
    """Paint trained users into template photos (two diffusion passes); writes PNGs with their settings."""
    from .config import GenerateConfig
    from .generate import PortraitGenerator

    cfg = GenerateConfig(
        seed=seed,
        lora_weight=lora_weight,
        first_steps=first_steps,
        first_denoise=first_denoise,
        second_steps=second_steps,
        second_denoise=second_denoise,
        second_scale=second_scale,
        short_side=short_side,
        crop_ratio=crop_ratio,
        apply_fusion_before=before_fusion_ratio > 0,
        before_fusion_ratio=before_fusion_ratio,
        apply_fusion_after=after_fusion_ratio > 0,
        after_fusion_ratio=after_fusion_ratio,
        guidance_scale=guidance_scale,
        fast=fast,
    )
    gen = PortraitGenerator(model_config=_model_config(base_model, device, dtype))
    results = []
    failed = 0
    for path in template:
        try:
            portrait = gen.generate(
                path, user_id, cfg, template_name=str(path), keep_intermediates=save_intermediates
            )
        except EasyPhotoError as exc:
            failed += 1
            _err(str(exc))
            results.append({"template": str(path), "error": str(exc)})
            continue
        target = out / f"{path.stem}-{'-'.join(u for u in user_id if u.lower() != 'none')}.png"
        portrait.save(target)
        steps_dir = target.with_name(target.stem + "-steps")
        if save_intermediates:
            portrait.save_intermediates(steps_dir)
        scores = [
            {"face": s.face_index, "user_id": s.user_id, "similarity": s.similarity} for s in portrait.scores
        ]
        results.append(
            {
                "template": str(path),
                "output": str(target),
                "scores": scores,
                "seed": portrait.params["seed"],
                "seconds": portrait.timings.get("total"),
                **({"intermediates": str(steps_dir)} if save_intermediates else {}),
            }
        )
        if not as_json:
            desc = ", ".join(
                f"face {s['face']} -> {s['user_id']}: similarity {s['similarity']:.3f}" for s in scores
            )
            typer.echo(
                f"{target}: {desc} (seed {portrait.params['seed']}, {portrait.timings.get('total', 0):.1f}s)"
            )
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


from .diffusion.cli_commands import tiny_model_command  # noqa: E402  (light: no torch at import)
from .prepare_cli import prepare_command  # noqa: E402
from .serve_cli import serve_command, webui_command  # noqa: E402
from .swap_cli import swap_command  # noqa: E402

app.command("prepare")(prepare_command)
app.command("swap")(swap_command)
app.command("serve")(serve_command)
app.command("webui")(webui_command)


@app.command("tiny-model")
def tiny_model(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create.", show_default=False)],
    full_size: Annotated[
        bool, typer.Option("--full-size", help="SD1.5's real architecture with random weights (~10 GB).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
) -> None:
    """Build a random SD1.5 folder with 4 ControlNets, offline (tests and smoke runs: --base-model DIR)."""
    tiny_model_command(out_dir, full_size, seed)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``easyphoto`` console script. Returns the exit status.

    Usage errors are handled by click (usage text, status 2). Our own errors (bad photo, no face,
    unknown user…) print one line naming the input and exit 2; anything unexpected prints one line
    and exits 1. ``--debug`` adds the traceback.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="easyphoto", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        _err(str(code))
        return 1
    except EasyPhotoError as exc:
        if debug:
            traceback.print_exc()
        _err(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _err(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1
    return 0
