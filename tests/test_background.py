"""Background replace and restore: the real person segmenter on a real photo, the compositing and the
tiled restore pass (the diffusion call stood in for, so the geometry is what is checked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easyphoto.errors import ModelNotFoundError
from easyphoto.face.person import PersonSegmenter, person_mask
from easyphoto.stages.generate import background as bg

DATA = Path(__file__).parent / "data"
HOPPER = Path(__file__).parent / "faces" / "identities" / "grace_hopper" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def segmenter() -> PersonSegmenter:
    return PersonSegmenter()


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    return np.asarray(Image.open(HOPPER).convert("RGB"))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_person_mask_matches_a_hand_checked_mask(segmenter, hopper) -> None:
    reference = np.asarray(Image.open(DATA / "grace_hopper_person.png")) > 0
    mask = person_mask(hopper, segmenter)
    assert mask.shape == reference.shape and mask.dtype == np.float32
    assert _iou(mask > 0.5, reference) >= 0.95  # measured 0.977
    # soft only at the border: most pixels are decided
    assert ((mask > 0.02) & (mask < 0.98)).mean() < 0.05


def test_a_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "selfie.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match="selfie.tflite: not a usable segmentation model"):
        PersonSegmenter(bad)
    with pytest.raises(ModelNotFoundError, match="not found"):
        PersonSegmenter(tmp_path / "missing.tflite")


def test_replace_with_a_picture_keeps_the_person_and_changes_the_rest(segmenter, hopper, analyzer) -> None:
    faces = analyzer.detect(hopper)
    alpha = bg.person_alpha(hopper, faces, segmenter)
    picture = np.zeros((300, 900, 3), np.uint8)
    picture[..., 1] = 200  # a wide green picture: covered, not stretched
    new = bg.cover(picture, (hopper.shape[1], hopper.shape[0]))
    assert new.shape == hopper.shape
    out = bg.composite(hopper, alpha, new)
    person, behind = alpha >= 1.0, alpha <= 0.0
    assert person.mean() > 0.4 and behind.mean() > 0.25
    assert np.array_equal(out[person], hopper[person])  # the person's pixels, exactly
    assert np.array_equal(out[behind], new[behind])
    # every face is inside the person, even where the segmenter would have doubted
    from easyphoto.face.masks import face_hull_mask, grow_mask

    hull = grow_mask(face_hull_mask(faces[0].landmarks, hopper.shape), -8) > 0
    assert alpha[hull].min() >= 0.99


def test_painted_background_repaints_outside_the_person_only(segmenter, hopper, monkeypatch) -> None:
    seen = {}

    def stand_in(cache, names, image, mask, controls, scales, **kw):
        seen.update(names=names, image=image, mask=mask, control=controls[0], kw=kw)
        out = image.copy()
        out[mask > 0] = (30, 60, 200)  # "a blue studio wall"
        return out

    monkeypatch.setattr(bg, "_inpaint", stand_in)
    alpha = person_mask(hopper, segmenter)
    painted = bg.paint_background(
        None, hopper, alpha, prompt="a blue studio wall", negative_prompt="", work_side=256,
        steps=4, guidance_scale=5.0, seed=1,
    )  # fmt: skip
    h, w = seen["image"].shape[:2]
    assert max(h, w) <= 256 and h % 8 == 0 and w % 8 == 0 and seen["kw"]["strength"] == 1.0
    small_alpha = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).resize((w, h))) / 255
    assert (seen["mask"][small_alpha < 0.1] == 255).all()  # the whole background is repainted
    assert (seen["mask"][small_alpha > 0.99] == 0).mean() > 0.9  # the person's inside is not
    from scipy.ndimage import binary_erosion

    far = binary_erosion(small_alpha < 0.01, iterations=4)
    assert far.mean() > 0.2 and not seen["control"][far].any()  # no edges of the old background steer it
    out = bg.composite(hopper, alpha, painted)
    behind = alpha <= 0.0
    assert np.abs(out[behind].astype(int) - (30, 60, 200)).max() <= 3
    assert np.array_equal(out[alpha >= 1.0], hopper[alpha >= 1.0])


def test_restore_is_seamless_in_tiles_and_gives_the_faces_back(hopper, analyzer, monkeypatch) -> None:
    def brighter(cache, names, image, mask, controls, scales, **kw):
        assert names == ["tile", "canny"] and (mask == 255).all() and kw["strength"] == 0.3
        return np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8)

    monkeypatch.setattr(bg, "_inpaint", brighter)
    faces = analyzer.detect(hopper)
    from easyphoto.face.masks import face_hull_mask

    masks = [face_hull_mask(f.landmarks, hopper.shape) for f in faces]
    args = dict(strength=0.3, prompt="p", negative_prompt="", steps=4, guidance_scale=5.0, seed=0)
    tiled = bg.restore_background(None, hopper, masks, tile=256, overlap=32, **args)
    whole = bg.restore_background(None, hopper, masks, tile=1024, overlap=32, **args)
    assert tiled.shape == hopper.shape
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # no seams
    away = np.ones(hopper.shape[:2], bool)
    x0, y0, x1, y1 = (int(v) for v in faces[0].box)
    away[max(0, y0 - 60) : y1 + 60, max(0, x0 - 60) : x1 + 60] = False
    change = tiled[away].astype(int) - hopper[away].astype(int)
    assert 10 < change.mean() <= 20  # changed, within the pass's own bound
    core = masks[0] > 0
    assert np.array_equal(tiled[core], hopper[core])  # the face as made, untouched
    from easyphoto.face.analyzer import similarity

    again = analyzer.find_near(tiled, faces[0].box)
    assert abs(similarity(again, faces[0].embedding) - similarity(faces[0], faces[0].embedding)) <= 0.05


# ------------------------------------------------------------------ in the portrait pipeline (tiny model)
@pytest.fixture(scope="module")
def tiny_gen(tiny_model_dir: Path, analyzer):
    from easyphoto.config import ModelConfig
    from easyphoto.diffusion.models import ModelCache
    from easyphoto.stages.generate import PortraitGenerator

    cache = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    return PortraitGenerator(cache, analyzer)


def _tiny(**kw):
    from easyphoto.config import GenerateConfig

    return GenerateConfig(short_side=96, second_steps=2, background_tile=256, seed=3, **kw)


@pytest.mark.slow
def test_pipeline_replaces_and_restores_the_background(tiny_gen, astronaut, tmp_path: Path) -> None:
    from easyphoto.errors import ConfigError
    from easyphoto.face.masks import face_hull_mask
    from easyphoto.stages.generate import read_png_params

    with pytest.raises(ConfigError, match="background_prompt or a background picture"):
        tiny_gen.generate(astronaut, ["none"], _tiny(background="replace"))
    events: list[dict] = []
    replaced = tiny_gen.generate(
        astronaut, ["none"], _tiny(background="replace", background_prompt="a beach"), on_event=events.append
    )
    alpha = person_mask(astronaut, tiny_gen.person_segmenter())
    person, behind = alpha >= 1.0, alpha <= 0.0
    assert person.mean() > 0.3 and behind.mean() > 0.2
    assert np.array_equal(replaced.array[person], astronaut[person])
    assert np.abs(replaced.array[behind].astype(int) - astronaut[behind]).mean() > 10
    assert {"type": "background", "mode": "replace"} in events
    assert any(e.get("pass") == "background" for e in events if e["type"] == "step")
    assert replaced.params["background"] == "replace" and "background" in replaced.timings
    path = replaced.save(tmp_path / "replaced.png")
    assert read_png_params(path)["background_prompt"] == "a beach"

    # restore: the whole picture goes through the pass (with "none" no face was made, so none is
    # given back: the stand-in test above checks that part)
    restored = tiny_gen.generate(astronaut, ["none"], _tiny(background="restore"))
    face = tiny_gen.analyzer.largest(astronaut)
    hull = face_hull_mask(face.landmarks, astronaut.shape) > 0
    assert np.abs(restored.array[~hull].astype(int) - astronaut[~hull]).mean() > 5
    assert restored.params["background_strength"] == 0.35
    # a picture behind the person instead of a prompt: no diffusion at all
    picture = np.zeros((100, 300, 3), np.uint8)
    picture[..., 2] = 255
    pictured = tiny_gen.generate(astronaut, ["none"], _tiny(background="replace"), background_image=picture)
    assert np.array_equal(pictured.array[person], astronaut[person])
    assert (pictured.array[behind][:, 2] >= 250).all()


@pytest.mark.slow
def test_cli_puts_a_picture_behind_the_people(tiny_model_dir: Path, astronaut, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from easyphoto.stages.generate import read_png_params

    template, picture = tmp_path / "astronaut.png", tmp_path / "sea.png"
    Image.fromarray(astronaut).save(template)
    Image.fromarray(np.full((200, 300, 3), (20, 80, 200), np.uint8)).save(picture)
    args = ["generate", "--template", str(template), "--user-id", "none", "--background-image", str(picture)]
    args += [
        "--base-model",
        str(tiny_model_dir),
        "--short-side",
        "96",
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "easyphoto", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    out = Path(json.loads(proc.stdout)[0]["output"])
    params = read_png_params(out)
    assert params["background"] == "replace" and params["config"]["background"] == "replace"
    image = np.asarray(Image.open(out).convert("RGB"))
    assert (image[:8, :8] == (20, 80, 200)).all()  # the corner is sea now


def test_cli_refuses_a_picture_with_another_background_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--background keep --background-image X` contradicts itself: one line naming both, nothing made
    (not the picture silently dropped)."""
    from easyphoto.cli import main

    picture = tmp_path / "beach.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(picture)
    args = ["generate", "--template", str(picture), "--photo", str(picture), "--out", str(tmp_path / "out")]
    for mode in ("keep", "restore"):
        capsys.readouterr()
        assert main([*args, "--background", mode, "--background-image", str(picture)]) == 2
        err = capsys.readouterr().err
        assert f"--background {mode}" in err and "--background-image" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
