"""``easyphoto models list | download | verify`` and ``easyphoto doctor``: the model registry at work."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import EasyPhotoError
from .app import EXIT_BAD_INPUT, app, echo_error, fail

models_app = typer.Typer(
    help="The models the studio uses: what is here, download what is missing, check the files.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

Names = Annotated[
    list[str] | None,
    typer.Argument(
        help="Model names (see `easyphoto models list`); none: the default set.", show_default=False
    ),
]


def _entries(names: list[str] | None, every: bool) -> list:
    from ..registry import REGISTRY, entry

    if names:
        try:
            return [entry(n) for n in names]
        except KeyError as exc:
            raise fail(str(exc.args[0])) from None
    return [e for e in REGISTRY.values() if every or e.default]


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every model: role, where the settings point, whether it is here, size and licence."""
    from ..doctor import model_rows

    rows = model_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = {True: "here", False: "missing", None: "not checked"}[r["present"]]
        tag = "" if r["default"] else " (optional)"
        lic = r["licence"] + ("" if r["commercial"] else " — NOT for commercial use")
        size = f"{r['size_mb']} MB" if r.get("size_mb") else ""
        typer.echo(f"{r['name']}{tag}: {state} {size}".rstrip())
        typer.echo(f"    {r['role']}")
        typer.echo(f"    source: {r['configured']}" + (f"  (setting {r['setting']})" if r["setting"] else ""))
        typer.echo(f"    licence: {lic}")


@models_app.command()
def download(
    names: Names = None,
    every: Annotated[bool, typer.Option("--all", help="Also the optional models.")] = False,
) -> None:
    """Download what is missing (resumable, hash-checked; each source's fallbacks tried in order)."""
    from .. import download as dl

    failed = 0
    for e in _entries(names, every):
        try:
            st = dl.download(e, say=typer.echo)
        except EasyPhotoError as exc:
            failed += 1
            echo_error(str(exc))
            continue
        where = st.source.describe() if st.source else "?"
        typer.echo(f"{e.name}: here ({round(st.size_bytes / 1e6)} MB, from {where})")
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


@models_app.command()
def verify(
    names: Names = None,
    every: Annotated[bool, typer.Option("--all", help="Also the optional models.")] = False,
) -> None:
    """Re-hash the files on disk (offline) against the hub's ETags and the published sha256."""
    from .. import download as dl

    bad = 0
    for e in _entries(names, every):
        try:
            problems = dl.verify(e)
        except EasyPhotoError:
            if names or e.default:
                bad += 1
            typer.echo(f"{e.name}: MISSING")
            continue
        if problems:
            bad += 1
            for p in problems:
                typer.echo(f"{e.name}: CORRUPT {p}")
        else:
            typer.echo(f"{e.name}: ok")
    if bad:
        echo_error(f"{bad} model(s) missing or corrupt: `easyphoto models download NAME` fetches them again")
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    queue: Annotated[
        str | None,
        typer.Option("--queue", help="A job fleet's Redis URL: show its workers, queues and jobs in flight."),
    ] = None,
) -> None:
    """What this machine has: device, torch/CUDA, free disk and VRAM, models present, how to get the rest."""
    from ..doctor import fleet, fleet_lines, report

    if queue:
        rep = fleet(queue)
        typer.echo(json.dumps(rep, indent=2) if as_json else "\n".join(fleet_lines(rep)))
        return

    rep = report()
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    typer.echo(f"python {rep['python']} on {rep['platform']}")
    typer.echo(f"torch {rep['torch']} (CUDA {rep['cuda'] or 'none'}); device: {rep['device']}")
    for g in rep["gpus"]:
        typer.echo(f"  GPU {g['index']}: {g['name']}, {g['free_gb']} of {g['total_gb']} GB free")
    typer.echo(f"home {rep['home']}: {rep['home_free_gb']} GB free")
    typer.echo(f"hub cache {rep['hub_cache']}: {rep['hub_cache_free_gb']} GB free")
    for r in rep["models"]:
        state = {True: "here", False: "MISSING", None: "not checked (hub id)"}[r["present"]]
        if r["present"] is False and not r["default"]:
            state = "optional"
        typer.echo(f"  {r['name']:<24} {state:<10} {r['configured']}")
    if rep["fix"]:
        typer.echo(f"to fetch the missing models: {rep['fix']}")
    else:
        typer.echo("every default model is here")
