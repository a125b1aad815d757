# ruff: noqa: E501  (the case tables read best one case a line)
"""The bad-input corpus: every kind of mistake a careless or hostile user makes, through the CLI and a real
server. Each must give exit 2 / a 4xx with one line naming the thing and the reason — no traceback, no
server path, no Python class name — leave the server serving and change no data.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easyphoto.cli import main
from easyphoto.users import UserMeta, save_user_model

requests = pytest.importorskip("requests")


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _png_header(w: int, h: int) -> bytes:
    """A small real PNG whose header is rewritten to claim ``w``×``h``: must be refused before decoding."""
    data = bytearray(_png(8, 8))
    data[16:24] = struct.pack(">II", w, h)  # IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # and its CRC
    return bytes(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> dict[str, Path]:
    """Bad files of every kind, a good photo, and a home with a good and several broken user models."""
    d = tmp_path_factory.mktemp("corpus")
    f: dict[str, Path] = {"dir": d}
    Image.fromarray(astronaut).save(d / "good.jpg", quality=90)
    f["good"] = d / "good.jpg"
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(d / "wall.png")
    f["wall"] = d / "wall.png"
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes((d / "good.jpg").read_bytes()[:3000])
    (d / "notes.jpg").write_text("this is not a photo")
    (d / "one.png").write_bytes(_png(1, 1))
    (d / "thin.png").write_bytes(_png(2, 500))
    (d / "huge.png").write_bytes(_png_header(60000, 60000))
    (d / "folder.jpg").mkdir()
    os.mkfifo(d / "pipe.jpg")
    (d / "dangling.jpg").symlink_to(d / "nowhere.jpg")
    (d / "loop_a.jpg").symlink_to(d / "loop_b.jpg")
    (d / "loop_b.jpg").symlink_to(d / "loop_a.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.jpg"))
    f["sock"] = d / "sock.jpg"
    (d / "a_file").write_text("x")
    home = d / "home"
    state = {
        "lora_unet_x.lora_down.weight": __import__("torch").ones(2, 3),
        "lora_unet_x.lora_up.weight": __import__("torch").ones(3, 2),
    }
    for user in ("alice", "broken_meta", "empty_lora", "newer"):
        save_user_model(
            user, lora_state=state, lora_metadata={}, meta=UserMeta(user_id=user), ref_image=astronaut,
            embedding=np.ones(128, np.float32), face_id=None, home=home,
        )  # fmt: skip
    (home / "users" / "broken_meta" / "meta.json").write_text("{oops")
    (home / "users" / "empty_lora" / "lora.safetensors").write_bytes(b"")
    (home / "users" / "newer" / "meta.json").write_text('{"format_version": 99}')
    f["home"] = home
    yield f
    sock.close()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (jobs.db's own files aside)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("jobs.db"):
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


# ---------------------------------------------------------------------------------------------- CLI

D = "{dir}"
CLI_CASES = [
    # files
    ("file missing", ["faces", f"{D}/missing.jpg"], "missing.jpg: file not found"),
    ("file is a folder", ["faces", f"{D}/folder.jpg"], "folder.jpg: is a folder"),
    ("file is a device", ["faces", "/dev/zero"], "/dev/zero: is a character device"),
    ("file is a named pipe", ["faces", f"{D}/pipe.jpg"], "pipe.jpg: is a named pipe"),
    ("file is a socket", ["faces", f"{D}/sock.jpg"], "sock.jpg: is a socket"),
    ("dangling link", ["faces", f"{D}/dangling.jpg"], "dangling.jpg: broken symbolic link"),
    ("link loop", ["faces", f"{D}/loop_a.jpg"], "loop_a.jpg: symbolic link loop"),
    ("empty file", ["faces", f"{D}/empty.jpg"], "empty.jpg: empty file"),
    ("truncated jpeg", ["faces", f"{D}/truncated.jpg"], "truncated.jpg: truncated"),
    ("text named .jpg", ["faces", f"{D}/notes.jpg"], "notes.jpg: not an image"),
    ("1x1 image", ["faces", f"{D}/one.png"], "one.png: image too small: 1×1"),
    ("2x500 image", ["faces", f"{D}/thin.png"], "thin.png: image too small: 2×500"),
    ("60k x 60k header", ["faces", f"{D}/huge.png"], "huge.png: image too large"),
    ("no face in swap", ["swap", "--photo", f"{D}/good.jpg", "--template", f"{D}/wall.png", "--out", f"{D}/o.png"],
     "wall.png: no face found"),
    # user ids
    ("id traversal", ["prepare", f"{D}/good.jpg", "--user-id", "../evil"], "invalid user id '../evil'"),
    ("id with newline", ["prepare", f"{D}/good.jpg", "--user-id", "alice\n"], "invalid user id 'alice\\n'"),
    ("id reserved device", ["prepare", f"{D}/good.jpg", "--user-id", "con"], "reserved"),
    ("id device + extension", ["prepare", f"{D}/good.jpg", "--user-id", "CON.txt"], "reserved"),
    ("id 'none'", ["prepare", f"{D}/good.jpg", "--user-id", "none"], "reserved"),
    ("id too long", ["prepare", f"{D}/good.jpg", "--user-id", "a" * 65], "invalid user id"),
    ("id with slash", ["prepare", f"{D}/good.jpg", "--user-id", "a/b"], "invalid user id 'a/b'"),
    ("id empty", ["prepare", f"{D}/good.jpg", "--user-id", ""], "invalid user id ''"),
    # settings
    ("rank 0", ["train", "--user-id", "u", f"{D}/good.jpg", "--rank", "0"], "--rank: Input should be greater"),
    ("grad_accum 0", ["train", "--user-id", "u", f"{D}/good.jpg", "--grad-accum", "0"], "--grad-accum:"),
    ("resolution not /8", ["train", "--user-id", "u", f"{D}/good.jpg", "--resolution", "100"], "multiple of 8"),
    ("rank not a number", ["train", "--user-id", "u", f"{D}/good.jpg", "--rank", "x"], "Invalid value for '--rank'"),
    ("denoise 5", ["generate", "--user-id", "alice", "--template", f"{D}/good.jpg", "--first-denoise", "5"],
     "--first-denoise: Input should be less than or equal to 1"),
    ("short side /8", ["generate", "--user-id", "alice", "--template", f"{D}/good.jpg", "--short-side", "100"],
     "multiple of 8"),
    ("max_photos 0", ["prepare", f"{D}/good.jpg", "--user-id", "u", "--max-photos", "0"], "--max-photos:"),
    ("port 0", ["serve", "--port", "0"], "Invalid value for '--port'"),
    ("port out of range", ["serve", "--port", "70000"], "Invalid value for '--port'"),
    ("language", ["serve", "--lang", "fr"], "--lang: Input should be 'auto', 'en' or 'zh-CN', got 'fr'"),
    ("unknown flag", ["faces", "--bogus", "x"], "No such option: --bogus"),
    ("unknown command", ["paint"], "No such command 'paint'"),
    ("neither photos nor dataset", ["train", "--user-id", "u"], "give either photos or --dataset"),
    # user models
    ("unknown user", ["generate", "--user-id", "bob", "--template", f"{D}/good.jpg"], "no trained model for user 'bob'"),
    ("corrupt meta.json", ["generate", "--user-id", "broken_meta", "--template", f"{D}/good.jpg"],
     "user 'broken_meta': meta.json: not valid JSON"),
    ("empty LoRA", ["generate", "--user-id", "empty_lora", "--template", f"{D}/good.jpg"],
     "user 'empty_lora': lora.safetensors: the file is empty"),
    ("model from the future", ["generate", "--user-id", "newer", "--template", f"{D}/good.jpg"],
     "user 'newer': meta.json: format 99 is newer"),
    # output paths
    ("output file is a folder", ["swap", "--photo", f"{D}/good.jpg", "--template", f"{D}/good.jpg", "--out", f"{D}/folder.jpg"],
     "folder.jpg: is a folder, expected a file path"),
    ("output folder is a file", ["generate", "--user-id", "alice", "--template", f"{D}/good.jpg", "--out", f"{D}/a_file"],
     "a_file: is a file, expected a folder"),
    ("output below a file", ["prepare", f"{D}/good.jpg", "--user-id", "u", "--out", f"{D}/a_file/sub"], "is a file, expected a folder"),
]  # fmt: skip


#: Cases that load the face models (~5 s) belong to the slow run.
SLOW_CLI = {"no face in swap"}


@pytest.mark.parametrize(
    ("kind", "argv", "expected"),
    [pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in SLOW_CLI else []) for c in CLI_CASES],
)
def test_cli_refuses_with_one_line(
    kind: str, argv: list[str], expected: str, corpus: dict[str, Path], capsys, monkeypatch
) -> None:
    monkeypatch.setenv("EASYPHOTO_HOME", str(corpus["home"]))
    before = _snapshot(corpus["dir"])
    code = main([a.replace(D, str(corpus["dir"])) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (kind, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (kind, err)
    assert expected in lines[0], (kind, lines[0])
    assert "Traceback" not in err and "Error:" not in err, (kind, err)
    assert _snapshot(corpus["dir"]) == before, f"{kind}: data changed"
    if os.environ.get("EASYPHOTO_CORPUS_TABLE"):  # `-s` prints the corpus table (kind → what the user sees)
        print(f"\n| CLI | {kind} | exit {code}: `{lines[0].replace(str(corpus['dir']), '…')}` |")


# ------------------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server(corpus: dict[str, Path]):
    """A real uvicorn server on loopback over the corpus home (no workers: nothing may be queued)."""
    import uvicorn

    from easyphoto.config import ServerSettings
    from easyphoto.server.app import create_app

    app = create_app(ServerSettings(home=corpus["home"], start_workers=False, ui=False, max_photos=3))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/v1/health", timeout=2).ok:
                break
        time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _files(*names: str) -> list:
    return [("photos", (Path(n).name, Path(n).read_bytes(), "image/jpeg")) for n in names]


SERVER_CASES = [
    # (kind, method, path, request kwargs (built from the corpus), status, words the message must hold)
    ("id traversal", "post", "/v1/users/..%2Fevil/train", lambda c: {"files": _files(c["good"])}, {400, 404}, ""),
    ("id reserved", "post", "/v1/users/con/train", lambda c: {"files": _files(c["good"])}, {400}, "reserved"),
    ("options not JSON", "post", "/v1/users/u/train", lambda c: {"files": _files(c["good"]), "data": {"options": "{x"}},
     {400, 422}, "options"),
    ("options unknown field", "post", "/v1/users/u/train",
     lambda c: {"files": _files(c["good"]), "data": {"options": '{"rnak": 4}'}}, {422}, "rnak"),
    ("options out of range", "post", "/v1/users/u/train",
     lambda c: {"files": _files(c["good"]), "data": {"options": '{"rank": 0}'}}, {422}, "rank"),
    ("options nested deep", "post", "/v1/users/u/train",
     lambda c: {"files": _files(c["good"]), "data": {"options": "[" * 50000 + "]" * 50000}}, {400, 413, 422}, ""),
    ("photo is text", "post", "/v1/users/u/train", lambda c: {"files": _files(c["dir"] / "notes.jpg")}, {400}, "notes.jpg"),
    ("photo empty", "post", "/v1/users/u/train", lambda c: {"files": _files(c["dir"] / "empty.jpg")}, {400}, "empty.jpg"),
    ("photo 1x1", "post", "/v1/users/u/train", lambda c: {"files": _files(c["dir"] / "one.png")}, {400}, "too small"),
    ("photo huge header", "post", "/v1/users/u/train", lambda c: {"files": _files(c["dir"] / "huge.png")}, {400}, "too large"),
    ("too many photos", "post", "/v1/users/u/train", lambda c: {"files": _files(*[c["good"]] * 4)}, {400, 422}, "too many"),
    ("no photos", "post", "/v1/users/u/train", lambda c: {}, {422}, "photos"),
    ("generate unknown user", "post", "/v1/generate",
     lambda c: {"data": {"user_ids": "bob"}, "files": [("templates", ("t.jpg", c["good"].read_bytes()))]}, {404}, "bob"),
    ("generate broken model", "post", "/v1/generate",
     lambda c: {"data": {"user_ids": "broken_meta"}, "files": [("templates", ("t.jpg", c["good"].read_bytes()))]},
     {400}, "meta.json"),
    ("generate no templates", "post", "/v1/generate", lambda c: {"data": {"user_ids": "alice"}}, {400}, "templates"),
    ("generate unknown ControlNet", "post", "/v1/generate",
     lambda c: {"data": {"user_ids": "alice", "options": '{"first_controlnets": ["depth"]}'},
                "files": [("templates", ("t.jpg", c["good"].read_bytes()))]}, {400, 422}, "depth"),
    ("compat body not JSON", "post", "/easyphoto/easyphoto_train_forward", lambda c: {"data": b"{not json"}, {400, 422}, "JSON"),
    ("compat nested brackets", "post", "/easyphoto/easyphoto_infer_forward",
     lambda c: {"data": b"[" * 100000 + b"]" * 100000}, {400, 413, 422}, ""),
    ("compat bad base64", "post", "/easyphoto/easyphoto_train_forward",
     lambda c: {"data": json.dumps({"user_id": "u", "instance_images": ["@@@not base64@@@"]})}, {400}, "base64"),
    ("compat wrong tabs", "post", "/easyphoto/easyphoto_infer_forward",
     lambda c: {"data": json.dumps({"user_ids": ["alice"], "tabs": 7, "init_image": _b64(c["good"].read_bytes())})},
     {400}, "tabs=7"),
    ("compat no user_id", "post", "/easyphoto/easyphoto_train_forward",
     lambda c: {"data": json.dumps({"instance_images": []})}, {422}, "user_id"),
    ("bad Host header", "get", "/v1/users", lambda c: {"headers": {"Host": "evil.example.com"}}, {400}, "evil.example.com"),
    ("Origin null", "post", "/v1/users/u/train", lambda c: {"files": _files(c["good"]), "headers": {"Origin": "null"}},
     {403}, "null"),
    ("cross-site Origin", "delete", "/v1/users/alice", lambda c: {"headers": {"Origin": "http://evil.example.com"}},
     {403}, "evil.example.com"),
    ("job id traversal", "get", "/v1/jobs/..%2F..%2Fjobs.db", lambda c: {}, {404}, ""),
    ("job file traversal", "get", "/v1/jobs/0123456789abcdef/files/..%2F..%2Fjobs.db", lambda c: {}, {404}, ""),
    ("unknown user file", "get", "/v1/users/bob/lora", lambda c: {}, {404}, "bob"),
    ("broken user summary", "get", "/v1/users/broken_meta", lambda c: {}, {400}, "meta.json"),
    ("cancel unknown job", "delete", "/v1/jobs/0123456789abcdef", lambda c: {}, {404}, "0123456789abcdef"),
]  # fmt: skip


@pytest.mark.slow
def test_server_refuses_with_one_line(server: str, corpus: dict[str, Path]) -> None:
    before = _snapshot(corpus["home"])
    jobs_before = requests.get(f"{server}/v1/jobs", timeout=10).json()
    failures = []
    for kind, method, path, make, statuses, words in SERVER_CASES:
        r = getattr(requests, method)(server + path, timeout=30, **make(corpus))
        try:
            body = r.json()
        except ValueError:
            failures.append(f"{kind}: {r.status_code} not JSON: {r.text[:200]}")
            continue
        message = str(body.get("message") or body.get("detail"))
        problems = []
        if r.status_code not in statuses:
            problems.append(f"status {r.status_code} not in {sorted(statuses)}")
        if "\n" in message or len(message) > 1000:
            problems.append("not one line")
        if words and words not in message:
            problems.append(f"{words!r} not in message")
        for leak in ("Traceback", str(corpus["dir"]), "RecursionError", "JSONDecodeError", 'File "'):
            if leak in r.text:
                problems.append(f"leaks {leak!r}")
        if os.environ.get("EASYPHOTO_CORPUS_TABLE"):
            print(f"\n| HTTP | {kind} | {r.status_code}: `{message[:160]}` |")
        if problems:
            failures.append(f"{kind}: {'; '.join(problems)} — {message[:300]}")
        assert requests.get(f"{server}/v1/health", timeout=10).status_code == 200, f"{kind}: server down"
    assert failures == []
    assert _snapshot(corpus["home"]) == before, "a refused request changed data"
    assert requests.get(f"{server}/v1/jobs", timeout=10).json() == jobs_before, (
        "a refused request queued a job"
    )
    assert len(CLI_CASES) + len(SERVER_CASES) >= 45
