"""Geometry, masks and retouch primitives (no shared photos needed: synthetic points + astronaut)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from easyphoto.face import geometry as G
from easyphoto.face import landmarks as L
from easyphoto.face import masks as M
from easyphoto.face.retouch import smooth_skin


def test_similarity_transform_recovers_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    truth = G.similarity_matrix(angle=23.0, scale=1.7, center=(40, 60), target=(300, 120))
    dst = G.transform_points(truth, src)
    est = G.similarity_transform(src, dst)
    np.testing.assert_allclose(est, truth, atol=1e-3)
    # Never a reflection, even for mirrored targets.
    mirrored = dst * np.array([-1.0, 1.0])
    assert np.linalg.det(G.similarity_transform(src, mirrored)[:, :2]) > 0
    # Inverse and composition.
    back = G.transform_points(G.invert_transform(est), dst)
    np.testing.assert_allclose(back, src, atol=1e-3)
    np.testing.assert_allclose(G.compose(G.invert_transform(est), est), np.eye(3)[:2], atol=1e-9)
    assert G.transform_scale(est) == pytest.approx(1.7, rel=1e-4)


def test_affine_transform_recovers_known_affine() -> None:
    truth = np.array([[1.2, 0.3, 5.0], [-0.1, 0.8, -7.0]])
    src = np.array([[0, 0], [100, 0], [0, 100], [50, 70]], dtype=float)
    np.testing.assert_allclose(G.affine_transform(src, G.transform_points(truth, src)), truth, atol=1e-4)


def test_level_rotation_levels_the_eyes() -> None:
    kps = np.array([[100, 100], [160, 125], [130, 140], [110, 170], [150, 180]], dtype=float)
    roll = G.eye_angle(kps)
    assert roll == pytest.approx(math.degrees(math.atan2(25, 60)))
    levelled = G.transform_points(G.level_rotation((130, 130), roll), kps)
    assert G.eye_angle(levelled) == pytest.approx(0.0, abs=1e-4)


def test_crop_box_ratio_and_shift_inside() -> None:
    face = (100.0, 50.0, 200.0, 150.0)  # size 100, centre (150, 100)
    box = G.crop_box(face, 3.0)
    assert box == pytest.approx((0.0, -50.0, 300.0, 250.0))
    assert G.box_center(box) == pytest.approx(G.box_center(face))
    inside = G.crop_box(face, 3.0, (400, 400), shift_inside=True)
    assert inside[1] == pytest.approx(0.0) and inside[3] - inside[1] == pytest.approx(300.0)
    assert G.inside_fraction(box, (400, 400)) == pytest.approx(250 / 300)


def test_warp_image_pads_white_and_valid_region_matches() -> None:
    image = np.full((100, 100, 3), 40, dtype=np.uint8)
    m = G.crop_transform((10, 10), side=60, out_size=120)  # 5/9 of the crop lie outside the image
    out = G.warp_image(image, m, 120)
    valid = G.valid_region(m, (100, 100), 120)
    kernel = np.ones((5, 5), np.uint8)
    assert (out[cv2.erode(255 - valid, kernel) > 0] >= 250).all()
    assert (out[cv2.erode(valid, kernel) > 0] == 40).all()
    assert (valid > 0).mean() == pytest.approx(4 / 9, abs=0.02)


def test_warp_image_downscale_is_antialiased() -> None:
    stripes = np.zeros((1200, 1200), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes alias badly without a box filter
    m = G.crop_transform((600, 600), 1200, 100)
    out = G.warp_image(stripes, m, 100)
    assert abs(float(out.mean()) - 127.5) < 3 and float(out.std()) < 10


def test_piecewise_affine_maps_an_affine_exactly() -> None:
    """Control points moved by one affine: every triangle (and the fallback) is that affine."""
    rng = np.random.default_rng(3)
    dst = np.vstack([rng.uniform(5, 75, size=(12, 2)), [[0, 0], [79, 0], [79, 59], [0, 59]]])
    truth = G.similarity_matrix(angle=10.0, scale=1.5, center=(40, 30), target=(60, 50))
    pwa = G.PiecewiseAffine(dst, (60, 80))
    map_x, map_y = pwa.map(G.transform_points(truth, dst, np.float64), truth)
    xs, ys = np.meshgrid(np.arange(80), np.arange(60))
    expect = G.transform_points(truth, np.stack([xs, ys], axis=-1), np.float64).reshape(60, 80, 2)
    np.testing.assert_allclose(map_x, expect[..., 0], atol=1e-3)
    np.testing.assert_allclose(map_y, expect[..., 1], atol=1e-3)
    # remap_image reads the same pixels cv2.remap would, shrinking a much larger source first.
    image = rng.integers(0, 255, size=(200, 220, 3), dtype=np.uint8)
    direct = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    np.testing.assert_array_equal(G.remap_image(image, map_x, map_y, 1.0), direct)
    assert G.remap_image(image, map_x, map_y, 2.0).shape == direct.shape


# ---------------------------------------------------------------------------------------- landmarks


def test_landmark_groups_cover_the_68_points_once() -> None:
    groups = L.JAW + L.BROWS + L.NOSE + L.RIGHT_EYE + L.LEFT_EYE + L.MOUTH
    assert groups == list(range(L.N_LANDMARKS))
    assert L.BROWS == L.RIGHT_BROW + L.LEFT_BROW and L.MOUTH == L.OUTER_LIPS + L.INNER_LIPS
    assert L.INNER == L.BROWS + L.NOSE + L.RIGHT_EYE + L.LEFT_EYE + L.MOUTH
    assert L.CHIN in L.JAW and L.NOSE_TIP in L.NOSE
    # MIRROR is a permutation that undoes itself.
    assert sorted(L.MIRROR) == list(range(68)) and [L.MIRROR[i] for i in L.MIRROR] == list(range(68))
    # The old spellings still import, and are the same objects.
    from easyphoto.face import analyzer, fusion

    assert analyzer.JAW is L.JAW and analyzer.RIGHT_EYE is L.RIGHT_EYE and analyzer.MOUTH is L.MOUTH
    assert M.forehead_points is L.forehead_points and fusion.forehead_arc is L.forehead_arc
    assert fusion.FOREHEAD_HEIGHT == L.FOREHEAD_HEIGHT


def test_landmarks_module_imports_only_numpy_and_stdlib() -> None:
    import ast
    import sys
    from pathlib import Path

    tree = ast.parse(Path(L.__file__).read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names - {"numpy"} <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_landmarks_of_accepts_faces_and_flat_arrays() -> None:
    lm = np.arange(136, dtype=np.float32).reshape(68, 2)

    class _Face:
        landmarks = lm

    for given in (lm, lm.ravel(), lm.tolist(), _Face()):
        out = L.landmarks_of(given)
        assert out.shape == (68, 2) and out.dtype == np.float64 and np.array_equal(out, lm)
    with pytest.raises(ValueError, match="68 landmarks"):
        L.landmarks_of(np.zeros((5, 2)))


def test_face_frame_mirror_and_foreheads(astro_crop) -> None:
    _, lm, _, _ = astro_crop  # levelled crop: eyes level, head upright
    frame = L.face_frame(lm)
    np.testing.assert_allclose(frame.right, [1.0, 0.0], atol=0.01)
    np.testing.assert_allclose(frame.up, [0.0, -1.0], atol=0.01)
    assert 0.5 * frame.width < frame.height < 1.5 * frame.width and 0 < frame.eye_mouth < frame.height
    eyes = 0.5 * (lm[L.RIGHT_EYE].mean(axis=0) + lm[L.LEFT_EYE].mean(axis=0))
    np.testing.assert_allclose(frame.eye_mid, eyes)
    # The frame turns and scales with the face.
    turned = L.face_frame(G.transform_points(G.similarity_matrix(30.0, 2.0), lm, np.float64))
    np.testing.assert_allclose(turned.right, [math.cos(math.pi / 6), math.sin(math.pi / 6)], atol=0.01)
    assert turned.width == pytest.approx(2 * frame.width) and turned.eye_mouth == pytest.approx(
        2 * frame.eye_mouth
    )
    # Mirroring keeps every index's meaning (the image-left eye stays image-left) and undoes itself.
    mirrored = L.mirror_landmarks(lm, 512)
    assert mirrored[L.RIGHT_EYE, 0].mean() < mirrored[L.LEFT_EYE, 0].mean()
    np.testing.assert_allclose(L.mirror_landmarks(mirrored, 512), lm)
    # Both foreheads lie above the brows; the lifted brows hug them, the arc spans the temples.
    brow_y = lm[L.BROWS, 1].min()
    points, arc = L.forehead_points(lm), L.forehead_arc(lm)
    assert points.shape == (12, 2) and points.dtype == np.float32 and (points[1:-1, 1] < brow_y).all()
    assert arc.shape == (7, 2) and (arc[1:-1, 1] < brow_y).all()
    assert arc[0, 0] > arc[-1, 0]  # image-right to image-left


@pytest.fixture(scope="module")
def astro_crop(astronaut, analyzer):
    """Astronaut face cropped at ratio 3 to 512 px, with its landmarks in crop coordinates."""
    face = analyzer.largest(astronaut)
    crop, m = G.crop_face(astronaut, face.box, 512, ratio=3.0, roll=face.roll)
    lm = G.transform_points(m, face.landmarks)
    valid = G.valid_region(m, (astronaut.shape[1], astronaut.shape[0]), 512)
    return crop, lm, valid, face


def test_crop_face_is_centred_at_ratio(astro_crop, analyzer) -> None:
    crop, lm, _, face = astro_crop
    found = analyzer.largest(crop)
    assert found is not None
    cx, cy = found.center
    assert abs(cx - 256) < 512 * 0.05 and abs(cy - 256) < 512 * 0.05
    assert found.size == pytest.approx(512 / 3, rel=0.15)
    assert abs(G.eye_angle(lm)) < 0.5


def test_face_hull_mask_covers_landmarks_and_forehead(astro_crop) -> None:
    crop, lm, _, _ = astro_crop
    hull = M.face_hull_mask(lm, crop.shape)
    pts = np.round(lm).astype(int)
    assert (hull[pts[:, 1].clip(0, 511), pts[:, 0].clip(0, 511)] > 0).mean() > 0.95
    no_forehead = M.face_hull_mask(lm, crop.shape, forehead=False)
    assert (hull > 0).sum() > 1.15 * (no_forehead > 0).sum()
    # The forehead part lies above the brows.
    extra = np.nonzero((hull > 0) & (no_forehead == 0))[0]
    assert np.median(extra) < lm[17:27, 1].mean()


def test_feather_soft_edges() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[30:70, 30:70] = 255
    soft = M.feather(mask, 6)
    assert soft.dtype == np.float32 and soft.min() >= 0.0 and soft.max() <= 1.0
    assert soft[50, 50] == pytest.approx(1.0, abs=1e-3) and soft[50, 30] == pytest.approx(0.5, abs=0.1)
    inside = M.feather(mask, 6, inside=True)
    assert inside[mask == 0].max() < 0.02
    assert M.grow_mask(mask, 5).sum() > mask.sum() > M.grow_mask(mask, -5).sum()


def test_head_mask_covers_face_and_whitens_background(astro_crop, tmp_path) -> None:
    crop, lm, valid, _ = astro_crop
    mask = M.head_mask(crop, lm, valid=valid)
    pts = np.round(lm).astype(int)
    assert (mask[pts[:, 1], pts[:, 0]] > 0).all(), "every landmark lies inside the head mask"
    hull = M.face_hull_mask(lm, crop.shape, forehead=False)
    assert ((mask > 0) | (hull == 0)).all(), "no chunk of the face is cut off"
    out = M.whiten_background(crop, mask)
    # Far from the head (outside a generous head shape) the crop is painted white.
    far = M.grow_mask(M.head_prior(lm, crop.shape, hair=1.4, neck=0.7, breadth=1.9), 40) == 0
    white = (out[far] >= 250).all(axis=1).mean()
    assert white > 0.97
    # Overall most of the crop is background and white; the head keeps its pixels.
    assert (out >= 250).all(axis=2).mean() > 0.5
    assert np.array_equal(out[hull > 0][:100], crop[hull > 0][:100])
    cv2.imwrite(str(tmp_path / "masked.png"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


def test_head_prior_without_grabcut(astro_crop) -> None:
    crop, lm, _, _ = astro_crop
    prior = M.head_mask(crop, lm, refine=False)
    hull = M.face_hull_mask(lm, crop.shape)
    assert ((prior > 0) | (hull == 0)).all()
    assert 1.3 * (hull > 0).sum() < (prior > 0).sum() < 0.6 * prior.size


def test_skin_mask_excludes_eyes_and_mouth(astro_crop) -> None:
    crop, lm, _, _ = astro_crop
    skin = M.skin_mask(lm, crop.shape)
    for idx in (M.FACE_PARTS["eyes"], M.FACE_PARTS["mouth"], M.FACE_PARTS["brows"]):
        pts = np.round(lm[idx]).astype(int)
        assert (skin[pts[:, 1], pts[:, 0]] == 0).all()
    cheek = np.round(0.5 * (lm[3] + lm[31])).astype(int)
    assert skin[cheek[1], cheek[0]] > 0


def test_retouch_smooths_skin_not_eyes(astro_crop) -> None:
    crop, lm, _, _ = astro_crop
    out = smooth_skin(crop, lm, strength=0.8)
    diff = np.abs(out.astype(np.int16) - crop.astype(np.int16)).max(axis=2)
    skin = M.grow_mask(M.skin_mask(lm, crop.shape), -6) > 0
    eyes = M.feature_mask(lm, crop.shape, ("eyes",)) > 0
    assert diff[skin].mean() > 1.0, "skin pixels change"
    assert diff[eyes].mean() < 0.25 * diff[skin].mean() and diff[eyes].mean() < 0.5
    # Smoother: less high-frequency energy on the skin.
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F)  # noqa: E731
    assert np.abs(lap(out))[skin].mean() < np.abs(lap(crop))[skin].mean()
    assert np.array_equal(smooth_skin(crop, lm, strength=0.0), crop)
