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
