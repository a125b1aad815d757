"""``easyphoto serve`` and ``easyphoto webui``: one server with the web UI at ``/``, the API under
``/v1`` and ``/easyphoto`` and the OpenAPI docs at ``/docs``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .app import app

HostOpt = Annotated[
    str,
    typer.Option(help="Address to listen on. Anything but loopback needs EASYPHOTO_API_TOKEN."),
]
PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on (1-65535).")]
NoUiOpt = Annotated[bool, typer.Option("--no-ui", help="Serve the API only (no Gradio UI).")]
ShareOpt = Annotated[
    bool, typer.Option("--share", help="Also open a public Gradio share link (needs EASYPHOTO_API_TOKEN).")
]
WorkersOpt = Annotated[
    int | None, typer.Option(help="Worker processes, i.e. GPU-heavy jobs at once (default 1).")
]
LangOpt = Annotated[
    str | None, typer.Option("--lang", help="UI language: auto (browser), en or zh-CN (also zh, cn).")
]
BaseModelOpt = Annotated[
    str | None, typer.Option("--base-model", help="HF id, diffusers folder or .safetensors file.")
]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="EASYPHOTO_HOME (models, jobs, templates).")]
QueueOpt = Annotated[
    str | None,
    typer.Option(
        "--queue",
        help="Redis URL of a job fleet (redis://HOST:6379/0; EASYPHOTO_QUEUE): jobs run on "
        "`easyphoto worker` processes, not local workers.",
    ),
]


def _run(
    host: str,
    port: int,
    no_ui: bool,
    share: bool,
    workers: int | None,
    lang: str | None,
    base_model: str | None,
    home: Path | None,
    open_browser: bool,
    queue: str | None = None,
) -> None:
    from ..config import ServerSettings
    from ..server.app import run_server

    if base_model:
        os.environ["EASYPHOTO_BASE_MODEL"] = base_model  # the worker processes inherit it
    if home:
        os.environ["EASYPHOTO_HOME"] = str(home.expanduser().resolve())
    settings = ServerSettings.from_env(workers=workers, ui_lang=lang, ui=not no_ui, queue=queue)
    check_listen(host, port)
    run_server(host, port, ui=not no_ui, share=share, open_browser=open_browser, settings=settings)


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address this machine cannot listen on (unknown name, in use, no permission)."""
    import socket

    from ..errors import ConfigError

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {host!r}: not an address of this machine ({exc})") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@app.command("serve")
def serve_command(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 7860,
    no_ui: NoUiOpt = False,
    share: ShareOpt = False,
    workers: WorkersOpt = None,
    lang: LangOpt = None,
    base_model: BaseModelOpt = None,
    home: HomeOpt = None,
    queue: QueueOpt = None,
) -> None:
    """Run the EasyPhoto server: web UI at /, API under /v1 and /easyphoto, docs at /docs."""
    _run(host, port, no_ui, share, workers, lang, base_model, home, open_browser=False, queue=queue)


@app.command("webui")
def webui_command(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 7860,
    share: ShareOpt = False,
    workers: WorkersOpt = None,
    lang: LangOpt = None,
    base_model: BaseModelOpt = None,
    home: HomeOpt = None,
    queue: QueueOpt = None,
) -> None:
    """Like `serve`, and open the web UI in the browser."""
    _run(host, port, False, share, workers, lang, base_model, home, open_browser=True, queue=queue)


__all__ = ["serve_command", "webui_command"]
