"""What keeps the server safe to expose: bind check, bearer token, same-origin rule, body size limit.

Once ``EASYPHOTO_API_TOKEN`` is set, every request needs ``Authorization: Bearer <token>`` (the browser
UI logs in once at ``/login`` and gets a cookie); :func:`check_bind` refuses a non-loopback address
without a token. These are plain ASGI middlewares, so they also guard the mounted web UI.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any

from fastapi import HTTPException

from ..config import MB
from ..errors import ConfigError

TOKEN_COOKIE = "easyphoto_token"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, share: bool = False) -> None:
    """Refuse to serve beyond this machine without a token (:class:`ConfigError`)."""
    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a token: anyone on the network could train and "
            "generate. Set EASYPHOTO_API_TOKEN (every request then needs 'Authorization: Bearer <token>') "
            "or listen on 127.0.0.1"
        )
    if share and not token:
        raise ConfigError("--share makes the server public: set EASYPHOTO_API_TOKEN first")


def _send_json(status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None):
    payload = json.dumps(body).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        + (headers or []),
    }
    return start, {"type": "http.response.body", "body": payload}


class TokenAuthMiddleware:
    """Every HTTP/websocket request needs the bearer token (or the UI's login cookie) once one is set."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _ok(self, scope: dict[str, Any]) -> bool:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer " and hmac.compare_digest(auth[7:].strip(), self.token):
            return True
        cookie = headers.get(b"cookie", b"").decode("latin-1")
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and hmac.compare_digest(value.encode(), self.token):
                return True
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._ok(scope) or scope.get("path") == "/login":
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = dict(scope.get("headers") or [])
        if scope.get("method") == "GET" and b"text/html" in headers.get(b"accept", b""):
            await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login")]})
            await send({"type": "http.response.body", "body": b""})
            return
        start, body = _send_json(
            401,
            {"detail": "authentication required: send 'Authorization: Bearer <EASYPHOTO_API_TOKEN>'"},
            [(b"www-authenticate", b"Bearer")],
        )
        await send(start)
        await send(body)


class SameOriginMiddleware:
    """Refuse state-changing requests a web page on another site makes through the user's browser.

    A browser sends ``Origin`` with cross-site POST/PUT/DELETE requests; when it names another host
    than the one the request is addressed to, the request is refused (403). Scripts and the API
    clients send no ``Origin`` and are not affected.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin", b"").decode("latin-1").strip()
            host = headers.get(b"host", b"").decode("latin-1").strip().lower()
            if origin and origin != "null":
                from urllib.parse import urlsplit

                if urlsplit(origin).netloc.lower() != host:
                    start, body = _send_json(403, {"detail": f"cross-site request from {origin} refused"})
                    await send(start)
                    await send(body)
                    return
        await self.app(scope, receive, send)


class RequestTooLarge(HTTPException):
    """The request body is over the server's limit (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request too large (limit {limit / MB:.0f} MB)")


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes: from Content-Length at once, else while reading."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            start, body = _send_json(413, {"detail": RequestTooLarge(self.limit).detail})
            await send(start)
            await send(body)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise RequestTooLarge(self.limit)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except RequestTooLarge as exc:
            if started:
                raise
            start, body = _send_json(413, {"detail": exc.detail})
            await send(start)
            await send(body)


__all__ = [
    "TOKEN_COOKIE",
    "BodyLimitMiddleware",
    "RequestTooLarge",
    "SameOriginMiddleware",
    "TokenAuthMiddleware",
    "check_bind",
    "is_loopback",
]
