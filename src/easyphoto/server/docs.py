"""``/docs`` (Swagger UI) and ``/redoc`` that work offline: their scripts are served from this server.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without internet (or behind a
strict proxy) ``/docs`` is a blank page. The same assets ship in the maintained ``fastapi-offline``
package (Swagger UI bundle and CSS, ReDoc standalone, favicon); we serve that folder at
:data:`ASSETS_PATH` and point FastAPI's page builders at it, so the pages reference no other host.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the Swagger UI / ReDoc files are served.
ASSETS_PATH = "/docs-assets"


def assets_dir() -> Path:
    """The folder of Swagger UI and ReDoc files inside the installed ``fastapi-offline`` package."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` from local assets (the app is made with ``docs_url=None``)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )


__all__ = ["ASSETS_PATH", "add_docs", "assets_dir"]
