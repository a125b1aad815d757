"""The server's defences, each refusal checked for its status, a one-line readable message naming the
thing and the reason (no traceback, server path or class name), and a server that still serves after.

Most cases run the app in-process (FastAPI's TestClient, or the ASGI app driven directly); the web UI's
file guard runs on a real server with the UI mounted, through the URLs the browser uses.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
requests = pytest.importorskip("requests")

from fastapi.testclient import TestClient  # noqa: E402

from easyphoto.config import ServerSettings  # noqa: E402
from easyphoto.errors import ConfigError  # noqa: E402
from easyphoto.server import compat, security  # noqa: E402
from easyphoto.server.app import create_app  # noqa: E402

TOKEN = "correct-horse-battery-staple"  # 28 characters
CLASS_NAMES = ("Error", "Exception", "Traceback", "RecursionError", "JSONDecodeError")


def png_bytes(size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def assert_readable(message: str, *words: str, home: Path | None = None) -> None:
    """One line, naming ``words``, without internals."""
    assert isinstance(message, str) and message and "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
    for name in CLASS_NAMES:
        assert name not in message, message
    if home is not None:
        assert str(home) not in message, message
    assert len(message) < 400, message


def client_for(tmp_path: Path, **changes: Any) -> TestClient:
    settings = ServerSettings(home=tmp_path, start_workers=False, ui=False, **changes)
    return TestClient(create_app(settings))


# --------------------------------------------------------------------------------------------- Host


def test_host_header_allowlist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(security.ALLOWED_HOSTS_ENV, raising=False)
    c = client_for(tmp_path)
    for host in ("localhost:7860", "127.0.0.1", "127.3.4.5:80", "[::1]:7860", "LOCALHOST."):
        assert c.get("/v1/health", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example", "a b", "[::1", "192.168.1.9"):
        r = c.get("/v1/health", headers={"Host": host})
        assert r.status_code == 400, host
        assert_readable(
            r.json()["message"], "host", "not served here", security.ALLOWED_HOSTS_ENV, home=tmp_path
        )
    # State-changing requests and the docs are guarded too; the server still serves.
    assert c.post("/v1/users/x/train", headers={"Host": "evil.example"}).status_code == 400
    assert c.get("/docs", headers={"Host": "evil.example"}).status_code == 400
    assert c.get("/v1/health").json()["status"] == "ok"

    monkeypatch.setenv(security.ALLOWED_HOSTS_ENV, "photos.lan, *.corp.example, [fe80::1]")
    c = client_for(tmp_path)
    for host in ("photos.lan", "photos.lan:8443", "a.corp.example", "[fe80::1]:7860", "localhost"):
        assert c.get("/v1/health", headers={"Host": host}).status_code == 200, host
    for host in ("corp.example", "photos.lan.evil.example", "evil.example"):
        assert c.get("/v1/health", headers={"Host": host}).status_code == 400, host

    # "*" accepts any host, but only with a token (which then keeps rebinding pages out).
    monkeypatch.setenv(security.ALLOWED_HOSTS_ENV, "*")
    with pytest.raises(ConfigError, match=r"EASYPHOTO_ALLOWED_HOSTS=\* accepts any Host header"):
        client_for(tmp_path)
    c = client_for(tmp_path, token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert c.get("/v1/health", headers={"Host": "any.example", **auth}).status_code == 200
    assert c.get("/v1/health", headers={"Host": "any.example"}).status_code == 401

    monkeypatch.setenv(security.ALLOWED_HOSTS_ENV, "bad name!")
    with pytest.raises(ConfigError, match="is not a host name"):
        client_for(tmp_path)

    # run_server: the name given to --host is served; --share (token required) serves any name.
    settings = ServerSettings(home=tmp_path, start_workers=False, ui=False, token=TOKEN)
    named = security.HostAllowlist.from_env(TOKEN, environ={}, also=["gpubox"])
    c = TestClient(create_app(settings, hosts=named))
    assert c.get("/v1/health", headers={"Host": "gpubox:7860", **auth}).status_code == 200
    assert c.get("/v1/health", headers={"Host": "other", **auth}).status_code == 400
    shared = security.HostAllowlist.from_env(TOKEN, environ={}, any_host=True)
    c = TestClient(create_app(settings, hosts=shared))
    assert c.get("/v1/health", headers={"Host": "abc.gradio.live", **auth}).status_code == 200


# ------------------------------------------------------------------------------------------ Origin


def test_cross_site_and_opaque_origins_are_refused(tmp_path: Path) -> None:
    c = client_for(tmp_path)
    for headers, words in [
        ({"Origin": "null"}, ("Origin: null", "refused")),
        ({"Origin": "http://evil.example"}, ("cross-site request from http://evil.example", "refused")),
        ({"Origin": "http://localhost.evil.example"}, ("cross-site", "refused")),
        ({"Sec-Fetch-Site": "cross-site"}, ("cross-site", "refused")),
    ]:
        for method in ("POST", "DELETE"):
            r = c.request(method, "/v1/jobs/0123456789abcdef", headers=headers)
            assert r.status_code == 403, (method, headers)
            assert_readable(r.json()["message"], *words)
    # Same origin, scripts (no Origin) and reads (GET) pass on to the route.
    assert c.delete("/v1/jobs/0123456789abcdef", headers={"Origin": "http://testserver"}).status_code == 404
    assert c.delete("/v1/jobs/0123456789abcdef").status_code == 404
    assert c.get("/v1/health", headers={"Origin": "null"}).status_code == 200


# ------------------------------------------------------------------------------------ bind, token


def test_a_short_token_does_not_unlock_the_network(tmp_path: Path) -> None:
    from easyphoto.server.security import MIN_TOKEN_CHARS, check_bind

    short = "s3cret-but-short"[: MIN_TOKEN_CHARS - 1]
    for host, share in [("0.0.0.0", False), ("192.168.1.5", False), ("::", False), ("127.0.0.1", True)]:
        with pytest.raises(ConfigError) as info:
            check_bind(host, short, share)
        message = str(info.value)
        assert_readable(message, "EASYPHOTO_API_TOKEN is too short", f"at least {MIN_TOKEN_CHARS}")
        assert short not in message, "the token is never printed"
    check_bind("0.0.0.0", "x" * MIN_TOKEN_CHARS)
    check_bind("127.0.0.1", "short")  # loopback: any token (or none) will do
    check_bind("localhost", None)
    with pytest.raises(ConfigError, match="refusing to listen"):
        check_bind("0.0.0.0", None)


# ------------------------------------------------------------------------------- login and session


def test_login_is_throttled_and_sets_a_safe_session_cookie(tmp_path: Path) -> None:
    app = create_app(ServerSettings(home=tmp_path, start_workers=False, ui=False, token=TOKEN))
    now = [1000.0]
    throttle = app.state.login_throttle
    throttle.clock = lambda: now[0]
    c = TestClient(app)

    def login(token: str, **headers: str):
        return c.post("/login", data={"token": token}, headers=headers, follow_redirects=False)

    for _ in range(throttle.free):
        r = login("wrong")
        assert r.status_code == 401 and "wrong token" in r.text
    assert login("wrong").status_code == 401  # the 6th failure imposes a 1 s wait
    r = login(TOKEN)  # even the right token waits: guessing during the wait is pointless
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert "too many failed token attempts from this address: try again in 1 s" in r.text
    now[0] += 1.1
    assert login("wrong").status_code == 401
    r = login("wrong")
    assert r.status_code == 429 and r.headers["retry-after"] == "2", "the wait doubles"
    now[0] += 2.1

    r = login(TOKEN)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert "httponly" in parts and "samesite=strict" in parts
    assert f"max-age={security.SESSION_MAX_AGE_S}" in parts and "secure" not in parts
    value = cookie.split(";")[0].split("=", 1)[1]
    assert TOKEN not in cookie and value != TOKEN, "the cookie is derived from the token, not the token"
    assert len(throttle) == 0, "a success forgets the failures"
    assert c.get("/v1/users").status_code == 200, "the session cookie authenticates the browser"

    https = login(TOKEN, **{"X-Forwarded-Proto": "https"})
    assert "secure" in [p.strip().lower() for p in https.headers["set-cookie"].split(";")]

    # A session expires, and cannot be made without the token.
    fresh = TestClient(app)
    expired = security.session_value(TOKEN, now=0)
    forged = security.session_value("another-token-of-enough-length", now=None)
    for bad in (expired, forged, TOKEN, "", "9999999999.abc"):
        fresh.cookies.set(security.SESSION_COOKIE, bad)
        r = fresh.get("/v1/users")
        assert r.status_code == 401, bad
        assert_readable(r.json()["message"], "authentication required")
    assert security.session_valid(TOKEN, security.session_value(TOKEN))


def test_wrong_bearer_tokens_are_throttled_too(tmp_path: Path) -> None:
    app = create_app(ServerSettings(home=tmp_path, start_workers=False, ui=False, token=TOKEN))
    c = TestClient(app)
    bad = {"Authorization": "Bearer guess"}
    for _ in range(app.state.login_throttle.free + 1):
        r = c.get("/v1/users", headers=bad)
        assert r.status_code == 401
        assert_readable(r.json()["message"], "wrong token")
    r = c.get("/v1/users", headers=bad)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert_readable(r.json()["message"], "too many failed token attempts", "try again in")


def test_login_throttle_memory_is_bounded() -> None:
    throttle = security.LoginThrottle(max_clients=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
    # IPv6 clients count per /64: a host cannot dodge the wait by changing its interface id.
    for i in range(10):
        throttle.failed(f"2001:db8::{i:x}")
    assert throttle.retry_after("2001:db8::ffff") > 0
    assert throttle.retry_after("2001:db8:0:1::1") == 0


# --------------------------------------------------------------------------------------- errors


def test_error_answers_show_no_internals(tmp_path: Path) -> None:
    from easyphoto.errors import ModelNotFoundError

    app = create_app(ServerSettings(home=tmp_path, start_workers=False, ui=False))
    secret = tmp_path / "models" / "private" / "lora.safetensors"

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"cannot open {secret}: library said no")

    @app.get("/missing")
    def missing() -> None:
        raise ModelNotFoundError(f"LoRA file '{secret}' does not exist (train the user first)")

    c = TestClient(app, raise_server_exceptions=False)
    r = c.get("/boom")
    assert r.status_code == 500 and r.json()["message"] == "internal error (see the server log)"
    assert "library said no" not in r.text and str(tmp_path) not in r.text and "RuntimeError" not in r.text
    r = c.get("/missing")
    assert r.status_code == 503 and r.json()["error"] == "model_not_found"
    assert_readable(r.json()["message"], "lora.safetensors", "does not exist", home=tmp_path)
    r = c.get("/v1/users/nobody")
    assert r.status_code == 404 and r.json()["error"] == "unknown_user"
    assert_readable(r.json()["message"], "nobody", home=tmp_path)
    # A validation error names the parameter, never echoes a huge input.
    r = c.get("/v1/jobs", params={"limit": "9" * 20_000})
    assert r.status_code == 422
    assert_readable(r.json()["message"], "limit")
    assert len(r.text) < 2000
    body = {
        "user_id": "a",
        "instance_images": [],
        "max_train_steps": "many" * 25_000,
        "resolution": [[1]] * 9,
    }
    r = c.post("/easyphoto/easyphoto_train_forward", content=json.dumps(body))
    assert r.status_code == 422 and len(r.text) < 2000
    assert_readable(r.json()["message"], "max_train_steps:", "resolution:")
    r = c.post("/v1/users/" + "x" * 5000 + "/train", files=[("photos", ("a.png", png_bytes(), "image/png"))])
    assert r.status_code == 400 and len(r.json()["message"]) <= 1001
    assert c.get("/v1/health").json()["status"] == "ok"


# ----------------------------------------------------------------------------------- JSON bodies


def compat_post(c: TestClient, body: bytes | str, endpoint: str = "train") -> Any:
    return c.post(f"/easyphoto/easyphoto_{endpoint}_forward", content=body)


def test_compat_json_bodies_are_bounded(tmp_path: Path) -> None:
    c = client_for(tmp_path, max_file_mb=1, max_request_mb=16)
    cases = [
        ("[" * 100_000, 422, ("body", f"nested deeper than {compat.MAX_JSON_DEPTH} levels")),
        ('{"user_id": "a", "args": ' + "[" * 17 + "]" * 17 + "}", 422, ("nested deeper",)),
        ('{"user_id": "a", "instance_images": ["abc', 422, ("body", "a string is not closed")),
        ('{"user_id": "a", "args": [' + "1," * 200_000 + "1]}", 422, ("too much JSON besides the images",)),
        (" " * 300_000, 422, ("too much JSON",)),
        ("{not json", 422, ("body", "not valid JSON at character 1")),
        (
            json.dumps({"user_id": "a", "instance_images": ["%%%"] * 51}),
            400,
            ("too many photos: 51 (limit 50)",),
        ),
        (
            json.dumps({"user_id": "a", "instance_images": ["QUFB" * 400_000]}),
            413,
            ("instance_images[0]", "file too large (1.2 MB, limit 1.0 MB)"),
        ),
        (
            json.dumps({"user_id": "a", "instance_images": ["%" * 5000]}),
            400,
            ("instance_images[0]", "not valid base64 image data"),
        ),
        (
            json.dumps({"user_ids": ["a"], "tabs": 2, "uploaded_template_images": ["x"] * 21}),
            400,
            ("too many templates: 21 (limit 20)",),
        ),
    ]
    for body, status, words in cases:
        endpoint = "infer" if "user_ids" in body[:20] else "train"
        r = compat_post(c, body, endpoint)
        assert r.status_code == status, (body[:60], r.text[:300])
        assert_readable(r.json()["message"], *words, home=tmp_path)
    # The /v1 routes' JSON "options" field has the same limits.
    photo = ("photos", ("a.png", png_bytes(), "image/png"))
    for options, words in [
        ("[" * 100_000, ("options: too long (97 KB, limit 64 KB)",)),
        ("[" * 17 + "]" * 17, ("options: JSON nested deeper than 16 levels",)),
        ('{"rank": }', ("options: not valid JSON (line 1, column 10)",)),
    ]:
        r = c.post("/v1/users/a/train", files=[photo], data={"options": options})
        assert r.status_code == 400, (options[:20], r.text[:200])
        assert_readable(r.json()["message"], *words)
    r = compat_post(c, b"x" * (17 * 1024 * 1024))
    assert r.status_code == 413
    assert_readable(r.json()["message"], "request too large (limit 16 MB)")
    assert c.get("/v1/health").json()["status"] == "ok"


def test_json_body_decodes_images_from_the_buffer() -> None:
    image = png_bytes(64) * 40  # bytes only: decoding is what is tested here
    b64 = base64.b64encode(image).decode()
    assert "/" in b64
    text = json.dumps(
        {"user_id": "a", "prompt": "p" * 2000, "instance_images": [b64, "data:image/png;base64," + b64]}
    )
    for raw in (text, text.replace("/", "\\/")):  # PHP's json_encode escapes every "/"
        body = compat.JsonBody(bytearray(raw.encode()))
        req = body.model(compat.EasyPhotoTrainRequest)
        assert body.data["prompt"] == "p" * 2000, "a long string outside the images is parsed as text"
        for i, value in enumerate(req.instance_images):
            assert body.image(value, f"instance_images[{i}]", max_bytes=len(image)) == image
    # Marker strings a client makes up are never mistaken for ours.
    body = compat.JsonBody(bytearray(json.dumps({"init_image": "\u0000abcd:0", "x": b64}).encode()))
    with pytest.raises(Exception, match="not valid base64"):
        body.image(body.data["init_image"], "init_image", None)


def test_json_body_memory_stays_within_the_body() -> None:
    """Python allocations while parsing a 24 MB body and decoding its six images: the images (0.75×
    the body) and one image's pieces while they are joined, so the server holds < 2× the body."""
    rng = np.random.default_rng(0)
    images = [base64.b64encode(rng.bytes(3_000_000)).decode() for _ in range(6)]
    raw = bytearray(json.dumps({"user_id": "a", "instance_images": images}).encode())
    del images
    tracemalloc.start()
    try:
        body = compat.JsonBody(raw)
        req = body.model(compat.EasyPhotoTrainRequest)
        decoded = [body.image(v, "x", None) for v in req.instance_images]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(d) for d in decoded) == 18_000_000
    limit = 18_000_000 + 3_000_000 + 1_000_000
    assert peak <= limit, f"peak {peak / 1e6:.1f} MB for a {len(raw) / 1e6:.1f} MB body"


