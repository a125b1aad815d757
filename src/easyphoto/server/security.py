"""What keeps the server safe to expose: bind check, Host allowlist, bearer token and login session,
same-origin rule, login throttle, body size limit and the web UI's file guard.

Once ``EASYPHOTO_API_TOKEN`` is set, every request needs ``Authorization: Bearer <token>`` (the browser
UI logs in once at ``/login`` and gets a session cookie derived from the token); :func:`check_bind`
refuses a non-loopback address without a token of at least :data:`MIN_TOKEN_CHARS` characters. Every
request must name this server in its ``Host`` header (:class:`HostAllowlistMiddleware`), so a web page
that re-points its own domain at 127.0.0.1 (DNS rebinding) cannot talk to a server without a token.
These are plain ASGI middlewares, so they also guard the mounted web UI.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from ..config import MB
from ..errors import ConfigError

#: Cookie of a browser session (``/login``): ``<expiry>.<HMAC-SHA256(token, expiry)>``, never the token.
SESSION_COOKIE = "easyphoto_session"
#: A session lasts a day: longer than the longest job someone watches in the UI (EasyPhoto's 800-step
#: training is ~17 h on our 2-core CPU, benchmarks/README.md), short enough that a copied cookie stops
#: working the next day. Changing the token ends every session at once.
SESSION_MAX_AGE_S = 24 * 3600
#: Shortest token that unlocks a non-loopback bind: 16 random characters of ``secrets.token_urlsafe``
#: carry 96 bits, beyond any online guessing (with :class:`LoginThrottle`, ~100 guesses a day per address).
MIN_TOKEN_CHARS = 16
#: Environment variable with the extra Host names the server answers to (comma-separated; ``*`` any,
#: honoured only together with a token). To move into :class:`~easyphoto.config.ServerSettings`.
ALLOWED_HOSTS_ENV = "EASYPHOTO_ALLOWED_HOSTS"

_HOST_NAME_RE = re.compile(r"^[a-z0-9_.-]{1,253}$")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, share: bool = False) -> None:
    """Refuse to serve beyond this machine without a token of :data:`MIN_TOKEN_CHARS` or more
    characters (:class:`ConfigError`)."""
    public = share or not is_loopback(host)
    where = "a public share link" if share else f"{host}"
    if public and not token:
        if share:
            raise ConfigError("--share makes the server public: set EASYPHOTO_API_TOKEN first")
        raise ConfigError(
            f"refusing to listen on {host} without a token: anyone on the network could train and "
            "generate. Set EASYPHOTO_API_TOKEN (every request then needs 'Authorization: Bearer <token>') "
            "or listen on 127.0.0.1"
        )
    if public and token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"EASYPHOTO_API_TOKEN is too short to guard {where}: {len(token)} characters, at least "
            f"{MIN_TOKEN_CHARS} needed (make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))')"
        )


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` printable characters (for echoing client input in a message)."""
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "…"


