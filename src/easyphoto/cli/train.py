"""``easyphoto train``: prepare a user's photos and train their face LoRA (or resume), with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..config import TrainConfig
from .app import app, fail, model_config, overrides, setting

T = TrainConfig


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
        str | None,
        typer.Option(
            "--base-model",
            help="HF id, diffusers folder or .safetensors file; SD1.5 or SDXL (an SDXL base trains an "
            "SDXL user at 1024 px).",
        ),
    ] = None,
    max_steps: Annotated[int | None, setting(T, "max_steps")] = None,
    rank: Annotated[int | None, setting(T, "rank")] = None,
    alpha: Annotated[float | None, setting(T, "alpha")] = None,
    learning_rate: Annotated[float | None, setting(T, "learning_rate")] = None,
    resolution: Annotated[int | None, setting(T, "resolution")] = None,
    grad_accum: Annotated[int | None, setting(T, "grad_accum")] = None,
    validate_every: Annotated[int | None, setting(T, "validate_every")] = None,
    validation_steps: Annotated[int | None, setting(T, "validation_steps")] = None,
    validation_size: Annotated[int | None, setting(T, "validation_size")] = None,
    validation_template: Annotated[
        list[Path] | None,
        typer.Option(
            "--validation-template",
            help="Template photo to paint the user into at each validation (repeatable; needs ControlNets).",
        ),
    ] = None,
    seed: Annotated[int | None, setting(T, "seed")] = None,
    no_text_encoder: Annotated[bool, typer.Option("--no-text-encoder", help="Train the UNet only.")] = False,
    gradient_checkpointing: Annotated[bool | None, setting(T, "gradient_checkpointing")] = None,
    use_8bit_adam: Annotated[bool | None, setting(T, "use_8bit_adam")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted training.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default: best).")] = None,
    dtype: Annotated[str | None, typer.Option(help="float16, bfloat16, float32.")] = None,
    json_events: Annotated[
        bool, typer.Option("--json-events", help="Print progress events as JSON lines.")
    ] = False,
) -> None:
    """Train a user's face LoRA (prepares the photos first when photos are given)."""
    from ..store import validate_user_id
    from ..workflows import prepare_and_train

    user_id = validate_user_id(user_id)
    if bool(photos) == bool(dataset) and not resume:
        raise fail("give either photos or --dataset DIR")
    cfg = TrainConfig.from_layers(
        overrides(
            max_steps=max_steps, rank=rank, alpha=alpha, learning_rate=learning_rate, resolution=resolution,
            grad_accum=grad_accum, validate_every=validate_every, validation_steps=validation_steps,
            validation_size=validation_size, seed=seed, gradient_checkpointing=gradient_checkpointing,
            use_8bit_adam=use_8bit_adam,
            validation_templates=tuple(str(p) for p in validation_template) if validation_template else None,
            train_text_encoder=False if no_text_encoder else None,
        )
    )  # fmt: skip
    result = prepare_and_train(
        user_id,
        photos or None,
        dataset=dataset,
        train_config=cfg,
        model_config=model_config(base_model, device, dtype),
        on_event=_JsonEvents() if json_events else _ProgressBar(user_id),
        resume=resume,
    )
    typer.echo(
        f"user model {user_id!r} written to {result.path} (steps {result.steps}, fused checkpoints "
        f"{result.fused_steps}, best face-ID score {result.best_score:.3f})"
    )


class _JsonEvents:
    def __call__(self, event: dict) -> None:
        typer.echo(json.dumps(event))


class _ProgressBar:
    """Preparation lines on stderr, then a tqdm bar of the training steps."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event["type"]
        if kind == "prepared":
            typer.echo(f"prepared {event['kept']} photo(s) into {event['out']}", err=True)
            for r in event["rejected"]:
                typer.echo(f"  skipped {r['photo']}: {r['reason']}", err=True)
        elif kind == "start":
            desc = f"training {self.user_id}"
            self.bar = tqdm(total=event["max_steps"], initial=event["step"], desc=desc, unit="step")
        elif kind == "step" and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.4f}")
        elif kind == "validation" and self.bar is not None:
            self.bar.write(f"step {event['step']}: validation face-ID scores {event['scores']}")
        elif kind == "done" and self.bar is not None:
            self.bar.close()
