"""``easyphoto swap``: an instant, offline face-swap preview (classical fusion, no diffusion model).

Importing it costs nothing heavy: no torch, no diffusers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app


@app.command("swap")
def swap_command(
    photo: Annotated[
        Path,
        typer.Option("--photo", help="Photo of the user (its largest face is used).", show_default=False),
    ],
    template: Annotated[
        Path, typer.Option("--template", help="Template photo to put the face into.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the PNG result.", show_default=False)],
    ratio: Annotated[
        float,
        typer.Option(
            "--ratio",
            min=0.0,
            max=1.0,
            help="Blend ratio: 0 keeps the template, 1 puts the full face in (EasyPhoto uses 0.5-0.6 "
            "only to guide diffusion).",
        ),
    ] = 1.0,
    face_index: Annotated[
        int | None,
        typer.Option(
            "--face-index", help="Which template face, left to right from 0 (default: the largest)."
        ),
    ] = None,
) -> None:
    """Put the face from PHOTO onto a face of TEMPLATE, instantly, without any diffusion model.

    The result has the template's size; pixels away from the face are unchanged. Exits with status 2
    and a one-line message naming the file when a photo cannot be read or has no face.
    """
    from ..imageio import save_png
    from ..store import check_output_file
    from ..workflows import swap

    check_output_file(out)  # before the work, not after
    result = swap(photo, template, ratio=ratio, face_index=face_index)
    save_png(result.image, out, text={"easyphoto": f"swap ratio={ratio:g}"})
    h, w = result.image.shape[:2]
    note = " (source mirrored to match the head turn)" if result.flipped else ""
    typer.echo(f"{out}: {w}x{h}, face swapped at ratio {ratio:g}{note}")


__all__ = ["swap_command"]
