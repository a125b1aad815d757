"""``easyphoto generate``: paint trained users into template photos; one line (or JSON) per portrait."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import GenerateConfig
from . import text2photo as t2p
from .app import EXIT_BAD_INPUT, app, echo_error, model_config, overrides, setting

G = GenerateConfig
PHOTO_HELP = "No training: photo(s) of the person, painted in as user 'photo' by the IP-Adapter."
STEPS_HELP = "Also write each face's stages (fused crop, controls, masks, passes) to OUT/<name>-steps/."
FAST_HELP = "LCM sampler + LCM-LoRA (EASYPHOTO_LCM_LORA), 8 steps per pass: several times faster."
BACKGROUND_HELP = "A picture to put behind the people (implies --background replace)."


@app.command()
def generate(
    template: Annotated[list[Path] | None, typer.Option("--template", help="Template photo(s).")] = None,
    user_id: Annotated[
        list[str] | None,
        typer.Option("--user-id", help="User id per template face, left to right ('none' skips)."),
    ] = None,
    photo: Annotated[list[Path] | None, typer.Option("--photo", help=PHOTO_HELP)] = None,
    ip_adapter_scale: Annotated[float | None, setting(G, "ip_adapter_scale")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("portraits"),
    seed: Annotated[int | None, setting(G, "seed")] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="HF id, diffusers folder or .safetensors file.")
    ] = None,
    lora_weight: Annotated[float | None, setting(G, "lora_weight")] = None,
    first_steps: Annotated[int | None, setting(G, "first_steps")] = None,
    first_denoise: Annotated[float | None, setting(G, "first_denoise")] = None,
    second_steps: Annotated[int | None, setting(G, "second_steps")] = None,
    second_denoise: Annotated[float | None, setting(G, "second_denoise")] = None,
    second_scale: Annotated[float | None, setting(G, "second_scale")] = None,
    short_side: Annotated[int | None, setting(G, "short_side")] = None,
    crop_ratio: Annotated[float | None, setting(G, "crop_ratio")] = None,
    before_fusion_ratio: Annotated[
        float | None, setting(G, "before_fusion_ratio", help="Face fusion before diffusion (0: off).")
    ] = None,
    after_fusion_ratio: Annotated[
        float | None, setting(G, "after_fusion_ratio", help="Face fusion after the first pass (0: off).")
    ] = None,
    guidance_scale: Annotated[float | None, setting(G, "guidance_scale")] = None,
    upscale: Annotated[int | None, setting(G, "upscale")] = None,
    max_short_side: Annotated[int | None, setting(G, "max_short_side")] = None,
    face_upscale: Annotated[str | None, setting(G, "face_upscale")] = None,
    sdxl_short_side: Annotated[int | None, setting(G, "sdxl_short_side")] = None,
    face_restore: Annotated[bool | None, setting(G, "face_restore")] = None,
    background: Annotated[str | None, setting(G, "background")] = None,
    background_prompt: Annotated[str | None, setting(G, "background_prompt")] = None,
    background_image: Annotated[Path | None, typer.Option("--background-image", help=BACKGROUND_HELP)] = None,
    fast: Annotated[bool, typer.Option("--fast", help=FAST_HELP)] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default: best).")] = None,
    dtype: Annotated[str | None, typer.Option(help="float16, bfloat16, float32.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    save_intermediates: Annotated[bool, typer.Option("--save-intermediates", help=STEPS_HELP)] = False,
    prompt: t2p.PromptOpt = None,
    pose: t2p.PoseOpt = None,
    size: t2p.SizeOpt = None,
    scene_lora: t2p.SceneLoraOpt = None,
    template_model: t2p.TemplateModelOpt = None,
) -> None:
    """Paint trained users — or, with --photo, a person without training — into template photos.

    With --prompt, SDXL draws the template first (text-to-photo). Writes PNGs with their settings.
    """
    from ..store import check_output_dir
    from ..workflows import generate_batch

    check_output_dir(out)
    # the settings given as options (--prompt is text-to-photo's, not the portrait passes' prompt)
    given = {k: v for k, v in locals().items() if k in G.model_fields and k != "prompt"}
    cfg = _settings(given, before_fusion_ratio, after_fusion_ratio, background_image)
    mc = model_config(base_model, device, dtype)
    mc = mc.replace(template_model=template_model) if template_model else mc  # also SDXL users' model
    if prompt is not None or not template:
        opts = t2p.Options(
            prompt, pose, size, scene_lora, template_model, as_json, save_intermediates,
            tuple(photo or ()), background_image,
        )  # fmt: skip
        return t2p.run_text_to_photo(opts, user_id or [], cfg, out, mc)
    batch = generate_batch(
        [(p, str(p)) for p in template], user_id or [], cfg, out,
        model_config=mc, keep_intermediates=save_intermediates,
        photos=photo or None, on_event=None if as_json else ProgressPrinter(),
        background_image=background_image,
    )  # fmt: skip
    results = [_render(img, as_json) for img in batch.images]
    for err in batch.errors:
        echo_error(err["error"])
        results.append({"template": err["template"], "error": err["error"]})
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    if batch.errors:
        raise typer.Exit(EXIT_BAD_INPUT)


def _settings(
    given: dict[str, Any], before_fusion: float | None, after_fusion: float | None, picture: Path | None
) -> GenerateConfig:
    """The :class:`GenerateConfig` of the options given (unset ones keep the schema's defaults): a fusion
    ratio of 0 switches that fusion off, a background picture implies ``background="replace"`` (and
    contradicts any other mode given: refused rather than silently dropped)."""
    if picture is not None and given.get("background") not in (None, "replace"):
        from ..errors import ConfigError

        raise ConfigError(
            f"--background-image is put behind the people, which is --background replace, not "
            f"--background {given['background']}: drop one of them"
        )
    extra = {
        "fast": given.get("fast") or None,
        "apply_fusion_before": None if before_fusion is None else before_fusion > 0,
        "apply_fusion_after": None if after_fusion is None else after_fusion > 0,
        "background": given.get("background") or ("replace" if picture else None),
    }
    return GenerateConfig.from_layers(overrides(**(given | extra)))


class ProgressPrinter:
    """Generation progress on stderr: ``template 1/2 · face 1/1 · first pass · step 5/22``, redrawn in
    place on a terminal; elsewhere (logs, pipes) one line per template and per finished pass."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.where = ""
        self.width = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "template":
            self.where = f"template {event['index'] + 1}/{event['total']}"
            self._line(f"{self.where}: {event.get('name', '')}", final=True)
        elif kind == "face":
            self.where = self.where.split(" · ")[0] + f" · face {event.get('face', 1)}/{event.get('of', 1)}"
        elif kind == "step":
            done = event["step"] == event["steps"]
            text = f"{self.where} · {event['pass']} pass · step {event['step']}/{event['steps']}"
            if self.tty or done:
                self._line(text, final=done and not self.tty)
        elif kind == "portrait" and self.tty:
            self._line("", final=False)

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width) + ("\n" if final else ""))
            self.width = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _render(img: dict[str, Any], as_json: bool) -> dict[str, Any]:
    scores = [
        {"face": s["face_index"], "user_id": s["user_id"], "similarity": s["similarity"]}
        for s in img["scores"]
    ]
    if not as_json:
        desc = ", ".join(
            f"face {s['face']} -> {s['user_id']}: similarity {s['similarity']:.3f}" for s in scores
        )
        typer.echo(f"{img['path']}: {desc} (seed {img['seed']}, {img['seconds'] or 0:.1f}s)")
    entry = {"template": img["template"], "output": img["path"], "scores": scores, "seed": img["seed"]}
    entry["seconds"] = img["seconds"]
    if "intermediates" in img:
        entry["intermediates"] = img["intermediates"]
    return entry
