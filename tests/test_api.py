"""The HTTP API on a real server (uvicorn + worker process) with the tiny random SD1.5 on the CPU.

One server per module: train a user from 5 photos at tiny settings, generate through ``/v1`` and through
EasyPhoto's own endpoints (called exactly like its ``api_test`` scripts), kill the worker in the middle
of a training and resume it, and send bad uploads that must get readable 4xx answers.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_PREPARE, TINY_TRAIN

requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")

TINY_GENERATE = {"short_side": 96, "first_steps": 4, "second_steps": 3, "seed": 7}


def make_photos(folder: Path) -> tuple[list[Path], Path]:
    """Five ≥ 512 px photos of the astronaut (faces ≥ 128 px) and a template."""
    import cv2
    from PIL import Image, ImageEnhance
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    a = data.astronaut()

    def up(img: np.ndarray, s: float) -> np.ndarray:
        return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)

    bright = np.asarray(ImageEnhance.Brightness(Image.fromarray(up(a, 1.9))).enhance(1.25))
    variants = [
        up(a, 1.6),
        up(a[10:, 30:], 1.8),
        up(a[:, ::-1].copy(), 1.7),
        up(a[0:420, 40:460], 2.0),
        bright,
    ]
    paths = []
    for i, img in enumerate(variants):
        path = folder / f"astronaut_{i}.jpg"
        Image.fromarray(img).save(path, quality=92)
        paths.append(path)
    template = folder / "template.png"
    Image.fromarray(a).save(template)
    return paths, template


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    home: Path, model_dir: Path, *, ui: bool, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """``easyphoto serve`` (through serve_command) on a free loopback port; waits until it answers."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "EASYPHOTO_HOME": str(home),
            "EASYPHOTO_BASE_MODEL": str(model_dir),
            "EASYPHOTO_DEVICE": "cpu",
            "EASYPHOTO_TRAIN_DEFAULTS": json.dumps(TINY_TRAIN),
            "EASYPHOTO_PREPARE_DEFAULTS": json.dumps(TINY_PREPARE),
            "EASYPHOTO_GENERATE_DEFAULTS": json.dumps(TINY_GENERATE),
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
    )
    env.pop("EASYPHOTO_API_TOKEN", None)
    env.update(extra_env or {})
    code = (
        "from easyphoto.cli.serve import serve_command; "
        f"serve_command(host='127.0.0.1', port={port}, no_ui={not ui})"
    )
    log = open(home / "server.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(home / 'server.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start in 90 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_job(url: str, job_id: str, timeout: float = 120.0) -> dict:
    r = requests.get(f"{url}/v1/jobs/{job_id}/wait", params={"timeout": timeout}, timeout=timeout + 10)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("server_home")
    proc, url = start_server(
        home,
        tiny_model_dir,
        ui=False,
        extra_env={"EASYPHOTO_MAX_UPLOAD_MB": "2", "EASYPHOTO_MAX_REQUEST_MB": "8"},
    )
    yield url, home
    stop_server(proc)


@pytest.fixture(scope="module")
def trained(server: tuple[str, Path], photos: tuple[list[Path], Path]) -> dict:
    """User 'astro' trained through POST /v1/users/astro/train."""
    url, _ = server
    files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[0]]
    r = requests.post(f"{url}/v1/users/astro/train", files=files, timeout=60)
    assert r.status_code == 202, r.text
    job = wait_job(url, r.json()["job_id"])
    assert job["state"] == "succeeded", job
    return job


@pytest.mark.slow
def test_train_through_v1(server: tuple[str, Path], trained: dict) -> None:
    url, home = server
    result = trained["result"]
    assert result["user_id"] == "astro" and result["steps"] == 4
    assert [v["step"] for v in result["validations"]] == [2, 4]
    assert trained["progress"]["kept"] == 5 and trained["progress"]["step"] == 4
    assert (
        "training astro on 5 photos"
        in requests.get(f"{url}/v1/jobs/{trained['id']}", timeout=10).json()["log_tail"]
    )
    sheet = requests.get(url + result["contact_sheet_url"], timeout=10)
    assert sheet.status_code == 200 and sheet.content[:8] == b"\x89PNG\r\n\x1a\n"
    events = requests.get(f"{url}/v1/jobs/{trained['id']}", params={"events_since": 0}, timeout=10).json()[
        "events"
    ]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "queued" and "prepared" in kinds and kinds[-1] == "succeeded"
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]

    users = requests.get(f"{url}/v1/users", timeout=10).json()
    assert [u["user_id"] for u in users] == ["astro"] and users[0]["steps"] == 4
    lora = requests.get(f"{url}/v1/users/astro/lora", timeout=10)
    assert lora.status_code == 200 and "astro.safetensors" in lora.headers["content-disposition"]
    header_len = int.from_bytes(lora.content[:8], "little")
    assert b"lora_unet_" in lora.content[8 : 8 + header_len]
    assert not (home / "work" / "astro").exists(), "a finished training leaves no work folder"


