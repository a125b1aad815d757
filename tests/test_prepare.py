"""Training-photo preparation: selection with reasons, crops, masks, dataset layout, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from easyphoto.config import TRIGGER_CAPTION, PrepareConfig
from easyphoto.errors import ConfigError, NotEnoughPhotosError
from easyphoto.imageio import load_image
from easyphoto.stages.prepare import (
    PreparedSet,
    collect_photos,
    contact_sheet,
    prepare,
    sharpness,
    write_contact_sheet,
)


def _save(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


def _by_name(prepared: PreparedSet) -> dict[str, object]:
    return {Path(p.source).name: p for p in prepared.photos}


def _check_kept_crops(prepared: PreparedSet, analyzer, ratio: float = 3.0) -> None:
    """Each training image: 512 px, face centred at the crop ratio, white corners."""
    for path in prepared.images:
        img = load_image(path)
        assert img.shape == (512, 512, 3)
        face = analyzer.largest(img)
        assert face is not None, f"{path.name}: face lost in the crop"
        cx, cy = face.center
        assert abs(cx - 256) < 30 and abs(cy - 256) < 30, f"{path.name}: face not centred ({cx}, {cy})"
        # Re-detected on the white background, HOG's box may come out up to ~30% larger.
        assert 0.85 * 512 / ratio < face.size < 1.35 * 512 / ratio
        assert abs(face.roll) < 3.0
        corners = np.concatenate([img[:40, :40], img[:40, -40:]]).reshape(-1, 3)
        assert (corners >= 250).all(axis=1).mean() > 0.95, f"{path.name}: background not white"


# ----------------------------------------------------------------------------- without shared photos


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory, astronaut) -> Path:
    """Astronaut at 2× (face ~180 px), the same photo at 1.6× (a near-duplicate), a blurred copy,
    a non-image file, an empty file and a photo without a face."""
    folder = tmp_path_factory.mktemp("synthetic")
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    _save(big, folder / "astro.jpg")
    _save(cv2.resize(astronaut, (820, 820), interpolation=cv2.INTER_CUBIC), folder / "astro_small.png")
    _save(cv2.GaussianBlur(big, (0, 0), 6), folder / "astro_blurred.jpg")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "empty.jpg").write_bytes(b"")
    yy, xx = np.mgrid[0:240, 0:320]
    _save(np.dstack([xx % 256, yy % 256, (xx + yy) % 256]).astype(np.uint8), folder / "gradient.png")
    return folder


@pytest.mark.slow
def test_prepare_reports_every_file_without_shared_photos(synthetic_set, analyzer, tmp_path) -> None:
    out = tmp_path / "out"
    prepared = prepare([synthetic_set], out, PrepareConfig(min_photos=1), analyzer=analyzer, user_id="astro")
    got = _by_name(prepared)
    assert set(got) == {
        "astro.jpg",
        "astro_small.png",
        "astro_blurred.jpg",
        "notes.txt",
        "empty.jpg",
        "gradient.png",
    }
    assert got["astro.jpg"].kept and got["astro.jpg"].rank == 1 and got["astro.jpg"].reference
    assert got["astro_small.png"].code == "duplicate" and "astro.jpg" in got["astro_small.png"].reason
    assert got["astro_blurred.jpg"].code == "blurry"
    assert got["notes.txt"].code == "unreadable"
    assert got["empty.jpg"].code == "unreadable" and "empty" in got["empty.jpg"].reason
    assert got["gradient.png"].code == "no_face"
    # Layout: imagefolder split + reference + embedding + report.
    meta = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    assert meta == [{"file_name": prepared.images[0].name, "text": TRIGGER_CAPTION}]
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(
        [prepared.images[0].name, "metadata.jsonl"]
    )
    assert (out / "ref.png").is_file() and np.load(out / "embedding.npy").shape == (128,)
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == 1 and report["user_id"] == "astro" and len(report["photos"]) == 6
    assert {p["source"] for p in report["photos"]} == {str(synthetic_set / n) for n in got}
    _check_kept_crops(prepared, analyzer)
    # Round trip from disk.
    loaded = PreparedSet.load(out)
    assert [p.to_dict() for p in loaded.photos] == [p.to_dict() for p in prepared.photos]
    assert loaded.images == prepared.images and loaded.captions == [TRIGGER_CAPTION]


def test_not_enough_photos_lists_reasons_and_writes_nothing(synthetic_set, analyzer, tmp_path) -> None:
    out = tmp_path / "out"
    files = [synthetic_set / n for n in ("notes.txt", "empty.jpg", "astro_blurred.jpg")]
    with pytest.raises(NotEnoughPhotosError) as info:
        prepare(files, out, analyzer=analyzer)
    message = str(info.value)
    assert "at least 3" in message
    for f in files:
        assert str(f) in message
    assert "empty file" in message and "too blurry" in message
    assert [r.code for r in info.value.results] == ["unreadable", "unreadable", "blurry"]
    assert not out.exists()
    assert not list(tmp_path.glob(".out*")), "no staging folder left behind"


def test_rerun_replaces_atomically_and_failure_keeps_old(synthetic_set, analyzer, tmp_path) -> None:
    out = tmp_path / "out"
    cfg = PrepareConfig(min_photos=1, remove_background=False)
    first = prepare([synthetic_set / "astro.jpg"], out, cfg, analyzer=analyzer)
    (out / "train" / "stale.png").write_bytes(b"x")
    second = prepare([synthetic_set / "astro_small.png"], out, cfg, analyzer=analyzer)
    assert [p.name for p in second.images] != [p.name for p in first.images]
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(
        [second.images[0].name, "metadata.jsonl"]
    )
    before = (out / "report.json").read_bytes()
    with pytest.raises(NotEnoughPhotosError):
        prepare([synthetic_set / "notes.txt"], out, cfg, analyzer=analyzer)
    assert (out / "report.json").read_bytes() == before


def test_refuses_to_replace_a_foreign_folder(tmp_path, synthetic_set, analyzer) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="refusing"):
        prepare([synthetic_set / "astro.jpg"], foreign, PrepareConfig(min_photos=1), analyzer=analyzer)
    assert (foreign / "holiday.jpg").read_bytes() == b"precious"


def test_collect_photos_expands_folders(tmp_path) -> None:
    (tmp_path / "b.jpg").write_bytes(b"1")
    (tmp_path / "a.png").write_bytes(b"1")
    (tmp_path / ".hidden").write_bytes(b"1")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in collect_photos([tmp_path, "x.jpg"])] == ["a.png", "b.jpg", "x.jpg"]


def test_sharpness_is_resolution_independent(astronaut, analyzer) -> None:
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    huge = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    values = []
    for img in (big, huge):
        face = analyzer.largest(img)
        values.append(sharpness(img, face.box))
    assert values[0] == pytest.approx(values[1], rel=0.25)
    assert min(values) > PrepareConfig().blur_threshold * 2
    blurred = cv2.GaussianBlur(big, (0, 0), 5)
    assert sharpness(blurred, analyzer.largest(big).box) < PrepareConfig().blur_threshold


# ------------------------------------------------------------------------------- with shared photos


@pytest.fixture(scope="module")
def obama_biden(faces_dir, full_faces, analyzer, tmp_path_factory):
    """Obama ×5 + Biden + a duplicate, a non-image, an empty file and a no-face photo, prepared once.

    With the committed subset tests/faces: Obama ×3 and no duplicates (no room for them under 3 MB).
    """
    junk = tmp_path_factory.mktemp("junk")
    (junk / "readme.txt").write_text("hello")
    (junk / "empty.png").write_bytes(b"")
    photos = sorted((faces_dir / "identities" / "obama").iterdir())
    photos += [
        p
        for p in (
            faces_dir / "identities" / "biden" / "biden1.jpg",
            faces_dir / "misc" / "obama2_rgba32.png",
            faces_dir / "misc" / "obama-720p.jpg",
            faces_dir / "misc" / "no_face_mountain.jpg",
        )
        if full_faces or p.is_file()
    ]
    photos += [
        junk / "readme.txt",
        junk / "empty.png",
    ]
    out = tmp_path_factory.mktemp("prepared") / "obama"
    prepared = prepare(photos, out, PrepareConfig(retouch=True), analyzer=analyzer, user_id="obama")
    return prepared, photos


@pytest.mark.slow
def test_obama_set_prepares_and_drops_biden(obama_biden, analyzer) -> None:
    prepared, photos = obama_biden
    got = _by_name(prepared)
    assert len(prepared.photos) == len(photos)
    biden = got["biden1.jpg"]
    assert biden.code == "different_person" and biden.source.endswith("biden1.jpg")
    assert {"obama.jpg", "obama2.jpg", "obama3.jpg"} <= {Path(p.source).name for p in prepared.kept}
    # Partly cut-off faces: kept with a correct crop, or rejected with a reason.
    for name in ("obama_partial_face.jpg", "obama_partial_face2.jpg"):
        assert name not in got or got[name].kept or got[name].code in ("face_cut_off", "duplicate")
    if "obama-720p.jpg" in got:  # the duplicates: always with the full set, not in the committed subset
        rgba = got["obama2_rgba32.png"]
        assert rgba.code == "duplicate" and "obama2.jpg" in rgba.reason
        assert got["obama-720p.jpg"].code == "duplicate"
    assert got["no_face_mountain.jpg"].code == "no_face"
    assert got["readme.txt"].code == "unreadable" and got["empty.png"].code == "unreadable"
    # Ranks 1..n, scores high and falling, exactly one reference.
    kept = prepared.kept
    assert [p.rank for p in kept] == list(range(1, len(kept) + 1))
    scores = [p.score for p in kept]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.8
    assert sum(p.reference for p in prepared.photos) == 1
    assert all(p.reason for p in prepared.rejected)
    _check_kept_crops(prepared, analyzer)
    # The mean embedding is Obama, not Biden.
    emb = np.load(prepared.out_dir / "embedding.npy")
    biden_face = analyzer.largest(load_image(biden.source))
    obama_face = analyzer.largest(load_image(next(p for p in photos if p.name == "obama.jpg")))
    assert np.linalg.norm(emb - obama_face.embedding) < 0.4 < np.linalg.norm(emb - biden_face.embedding)


@pytest.mark.slow
def test_contact_sheet_shows_kept_and_rejected(obama_biden, tmp_path) -> None:
    prepared, _ = obama_biden
    sheet = contact_sheet(prepared)
    assert sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.shape[0] > 400
    path = write_contact_sheet(prepared, tmp_path / "sheet.png")
    assert load_image(path).shape == sheet.shape
    # A set read back from disk still draws (thumbnails of kept crops come from the files).
    assert contact_sheet(PreparedSet.load(prepared.out_dir)).shape == sheet.shape


@pytest.mark.slow
def test_prepare_command(synthetic_set, tmp_path, monkeypatch, analyzer) -> None:
    """The CLI adapter (registered as ``easyphoto prepare``), on a throwaway typer app."""
    import typer
    from typer.testing import CliRunner

    import easyphoto.stages.prepare as prep
    from easyphoto.cli.prepare import prepare_command

    real = prep.prepare
    monkeypatch.setattr(prep, "prepare", lambda *a, **k: real(*a, **{**k, "analyzer": analyzer}))
    app = typer.Typer()
    app.command("prepare")(prepare_command)
    app.command("noop")(lambda: None)  # two commands: typer then expects the command name
    runner = CliRunner()
    sheet = tmp_path / "sheet.png"
    res = runner.invoke(
        app,
        [
            "prepare",
            "--user-id",
            "astro",
            str(synthetic_set),
            "--min-photos",
            "1",
            "--contact-sheet",
            str(sheet),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "kept  #1" in res.output and "notes.txt: unreadable" in res.output and sheet.is_file()
    default_out = Path(__import__("os").environ["EASYPHOTO_HOME"]) / "datasets" / "astro"
    assert (default_out / "report.json").is_file()
    res = runner.invoke(app, ["prepare", "--user-id", "astro", str(synthetic_set / "notes.txt")])
    assert res.exit_code != 0 and isinstance(res.exception, prep.NotEnoughPhotosError)


@pytest.mark.slow
def test_low_training_resolution_keeps_a_detectable_reference(synthetic_set, analyzer, tmp_path) -> None:
    """Training crops at 64 px are too small for face detection; ref.png (fusion source) must not be."""
    from PIL import Image

    out = tmp_path / "low"
    prepared = prepare([synthetic_set], out, PrepareConfig(min_photos=1, resolution=64), analyzer=analyzer)
    with Image.open(prepared.images[0]) as crop:
        assert crop.size == (64, 64)
    ref = np.asarray(Image.open(out / "ref.png").convert("RGB"))
    assert ref.shape == (512, 512, 3)
    assert analyzer.largest(ref, fallback=False) is not None
