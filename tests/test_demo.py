"""``easyphoto demo``: the main job offline on the public-domain photos scikit-image ships."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from easyphoto.config import ModelConfig
from easyphoto.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_shows_preparation_reasons_swaps_and_one_page(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(tmp_path, echo=lines.append, train=False)
    prep = summary["prepare"]
    reasons = " | ".join(prep["rejected"].values())
    for expected in ("no face found", "face too small", "too blurry", "different person", "near-duplicate"):
        assert expected in reasons, f"{expected!r} not among the demo's refusals: {reasons}"
    assert prep["kept"] and "someone_else.jpg" not in prep["kept"]
    full, half = summary["swaps"]
    assert full["ratio"] == 1.0 and full["like_source"] > full["like_template"]
    assert half["like_source"] < full["like_source"]  # half-way stays nearer the template person
    page = (tmp_path / "index.html").read_text()
    images = re.findall(r"""<img src=['"]([^'"]+)['"]""", page)
    assert {"faces.png", "contact_sheet.png", "swap_ratio_1.png", "swap_ratio_0.5.png"} <= set(images)
    assert all((tmp_path / name).is_file() for name in images)
    assert "Skipped: --no-train" in page and not re.search(r"https?://", page)
    assert json.loads((tmp_path / "summary.json").read_text())["prepare"] == prep
    assert any(line.startswith("5. one page") for line in lines)


def test_demo_trains_and_makes_a_portrait_when_asked(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    monkeypatch.setenv(
        "EASYPHOTO_TRAIN_DEFAULTS",
        json.dumps({"resolution": 64, "rank": 4, "alpha": 4, "grad_accum": 1, "validation_size": 64,
                    "validation_steps": 1, "validation_seeds": [1]}),
    )  # fmt: skip
    monkeypatch.setenv(
        "EASYPHOTO_GENERATE_DEFAULTS", json.dumps({"short_side": 96, "first_steps": 4, "second_steps": 2})
    )
    monkeypatch.setattr("easyphoto.demo.DEMO_STEPS", 4)
    summary = run_demo(
        tmp_path, echo=lambda _m: None, train=True, model_config=ModelConfig(base_model=str(tiny_model_dir))
    )
    assert summary["portrait"]["file"] == "portrait.png" and (tmp_path / "portrait.png").is_file()
    assert "portrait.png" in (tmp_path / "index.html").read_text()