# ------------------------------------------------------------------------- held compat requests


def _asgi_request(app: Any, body: bytes, gone: asyncio.Event) -> Any:
    """Drive one compat request through the ASGI app: the body, then a disconnect when ``gone`` is set."""
    sent: list[dict[str, Any]] = []
    chunks = [body]

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/easyphoto/easyphoto_train_forward",
        "raw_path": b"/easyphoto/easyphoto_train_forward",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:7860"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 7860),
    }

    async def run() -> tuple[int, dict[str, Any]]:
        await app(scope, receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return (
            status,
            (json.loads(payload) if payload else {}),
            dict(next(m["headers"] for m in sent if m["type"] == "http.response.start")),
        )

    return run()


def test_held_compat_requests_are_capped_and_freed_on_disconnect(tmp_path: Path) -> None:
    """No worker runs: each training request waits for its job until its client goes away."""
    app = create_app(ServerSettings(home=tmp_path, start_workers=False, ui=False))
    photo = base64.b64encode(png_bytes(64)).decode()

    def body(user: str) -> bytes:
        return json.dumps({"user_id": user, "instance_images": [photo]}).encode()

    async def scenario() -> None:
        gone = [asyncio.Event() for _ in range(compat.MAX_HELD_REQUESTS)]
        held = [
            asyncio.ensure_future(_asgi_request(app, body(f"u{i}"), gone[i]))
            for i in range(compat.MAX_HELD_REQUESTS)
        ]
        await asyncio.sleep(1.0)
        assert not any(t.done() for t in held), "the requests wait for their jobs"
        status, answer, headers = await _asgi_request(app, body("extra"), asyncio.Event())
        assert status == 429 and headers[b"retry-after"] == str(compat.HELD_RETRY_AFTER_S).encode()
        assert_readable(answer["message"], "too many EasyPhoto-compatible requests", "/v1")
        for event in gone:  # the clients go away: their slots are freed at once, their jobs stay queued
            event.set()
        results = await asyncio.wait_for(asyncio.gather(*held), timeout=10)
        assert all(r[0] == 499 for r in results)
        done = asyncio.Event()
        later = asyncio.ensure_future(_asgi_request(app, body("later"), done))
        await asyncio.sleep(0.5)
        assert not later.done(), "a slot is free again: the request is held, not refused"
        done.set()
        assert (await asyncio.wait_for(later, timeout=10))[0] == 499

    asyncio.run(scenario())
    jobs = TestClient(app).get("/v1/jobs").json()
    assert len(jobs) == compat.MAX_HELD_REQUESTS + 1 and {j["state"] for j in jobs} == {"queued"}


# ------------------------------------------------------------------------------ web UI file guard


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    pytest.importorskip("gradio")
    from test_api import start_server, stop_server

    home = tmp_path_factory.mktemp("ui_home")
    proc, url = start_server(home, home / "no-model", ui=True)
    yield url, home
    stop_server(proc)


@pytest.mark.slow
def test_ui_file_route_serves_only_what_the_ui_shows(ui_server: tuple[str, Path]) -> None:
    url, home = ui_server
    job = home / "jobs" / "0123456789abcdef"
    for sub in ("files", "inputs"):
        (job / sub).mkdir(parents=True, exist_ok=True)
    png = png_bytes()
    (job / "files" / "portrait_00.png").write_bytes(png)
    (job / "inputs" / "00_me.png").write_bytes(png)
    (job / "job.log").write_text("training log\n")
    user = home / "users" / "alice"
    user.mkdir(parents=True, exist_ok=True)
    (user / "face_id.png").write_bytes(png)
    (user / "lora.safetensors").write_bytes(b"\0" * 64)
    (user / "meta.json").write_text("{}")
    (job / "files" / "link.png").symlink_to(home / "jobs.db")
    assert (home / "jobs.db").is_file()

    def get(path: Path | str, prefix: str = "/gradio_api/file=") -> requests.Response:
        return requests.get(f"{url}{prefix}{path}", timeout=10)

    for shown in (job / "files" / "portrait_00.png", user / "face_id.png"):
        r = get(shown)
        assert r.status_code == 200 and r.content == png, shown
    refused = [
        job / "inputs" / "00_me.png",
        job / "job.log",
        user / "lora.safetensors",
        user / "meta.json",
        home / "jobs.db",
        job / "files" / "link.png",  # a link inside files/ to the database
        f"{job}/files/../inputs/00_me.png",
        str(home / "JOBS.DB"),
    ]
    prefixes = [f"{lang}/gradio_api/file{sep}" for lang in ("", "/en", "/zh") for sep in ("=", "/")]
    for path in refused:  # the language pages (/en, /zh) are guarded like /
        for prefix in prefixes:
            r = get(path, prefix)
            assert r.status_code in (403, 404), (path, prefix, r.status_code)
            assert r.content != png and b"training log" not in r.content
    r = get(job / "inputs" / "00_me.png")
    assert_readable(r.json()["message"], "file not served", "portraits", home=home)
    assert get("http://127.0.0.1:1/x").status_code in (403, 404), "the UI proxies no URLs"
    # The LoRA is downloaded through the API; the UI page and the API still serve.
    assert requests.get(f"{url}/", timeout=10).status_code == 200
    assert requests.get(f"{url}/v1/health", timeout=10).json()["status"] == "ok"


@pytest.mark.slow
def test_real_server_refuses_foreign_hosts(ui_server: tuple[str, Path]) -> None:
    url, home = ui_server
    for path in ("/", "/v1/health", "/gradio_api/info"):
        r = requests.get(url + path, headers={"Host": "rebind.evil.example"}, timeout=10)
        assert r.status_code == 400, path
        assert_readable(r.json()["message"], "rebind.evil.example", "not served here", home=home)
    port = url.rsplit(":", 1)[1]
    assert (
        requests.get(url + "/v1/health", headers={"Host": f"localhost:{port}"}, timeout=10).status_code == 200
    )
