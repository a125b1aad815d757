"""``easyphoto prepare``: turn photos of one person into a training set, one line per photo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..config import PrepareConfig
from .app import app, overrides, setting

P = PrepareConfig


@app.command("prepare")
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
    max_photos: Annotated[int | None, setting(P, "max_photos")] = None,
    min_photos: Annotated[int | None, setting(P, "min_photos")] = None,
    level_eyes: Annotated[bool | None, setting(P, "level_eyes", "--level-eyes/--no-level-eyes")] = None,
    remove_background: Annotated[
        bool | None, setting(P, "remove_background", "--remove-background/--no-remove-background")
    ] = None,
    retouch: Annotated[bool | None, setting(P, "retouch", "--retouch/--no-retouch")] = None,
    retouch_strength: Annotated[float | None, setting(P, "retouch_strength")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Turn photos of one person into a training set: one line per photo, kept or why not.

    Writes OUT/train/ (images + metadata.jsonl, Hugging Face imagefolder), OUT/ref.png,
    OUT/embedding.npy and OUT/report.json, replacing an earlier run atomically. With too few usable
    photos nothing is written, every photo's reason is listed and the exit status is 2.
    """
    from ..store import check_output_dir, check_output_file, dataset_dir, validate_user_id
    from ..workflows import prepare_photos

    if contact_sheet is not None:
        check_output_file(contact_sheet)

    config = PrepareConfig.from_layers(
        overrides(
            max_photos=max_photos, min_photos=min_photos, level_eyes=level_eyes,
            remove_background=remove_background, retouch=retouch, retouch_strength=retouch_strength,
        )
    )  # fmt: skip
    target = check_output_dir(out) if out is not None else dataset_dir(validate_user_id(user_id))

    def progress(event: dict) -> None:
        if event["type"] == "prepare" and not as_json:
            typer.echo(f"[{event['index'] + 1}/{event['total']}] {event['photo']}", err=True)
        elif event["type"] == "contact_sheet":
            typer.echo(f"contact sheet: {contact_sheet}", err=True)

    prepared = prepare_photos(user_id, photos, target, config, contact_sheet=contact_sheet, on_event=progress)
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
