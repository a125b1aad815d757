"""``easyphoto demo``: the studio's main job, offline, on public-domain photos that ship with scikit-image.

The people: NASA's portrait of astronaut Eileen Collins (public domain) and Lav Varshney's "cameraman"
(CC0), both inside scikit-image. No download is needed: face analysis uses dlib's bundled models.

1. **faces**: boxes, 68 landmarks and 5 keypoints drawn on the astronaut photo (``faces.png``);
2. **prepare**: the "user's photos" are five variations of her portrait plus four that must be refused
   (no face, face too small, blurred, another person); the dataset and a contact sheet with the reason
   for each refusal (``contact_sheet.png``);
3. **swap previews**: her face on the cameraman photo at once, no diffusion, fully (ratio 1) and half-way
   (0.5, where the portrait pipeline starts), with similarity scores to both people;
4. **train + portrait**, only where the default diffusion models are installed and a GPU is there (or
   when asked with ``train=True``): a short LoRA and one portrait;
5. one page, ``index.html``, that shows all of it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .imageio import save_png
from .samples import people

#: Steps of the demo's short LoRA (EasyPhoto trains 800; 100 already shows the face on a GPU).
DEMO_STEPS = 100


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


def demo_photos(folder: Path, astronaut: np.ndarray, cameraman: np.ndarray) -> list[Path]:
    """Write the demo's "photos of the user": five variations of the one astronaut portrait (crop,
    mirror, light, colour, framing) and four that preparation must refuse, each named for what it is.
    Variations of one photo are near-duplicates, and preparation says so: real users bring 5–20
    different photos."""
    import cv2

    shots = {
        "portrait.jpg": astronaut,
        "closer.jpg": cv2.resize(astronaut[40:800, 160:920], (900, 900)),
        "mirrored.jpg": np.ascontiguousarray(astronaut[:, ::-1]),
        "warmer_darker.jpg": np.clip(astronaut * [1.0, 0.85, 0.7] * 0.8, 0, 255).astype(np.uint8),
        "brighter_wider.jpg": cv2.convertScaleAbs(
            cv2.copyMakeBorder(astronaut, 0, 0, 200, 200, cv2.BORDER_REPLICATE), alpha=1.15, beta=20
        ),
        "too_small.jpg": cv2.resize(astronaut, (512, 512), interpolation=cv2.INTER_AREA),
        "blurred.jpg": cv2.GaussianBlur(astronaut, (0, 0), 2.5),
        "someone_else.jpg": cameraman,
    }
    from skimage import data

    shots["no_face.jpg"] = data.coffee()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in shots.items():
        path = folder / name
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


def run_demo(
    out_dir: Path,
    echo: Callable[[str], Any] = print,
    *,
    train: bool | None = None,
    model_config: Any = None,
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns a summary (also written as ``summary.json``).

    ``train``: ``None`` trains a short LoRA and makes a portrait only when the default models are
    installed and a GPU is there; ``True`` always (``model_config`` picks the base model, e.g. the
    tiny one of ``easyphoto tiny-model``); ``False`` never.
    """
    from .config import PrepareConfig
    from .face.analyzer import FaceAnalyzer, similarity
    from .workflows import prepare_photos

    out_dir.mkdir(parents=True, exist_ok=True)
    who = people()
    analyzer = FaceAnalyzer().load()
    summary: dict[str, Any] = {
        "people": "astronaut Eileen Collins (public domain), cameraman (CC0), scikit-image"
    }

    faces = analyzer.detect(who["astronaut"])
    save_png(annotate(who["astronaut"], faces), out_dir / "faces.png")
    echo(f"1. faces: {len(faces)} found in the astronaut photo -> faces.png")
    summary["faces"] = [f.to_dict() for f in faces]

    photos = demo_photos(out_dir / "photos", who["astronaut"], who["cameraman"])
    sheet = out_dir / "contact_sheet.png"
    cfg = PrepareConfig(min_photos=1)
    prepared = prepare_photos(
        "demo", photos, out_dir / "dataset", cfg, analyzer=analyzer, contact_sheet=sheet
    )
    rejected = {Path(p.source).name: p.reason for p in prepared.rejected}
    kept = [Path(p.source).name for p in prepared.kept]
    echo(f"2. prepare: kept {len(kept)} of {len(photos)} photos -> contact_sheet.png")
    for name, reason in rejected.items():
        echo(f"   refused {name}: {reason}")
    summary["prepare"] = {"kept": kept, "rejected": rejected}

    summary["swaps"] = _swaps(out_dir, who, analyzer, similarity, echo)
    summary["portrait"] = _train_and_portrait(out_dir, prepared, train, model_config, echo)
    page = write_page(out_dir, summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    echo(f"5. one page with all of it: {page}")
    return summary


def _swaps(out_dir: Path, who: dict, analyzer: Any, similarity: Any, echo: Callable) -> list[dict]:
    """The astronaut's face on the cameraman photo: a full swap (ratio 1) and the half-way fusion
    (ratio 0.5, EasyPhoto's) that the diffusion passes start from, each scored against both people."""
    from .workflows import swap

    echo("3. swap previews (instant, no diffusion):")
    src, tpl = analyzer.largest(who["astronaut"]), analyzer.largest(who["cameraman"])
    results = []
    for ratio in (1.0, 0.5):
        fused = swap(who["astronaut"], who["cameraman"], ratio=ratio, analyzer=analyzer,
                     photo_name="astronaut", template_name="cameraman")  # fmt: skip
        file = f"swap_ratio_{ratio:g}.png"
        save_png(fused.image, out_dir / file)
        new = analyzer.find_near(fused.image, tpl.box)
        score = {
            "file": file,
            "ratio": ratio,
            "like_source": round(similarity(new, src), 3) if new is not None else 0.0,
            "like_template": round(similarity(new, tpl), 3) if new is not None else 0.0,
        }
        results.append(score)
        echo(
            f"   ratio {ratio:g} -> {file}: similarity to the astronaut {score['like_source']:.3f}, "
            f"to the cameraman {score['like_template']:.3f}"
        )
    return results


def _train_and_portrait(
    out_dir: Path, prepared: Any, train: bool | None, model_config: Any, echo: Callable
) -> dict:
    """A short LoRA of the demo user and one portrait on the cameraman photo, when possible."""
    from .config import ModelConfig, effective_config

    if train is None:
        from .doctor import devices
        from .download import status
        from .registry import REGISTRY

        missing = [e.name for e in REGISTRY.values() if e.default and e.setting and not status(e).present]
        device = devices()["device"]
        if missing or device == "cpu":
            why = f"models not installed: {', '.join(missing)}" if missing else "no GPU (hours on a CPU)"
            echo(
                f"4. train + portrait: skipped ({why}); see `easyphoto doctor`, then `easyphoto demo --train`"
            )
            return {"skipped": why}
    if train is False:
        echo("4. train + portrait: skipped (--no-train)")
        return {"skipped": "--no-train"}
    from .workflows import generate_batch
    from .workflows import train as train_user

    mcfg = model_config or ModelConfig()
    steps = {"max_steps": DEMO_STEPS, "validate_every": DEMO_STEPS // 2}
    echo(f"4. training a short LoRA ({DEMO_STEPS} steps) on {mcfg.base_model} …")
    home = out_dir / "home"
    result = train_user("demo", prepared, effective_config("train", steps), model_config=mcfg, home=home)
    template = out_dir / "photos" / "someone_else.jpg"
    batch = generate_batch([(template, "cameraman")], ["demo"], effective_config("generate"), out_dir,
                           model_config=mcfg, home=home, file_name=lambda *_: "portrait.png")  # fmt: skip
    image = batch.images[0]
    echo(f"   portrait -> portrait.png (similarity {image['score']:.3f}, LoRA score {result.best_score:.3f})")
    return {"file": "portrait.png", "score": image["score"], "lora_score": result.best_score}


def write_page(out_dir: Path, summary: dict[str, Any]) -> Path:
    """``index.html``: every image of the demo with its caption, scores and refusal reasons."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{esc(reason)}</td></tr>"
        for name, reason in summary["prepare"]["rejected"].items()
    )
    swaps = "".join(
        f"<figure><img src='{esc(s['file'])}'><figcaption>fusion ratio {s['ratio']:g}: like the astronaut "
        f"{s['like_source']:.3f}, like the cameraman {s['like_template']:.3f}</figcaption></figure>"
        for s in summary["swaps"]
    )
    portrait = summary.get("portrait") or {}
    if "file" in portrait:
        caption = f"the demo user on the cameraman photo: similarity {portrait['score']:.3f}"
        made = f"<figure><img src='portrait.png'><figcaption>{caption}</figcaption></figure>"
    else:
        made = f"<p>Skipped: {esc(str(portrait.get('skipped', '')))}.</p>"
    kept = ", ".join(map(esc, summary["prepare"]["kept"]))
    page = f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>EasyPhoto demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}img{{max-width:100%}}
figure{{display:inline-block;width:48%;margin:0 1% 1em 0;vertical-align:top}}td{{padding:2px 12px}}</style>
<h1>EasyPhoto demo</h1><p>{esc(summary["people"])}. Everything here ran offline.</p>
<h2>1. Face analysis</h2><img src="faces.png" style="max-width:420px">
<h2>2. Preparing the photos</h2><p>Kept: {kept}.</p><table><tr><th>refused</th><th>why</th></tr>{rows}</table>
<img src="contact_sheet.png">
<h2>3. Instant swap previews (no diffusion)</h2>{swaps}
<h2>4. Trained portrait</h2>{made}
</html>
"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
