"""``easyphoto prepare``: the command-line adapter over :func:`easyphoto.prepare.prepare`.

Register it in ``cli.py`` with ``app.command("prepare")(prepare_command)``. The library is imported
inside the command, so ``easyphoto --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def prepare_command(
    photos: Annotated[
        list[Path], typer.Argument(help="Photos of one person, or folders of them.", show_default=False)
    ],
    user_id: Annotated[str, typer.Option("--user-id", help="Whose photos these are (a safe folder name).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder [default: EASYPHOTO_HOME/datasets/ID]."),
    ] = None,
    contact_sheet: Annotated[
        Path | None,
        typer.Option(
            "--contact-sheet", help="Also write a PNG of kept crops and rejected photos with reasons."
        ),
    ] = None,
    max_photos: Annotated[int, typer.Option(help="Keep at most this many, the most similar first.")] = 15,
    min_photos: Annotated[int, typer.Option(help="Fail when fewer usable photos remain.")] = 3,
    level_eyes: Annotated[bool, typer.Option(help="Rotate each crop so the eyes are level.")] = True,
    remove_background: Annotated[bool, typer.Option(help="Paint the background white.")] = True,
    retouch: Annotated[bool, typer.Option(help="Smooth the skin (eyes, brows and lips untouched).")] = False,
    retouch_strength: Annotated[float, typer.Option(help="Skin smoothing strength, 0..1.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Turn photos of one person into a training set: one line per photo, kept or why not.

    Writes OUT/train/ (images + metadata.jsonl, Hugging Face imagefolder), OUT/ref.png,
    OUT/embedding.npy and OUT/report.json, replacing an earlier run atomically. With too few usable
    photos nothing is written, every photo's reason is listed and the exit status is 2.
    """
    from .config import PrepareConfig
    from .errors import NotEnoughPhotosError
    from .prepare import PreparedSet, prepare, write_contact_sheet
    from .store import dataset_dir

    config = PrepareConfig(
        max_photos=max_photos,
        min_photos=min_photos,
        level_eyes=level_eyes,
        remove_background=remove_background,
        retouch=retouch,
        retouch_strength=retouch_strength,
    )
    target = out if out is not None else dataset_dir(user_id)

    def progress(i: int, n: int, source: str) -> None:
        if not as_json:
            typer.echo(f"[{i + 1}/{n}] {source}", err=True)

    try:
        prepared = prepare(photos, target, config, user_id=user_id, progress=progress)
    except NotEnoughPhotosError as exc:
        results = getattr(exc, "results", None)
        if contact_sheet is not None and results:
            import numpy as np

            partial = PreparedSet(target, results, np.zeros(128, np.float32), config, user_id)
            write_contact_sheet(partial, contact_sheet)
            typer.echo(f"contact sheet: {contact_sheet}", err=True)
        raise
    if contact_sheet is not None:
        write_contact_sheet(prepared, contact_sheet)
    if as_json:
        typer.echo(json.dumps(prepared.report(), indent=2, ensure_ascii=False))
        return
    for p in prepared.photos:
        if p.kept:
            ref = ", reference" if p.reference else ""
            typer.echo(f"kept  #{p.rank:<2} {p.source} (similarity {p.score:.2f}{ref})")
        else:
            typer.echo(f"skip     {p.source}: {p.reason}")
    typer.echo(f"{len(prepared.kept)} of {len(prepared.photos)} photos kept -> {prepared.out_dir}")
    if contact_sheet is not None:
        typer.echo(f"contact sheet: {contact_sheet}")


__all__ = ["prepare_command"]
