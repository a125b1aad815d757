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
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import PrepareConfig
from .errors import BadImageError, ConfigError, NotEnoughPhotosError
from .face.analyzer import Face, FaceAnalyzer, distance_to_similarity
from .face.geometry import (
    Box,
    align_face,
    box_center,
    box_size,
    crop_face,
    crop_transform,
    inside_fraction,
    int_box,
    square_box,
    transform_points,
    valid_region,
)
from .face.masks import face_frame, forehead_points, head_mask, whiten_background
from .face.retouch import smooth_skin
from .imageio import fit_within, load_image, save_png
from .store import atomic_dir, write_bytes_atomic, write_json_atomic

REPORT_NAME = "report.json"
DATASET_DIR = "train"
REFERENCE_NAME = "ref.png"
#: ``ref.png`` is never smaller than this (px): generation re-detects its face, which HOG cannot do at
#: 64–256 px training resolutions.
REFERENCE_MIN_SIZE = 512
EMBEDDING_NAME = "embedding.npy"
REPORT_FORMAT = "easyphoto.prepare/1"
#: Side of the grey face patch the blur measure runs on (the minimum face size: always a downscale).
SHARPNESS_SIZE = 128
THUMB = 160

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
            "config": asdict(self.config),
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
        known = set(PrepareConfig.__dataclass_fields__)
        config = PrepareConfig(**{k: v for k, v in data.get("config", {}).items() if k in known})
        photos = [PhotoResult.from_dict(p) for p in data.get("photos", [])]
        timings = {k: float(v) for k, v in data.get("timings_s", {}).items()}
        return cls(out, photos, embedding, config, data.get("user_id"), timings)


# ------------------------------------------------------------------------------------------ measures


def sharpness(image: np.ndarray, face_box: Box) -> float:
    """Variance of the Laplacian of the face box resized to 128×128 grey.

    Normalising the patch size makes the measure independent of the photo's resolution (the same
    photo at 240p and 1080p scores alike); see ``PrepareConfig.blur_threshold`` for measured values.
    """
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = int_box(face_box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    patch = cv2.resize(grey, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(patch.astype(np.float32), cv2.CV_32F).var())


def cut_off_fraction(landmarks: np.ndarray, image_size: tuple[int, int], margin: float = 0.15) -> float:
    """Fraction of the head outline that lies outside the image.

    The outline is the convex hull of the 68 landmarks plus the forehead points, grown by ``margin``
    about its centre (ears, sides of the head). A face whose cheek touches the photo's edge scores
    ~0.05–0.1; a fully visible face with some space around it scores 0.
    """
    import cv2

    lm = np.asarray(landmarks, dtype=np.float64)
    pts = np.vstack([lm, forehead_points(lm, 0.5)])
    center = pts.mean(axis=0)
    pts = center + (pts - center) * (1.0 + margin)
    hull = cv2.convexHull(pts.astype(np.float32).reshape(-1, 1, 2))
    area = float(cv2.contourArea(hull))
    if area <= 0:
        return 0.0
    w, h = image_size
    rect = np.array([[[0, 0]], [[w, 0]], [[w, h]], [[0, h]]], dtype=np.float32)
    inter, _ = cv2.intersectConvexConvex(hull, rect)
    return float(np.clip(1.0 - inter / area, 0.0, 1.0))


def face_signature(image: np.ndarray, kps: np.ndarray, size: int = 64) -> np.ndarray:
    """Unit-norm, zero-mean grey patch of the face aligned by its 5 keypoints: near-duplicate photos
    (the same shot resized, re-compressed or re-cropped) correlate ≥ 0.9, different shots ≤ ~0.65."""
    import cv2

    aligned, _ = align_face(image, kps, size, border=None)
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0).ravel()
    grey -= grey.mean()
    norm = float(np.linalg.norm(grey))
    return grey / norm if norm > 1e-6 else grey


def frontalness(landmarks: np.ndarray) -> float:
    """1 for a frontal face, towards 0 as it turns sideways: where the nose tip sits between the jaw
    ends (points 0 and 16), measured along the eye line."""
    lm = np.asarray(landmarks, dtype=np.float64)
    right, _, width, _ = face_frame(lm)
    r = float(np.dot(lm[30] - lm[0], right)) / width
    return float(np.clip(1.0 - 2.0 * abs(r - 0.5), 0.0, 1.0))


