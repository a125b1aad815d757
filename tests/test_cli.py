"""The `easyphoto` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easyphoto.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "easyphoto", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def astronaut_file(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("cli") / "astronaut.jpg"
    Image.fromarray(astronaut).save(path, quality=95)
    return path


def test_help_lists_commands() -> None:
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("faces", "similarity", "prepare", "train", "generate", "serve", "worker", "models"):
        assert cmd in res.stdout


@pytest.mark.slow
def test_faces_json_and_bad_file_continues(tmp_path: Path, astronaut_file: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    res = run_cli("faces", "--json", str(bad), str(astronaut_file))
    assert res.returncode == 2  # some input was bad …
    data = json.loads(res.stdout)  # … but every file is reported
    assert [Path(d["file"]).name for d in data] == ["broken.jpg", "astronaut.jpg"]
    assert "broken.jpg" in data[0]["error"] and "not an image" in data[0]["error"]
    faces = data[1]["faces"]
    assert len(faces) == 1 and len(faces[0]["kps"]) == 5 and len(faces[0]["box"]) == 4
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_faces_text_output(astronaut_file: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    res = run_cli("faces", str(astronaut_file), str(empty))
    assert res.returncode == 2
    assert "1 face(s) in 512x512" in res.stdout and "kps=" in res.stdout
    assert res.stderr.strip() == f"error: {empty}: empty file (0 bytes)"


@pytest.mark.slow
def test_similarity_same_person(astronaut_file: Path, tmp_path: Path) -> None:
    flipped = tmp_path / "flipped.png"
    Image.open(astronaut_file).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    res = run_cli("similarity", str(astronaut_file), str(flipped), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["same_person"] is True and 0.5 < out["similarity"] <= 1.0
    text = run_cli("similarity", str(astronaut_file), str(flipped))
    assert "same person" in text.stdout


@pytest.mark.slow
def test_similarity_bad_input_one_line(astronaut_file: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "white").save(blank)
    res = run_cli("similarity", str(astronaut_file), str(blank))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {blank}: no face found"
    missing = run_cli("similarity", str(tmp_path / "missing.jpg"), str(blank))
    assert missing.returncode == 2 and "missing.jpg: file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    debug = run_cli("--debug", "similarity", str(tmp_path / "missing.jpg"), str(blank))
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_usage_error_exit_code() -> None:
    res = run_cli("faces")
    assert res.returncode == 2 and "Missing argument" in res.stderr


@pytest.mark.slow
def test_train_then_generate_from_the_command_line(
    faces_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`easyphoto train PHOTOS…` prepares and trains; `easyphoto generate` paints the user into a template
    (both as real processes; the refusal first runs the CLI's ``main`` here: no torch import to wait for)."""
    os.environ["EASYPHOTO_HOME"] = str(tmp_path / "home")
    photos = sorted(str(p) for p in (faces_dir / "identities" / "obama").glob("obama*.jpg"))
    tiny = ["--base-model", str(tiny_model_dir), "--device", "cpu"]
    small = ["--max-steps", "2", "--resolution", "64", "--rank", "4", "--alpha", "2", "--grad-accum", "1"]
    val = ["--validate-every", "2", "--validation-steps", "1", "--validation-size", "64"]

    # A validation template without a face stops the run before any step, naming the file.
    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((80, 80, 3), 90, np.uint8)).save(wall)
    capsys.readouterr()
    refused = [*photos, *tiny, *small, *val, "--validation-template", str(wall)]
    code = main(["train", "--user-id", "obama", *refused])
    err = capsys.readouterr().err
    assert code == 2 and "wall.png" in err and "no face" in err and "Traceback" not in err
    assert not (tmp_path / "home" / "users" / "obama").exists()
    assert not (tmp_path / "home" / "datasets" / "obama").exists(), "refused before the photos are prepared"

    res = run_cli("train", "--user-id", "obama", *photos, *tiny, *small, *val, "--json-events")
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    types = [e["type"] for e in events]  # the same events as a server job: preparation, then training
    assert types[0] == "stage" and types.index("prepared") < types.index("start") and types[-1] == "done"
    assert (tmp_path / "home" / "users" / "obama" / "lora.safetensors").is_file()

    template = faces_dir / "identities" / "biden" / sorted(os.listdir(faces_dir / "identities" / "biden"))[0]
    out = tmp_path / "out"
    res = run_cli(
        "generate", "--user-id", "obama", "--template", str(template), "--out", str(out), "--seed", "3",
        *tiny, "--first-steps", "3", "--second-steps", "2", "--short-side", "96", "--json",
        "--save-intermediates",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (result,) = json.loads(res.stdout)
    png = Path(result["output"])
    assert result["seed"] == 3 and [s["user_id"] for s in result["scores"]] == ["obama"]
    assert 0.0 <= result["scores"][0]["similarity"] <= 1.0
    from easyphoto.stages.generate import read_png_params

    with Image.open(template) as tpl, Image.open(png) as img:
        assert img.size == tpl.size
    params = read_png_params(png)
    assert params["seed"] == 3 and params["user_ids"] == ["obama"]
    steps = sorted(p.name for p in Path(result["intermediates"]).iterdir())
    assert steps[0] == "00_face0_crop.png" and steps[-1].endswith("_face0_result.png")
    assert {"face0_fused", "face0_canny", "face0_openpose", "face0_first", "face0_second"} <= {
        s[3:-4] for s in steps
    }
    with Image.open(Path(result["intermediates"]) / "00_face0_crop.png") as crop:
        assert min(crop.size) == 96


@pytest.mark.parametrize("command", ["train", "generate", "prepare", "serve", "worker", "models download"])
def test_help_is_plain_and_whole_at_100_columns(command: str, capsys, monkeypatch) -> None:
    """No Typer type placeholders (<int>, <bool>, <list[Path]>), and no option cut off at 100 columns."""
    import re

    from easyphoto.cli import app, main

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("TERM", "dumb")
    assert main([*command.split(), "--help"]) == 0
    text = capsys.readouterr().out
    assert not re.search(r"<(int|float|bool|str|path|list\[\w+\])>", text), text
    assert "…" not in text, text
    import typer

    cmd = typer.main.get_command(app)
    for part in command.split():
        cmd = cmd.commands[part]
    for param in cmd.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert opt in text, f"{opt} missing from `easyphoto {command} --help`"
