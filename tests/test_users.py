"""The user-model contract (easyphoto.users): versioned meta, atomic save, clear errors for broken models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from easyphoto.errors import UnknownUserError, UserModelError
from easyphoto.users import (
    FORMAT_VERSION,
    TrainingState,
    UserMeta,
    UserModel,
    delete_user,
    list_users,
    read_meta,
    save_user_model,
    work_dir,
)


def _save(home: Path, user: str = "alice", *, face_id: Path | None = None, **meta) -> UserModel:
    state = {
        "lora_unet_x.lora_down.weight": torch.ones(2, 3),
        "lora_unet_x.lora_up.weight": torch.ones(3, 2),
        "lora_unet_x.alpha": torch.tensor(1.0),
    }
    ref = np.full((64, 64, 3), 200, np.uint8)
    return save_user_model(
        user,
        lora_state=state,
        lora_metadata={"ss_network_dim": "2"},
        meta=UserMeta(user_id=user, steps=4, best_score=0.7, **meta),
        ref_image=ref,
        embedding=np.ones(128, np.float32),
        face_id=face_id,
        home=home,
    )


def test_save_load_summary_and_face_id_source(tmp_path: Path) -> None:
    model = _save(tmp_path)
    loaded = UserModel.load("alice", tmp_path)
    assert loaded.meta.format_version == FORMAT_VERSION and loaded.meta.family == "sd15"
    assert loaded.meta.created and loaded.meta.steps == 4
    # No validation render with a face: face_id.png is the reference photo, and meta says so.
    assert loaded.meta.face_id_source == "reference" and model.face_id_path.is_file()
    assert loaded.ref_image().shape == (64, 64, 3) and loaded.embedding().shape == (128,)
    summary = loaded.summary()
    assert (
        summary["user_id"] == "alice"
        and summary["face_id_source"] == "reference"
        and summary["lora_bytes"] > 0
    )
    render = tmp_path / "render.png"
    from easyphoto.imageio import save_png

    save_png(np.zeros((8, 8, 3), np.uint8), render)
    assert _save(tmp_path, face_id=render).meta.face_id_source == "validation"
    assert [u["user_id"] for u in list_users(tmp_path)] == ["alice"]


def test_models_written_before_versioning_still_load(tmp_path: Path) -> None:
    model = _save(tmp_path)
    meta = json.loads((model.path / "meta.json").read_text())
    for key in ("format_version", "family", "face_id_source"):
        meta.pop(key)
    (model.path / "meta.json").write_text(json.dumps(meta))
    old = UserModel.load("alice", tmp_path)
    assert old.meta.format_version == 0 and old.meta.family == "sd15"


@pytest.mark.parametrize(
    ("damage", "file", "reason"),
    [
        (lambda p: (p / "meta.json").write_text("{not json"), "meta.json", "not valid JSON"),
        (lambda p: (p / "meta.json").write_text("[1, 2]"), "meta.json", "expected a JSON object"),
        (lambda p: (p / "meta.json").write_text('{"steps": "many"}'), "meta.json", "steps"),
        (lambda p: (p / "meta.json").write_text('{"family": "sd3"}'), "meta.json", "family"),
        (lambda p: (p / "meta.json").write_text('{"format_version": 99}'), "meta.json", "newer"),
        (lambda p: (p / "lora.safetensors").write_bytes(b""), "lora.safetensors", "empty"),
        (lambda p: (p / "embedding.npy").write_bytes(b"\x93NUMPY garbage"), "embedding.npy", "unreadable"),
        (lambda p: np.save(p / "embedding.npy", np.ones(5)), "embedding.npy", "128"),
        (lambda p: (p / "ref.png").write_bytes(b"\x89PNG\r\n\x1a\n trunc"), "ref.png", "ref.png"),
    ],
)
def test_a_broken_user_model_is_a_clear_error_naming_user_and_file(
    tmp_path: Path, damage, file, reason
) -> None:
    model = _save(tmp_path)
    damage(model.path)
    with pytest.raises(UserModelError) as err:
        loaded = UserModel.load("alice", tmp_path)
        loaded.embedding()
        loaded.ref_image()
    message = str(err.value)
    assert message.startswith(f"user 'alice': {file}: ") and reason in message, message
    assert err.value.user_id == "alice" and err.value.file == file
    # Listing users shows the broken one with its error instead of failing the whole list.
    listed = list_users(tmp_path)
    if file in ("meta.json", "lora.safetensors"):
        assert listed == [{"user_id": "alice", "error": message}]


def test_unknown_user_and_delete(tmp_path: Path) -> None:
    with pytest.raises(UnknownUserError, match="no trained model for user 'bob'"):
        UserModel.load("bob", tmp_path)
    _save(tmp_path)
    delete_user("alice", tmp_path)
    assert list_users(tmp_path) == [] and not (tmp_path / "users" / "alice").exists()
    with pytest.raises(UnknownUserError):
        delete_user("alice", tmp_path)


def test_training_state_round_trip_and_corrupt_state(tmp_path: Path) -> None:
    state = TrainingState(step=2, max_steps=4, config={"rank": 4}, validations=[], dataset="/d")
    state.save("alice", tmp_path)
    assert TrainingState.load("alice", tmp_path) == state
    (work_dir("alice", tmp_path) / "state.json").write_text('{"step": 2}')
    with pytest.raises(UserModelError, match="unreadable resume state.*start afresh"):
        TrainingState.load("alice", tmp_path)
    with pytest.raises(UserModelError, match="no interrupted training"):
        TrainingState.load("bob", tmp_path)


def test_read_meta_without_a_file_gives_minimal_metadata(tmp_path: Path) -> None:
    meta = read_meta("carol", tmp_path)
    assert meta.user_id == "carol" and meta.format_version == 0


def test_cli_generate_with_a_broken_model_is_one_line(tmp_path: Path) -> None:
    model = _save(tmp_path / "home")
    (model.path / "meta.json").write_text("{oops")
    template = tmp_path / "t.png"
    from easyphoto.imageio import save_png

    save_png(np.zeros((64, 64, 3), np.uint8), template)
    env = {"EASYPHOTO_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-m", "easyphoto", "generate", "--user-id", "alice", "--template", str(template)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: user 'alice': meta.json: not valid JSON "
        "(Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))"
    ]
