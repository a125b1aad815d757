"""``easyphoto generate --prompt TEXT``: text-to-photo's options and the path that runs it.

SDXL draws the template from the prompt (``--pose``, ``--size``, ``--scene-lora``, ``--template-model``),
then the portrait pipeline paints the user in; the portrait and its template are written to ``--out``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import GenerateConfig
from .app import fail

PromptOpt = Annotated[
    str | None,
    typer.Option(
        "--prompt",
        help="Text-to-photo: SDXL draws the template from this prompt (no --template needed); "
        "@NAME takes a shipped prompt (@studio, @business, @beach, @autumn, @graduation).",
    ),
]
PoseOpt = Annotated[
    str | None,
    typer.Option(
        "--pose", help="With --prompt: an OpenPose image, or a shipped pose (half_body, head_and_shoulders, "
        "arms_crossed).",
    ),
]  # fmt: skip
SizeOpt = Annotated[
    str | None, typer.Option("--size", help="With --prompt: template size WxH (default 1024x1024).")
]
SceneLoraOpt = Annotated[
    Path | None, typer.Option("--scene-lora", help="With --prompt: an SDXL scene/style LoRA file.")
]
TemplateModelOpt = Annotated[
    str | None,
    typer.Option(
        "--template-model",
        help="With --prompt: the SDXL model, hub id, folder or file (EASYPHOTO_TEMPLATE_MODEL).",
    ),
]


@dataclass(frozen=True)
class Options:
    """What ``generate`` was given for text-to-photo."""

    prompt: str | None
    pose: str | None
    size: str | None
    scene_lora: Path | None
    template_model: str | None
    as_json: bool = False
    save_intermediates: bool = False
    photos: tuple[Path, ...] = ()  # a person painted without training (the user "photo")
    background_image: Path | None = None


def parse_size(size: str) -> tuple[int, int]:
    """``"768x1024"`` → ``(768, 1024)``; anything else is a clear error naming ``--size``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", size)
    if not m:
        raise fail(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 1024x1024")
    return int(m.group(1)), int(m.group(2))


def run_text_to_photo(
    opts: Options, user_ids: list[str], cfg: GenerateConfig, out: Path, model_config: Any
) -> None:
    """Make the template, paint the users in, write both PNGs and print one line (or JSON)."""
    from ..config import Text2PhotoConfig
    from ..text_to_photo import text_to_photo_files

    if opts.prompt is None:
        raise fail("give --template (template photos) or --prompt (text-to-photo)")
    values: dict[str, Any] = {"prompt": _prompt(opts.prompt), "seed": cfg.seed}
    if opts.size:
        values["width"], values["height"] = parse_size(opts.size)
    if opts.scene_lora is not None:
        if not opts.scene_lora.is_file():
            raise fail(f"--scene-lora {str(opts.scene_lora)!r}: no such file")
        values["scene_lora"] = str(opts.scene_lora)
    t2p = Text2PhotoConfig(**{k: v for k, v in values.items() if v is not None})
    mc = model_config.replace(template_model=opts.template_model) if opts.template_model else model_config
    from .generate import ProgressPrinter

    batch = text_to_photo_files(
        user_ids, t2p, cfg, out, pose=opts.pose, model_config=mc, keep_intermediates=opts.save_intermediates,
        on_event=None if opts.as_json else ProgressPrinter(), photos=list(opts.photos) or None,
        background_image=opts.background_image,
    )  # fmt: skip
    img = batch.images[0]
    scores = [
        {"face": s["face_index"], "user_id": s["user_id"], "similarity": s["similarity"]}
        for s in img["scores"]
    ]
    if opts.as_json:
        keys = ("path", "template_path", "seed", "template_seed", "seconds")
        typer.echo(json.dumps([{**{k: img[k] for k in keys}, "scores": scores}], indent=2))
        return
    desc = ", ".join(f"face {s['face']} -> {s['user_id']}: similarity {s['similarity']:.3f}" for s in scores)
    took = f"{img['seconds'] or 0:.1f}s"
    typer.echo(f"{img['path']}: {desc} (seed {img['seed']}, {took}; template {img['template_path']})")


def _prompt(text: str) -> str:
    """The prompt, or the shipped one ``@name`` names."""
    if text.startswith("@"):
        from ..errors import ConfigError

        try:
            from ..text_to_photo import preset_prompt

            return preset_prompt(text[1:])
        except ConfigError as exc:
            raise fail(f"--prompt {text}: {exc}") from None
    return text


__all__ = ["Options", "parse_size", "run_text_to_photo"]