def _json_message(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
    """The two ASGI messages of a JSON error answer: ``detail`` and ``message`` (EasyPhoto's field)."""
    payload = json.dumps({"detail": message, "message": message}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        + (headers or []),
    }
    return start, {"type": "http.response.body", "body": payload}


async def _refuse(scope: dict[str, Any], send: Any, status: int, message: str, headers: Any = None) -> None:
    """Answer ``status`` with a one-line JSON message (websockets: close with policy violation)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    start, body = _json_message(status, message, headers)
    await send(start)
    await send(body)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


# ---------------------------------------------------------------------------------------------- Host


def host_name(value: str) -> str | None:
    """The name part of a ``Host`` header (lower case, no port, IPv6 without brackets); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        return _ip_text(name) if ":" in name else None
    name, sep, port = value.rpartition(":")
    if not sep:
        name = value
    elif not port.isdigit():
        return None
    name = name.rstrip(".")
    return name if _HOST_NAME_RE.match(name) else None


class HostAllowlist:
    """The Host names a server answers to: loopback names, the configured ones, ``*`` (with a token).

    ``names``: exact names, or ``*.example.com`` for every subdomain. ``any_host``: accept every name;
    refused without a token, since only the token then keeps DNS rebinding out.
    """

    def __init__(self, names: Iterable[str] = (), any_host: bool = False, token: str | None = None) -> None:
        if any_host and not token:
            raise ConfigError(
                f"{ALLOWED_HOSTS_ENV}=* accepts any Host header, which only a token makes safe: set "
                "EASYPHOTO_API_TOKEN too, or list the names the server is reached by"
            )
        self.any_host = any_host
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        for raw in names:
            if raw.startswith("*."):
                name = host_name(raw[2:])
                if name:
                    self.suffixes.append("." + name)
                    continue
            else:
                name = _ip_text(raw) or host_name(raw)
                if name:
                    self.exact.add(name)
                    continue
            raise ConfigError(f"{ALLOWED_HOSTS_ENV}: {_short(raw)!r} is not a host name")

    @classmethod
    def from_env(
        cls,
        token: str | None,
        environ: Mapping[str, str] | None = None,
        *,
        also: Iterable[str] = (),
        any_host: bool = False,
    ) -> HostAllowlist:
        """The allowlist of ``EASYPHOTO_ALLOWED_HOSTS`` (comma-separated names; ``*``: any host), plus
        ``also`` (e.g. the name the server was told to listen on); ``any_host`` as for ``*``."""
        raw = (os.environ if environ is None else environ).get(ALLOWED_HOSTS_ENV, "")
        names = [n.strip() for n in raw.split(",") if n.strip()] + list(also)
        any_host = any_host or "*" in names
        return cls([n for n in names if n != "*"], any_host=any_host, token=token)

    def allows(self, name: str, server_host: str | None = None) -> bool:
        """True if ``name`` (from :func:`host_name`) may be served.

        Besides the list, the address the connection was accepted on is accepted (uvicorn gives the
        socket's IP: a browser only sends it when it browsed to that very address, never by rebinding).
        """
        if self.any_host or is_loopback(name) or name in self.exact:
            return True
        if any(name.endswith(s) for s in self.suffixes):
            return True
        if server_host is None:
            return False
        return name == (_ip_text(server_host) or server_host.lower())


def _ip_text(value: str) -> str | None:
    """The canonical text of an IP address (an IPv4-mapped IPv6 address as IPv4); None if not one."""
    try:
        ip = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


class HostAllowlistMiddleware:
    """Refuse (400) every request whose ``Host`` header names no host this server answers to."""

    def __init__(self, app: Any, allowlist: HostAllowlist) -> None:
        self.app = app
        self.allowlist = allowlist

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = _header(scope, b"host")
        name = host_name(raw) if raw is not None else None
        server = scope.get("server") or (None, None)
        if name is not None and self.allowlist.allows(name, server[0]):
            await self.app(scope, receive, send)
            return
        if raw is None:
            message = "request refused: it has no Host header"
        else:
            message = (
                f"host {_short(raw)!r} is not served here (DNS rebinding guard): use localhost or "
                f"127.0.0.1, or add the name to {ALLOWED_HOSTS_ENV}"
            )
        await _refuse(scope, send, 400, message)


# ------------------------------------------------------------------------------------ token, session


def session_value(token: str, now: float | None = None) -> str:
    """A login session cookie: its expiry and an HMAC of it keyed by the token (the token stays secret)."""
    expires = int(time.time() if now is None else now) + SESSION_MAX_AGE_S
    return f"{expires}.{_session_mac(token, expires)}"


def session_valid(token: str, value: str, now: float | None = None) -> bool:
    """True if ``value`` is a session cookie made with ``token`` that has not expired."""
    expires, _, mac = value.partition(".")
    if not expires.isdigit() or len(expires) > 12:
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(mac.encode(), _session_mac(token, int(expires)).encode())


def _session_mac(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"easyphoto-session:{expires}".encode(), hashlib.sha256).hexdigest()


def request_is_https(scope: dict[str, Any]) -> bool:
    """True if the browser reached us over https (directly, or through a proxy's X-Forwarded-Proto)."""
    proto = (_header(scope, b"x-forwarded-proto") or "").split(",")[0].strip().lower()
    return scope.get("scheme") in ("https", "wss") or proto == "https"


class LoginThrottle:
    """Failed token attempts per client address: :attr:`free` free, then a wait that doubles.

    After ``free`` failures each further failure makes the client wait ``base_s × 2^k`` seconds (capped
    at ``max_wait_s``) before its next attempt is even checked; a success forgets it. Five free tries
    cover typing slips; the doubling lets a guesser reach the 15-minute cap in ten tries, ~100 tries a
    day. IPv6 clients are counted per /64 (one host's usual allocation). At most ``max_clients`` are
    remembered (oldest forgotten first, ~1 MB at 4096), and a client idle for ``forget_s`` is forgotten.
    """

    def __init__(
        self,
        free: int = 5,
        base_s: float = 1.0,
        max_wait_s: float = 900.0,
        max_clients: int = 4096,
        forget_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base_s, self.max_wait_s = free, base_s, max_wait_s
        self.max_clients, self.forget_s, self.clock = max_clients, forget_s, clock
        self._lock = threading.Lock()
        self._clients: collections.OrderedDict[str, tuple[int, float, float]] = collections.OrderedDict()

    @staticmethod
    def key(client: str | None) -> str:
        """The throttled unit of a client address (IPv6: its /64 network)."""
        try:
            ip = ipaddress.ip_address((client or "").strip("[]"))
        except ValueError:
            return client or "?"
        if ip.version == 6 and not ip.ipv4_mapped:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)

    def _expire(self, now: float) -> None:
        while self._clients:
            key, (_, _, last) = next(iter(self._clients.items()))
            if now - last < self.forget_s:
                break
            del self._clients[key]

    def retry_after(self, client: str | None) -> float:
        """Seconds ``client`` must still wait before its next attempt is checked (0: go ahead)."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            entry = self._clients.get(self.key(client))
        return max(0.0, entry[1] - now) if entry else 0.0

    def failed(self, client: str | None) -> float:
        """Record a failed attempt; returns the wait it imposes (seconds)."""
        now = self.clock()
        key = self.key(client)
        with self._lock:
            failures = self._clients.pop(key, (0, 0.0, 0.0))[0] + 1
            over = failures - self.free
            wait = min(self.max_wait_s, self.base_s * 2 ** (over - 1)) if over > 0 else 0.0
            self._clients[key] = (failures, now + wait, now)
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        return wait

    def succeeded(self, client: str | None) -> None:
        """Forget ``client``'s failures."""
        with self._lock:
            self._clients.pop(self.key(client), None)

    def __len__(self) -> int:
        return len(self._clients)


def too_many_attempts(wait: float) -> tuple[str, list[tuple[bytes, bytes]]]:
    """Message and headers of a 429 for a throttled client."""
    seconds = max(1, math.ceil(wait))
    return (
        f"too many failed token attempts from this address: try again in {seconds} s",
        [(b"retry-after", str(seconds).encode())],
    )


class TokenAuthMiddleware:
    """Every HTTP/websocket request needs the bearer token (or the UI's session cookie) once one is set.

    Wrong bearer tokens count as failed attempts in ``throttle`` (a client over its budget gets 429
    until its wait is over); a stale cookie only sends the browser back to ``/login``.
    """

    def __init__(self, app: Any, token: str, throttle: LoginThrottle | None = None) -> None:
        self.app = app
        self.token = token
        self.throttle = throttle

    def _cookie_ok(self, scope: dict[str, Any]) -> bool:
        for part in (_header(scope, b"cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and session_valid(self.token, value):
                return True
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") == "/login":
            await self.app(scope, receive, send)
            return
        auth = _header(scope, b"authorization") or ""
        client = (scope.get("client") or ("?",))[0]
        if auth[:7].lower() == "bearer ":
            wait = self.throttle.retry_after(client) if self.throttle is not None else 0.0
            if wait > 0:
                message, headers = too_many_attempts(wait)
                await _refuse(scope, send, 429, message, headers)
                return
            if hmac.compare_digest(auth[7:].strip().encode("latin-1"), self.token.encode()):
                await self.app(scope, receive, send)
                return
            if self.throttle is not None:
                self.throttle.failed(client)
            await _refuse(
                scope, send, 401, "wrong token: send 'Authorization: Bearer <EASYPHOTO_API_TOKEN>'",
                [(b"www-authenticate", b"Bearer")],
            )  # fmt: skip
            return
        if self._cookie_ok(scope):
            await self.app(scope, receive, send)
            return
        if (
            scope["type"] == "http"
            and scope.get("method") == "GET"
            and "text/html" in (_header(scope, b"accept") or "")
        ):
            await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await _refuse(
            scope, send, 401, "authentication required: send 'Authorization: Bearer <EASYPHOTO_API_TOKEN>'",
            [(b"www-authenticate", b"Bearer")],
        )  # fmt: skip


# ------------------------------------------------------------------------------------- same origin


class SameOriginMiddleware:
    """Refuse state-changing requests a web page on another site makes through the user's browser.

    A browser sends ``Origin`` with cross-site POST/PUT/DELETE requests (and websocket handshakes);
    when it names another host than the one the request is addressed to, or is ``null`` (a sandboxed
    frame, a ``file:`` page, a cross-site redirect), the request is refused (403), as is one marked
    ``Sec-Fetch-Site: cross-site``. Scripts and the API clients send neither and are not affected.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        checked = scope["type"] == "websocket" or (
            scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD", "OPTIONS")
        )
        if checked:
            reason = self._cross_site(scope)
            if reason:
                await _refuse(scope, send, 403, reason)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _cross_site(scope: dict[str, Any]) -> str | None:
        from urllib.parse import urlsplit

        origin = (_header(scope, b"origin") or "").strip()
        host = (_header(scope, b"host") or "").strip().lower()
        if origin.lower() == "null":
            return "request from an opaque origin (Origin: null) refused: send it from the server's own pages"
        if origin:
            try:
                netloc = urlsplit(origin).netloc.lower()
            except ValueError:
                netloc = ""
            if netloc != host:
                return f"cross-site request from {_short(origin)} refused"
        if (_header(scope, b"sec-fetch-site") or "").strip().lower() == "cross-site":
            return "cross-site request refused (Sec-Fetch-Site: cross-site)"
        return None


# ------------------------------------------------------------------------------------ JSON depth

#: Deepest JSON nesting accepted from a client: our bodies nest 2 deep (an object holding lists of
#: images, or of settings); 16 leaves room and stays far below the ~1000 levels at which ``json.loads``
#: and pydantic raise RecursionError.
MAX_JSON_DEPTH = 16
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[{]|[\]}]', re.DOTALL)


def json_too_deep(text: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if the JSON ``text`` nests brackets deeper than ``limit`` (strings skipped; one regex pass,
    so keep ``text`` small: the structure of a body, not its images)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        char = match.group()
        if char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


# --------------------------------------------------------------------------------------- body size


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
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            start, body = _json_message(413, RequestTooLarge(self.limit).detail)
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
            start, body = _json_message(413, exc.detail)
            await send(start)
            await send(body)


# --------------------------------------------------------------------------------- UI file guard

#: Gradio's routes that serve a file by server path (``/file=<path>``; ``/file/<path>`` is its old form).
UI_FILE_ROUTES = ("gradio_api/file=", "gradio_api/file/", "file=", "file/")


class UiFileGuard:
    """Narrow the web UI's file routes to what the UI shows.

    Gradio serves any file under its ``allowed_paths``; ours hold job inputs, logs, LoRAs and, next to
    them, the job database. For a request on one of :data:`UI_FILE_ROUTES` under ``mount`` whose path
    resolves (symlinks followed) inside ``protected``, ``shown(parts)`` decides (``parts``: the path's
    lower-cased components relative to ``protected``); anything else there is 404. URLs are refused
    (the UI proxies nothing); other paths go on to Gradio, which serves only its uploads and cache.
    """

    def __init__(
        self, app: Any, protected: Path, shown: Callable[[tuple[str, ...]], bool], mount: str = "/"
    ) -> None:
        self.app = app
        self.root = os.path.realpath(protected).lower().rstrip(os.sep) + os.sep
        self.shown = shown
        base = "/" + mount.strip("/") + "/" if mount.strip("/") else "/"
        self.prefixes = tuple(base + r for r in UI_FILE_ROUTES)

    def allowed(self, requested: str) -> bool:
        """True if the UI may serve ``requested`` (a path after ``file=``) — Gradio then checks it too."""
        if "://" in requested or requested.lower().startswith(("http:", "https:", "data:")):
            return False
        real = os.path.realpath(requested).lower()
        if not (real + os.sep).startswith(self.root):
            return True
        parts = tuple(p for p in real[len(self.root) :].split(os.sep) if p)
        return bool(parts) and self.shown(parts)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            prefix = next((p for p in self.prefixes if path.startswith(p)), None)
            if prefix is not None and not self.allowed(path[len(prefix) :]):
                await _refuse(
                    scope, send, 404,
                    "file not served: the web UI serves only portraits, contact sheets, validation "
                    "images and face images",
                )  # fmt: skip
                return
        await self.app(scope, receive, send)


__all__ = [
    "ALLOWED_HOSTS_ENV",
    "MAX_JSON_DEPTH",
    "MIN_TOKEN_CHARS",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_S",
    "BodyLimitMiddleware",
    "HostAllowlist",
    "HostAllowlistMiddleware",
    "LoginThrottle",
    "RequestTooLarge",
    "SameOriginMiddleware",
    "TokenAuthMiddleware",
    "UiFileGuard",
    "check_bind",
    "host_name",
    "is_loopback",
    "json_too_deep",
    "request_is_https",
    "session_valid",
    "session_value",
    "too_many_attempts",
]
