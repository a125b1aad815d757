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
