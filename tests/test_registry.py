"""The model registry, downloads and ``easyphoto models`` / ``doctor``, against a stand-in hub on loopback.

The stand-in answers like huggingface.co does for ``/<repo>/resolve/<rev>/<file>`` (``X-Repo-Commit``,
``ETag`` = sha256 for large files, git blob hash for small ones, ``X-Error-Code: EntryNotFound`` on 404)
and serves plain files under ``/files/`` with ``Range`` support, optionally cutting a transfer short.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from easyphoto import download as dl
from easyphoto import registry
from easyphoto.config import ModelConfig
from easyphoto.errors import ModelNotFoundError
from easyphoto.registry import ModelEntry, Source

COMMIT = "c0ffee" + "0" * 34


def _etag(data: bytes, lfs: bool) -> str:
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StandIn:
    """Loopback HTTP server: hub files ``{(repo, path): bytes}`` and plain ``{name: bytes}``."""

    def __init__(self) -> None:
        self.hub: dict[tuple[str, str], bytes] = {}
        self.plain: dict[str, bytes] = {}
        self.cut_after: int | None = None  # bytes sent before the next plain GET is cut off
        self.requests: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _lookup(self) -> tuple[bytes | None, dict[str, str]]:
                path = self.path.split("?")[0]
                if path.startswith("/files/"):
                    return outer.plain.get(path[len("/files/") :]), {}
                if "/resolve/" in path:
                    repo, _, rest = path.lstrip("/").partition("/resolve/")
                    name = rest.partition("/")[2]
                    data = outer.hub.get((repo, name))
                    if data is None:
                        return None, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}
                    lfs = len(data) > 64
                    tag = _etag(data, lfs)
                    head = {"X-Repo-Commit": COMMIT, "ETag": f'"{tag}"'}
                    if lfs:
                        head["X-Linked-Etag"] = f'"{tag}"'
                        head["X-Linked-Size"] = str(len(data))
                    return data, head
                return None, {}

            def _answer(self, body: bool) -> None:
                rng = self.headers.get("Range")
                outer.requests.append((self.command, self.path, rng))
                data, head = self._lookup()
                if data is None:
                    self.send_response(404)
                    for k, v in head.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                part = data[start:]
                self.send_response(206 if rng else 200)
                for k, v in head.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if not body:
                    return
                cut = outer.cut_after
                if cut is not None and self.path.startswith("/files/"):
                    outer.cut_after = None
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import constants

    server = StandIn()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # CI runs with HF_HUB_OFFLINE=1
    monkeypatch.setenv("EASYPHOTO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.close()


def _blob(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


# ------------------------------------------------------------------ the table itself
def test_each_setting_default_is_its_registry_entry() -> None:
    """A default in ModelConfig that is not in the registry would never be downloaded or verified."""
    for name, field in ModelConfig.model_fields.items():
        if field.default is None or not isinstance(field.default, str) or "/" not in field.default:
            continue
        e = registry.by_setting(name, field.default)
        assert e is not None, f"ModelConfig.{name} default {field.default!r} has no registry entry"
        assert e.setting == name


def test_every_entry_states_source_size_and_licence() -> None:
    for e in registry.REGISTRY.values():
        assert e.sources and e.size_mb > 0 and e.licence and e.role, e.name
        for src in e.sources:
            assert src.kind in ("hub", "url", "package")
            assert src.kind != "hub" or src.files, e.name
    # the one default model whose licence excludes commercial use is said to be so
    assert not registry.entry("dlib-landmarks-68").commercial
    with pytest.raises(KeyError, match="known:"):
        registry.entry("nope")


def test_packaged_dlib_files_match_their_pinned_hashes() -> None:
    for name in ("dlib-landmarks-5", "dlib-landmarks-68", "dlib-face-id", "dlib-face-detector-cnn"):
        assert dl.status(registry.entry(name)).present
        assert dl.verify(registry.entry(name)) == []


# ------------------------------------------------------------------ hub downloads
def test_hub_download_picks_the_alternative_the_repo_has_and_verify_catches_corruption(hub) -> None:
    weights = _blob(5000)
    hub.hub[("org/net", "config.json")] = b'{"a": 1}'
    hub.hub[("org/net", "diffusion_pytorch_model.bin")] = weights  # no .safetensors in this repo
    e = ModelEntry(
        "net",
        "test",
        (
            Source(
                repo="org/net",
                files=("config.json", "diffusion_pytorch_model.safetensors|diffusion_pytorch_model.bin"),
            ),
        ),
        size_mb=1,
        licence="test",
        commercial=True,
    )
    assert not dl.status(e).present
    st = dl.download(e, say=lambda _m: None)
    assert st.present and sorted(p.name for p in st.paths) == ["config.json", "diffusion_pytorch_model.bin"]
    assert dl.verify(e) == []  # both the LFS sha256 and the small file's git blob hash agree
    # a second download asks the hub nothing
    n = len(hub.requests)
    dl.download(e, say=lambda _m: None)
    assert len(hub.requests) == n
    # flip one byte of the weights blob: verify names the file
    blob = Path(os.path.realpath(next(p for p in st.paths if p.suffix == ".bin")))
    raw = bytearray(blob.read_bytes())
    raw[100] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(raw))
    problems = dl.verify(e)
    assert (
        len(problems) == 1
        and "diffusion_pytorch_model.bin" in problems[0]
        and "does not match" in problems[0]
    )


def test_hub_repo_without_any_alternative_is_a_clear_error(hub) -> None:
    hub.hub[("org/empty", "config.json")] = b"{}"
    e = ModelEntry(
        "e", "t", (Source(repo="org/empty", files=("config.json", "a.safetensors|a.bin")),), 1, "x", True
    )
    with pytest.raises(ModelNotFoundError, match=r"org/empty has none of a\.safetensors, a\.bin"):
        dl.download(e, say=lambda _m: None)


# ------------------------------------------------------------------ URL downloads
def test_url_download_resumes_a_cut_transfer_and_records_its_hash(hub, tmp_path: Path) -> None:
    data = _blob(3 * dl.CHUNK + 123, seed=3)
    hub.plain["w.pth"] = data
    hub.cut_after = dl.CHUNK + 17
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(OSError, match="run again to resume"):
        dl.fetch_url(f"{hub.url}/files/w.pth", dest, say=lambda _m: None)
    assert not dest.exists()  # never a half file under the real name
    assert dest.with_name("w.pth.part").stat().st_size == dl.CHUNK + 17
    said: list[str] = []
    dl.fetch_url(f"{hub.url}/files/w.pth", dest, sha256=hashlib.sha256(data).hexdigest(), say=said.append)
    assert dest.read_bytes() == data
    assert hub.requests[-1][2] == f"bytes={dl.CHUNK + 17}-"  # resumed, not restarted
    assert any("resuming" in m for m in said)
    assert dest.with_name("w.pth.sha256").read_text().split()[0] == hashlib.sha256(data).hexdigest()


def test_url_download_with_the_wrong_hash_is_deleted(hub, tmp_path: Path) -> None:
    hub.plain["w.pth"] = _blob(1000)
    dest = tmp_path / "w.pth"
    with pytest.raises(ValueError, match="is not the published"):
        dl.fetch_url(f"{hub.url}/files/w.pth", dest, sha256="0" * 64, say=lambda _m: None)
    assert not dest.exists() and not dest.with_name("w.pth.part").exists()


def test_a_missing_first_source_falls_back_and_the_loaders_use_the_fallback(hub, monkeypatch) -> None:
    """The colour net's first source (a hub repo) is gone: the URL mirror is fetched, and the
    ModelCache source of the unchanged default setting resolves to that file."""
    data = _blob(4000, seed=9)
    hub.plain["color.pth"] = data
    default = ModelConfig.default_of("controlnet_color")
    e = ModelEntry(
        "controlnet-color",
        "colour",
        (
            Source(repo="gone/repo", files=("color.pth",)),
            Source(url=f"{hub.url}/files/color.pth", filename="color.pth"),
        ),
        size_mb=1,
        licence="x",
        commercial=True,
        setting="controlnet_color",
        config_value=default,
        sha256={"color.pth": hashlib.sha256(data).hexdigest()},
    )
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    said: list[str] = []
    st = dl.download(e, say=said.append)
    assert st.source is e.sources[1] and st.paths[0].read_bytes() == data
    assert any("failed" in m and "trying the next source" in m for m in said)
    cfg = ModelConfig(base_model="/nonexistent-base")
    assert registry.effective_source(cfg, "controlnet_color") == str(st.paths[0])
    # a value the user set is never replaced
    own = ModelConfig(base_model="/nonexistent-base", controlnet_color="/my/color.pth")
    assert registry.effective_source(own, "controlnet_color") == "/my/color.pth"
    assert dl.verify(e) == []


def test_offline_downloads_nothing_and_says_so(hub, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub[("org/x", "a.bin")] = _blob(100)
    e = ModelEntry("x", "t", (Source(repo="org/x", files=("a.bin",)),), 1, "x", True)
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        dl.download(e, say=lambda _m: None)
    assert hub.requests == []


# ------------------------------------------------------------------ the commands
def test_models_cli_lists_downloads_and_verifies(hub, monkeypatch) -> None:
    from easyphoto.cli import app

    hub.hub[("org/lora", "w.safetensors")] = _blob(3000)
    e = ModelEntry(
        "tiny-lora",
        "test",
        (Source(repo="org/lora", files=("w.safetensors",)),),
        1,
        "MIT",
        True,
        default=False,
    )
    monkeypatch.setitem(registry.REGISTRY, e.name, e)
    runner = CliRunner()
    out = runner.invoke(app, ["models", "list", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["tiny-lora"]["present"] is False and rows["dlib-face-id"]["present"] is True
    assert runner.invoke(app, ["models", "verify", "tiny-lora"]).exit_code == 2
    out = runner.invoke(app, ["models", "download", "tiny-lora"])
    assert out.exit_code == 0 and "tiny-lora: here" in out.output, out.output
    out = runner.invoke(app, ["models", "verify", "tiny-lora", "dlib-landmarks-5"])
    assert out.exit_code == 0 and "tiny-lora: ok" in out.output, out.output
    blob = Path(os.path.realpath(dl.status(e).paths[0]))
    os.chmod(blob, 0o644)
    blob.write_bytes(b"x" + blob.read_bytes()[1:])
    out = runner.invoke(app, ["models", "verify", "tiny-lora"])
    assert out.exit_code == 2 and "CORRUPT" in out.output
    assert runner.invoke(app, ["models", "download", "no-such-model"]).exit_code == 2


def test_doctor_reports_device_disk_models_and_the_fetch_command(hub, monkeypatch, tmp_path) -> None:
    from easyphoto.cli import app

    monkeypatch.setenv("EASYPHOTO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EASYPHOTO_CONTROLNET_CANNY", str(tmp_path / "my-canny"))
    out = CliRunner().invoke(app, ["doctor", "--json"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["device"] in ("cpu", "cuda", "mps") and rep["torch"]
    assert rep["home_free_gb"] > 0
    rows = {r["name"]: r for r in rep["models"]}
    assert rows["dlib-face-id"]["present"] is True
    assert rows["sd15"]["present"] is False and "sd15" in rep["fix"]
    # a setting pointed at a missing local folder is reported as that folder, missing
    assert rows["controlnet-canny"]["configured"] == str(tmp_path / "my-canny")
    assert rows["controlnet-canny"]["present"] is False
    assert "lcm-lora" not in rep["missing"]  # optional
    text = CliRunner().invoke(app, ["doctor"])
    assert text.exit_code == 0 and "easyphoto models download" in text.output


def test_downloads_show_progress_bars_after_the_libraries_are_quietened(hub, monkeypatch, capfd) -> None:
    """A first real run downloads gigabytes: the loaders quieten diffusers and transformers first
    (whose quiet mode switches the hub's bars off for the whole process), and the bars must stay."""
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as transformers_logging

    from easyphoto.diffusion.sources import quiet_libraries

    monkeypatch.delenv("EASYPHOTO_VERBOSE", raising=False)
    monkeypatch.setenv("TQDM_POSITION", "-1")  # the hub draws bars on a terminal only: act as one
    transformers_logging.disable_progress_bar()
    assert are_progress_bars_disabled()  # what transformers' quiet mode does to the hub
    quiet_libraries()
    assert not are_progress_bars_disabled()
    hub.hub[("org/big", "unet.safetensors")] = _blob(200_000)
    e = ModelEntry(
        "big", "test", (Source(repo="org/big", files=("unet.safetensors",)),), 1, "test", commercial=True
    )
    dl.download(e, say=print)
    err = capfd.readouterr().err
    assert "unet.safetensors" in err and "100%" in err and "200k/200k" in err
