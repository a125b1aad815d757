"""``easyphoto demo``: run what the studio does, offline, on a public-domain photo.

The photo is NASA's portrait of astronaut Eileen Collins, which ships inside scikit-image. No model
download is needed: face analysis uses dlib's bundled models. Writes an annotated PNG with boxes and
the 68 landmarks, and reports the identity similarity of the face to its mirror image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .imageio import save_png


def annotate(image: np.ndarray, faces: list) -> np.ndarray:
    """Draw face boxes, 68 landmarks and the 5 keypoints on a copy of ``image``."""
    import cv2

    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 220, 0), thickness)
        for x, y in face.landmarks:
            cv2.circle(out, (int(round(x)), int(round(y))), thickness, (255, 255, 255), -1)
        for x, y in face.kps:
            cv2.circle(out, (int(round(x)), int(round(y))), thickness + 1, (255, 40, 40), -1)
    return out


def run_demo(out_dir: Path, echo=print) -> dict:
    """Run the offline demo into ``out_dir``; returns a summary dict."""
    from skimage import data

    from .face.analyzer import FaceAnalyzer, face_distance, similarity

    out_dir.mkdir(parents=True, exist_ok=True)
    photo = data.astronaut()
    analyzer = FaceAnalyzer().load()
    faces = analyzer.detect(photo)
    echo(
        "photo: astronaut Eileen Collins (public domain, from scikit-image), "
        f"{photo.shape[1]}x{photo.shape[0]}"
    )
    echo(f"faces found: {len(faces)}")
    summary: dict = {"faces": [f.to_dict() for f in faces]}
    if faces:
        mirror = analyzer.largest(np.ascontiguousarray(photo[:, ::-1]))
        if mirror is not None:
            score = similarity(faces[0], mirror)
            echo(
                f"identity check, face vs its mirror image: similarity {score:.3f} "
                f"(distance {face_distance(faces[0], mirror):.3f}; >= 0.5 means same person)"
            )
            summary["mirror_similarity"] = score
    path = save_png(annotate(photo, faces), out_dir / "faces.png")
    echo(f"wrote {path}")
    summary["outputs"] = [str(path)]
    return summary
