"""Training-photo preparation: from a handful of phone photos to a clean, explained training set.

:func:`prepare` reads each photo safely, finds its main face and either keeps it or rejects it with a
reason (unreadable, no face, ambiguous, face too small, face cut off, too blurry, near-duplicate,
different person, not among the most similar). Kept photos are ranked by similarity to the mean
identity embedding, cropped around the face at ratio 3 with the eyes levelled, resized to 512 px,
cut out of their background (painted white) and optionally retouched. The output folder is written
atomically::

    out_dir/
      train/                 Hugging Face "imagefolder" split: images + metadata.jsonl
        01_alice.png …       (metadata.jsonl: {"file_name": "01_alice.png", "text": caption})
      ref.png                reference crop (levelled eyes × frontal × similarity)
      embedding.npy          mean 128-d identity embedding of the kept photos (float32)
      report.json            every input with its outcome (kept: rank, score; rejected: reason)

``datasets.load_dataset("imagefolder", data_dir=out_dir)`` reads it as a ``train`` split with
``image`` and ``text`` columns. :func:`write_contact_sheet` draws one PNG of kept crops and rejected
photos with their reasons.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config import PrepareConfig
from ...errors import BadImageError, ConfigError, NotEnoughPhotosError, message
from ...face.analyzer import Face, FaceAnalyzer, distance_to_similarity
from ...face.geometry import (
    box_center,
    box_size,
    crop_face,
    crop_transform,
    inside_fraction,
    square_box,
    transform_points,
    valid_region,
)
from ...face.masks import head_mask, whiten_background
from ...face.retouch import smooth_skin
from ...imageio import load_image, save_png
from ...store import atomic_dir, write_bytes_atomic, write_json_atomic
from .checks import cut_off_fraction, face_signature, frontalness, levelness, robust_center, sharpness
from .contact_sheet import THUMB, contact_sheet, thumbnail, write_contact_sheet

REPORT_NAME = "report.json"
DATASET_DIR = "train"
REFERENCE_NAME = "ref.png"
#: ``ref.png`` is never smaller than this (px): generation re-detects its face, which HOG cannot do at
#: 64–256 px training resolutions.
REFERENCE_MIN_SIZE = 512
EMBEDDING_NAME = "embedding.npy"
REPORT_FORMAT = "easyphoto.prepare/1"

#: Machine-readable rejection codes, in the order the checks run.
REASONS = (
    "unreadable",
    "listed_twice",
    "no_face",
    "ambiguous",
    "face_too_small",
    "face_cut_off",
    "blurry",
    "duplicate",
    "different_person",
    "not_selected",
)

ProgressFn = Callable[[int, int, str], None]


@dataclass
class PhotoResult:
    """What happened to one input photo.

    ``status`` is ``"kept"`` or ``"rejected"``. Kept photos have ``rank`` (1 = most similar to the
    mean embedding), ``score`` (calibrated similarity to it, 0..1), ``distance`` (descriptor distance
    to it) and ``file`` (path of the training image, relative to the output folder). Rejected photos
    have ``code`` (one of :data:`REASONS`) and a readable ``reason``.
    """

    source: str
    status: str = "rejected"
    code: str | None = None
    reason: str | None = None
    rank: int | None = None
    score: float | None = None
    distance: float | None = None
    file: str | None = None
    width: int | None = None
    height: int | None = None
    faces: int | None = None
    face_box: list[float] | None = None
    face_size: float | None = None
    roll: float | None = None
    sharpness: float | None = None
    reference: bool = False
    thumbnail: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def kept(self) -> bool:
        return self.status == "kept"

    def reject(self, code: str, reason: str) -> PhotoResult:
        self.status, self.code, self.reason = "rejected", code, reason
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON view (no thumbnail; ``None`` fields dropped)."""
        out = {k: v for k, v in asdict(self).items() if k != "thumbnail" and v is not None}
        if not self.reference:
            out.pop("reference", None)
        for key in ("score", "distance", "face_size", "roll", "sharpness"):
            if key in out:
                out[key] = round(float(out[key]), 4)
        if "face_box" in out:
            out["face_box"] = [round(float(v), 1) for v in out["face_box"]]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhotoResult:
        known = {f for f in cls.__dataclass_fields__ if f != "thumbnail"}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PreparedSet:
    """A prepared training set on disk (see the module docstring for the layout)."""

    out_dir: Path
    photos: list[PhotoResult]
    embedding: np.ndarray
    config: PrepareConfig
    user_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dataset_dir(self) -> Path:
        """The imagefolder split (images + ``metadata.jsonl``)."""
        return self.out_dir / DATASET_DIR

    @property
    def kept(self) -> list[PhotoResult]:
        """Kept photos, best rank first."""
        return sorted((p for p in self.photos if p.kept), key=lambda p: p.rank or 0)

    @property
    def rejected(self) -> list[PhotoResult]:
        """Rejected photos, in input order."""
        return [p for p in self.photos if not p.kept]

    @property
    def images(self) -> list[Path]:
        """Training images, best rank first."""
        return [self.out_dir / p.file for p in self.kept if p.file]

    @property
    def captions(self) -> list[str]:
        return [self.config.caption] * len(self.kept)

    @property
    def reference(self) -> Path:
        """The reference crop (``ref.png``)."""
        return self.out_dir / REFERENCE_NAME

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT_NAME

    def __len__(self) -> int:
        return len(self.kept)

    def report(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        ref = next((p for p in self.photos if p.reference), None)
        return {
            "format": REPORT_FORMAT,
            "user_id": self.user_id,
            "inputs": len(self.photos),
            "kept": len(self.kept),
            "rejected": len(self.rejected),
            "caption": self.config.caption,
            "dataset": DATASET_DIR,
            "reference": REFERENCE_NAME if ref else None,
            "reference_source": ref.source if ref else None,
            "embedding": EMBEDDING_NAME,
            "config": self.config.to_dict(),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "photos": [p.to_dict() for p in self.photos],
        }

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> PreparedSet:
        """Read a prepared set back from its folder (thumbnails are not restored)."""
        out = Path(out_dir)
        try:
            data = json.loads((out / REPORT_NAME).read_text(encoding="utf-8"))
            embedding = np.load(out / EMBEDDING_NAME)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{out}: not a prepared training set ({exc})") from None
        if data.get("format") != REPORT_FORMAT:
            raise ConfigError(f"{out}: not a prepared training set (format {data.get('format')!r})")
        known = set(PrepareConfig.model_fields)
        config = PrepareConfig(**{k: v for k, v in data.get("config", {}).items() if k in known})
        photos = [PhotoResult.from_dict(p) for p in data.get("photos", [])]
        timings = {k: float(v) for k, v in data.get("timings_s", {}).items()}
        return cls(out, photos, embedding, config, data.get("user_id"), timings)


# ------------------------------------------------------------------------------------------- inputs


def collect_photos(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders into their files (sorted, not recursive, hidden files skipped); keep files as
    given. Every file is returned — non-images are reported by :func:`prepare`, not silently dropped."""
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            out.extend(c for c in sorted(p.iterdir()) if c.is_file() and not c.name.startswith("."))
        else:
            out.append(p)
    return out


def _safe_stem(path: str, limit: int = 40) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._-") or "photo"
    return stem[:limit]


@dataclass
class _Candidate:
    result: PhotoResult
    face: Face
    image: np.ndarray | None
    signature: np.ndarray
    quality: float
    embedding: np.ndarray | None = None
    crop: np.ndarray | None = None
    crop_landmarks: np.ndarray | None = None
    valid: np.ndarray | None = None
    ref_crop: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # image, landmarks, valid
    duplicates: list[_Candidate] = field(default_factory=list)


class _Clock:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def add(self, step: str, since: float) -> float:
        now = time.perf_counter()
        self.totals[step] = self.totals.get(step, 0.0) + (now - since)
        return now


def _analyse(
    path: Path, label: str, analyzer: FaceAnalyzer, cfg: PrepareConfig, clock: _Clock
) -> PhotoResult | _Candidate:
    result = PhotoResult(source=label)
    t = time.perf_counter()
    try:
        image = load_image(path, name=label)
    except BadImageError as exc:
        clock.add("load", t)
        return result.reject("unreadable", f"unreadable: {exc.reason}")
    t = clock.add("load", t)
    result.height, result.width = int(image.shape[0]), int(image.shape[1])
    result.thumbnail = thumbnail(image)
    faces = analyzer.detect(image)
    t = clock.add("detect", t)
    result.faces = len(faces)
    if not faces:
        return result.reject("no_face", "no face found")
    by_size = sorted(faces, key=lambda f: -f.size)
    face = by_size[0]
    result.face_box = [float(v) for v in face.box]
    result.face_size, result.roll = float(face.size), float(face.roll)
    if len(by_size) > 1 and by_size[1].size >= cfg.ambiguous_ratio * face.size:
        return result.reject(
            "ambiguous",
            f"ambiguous: {len(faces)} faces of similar size ({face.size:.0f} and {by_size[1].size:.0f} px);"
            " crop the photo to one person",
        )
    if face.size < cfg.min_face_size:
        return result.reject(
            "face_too_small", f"face too small ({face.size:.0f} px, minimum {cfg.min_face_size:.0f} px)"
        )
    image_size = (result.width, result.height)
    cut = cut_off_fraction(face.landmarks, image_size)
    if cut > cfg.max_cut_off:
        return result.reject("face_cut_off", f"face cut off by the photo's edge ({cut:.0%} of it outside)")
    result.sharpness = sharpness(image, face.box)
    if result.sharpness < cfg.blur_threshold:
        return result.reject(
            "blurry", f"too blurry (sharpness {result.sharpness:.0f}, minimum {cfg.blur_threshold:.0f})"
        )
    signature = face_signature(image, face.kps)
    side = cfg.crop_ratio * box_size(face.box)
    quality = face.size * inside_fraction(square_box(box_center(face.box), side), image_size)
    t = clock.add("quality", t)
    embedding = face.embedding
    clock.add("embed", t)
    return _Candidate(result, face, image, signature, quality, embedding=embedding)


def _crop(cand: _Candidate, cfg: PrepareConfig) -> None:
    """Level + crop + resize the candidate's photo, then drop the full image."""
    face, image = cand.face, cand.image
    assert image is not None
    roll = face.roll if cfg.level_eyes else 0.0
    crop, matrix = crop_face(image, face.box, cfg.resolution, ratio=cfg.crop_ratio, roll=roll)
    cand.crop = crop
    cand.crop_landmarks = transform_points(matrix, face.landmarks)
    cand.valid = valid_region(matrix, (image.shape[1], image.shape[0]), cfg.resolution)
    if cfg.resolution < REFERENCE_MIN_SIZE:  # a larger copy in case this photo becomes ref.png
        big, m = crop_face(image, face.box, REFERENCE_MIN_SIZE, ratio=cfg.crop_ratio, roll=roll)
        valid = valid_region(m, (image.shape[1], image.shape[0]), REFERENCE_MIN_SIZE)
        cand.ref_crop = (big, transform_points(m, face.landmarks), valid)
    cand.image = None


def crop_matrix(face: Face, cfg: PrepareConfig) -> np.ndarray:
    """The photo → training-crop transform :func:`prepare` uses for ``face``."""
    side = cfg.crop_ratio * box_size(face.box)
    return crop_transform(box_center(face.box), side, cfg.resolution, face.roll if cfg.level_eyes else 0.0)


def _check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not a previous prepared set (it would be deleted)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            fmt = json.loads((out / REPORT_NAME).read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            fmt = None
        if fmt != REPORT_FORMAT:
            raise ConfigError(
                f"{out}: refusing to replace a non-empty folder that is not a prepared training set"
            )


def prepare(
    photos: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: PrepareConfig | None = None,
    *,
    analyzer: FaceAnalyzer | None = None,
    user_id: str | None = None,
    progress: ProgressFn | None = None,
) -> PreparedSet:
    """Turn photos of one person into a training set in ``out_dir`` (replaced atomically).

    Args:
        photos: photo paths; folders are expanded to their files (:func:`collect_photos`).
        out_dir: output folder (layout in the module docstring). An existing prepared set there is
            replaced as a whole; any other non-empty folder is refused.
        config: selection and processing settings (:class:`~easyphoto.config.PrepareConfig`; an unset
            ``resolution`` is SD1.5's 512: the training workflow sets SDXL's 1024 for SDXL users).
        analyzer: a loaded :class:`FaceAnalyzer` to reuse (default: a new one).
        user_id: recorded in the report.
        progress: called as ``progress(index, total, source)`` before each photo.

    Returns:
        The :class:`PreparedSet` (with small thumbnails for :func:`contact_sheet`).

    Raises:
        NotEnoughPhotosError: fewer than ``config.min_photos`` usable photos; the message lists every
            photo's outcome and ``error.results`` holds the :class:`PhotoResult` list. Nothing is
            written then.
        ConfigError: impossible settings or an unsafe output folder.
    """
    cfg = (config or PrepareConfig()).for_family("sd15")  # unset resolution: 512 (SDXL's come set)
    paths = collect_photos(photos)
    out = Path(out_dir)
    _check_out_dir(out)
    clock = _Clock()
    results, candidates = _analyse_all(paths, analyzer or FaceAnalyzer(), cfg, clock, progress)
    t = time.perf_counter()
    selected = _rank(_drop_other_people(_drop_duplicates(candidates, cfg), cfg), cfg)
    clock.add("select", t)
    if len(selected) < cfg.min_photos:
        lines = [f"{r.source}: {'kept' if r.kept else r.reason}" for r in results]
        err = NotEnoughPhotosError(
            message("photos.not_enough", n=len(selected), minimum=cfg.min_photos)
            + ":\n  "
            + "\n  ".join(lines)
        )
        err.code, err.params = "photos.not_enough", {"n": len(selected), "minimum": cfg.min_photos}
        err.results = results  # type: ignore[attr-defined]
        raise err
    embedding = np.mean(np.stack([c.embedding for c in selected]), axis=0).astype(np.float32)
    ref = max(
        selected,
        key=lambda c: levelness(c.face.roll) * frontalness(c.face.landmarks) * (c.result.score or 0.0),
    )
    ref.result.reference = True
    processed, ref_image = _process(selected, ref, cfg, clock)
    prepared = PreparedSet(out, results, embedding, cfg, user_id, {})
    _write(prepared, processed, ref_image, clock)
    return prepared


def _analyse_all(
    paths: list[Path], analyzer: FaceAnalyzer, cfg: PrepareConfig, clock: _Clock, progress: ProgressFn | None
) -> tuple[list[PhotoResult], list[_Candidate]]:
    """Analyse every photo once (a file listed twice is reported); candidates are cropped at once so
    only 512 px crops stay in memory, not the full-resolution photos."""
    results: list[PhotoResult] = []
    candidates: list[_Candidate] = []
    seen: dict[Path, str] = {}
    for i, path in enumerate(paths):
        label = str(path)
        if progress is not None:
            progress(i, len(paths), label)
        key = path.resolve() if path.exists() else path
        if key in seen:
            results.append(PhotoResult(source=label).reject("listed_twice", f"same file as {seen[key]}"))
            continue
        seen[key] = label
        got = _analyse(path, label, analyzer, cfg, clock)
        if isinstance(got, _Candidate):
            t = time.perf_counter()
            _crop(got, cfg)
            clock.add("crop", t)
            results.append(got.result)
            candidates.append(got)
        else:
            results.append(got)
    return results, candidates


def _drop_duplicates(candidates: list[_Candidate], cfg: PrepareConfig) -> list[_Candidate]:
    """Near-duplicates: the best copy (largest face with its whole crop inside the photo) stays."""
    unique: list[_Candidate] = []
    for cand in sorted(candidates, key=lambda c: -c.quality):
        twin = next(
            (
                u
                for u in unique
                if float(u.signature @ cand.signature) >= cfg.duplicate_correlation
                and float(np.linalg.norm(u.embedding - cand.embedding)) < cfg.duplicate_distance
            ),
            None,
        )
        if twin is None:
            unique.append(cand)
        else:
            twin.duplicates.append(cand)
            cand.result.reject("duplicate", f"near-duplicate of {twin.result.source}")
    return unique


def _drop_other_people(unique: list[_Candidate], cfg: PrepareConfig) -> list[_Candidate]:
    """Different people: far from the robust identity centre of the set."""
    if not unique:
        return []
    accepted: list[_Candidate] = []
    center = robust_center(np.stack([c.embedding for c in unique]))
    for cand in unique:
        d = float(np.linalg.norm(cand.embedding - center))
        if d > cfg.identity_threshold:
            msg = (
                f"different person (identity distance {d:.2f} from the set's centre, "
                f"limit {cfg.identity_threshold:.2f})"
            )
            cand.result.reject("different_person", msg)
            for dup in cand.duplicates:
                dup.result.reject("different_person", f"{msg}; near-duplicate of {cand.result.source}")
        else:
            accepted.append(cand)
    return accepted


def _rank(accepted: list[_Candidate], cfg: PrepareConfig) -> list[_Candidate]:
    """Rank by similarity to the mean embedding; keep the top ``max_photos``."""
    if not accepted:
        return []
    selected: list[_Candidate] = []
    mean = np.mean(np.stack([c.embedding for c in accepted]), axis=0)
    ranked = sorted(accepted, key=lambda c: float(np.linalg.norm(c.embedding - mean)))
    for rank, cand in enumerate(ranked, start=1):
        d = float(np.linalg.norm(cand.embedding - mean))
        cand.result.distance, cand.result.score = d, distance_to_similarity(d)
        if rank <= cfg.max_photos:
            cand.result.status, cand.result.rank = "kept", rank
            selected.append(cand)
        else:
            cand.result.reject(
                "not_selected", f"not among the {cfg.max_photos} most similar photos (rank {rank})"
            )
    return selected


def _process(
    selected: list[_Candidate], ref: _Candidate, cfg: PrepareConfig, clock: _Clock
) -> tuple[list[tuple[_Candidate, np.ndarray]], np.ndarray]:
    """Mask and retouch every kept crop (in memory), and the reference photo."""

    def finish(img: np.ndarray, landmarks: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        t = time.perf_counter()
        if cfg.retouch:
            img = smooth_skin(img, landmarks, cfg.retouch_strength)
            t = clock.add("retouch", t)
        if cfg.remove_background:
            mask = head_mask(img, landmarks, valid=valid, refine=cfg.grabcut)
            img = whiten_background(img, mask)
            clock.add("mask", t)
        return img

    processed: list[tuple[_Candidate, np.ndarray]] = []
    ref_image: np.ndarray | None = None
    for cand in selected:
        assert cand.crop is not None and cand.crop_landmarks is not None
        img = finish(cand.crop, cand.crop_landmarks, cand.valid)
        if cand is ref:
            ref_image = finish(*cand.ref_crop) if cand.ref_crop is not None else img
        cand.crop = cand.ref_crop = None
        cand.result.thumbnail = thumbnail(img)
        processed.append((cand, img))
    assert ref_image is not None
    return processed, ref_image


def _write(
    prepared: PreparedSet,
    processed: list[tuple[_Candidate, np.ndarray]],
    ref_image: np.ndarray,
    clock: _Clock,
) -> None:
    """Write the whole set at once (the output folder is replaced atomically)."""
    t = time.perf_counter()
    with atomic_dir(prepared.out_dir) as staging:
        data_dir = staging / DATASET_DIR
        data_dir.mkdir()
        lines = []
        for cand, img in sorted(processed, key=lambda p: p[0].result.rank or 0):
            name = f"{cand.result.rank:02d}_{_safe_stem(cand.result.source)}.png"
            save_png(img, data_dir / name)
            cand.result.file = f"{DATASET_DIR}/{name}"
            lines.append(json.dumps({"file_name": name, "text": prepared.config.caption}, ensure_ascii=False))
        save_png(ref_image, staging / REFERENCE_NAME)
        write_bytes_atomic(data_dir / "metadata.jsonl", ("\n".join(lines) + "\n").encode())
        with open(staging / EMBEDDING_NAME, "wb") as fh:
            np.save(fh, prepared.embedding)
        clock.add("write", t)
        prepared.timings = dict(clock.totals)
        write_json_atomic(staging / REPORT_NAME, prepared.report())


__all__ = [
    "REASONS",
    "THUMB",
    "PhotoResult",
    "PrepareConfig",
    "PreparedSet",
    "collect_photos",
    "contact_sheet",
    "crop_matrix",
    "cut_off_fraction",
    "face_signature",
    "frontalness",
    "levelness",
    "prepare",
    "robust_center",
    "sharpness",
    "write_contact_sheet",
]
