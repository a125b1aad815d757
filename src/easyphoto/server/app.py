"""The one server: FastAPI with the ``/v1`` API, EasyPhoto's own endpoints and the web UI.

:func:`create_app` assembles it: settings (:class:`~easyphoto.config.ServerSettings`), the security
middlewares (:mod:`.security`), error mapping (:mod:`.errors`), the routes (:mod:`.routes`,
:mod:`.compat`), the login page, and — unless ``ui=False`` — the Gradio UI mounted at ``/`` after every
API route (a route declared after the mount would answer 404). Training and generation never run in a
request: they are jobs (:mod:`easyphoto.jobs`) run by the worker processes the server starts.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..config import ServerSettings
from ..jobs import JobService, Limits, WorkerSupervisor
from . import compat, routes
from .docs import add_docs
from .errors import install_error_handlers
from .security import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    BodyLimitMiddleware,
    HostAllowlist,
    HostAllowlistMiddleware,
    LoginThrottle,
    SameOriginMiddleware,
    TokenAuthMiddleware,
    UiFileGuard,
    check_bind,
    request_is_https,
    session_value,
    too_many_attempts,
)

log = logging.getLogger("easyphoto.server")


def create_app(settings: ServerSettings | None = None, *, hosts: HostAllowlist | None = None) -> FastAPI:
    """The FastAPI app: API routes, then (if ``settings.ui``) the Gradio UI mounted at ``/``.

    ``hosts``: the Host names served (default: loopback names and ``EASYPHOTO_ALLOWED_HOSTS``)."""
    from .. import __version__

    settings = settings or ServerSettings()
    hosts = hosts if hosts is not None else HostAllowlist.from_env(settings.token)
    service, supervisor = _job_system(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if supervisor is not None:
            supervisor.start()
        try:
            yield
        finally:
            if supervisor is not None:
                await run_in_threadpool(supervisor.stop)

    app = FastAPI(
        title="EasyPhoto",
        version=__version__,
        description="Train a face LoRA from a few photos and paint yourself into template photos.",
        docs_url=None,  # served by add_docs from local assets (works offline)
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.supervisor = supervisor
    install_error_handlers(app)
    throttle = LoginThrottle()
    app.state.login_throttle = throttle
    # Starlette runs the last added middleware first: Host, token, origin, body size, UI file guard.
    if settings.ui:  # innermost: the UI's file routes serve only what the UI shows
        from .webui import LANGUAGE_PATHS, shown_files

        for mount in ("/", *LANGUAGE_PATHS.values()):
            app.add_middleware(UiFileGuard, protected=service.home, shown=shown_files(service), mount=mount)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(SameOriginMiddleware)
    if settings.token:
        app.add_middleware(TokenAuthMiddleware, token=settings.token, throttle=throttle)
    app.add_middleware(HostAllowlistMiddleware, allowlist=hosts)
    _add_login(app, settings, throttle)
    app.include_router(routes.build_router(service, settings, supervisor))
    app.include_router(compat.build_router(service, settings))
    add_docs(app)
    if settings.ui:  # must come last
        from .webui import LANGUAGE_PATHS, mount_ui

        for lang, path in LANGUAGE_PATHS.items():  # the language switch: one page per language
            mount_ui(app, service, lang=lang, path=path)
        mount_ui(app, service, lang=settings.ui_lang)
    else:

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/docs")

    return app


def _job_system(settings: ServerSettings) -> tuple[JobService, Any]:
    """The job service and what runs its jobs: local worker processes on SQLite, or with
    ``EASYPHOTO_QUEUE`` the fleet (jobs in Redis, run by ``easyphoto worker`` anywhere; the server
    only watches for dead workers)."""
    limits = Limits.from_settings(settings)
    if settings.queue:
        from ..jobs.fleet import FleetMonitor, open_store

        store = open_store(settings.queue, settings.home)
        monitor = FleetMonitor(store, settings.job_retention_days) if settings.start_workers else None
        return JobService(settings.home, limits, store=store), monitor
    supervisor = (
        WorkerSupervisor(settings.home, workers=settings.workers, retention_days=settings.job_retention_days)
        if settings.start_workers
        else None
    )
    return JobService(settings.home, limits), supervisor


def _login_page(message: str = "", status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    note = f"<p style='color:#b91c1c'>{message}</p>" if message else ""
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>EasyPhoto</title>"
        "<form method=post action=/login style='font-family:sans-serif;margin:4em'>"
        f"{note}<p>EasyPhoto API token / 访问令牌</p><input name=token type=password autofocus size=40>"
        "<button>OK</button></form>",
        status_code=status,
        headers=headers,
    )


def _add_login(app: FastAPI, settings: ServerSettings, throttle: LoginThrottle) -> None:
    """``/login``: the browser UI trades the token for a session cookie (HttpOnly, SameSite=Strict,
    :data:`~.security.SESSION_MAX_AGE_S`, Secure over https) holding an HMAC of the token, not the token.
    Failed attempts are throttled per client address (429 with Retry-After)."""

    @app.get("/login", include_in_schema=False)
    def login_form() -> HTMLResponse:
        return _login_page()

    @app.post("/login", include_in_schema=False)
    def login(request: Request, token: str = Form("")) -> Response:
        client = request.client.host if request.client else None
        wait = throttle.retry_after(client)
        if wait > 0:
            message, headers = too_many_attempts(wait)
            return _login_page(message, 429, {k.decode(): v.decode() for k, v in headers})
        if not settings.token:
            return _login_page("this server has no token: nothing to log in to", 404)
        if not hmac.compare_digest(token.encode(), settings.token.encode()):
            throttle.failed(client)
            return _login_page("wrong token", 401)
        throttle.succeeded(client)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(
            SESSION_COOKIE,
            session_value(settings.token),
            max_age=SESSION_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            secure=request_is_https(request.scope),
        )
        return resp


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _share_tunnel(host: str, port: int) -> None:
    """Open a Gradio share link to the local server (needs internet; failures are logged)."""
    try:
        from gradio.networking import setup_tunnel

        url = setup_tunnel(
            "127.0.0.1" if host in ("0.0.0.0", "::") else host, port, secrets.token_urlsafe(32), None, None
        )
        log.warning("public share link: %s (protected by EASYPHOTO_API_TOKEN)", url)
        print(f"Public URL: {url}", flush=True)
    except Exception as exc:  # no internet, frpc missing…
        log.error("could not create a share link: %s", exc)
        print(f"could not create a share link: {exc}", flush=True)


def run_server(
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    ui: bool = True,
    share: bool = False,
    open_browser: bool = False,
    settings: ServerSettings | None = None,
    log_level: str = "info",
) -> None:
    """Serve the app with uvicorn until interrupted (Ctrl-C stops the worker cleanly)."""
    import uvicorn

    settings = (settings or ServerSettings()).replace(ui=ui)
    check_bind(host, settings.token, share)
    if ui:
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # The name it was told to listen on is served (an IP literal is: it is the connection's address);
    # a share link arrives under the tunnel's name, so --share (which requires a token) serves any.
    named = [] if host in ("0.0.0.0", "::", "") or _is_ip(host) else [host]
    app = create_app(settings, hosts=HostAllowlist.from_env(settings.token, also=named, any_host=share))
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{url_host}:{port}/"

    def after_start() -> None:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.1)
        else:
            return
        print(f"EasyPhoto is running at {url} (API docs: {url}docs)", flush=True)
        if share:
            _share_tunnel(host, port)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    threading.Thread(target=after_start, daemon=True).start()
    server.run()


__all__ = ["create_app", "run_server"]
