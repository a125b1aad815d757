"""Face analysis and classical image work (no torch, no diffusers here)."""

from .analyzer import (
    DlibBackend,
    Face,
    FaceAnalyzer,
    FaceBackend,
    distance_to_similarity,
    face_distance,
    kps_from_landmarks,
    same_person,
    similarity,
)

__all__ = [
    "DlibBackend",
    "Face",
    "FaceAnalyzer",
    "FaceBackend",
    "distance_to_similarity",
    "face_distance",
    "kps_from_landmarks",
    "same_person",
    "similarity",
]