@pytest.mark.slow
def test_generate_through_v1(
    server: tuple[str, Path], trained: dict, photos: tuple[list[Path], Path]
) -> None:
    from easyphoto.imageio import load_image

    url, _ = server
    template = photos[1]
    r = requests.post(
        f"{url}/v1/generate",
        data={"user_ids": "astro", "options": json.dumps({"seed": 11})},
        files=[("templates", ("template.png", template.read_bytes(), "image/png"))],
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job = wait_job(url, r.json()["job_id"])
    assert job["state"] == "succeeded", job
    (image,) = job["result"]["images"]
    assert image["seed"] == 11 and image["scores"][0]["user_id"] == "astro"
    assert 0.0 <= image["scores"][0]["similarity"] <= 1.0
    png = requests.get(url + image["url"], timeout=10)
    assert png.status_code == 200
    assert load_image(png.content).shape == load_image(template).shape
    # A second generation reuses the worker's loaded models; this one puts a picture behind the person.
    from helpers import png_bytes

    r = requests.post(
        f"{url}/v1/generate",
        data={"user_ids": "astro"},
        files=[
            ("templates", ("t.png", template.read_bytes(), "image/png")),
            ("background_image", ("sea.png", png_bytes(300, 200, 77), "image/png")),
        ],
        timeout=30,
    )
    job = wait_job(url, r.json()["job_id"])
    assert job["state"] == "succeeded", job
    made = load_image(requests.get(url + job["result"]["images"][0]["url"], timeout=10).content)
    assert (made[:4, :4] == 77).all()  # the corner is the new background
    # a picture with "restore" contradicts itself: refused before a job exists, naming both
    r = requests.post(
        f"{url}/v1/generate",
        data={"user_ids": "astro", "options": json.dumps({"background": "restore"})},
        files=[
            ("templates", ("t.png", template.read_bytes(), "image/png")),
            ("background_image", ("sea.png", png_bytes(300, 200, 77), "image/png")),
        ],
        timeout=30,
    )
    assert r.status_code == 400 and "restore" in r.json()["message"] and "picture" in r.json()["message"]


@pytest.mark.slow
def test_easyphoto_compatible_endpoints(
    server: tuple[str, Path], trained: dict, photos: tuple[list[Path], Path]
) -> None:
    """Called the way EasyPhoto's api_test/post_train.py and post_infer.py call it: data=json.dumps(...)."""
    import cv2

    url, _ = server
    encoded = [base64.b64encode(p.read_bytes()).decode("utf-8") for p in photos[0]]
    datas = json.dumps(
        {
            "user_id": "compat",
            "sd_model_checkpoint": "Chilloutmix-Ni-pruned-fp16-fix.safetensors",
            "train_mode_choose": "Train Human Lora",
            "resolution": 64,
            "val_and_checkpointing_steps": 2,
            "max_train_steps": 2,
            "steps_per_photos": 200,
            "train_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "dataloader_num_workers": 16,
            "learning_rate": 1e-3,
            "rank": 4,
            "network_alpha": 4,
            "instance_images": encoded,
            "skin_retouching_bool": False,
        }
    )
    r = requests.post(f"{url}/easyphoto/easyphoto_train_forward", data=datas, timeout=300)
    assert r.status_code == 200, r.text
    out = json.loads(r.content.decode("utf-8"))
    assert out["message"].startswith("The training has been completed"), out
    assert "dataloader_num_workers" in out["message"] and "sd_model_checkpoint" in out["message"]

    template = photos[1].read_bytes()
    datas = json.dumps(
        {
            "user_ids": ["compat"],
            "sd_model_checkpoint": "Chilloutmix-Ni-pruned-fp16-fix.safetensors",
            "init_image": base64.b64encode(template).decode("utf-8"),
            "first_diffusion_steps": 4,
            "first_denoising_strength": 0.45,
            "second_diffusion_steps": 3,
            "second_denoising_strength": 0.35,
            "seed": 12345,
            "crop_face_preprocess": True,
            "before_face_fusion_ratio": 0.5,
            "after_face_fusion_ratio": 0.5,
            "apply_face_fusion_before": True,
            "apply_face_fusion_after": True,
            "color_shift_middle": True,
            "color_shift_last": True,
            "super_resolution": True,
            "background_restore": True,
            "background_restore_denoising_strength": 0.3,
            "tabs": 1,
        }
    )
    r = requests.post(f"{url}/easyphoto/easyphoto_infer_forward", data=datas, timeout=300)
    assert r.status_code == 200, r.text
    out = json.loads(r.content.decode("utf-8"))
    assert out["message"].startswith("Success") and "super_resolution" not in out["message"]
    assert "background_restore" not in out["message"]  # done, not "ignored"
    image = cv2.imdecode(np.frombuffer(base64.b64decode(out["outputs"][0]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (1024, 1024, 3), "super_resolution: the 512 px template enlarged ×2"
    assert out["face_id_outputs"][0][1].startswith("compat: ")
    assert out["scores"][0]["scores"][0]["user_id"] == "compat"

    # Wrong types: 422 with a message naming the field; nothing crashes.
    bad = json.dumps({"user_id": "x", "instance_images": encoded[:1], "max_train_steps": "many"})
    r = requests.post(f"{url}/easyphoto/easyphoto_train_forward", data=bad, timeout=30)
    assert r.status_code == 422 and r.json()["message"].startswith("max_train_steps:")
    r = requests.post(f"{url}/easyphoto/easyphoto_infer_forward", data="{not json", timeout=30)
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]
    r = requests.post(
        f"{url}/easyphoto/easyphoto_infer_forward",
        data=json.dumps({"user_ids": ["compat"], "tabs": 3}),
        timeout=30,
    )
    # tabs=3 (text-to-photo) is queued; this server has no SDXL model, and the answer says which is missing
    assert r.status_code == 200 and "stabilityai/stable-diffusion-xl-base-1.0" in r.json()["message"]


@pytest.mark.slow
def test_portraits_without_training_and_ip_adapter_through_v1_and_compat(
    server: tuple[str, Path], trained: dict, photos: tuple[list[Path], Path]
) -> None:
    """A person given as a photo (no training) through /v1 and EasyPhoto's "Infer without User Lora";
    EasyPhoto's ipa_control + ipa_image on a trained user."""
    url, _ = server
    person, template = photos[0][0].read_bytes(), photos[1].read_bytes()
    r = requests.post(
        f"{url}/v1/generate",
        data={"options": json.dumps({"seed": 3, "first_steps": 4, "second_steps": 2})},
        files=[("templates", ("t.png", template, "image/png")), ("photos", ("me.jpg", person, "image/jpeg"))],
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job = wait_job(url, r.json()["job_id"])
    assert job["state"] == "succeeded", job
    assert (
        job["result"]["user_ids"] == ["photo"]
        and job["result"]["images"][0]["scores"][0]["user_id"] == "photo"
    )
    # no user id and no photos: refused at submit, naming what is missing
    r = requests.post(
        f"{url}/v1/generate", files=[("templates", ("t.png", template, "image/png"))], timeout=30
    )
    assert r.status_code == 400 and "photos of the person" in r.text

    b64 = base64.b64encode
    common = {
        "init_image": b64(template).decode(),
        "tabs": 1,
        "first_diffusion_steps": 4,
        "second_diffusion_steps": 2,
    }
    datas = {**common, "user_ids": ["ipa_control_only", "none", "none", "none", "none"],
             "ref_mode_choose": "Infer without User Lora", "ipa_only_weight": 0.6,
             "ipa_only_image": b64(person).decode()}  # fmt: skip
    r = requests.post(f"{url}/easyphoto/easyphoto_infer_forward", data=json.dumps(datas), timeout=300)
    out = r.json()
    assert r.status_code == 200 and out["message"].startswith("Success"), out
    assert "ipa" not in out["message"] and out["scores"][0]["scores"][0]["user_id"] == "photo"
    r = requests.post(
        f"{url}/easyphoto/easyphoto_infer_forward",
        data=json.dumps(
            {
                **common,
                "user_ids": ["astro"],
                "ipa_control": True,
                "ipa_weight": 0.5,
                "ipa_image": b64(person).decode(),
            }
        ),  # fmt: skip
        timeout=300,
    )
    out = r.json()
    assert r.status_code == 200 and out["message"].startswith("Success") and "ipa" not in out["message"], out


@pytest.mark.slow
def test_bad_uploads_get_clear_4xx(server: tuple[str, Path], photos: tuple[list[Path], Path]) -> None:
    url, _ = server
    good = ("photos", ("a.jpg", photos[0][0].read_bytes(), "image/jpeg"))

    def train(files: list, user: str = "bad") -> requests.Response:
        return requests.post(f"{url}/v1/users/{user}/train", files=files, timeout=30)

    r = train([good, ("photos", ("notes.txt", b"this is not a photo", "text/plain"))])
    assert (
        r.status_code == 400 and r.json()["detail"] == "notes.txt: not an image, or a format we cannot read"
    )
    r = train([("photos", ("empty.jpg", b"", "image/jpeg"))])
    assert r.status_code == 400 and "empty.jpg: empty file" in r.json()["detail"]
    r = train([("photos", ("huge.jpg", os.urandom(3 * 1024 * 1024), "image/jpeg"))])
    assert r.status_code == 413 and "huge.jpg: file too large" in r.json()["detail"]
    r = train([good], user="bad id!")
    assert r.status_code == 400 and "invalid user id" in r.json()["detail"]
    r = requests.post(f"{url}/v1/users/x/train", timeout=30)
    assert r.status_code == 422 and "photos" in r.json()["message"]
    r = requests.post(
        f"{url}/v1/users/o2/train", files=[good], data={"options": '{"rank": "big"}'}, timeout=30
    )
    assert r.status_code == 422 and r.json()["fields"] == ["rank"]
    assert (
        r.json()["detail"].startswith("TrainConfig.rank: Input should be a valid integer")
        and "'big'" in r.text
    )
    # Out of range: refused at submit with the field named, not later in the worker.
    for options, field in [
        ('{"rank": 0}', "rank"),
        ('{"grad_accum": 0}', "grad_accum"),
        ('{"bogus": 1}', "bogus"),
    ]:
        r = requests.post(f"{url}/v1/users/o2/train", files=[good], data={"options": options}, timeout=30)
        assert r.status_code == 422 and r.json()["fields"] == [field], r.text
    r = requests.post(
        f"{url}/v1/users/o2/train",
        files=[good],
        data={"options": '{"prepare": {"max_photos": 0}}'},
        timeout=30,
    )
    assert r.status_code == 422 and "PrepareConfig.max_photos" in r.json()["detail"]
    r = requests.post(
        f"{url}/v1/generate",
        data={"user_ids": "nobody"},
        files=[("templates", ("t.png", photos[1].read_bytes(), "image/png"))],
        timeout=30,
    )
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    assert requests.get(f"{url}/v1/jobs/0123456789abcdef", timeout=10).status_code == 404
    assert requests.get(f"{url}/v1/jobs/..%2F..%2Fjobs.db", timeout=10).status_code == 404
    assert requests.get(f"{url}/v1/users/nobody/lora", timeout=10).status_code == 404
    # A request body over the server's limit is refused before it is read.
    endpoint = f"{url}/easyphoto/easyphoto_train_forward"
    big = requests.post(endpoint, data=b"x" * (9 * 1024 * 1024), timeout=30)
    assert big.status_code == 413 and "request too large" in big.json()["detail"]
    chunks = (b"x" * (1024 * 1024) for _ in range(9))  # no Content-Length: counted while reading
    assert requests.post(endpoint, data=chunks, timeout=30).status_code == 413
    # A cross-site form post from a browser is refused.
    r = requests.post(
        f"{url}/v1/users/x/train", files=[good], headers={"Origin": "http://evil.example"}, timeout=30
    )
    assert r.status_code == 403
    assert requests.get(f"{url}/v1/health", timeout=10).json()["status"] == "ok"


@pytest.mark.slow
def test_generation_with_no_face_fails_readably(server: tuple[str, Path], trained: dict) -> None:
    import io

    from PIL import Image

    url, _ = server
    buf = io.BytesIO()
    Image.fromarray(np.full((256, 256, 3), 200, np.uint8)).save(buf, format="PNG")
    r = requests.post(
        f"{url}/v1/generate",
        data={"user_ids": "astro"},
        files=[("templates", ("wall.png", buf.getvalue(), "image/png"))],
        timeout=30,
    )
    job = wait_job(url, r.json()["job_id"])
    assert job["state"] == "failed" and job["error"] == "wall: no face found in the template"
    # the message's stable code, so a client can say it in its own language
    assert job["result"]["error"] == {
        "code": "face.none_in_template",
        "params": {},
        "source": "wall",
        "kind": "NoFaceError",
    }


@pytest.mark.slow
def test_killed_worker_interrupts_training_which_resumes(
    server: tuple[str, Path], trained: dict, photos: tuple[list[Path], Path]
) -> None:
    url, home = server
    files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[0]]
    options = json.dumps({"max_steps": 40, "validate_every": 2})
    r = requests.post(f"{url}/v1/users/kill/train", files=files, data={"options": options}, timeout=30)
    job_id = r.json()["job_id"]
    # A generation queued behind it can be cancelled before it starts.
    queued = requests.post(
        f"{url}/v1/generate",
        data={"user_ids": "astro"},
        files=[("templates", ("t.png", photos[1].read_bytes(), "image/png"))],
        timeout=30,
    ).json()["job_id"]
    assert requests.delete(f"{url}/v1/jobs/{queued}", timeout=10).json()["state"] == "cancelled"

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/v1/jobs/{job_id}", params={"log_lines": 0}, timeout=10).json()
        if job["progress"].get("step", 0) >= 3:
            break
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.05)
    else:
        pytest.fail("training did not reach step 3")
    os.kill(job["worker_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
    assert job["state"] == "interrupted", job
    assert job["resumable"] and "resume it to continue" in job["error"]
    assert not (home / "users" / "kill").exists(), "an interrupted training leaves no half-written model"

    r = requests.post(f"{url}/v1/jobs/{job_id}/resume", timeout=10)
    assert r.status_code == 202 and r.json()["state"] == "queued"
    job = wait_job(url, job_id)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2 and job["result"]["steps"] == 40
    events = requests.get(f"{url}/v1/jobs/{job_id}", params={"events_since": 0}, timeout=10).json()["events"]
    starts = [e for e in events if e["type"] == "start"]
    assert starts[0]["step"] == 0 and starts[1]["step"] >= 2, "the second run continued from a checkpoint"
    assert requests.get(f"{url}/v1/health", timeout=10).json()["workers"], "a new worker was started"
    assert requests.post(f"{url}/v1/jobs/{job_id}/resume", timeout=10).status_code == 409


@pytest.mark.slow
def test_delete_user(server: tuple[str, Path], trained: dict) -> None:
    url, home = server
    r = requests.delete(f"{url}/v1/users/compat", timeout=10)
    if r.status_code == 404:
        pytest.skip("compat user not trained in this run")
    assert r.status_code == 200 and not (home / "users" / "compat").exists()
    assert requests.delete(f"{url}/v1/users/compat", timeout=10).status_code == 404


@pytest.mark.slow
def test_token_bind_and_docs(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from easyphoto.config import ServerSettings
    from easyphoto.errors import ConfigError
    from easyphoto.server.app import create_app
    from easyphoto.server.security import check_bind

    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", "s3cret-token-0123456789")
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(ConfigError, match="refusing to listen"):
            check_bind(host, None)
    with pytest.raises(ConfigError, match="--share"):
        check_bind("127.0.0.1", None, share=True)

    app = create_app(
        ServerSettings(home=tmp_path, token="s3cret-token-0123456789", start_workers=False, ui=False)
    )
    client = TestClient(app)
    r = client.get("/v1/users")
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    assert client.get("/v1/users", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/users", headers={"Authorization": "Bearer s3cret-token-0123456789"}).json() == []
    assert client.post("/easyphoto/easyphoto_train_forward", content=b"{}").status_code == 401
    assert client.get("/docs", headers={"Accept": "text/html"}, follow_redirects=False).status_code == 303
    login = client.post("/login", data={"token": "s3cret-token-0123456789"}, follow_redirects=False)
    assert login.status_code == 303
    assert client.get("/v1/users").status_code == 200, "the login cookie authenticates the browser"

    open_app = TestClient(create_app(ServerSettings(home=tmp_path, start_workers=False, ui=False)))
    schema = open_app.get("/openapi.json").json()
    for path in (
        "/v1/users/{user_id}/train",
        "/v1/jobs/{job_id}",
        "/v1/generate",
        "/easyphoto/easyphoto_infer_forward",
    ):
        assert path in schema["paths"]
    # /docs and /redoc work offline: every script and style they load comes from this server
    import re

    for page in ("/docs", "/redoc"):
        r = open_app.get(page)
        assert r.status_code == 200, page
        external = re.findall(r"""(?:src|href)=["']?(https?:|//)""", r.text)
        assert external == [], f"{page} loads from another host: {external}"
        assets = re.findall(r"""["'](/docs-assets/[^"']+)["']""", r.text)
        assert assets, page
        for asset in assets:
            got = open_app.get(asset)
            assert got.status_code == 200 and len(got.content) > 1000, asset
    assert "/docs-assets" not in json.dumps(schema["paths"])