def levelness(roll: float) -> float:
    """1 for level eyes, falling linearly to 0 at a 45° roll."""
    return float(max(0.0, 1.0 - min(abs(roll), 45.0) / 45.0))


def robust_center(embeddings: np.ndarray, inlier_distance: float = 0.6) -> np.ndarray:
    """Identity centre of a set that may hold a few other people: the mean of the embeddings within
    ``inlier_distance`` (dlib's same-person threshold) of the medoid (the embedding with the smallest
    median distance to the others)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if len(emb) <= 2:
        return emb[0].astype(np.float32) if len(emb) == 1 else emb.mean(axis=0).astype(np.float32)
    dist = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2)
    medoid = int(np.argmin(np.median(dist, axis=1)))
    inliers = dist[medoid] < inlier_distance
    return emb[inliers].mean(axis=0).astype(np.float32)


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


def _thumbnail(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    small, _ = fit_within(image, size)
    return np.ascontiguousarray(small)


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
    result.thumbnail = _thumbnail(image)
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


def _check_config(cfg: PrepareConfig) -> None:
    if cfg.resolution < 64 or cfg.resolution % 8:
        raise ConfigError(f"resolution must be a multiple of 8 and ≥ 64, got {cfg.resolution}")
    if cfg.crop_ratio < 1.0:
        raise ConfigError(f"crop_ratio must be ≥ 1, got {cfg.crop_ratio}")
    if cfg.min_photos < 1 or cfg.max_photos < cfg.min_photos:
        raise ConfigError(f"need 1 ≤ min_photos ≤ max_photos, got {cfg.min_photos} and {cfg.max_photos}")
    if not 0.0 <= cfg.retouch_strength <= 1.0:
        raise ConfigError(f"retouch_strength must be within 0..1, got {cfg.retouch_strength}")


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
        config: selection and processing settings (:class:`~easyphoto.config.PrepareConfig`).
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
    cfg = config or PrepareConfig()
    _check_config(cfg)
    paths = collect_photos(photos)
    out = Path(out_dir)
    _check_out_dir(out)
    analyzer = analyzer or FaceAnalyzer()
    clock = _Clock()
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
            # Crop now and let the full-resolution photo go: only 512 px crops stay in memory.
            t = time.perf_counter()
            _crop(got, cfg)
            clock.add("crop", t)
            results.append(got.result)
            candidates.append(got)
        else:
            results.append(got)

    # Near-duplicates: the best copy (largest face with its whole crop inside the photo) stays.
    t = time.perf_counter()
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

    # Different people: far from the robust identity centre of the set.
    accepted: list[_Candidate] = []
    if unique:
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

    # Rank by similarity to the mean embedding; keep the top max_photos.
    selected: list[_Candidate] = []
    if accepted:
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
    clock.add("select", t)

    if len(selected) < cfg.min_photos:
        lines = [f"{r.source}: {'kept' if r.kept else r.reason}" for r in results]
        err = NotEnoughPhotosError(
            f"only {len(selected)} usable photo(s), at least {cfg.min_photos} needed "
            f"(5–20 recommended):\n  " + "\n  ".join(lines)
        )
        err.results = results  # type: ignore[attr-defined]
        raise err

    embedding = np.mean(np.stack([c.embedding for c in selected]), axis=0).astype(np.float32)
    ref = max(
        selected,
        key=lambda c: levelness(c.face.roll) * frontalness(c.face.landmarks) * (c.result.score or 0.0),
    )
    ref.result.reference = True

    # Crop, mask, retouch every kept photo (in memory), then write everything at once.
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
        cand.result.thumbnail = _thumbnail(img)
        processed.append((cand, img))

    t = time.perf_counter()
    prepared = PreparedSet(out, results, embedding, cfg, user_id, {})
    with atomic_dir(out) as staging:
        data_dir = staging / DATASET_DIR
        data_dir.mkdir()
        lines = []
        for cand, img in sorted(processed, key=lambda p: p[0].result.rank or 0):
            name = f"{cand.result.rank:02d}_{_safe_stem(cand.result.source)}.png"
            save_png(img, data_dir / name)
            cand.result.file = f"{DATASET_DIR}/{name}"
            lines.append(json.dumps({"file_name": name, "text": cfg.caption}, ensure_ascii=False))
        assert ref_image is not None
        save_png(ref_image, staging / REFERENCE_NAME)
        write_bytes_atomic(data_dir / "metadata.jsonl", ("\n".join(lines) + "\n").encode())
        with open(staging / EMBEDDING_NAME, "wb") as fh:
            np.save(fh, embedding)
        clock.add("write", t)
        prepared.timings = dict(clock.totals)
        write_json_atomic(staging / REPORT_NAME, prepared.report())
    return prepared


# ------------------------------------------------------------------------------------ contact sheet


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType support for the default font
        return ImageFont.load_default()


def _wrap(text: str, font: Any, width: int, draw: Any, max_lines: int = 4) -> list[str]:
    words: list[str] = []
    for word in text.split():  # break words longer than a line (paths) into pieces
        while draw.textlength(word, font=font) > width and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and draw.textlength(word[:cut], font=font) > width:
                cut -= 1
            words.append(word[:cut])
            word = word[cut:]
        words.append(word)
    lines, line = [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1] + " …"]
    return lines


def contact_sheet(prepared: PreparedSet, *, thumb: int = THUMB, columns: int = 6) -> np.ndarray:
    """One RGB image: the kept training crops (rank, score, file) and every rejected photo with its
    face box (red) and the reason, so a person sees at a glance what will be trained on."""
    from PIL import Image, ImageDraw

    pad, text_h = 8, 64
    cell_w, cell_h = thumb + pad, thumb + text_h
    kept, rejected = prepared.kept, prepared.rejected
    title_h = 30

    def rows(n: int) -> int:
        return max(1, math.ceil(n / columns))

    width = pad + columns * cell_w
    height = pad + title_h + rows(len(kept)) * cell_h + title_h + rows(len(rejected)) * cell_h + pad
    sheet = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    title, small = _font(18), _font(12)

    def tile(result: PhotoResult) -> Image.Image:
        thumb_img = result.thumbnail
        if thumb_img is None and result.file and (prepared.out_dir / result.file).is_file():
            thumb_img = _thumbnail(load_image(prepared.out_dir / result.file))
        if thumb_img is None:
            im = Image.new("RGB", (thumb, thumb), (200, 200, 200))
            ImageDraw.Draw(im).text((thumb // 2 - 6, thumb // 2 - 12), "?", fill=(90, 90, 90), font=title)
            return im
        im = Image.fromarray(thumb_img)
        if not result.kept and result.face_box and result.width:
            s = im.width / result.width
            box = [v * s for v in result.face_box]
            ImageDraw.Draw(im).rectangle(box, outline=(230, 30, 30), width=2)
        return im

    y = pad
    draw.text((pad, y + 4), f"Kept: {len(kept)} (will be trained on)", fill=(20, 110, 40), font=title)
    y += title_h
    for section, items in (("kept", kept), ("rejected", rejected)):
        if section == "rejected":
            y += rows(len(kept)) * cell_h
            draw.text((pad, y + 4), f"Rejected: {len(rejected)}", fill=(170, 30, 30), font=title)
            y += title_h
        for i, result in enumerate(items):
            x0 = pad + (i % columns) * cell_w
            y0 = y + (i // columns) * cell_h
            im = tile(result)
            sheet.paste(im, (x0 + (thumb - im.width) // 2, y0 + (thumb - im.height) // 2))
            name = Path(result.source).name
            if result.kept:
                ref = " ref" if result.reference else ""
                text = f"#{result.rank} {result.score:.2f}{ref} {name}"
                color = (20, 90, 30)
            else:
                reason = result.reason or ""
                for other in prepared.photos:  # name other photos by file name, not full path
                    reason = reason.replace(other.source, Path(other.source).name)
                text = f"{name}: {reason}"
                color = (150, 20, 20)
            for k, line in enumerate(_wrap(text, small, thumb, draw)):
                draw.text((x0, y0 + thumb + 2 + 14 * k), line, fill=color, font=small)
    return np.asarray(sheet)


def write_contact_sheet(prepared: PreparedSet, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Draw :func:`contact_sheet` and save it as PNG (atomically)."""
    return save_png(contact_sheet(prepared, **kwargs), path)


__all__ = [
    "REASONS",
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
