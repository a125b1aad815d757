"""Shared pytest fixtures.

* torch runs on one thread (two shared cores make multi-threaded torch erratic).
* ``EASYPHOTO_HOME`` points into a temporary folder for every test.
* ``faces_dir`` is ``../shared/faces`` (or ``$EASYPHOTO_TEST_FACES``) when present, else the committed
  subset ``tests/faces`` (same layout, see its SOURCES.md); ``full_faces`` says which one it is.
* ``tiny_model_dir`` builds the tiny random SD1.5 folder once per session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("EASYPHOTO_TEST_FACES", REPO.parent / "shared" / "faces"))
#: The committed subset of FACES (≤ 3 MB, same relative layout): what a fresh clone tests with.
FACES_SUBSET = REPO / "tests" / "faces"


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("easyphoto_home")
    monkeypatch.setenv("EASYPHOTO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The real-photo folder: FACES (the full shared set) when present, else the committed subset."""
    return FACES if (FACES / "SOURCES.md").is_file() else FACES_SUBSET


@pytest.fixture(scope="session")
def full_faces(faces_dir: Path) -> bool:
    """Whether ``faces_dir`` is the full set (False: the committed subset, which has fewer photos)."""
    return faces_dir.resolve() != FACES_SUBSET.resolve()


@pytest.fixture(scope="session")
def analyzer():
    """One FaceAnalyzer for the whole session (models load once, ~1.6 s)."""
    from easyphoto import FaceAnalyzer

    return FaceAnalyzer()


@pytest.fixture(scope="session")
def astronaut():
    """A real face photo that ships with scikit-image (Eileen Collins, public domain)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD1.5-architecture diffusers folder with ControlNets (built once, offline)."""
    from easyphoto.diffusion.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_model(out, seed=0)
    return out


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL folder with its ControlNets (openpose, canny), built once; read-only."""
    from easyphoto.diffusion.tiny_sdxl import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "model", seed=0)
