"""``easyphoto faces``, ``similarity`` and ``demo``: face analysis on photos, no diffusion model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import EasyPhotoError
from .app import EXIT_BAD_INPUT, app, echo_error


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
    from .. import FaceAnalyzer, load_image

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
                echo_error(str(exc))
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
    from .. import FaceAnalyzer, NoFaceError, face_distance, load_image
    from ..face.analyzer import distance_to_similarity

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
    train: Annotated[
        bool | None,
        typer.Option(
            "--train/--no-train",
            help="Also train a short LoRA and make a portrait (default: when the models and a GPU are here).",
            show_default=False,
        ),
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="HF id, diffusers folder or .safetensors file.")
    ] = None,
) -> None:
    """Show the studio's main job offline on public-domain photos: face analysis, preparation with its
    reasons, instant swap previews with scores, and (with the models) a short training and a portrait;
    writes OUT/index.html."""
    from ..demo import run_demo
    from ..store import check_output_dir
    from .app import model_config

    cfg = model_config(base_model, None, None) if base_model else None
    run_demo(check_output_dir(out), echo=typer.echo, train=train, model_config=cfg)
