"""IP-Adapter face conditioning and portraits from photos without training, on the tiny random SD1.5.

The tiny model folder holds a random full-face IP-Adapter of the real layout (``ip_adapter/models/``:
the adapter weights in h94's key layout and a CLIP vision encoder), found there as its ControlNets are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_dataset, tiny_train_config, train_tiny_users
from typer.testing import CliRunner

from easyphoto.config import GenerateConfig, ModelConfig
from easyphoto.errors import NoFaceError
from easyphoto.stages.generate import PortraitGenerator, crop_face_region, read_png_params
from easyphoto.users import IP_EMBEDS_FILE

pytestmark = pytest.mark.slow

FAST = GenerateConfig(short_side=96, first_steps=4, second_steps=3, second_scale=1.5, seed=5)


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_model_dir: Path, astronaut: np.ndarray, analyzer) -> Path:
    return train_tiny_users(tmp_path_factory, tiny_model_dir, astronaut, analyzer, ("carol",))


def _generator(tiny_model_dir: Path, home: Path, analyzer) -> PortraitGenerator:
    from easyphoto.diffusion.models import ModelCache

    cache = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    return PortraitGenerator(cache, analyzer, home=home)


def test_scale_zero_is_the_plain_portrait_and_a_scale_changes_the_face_only(
    tiny_model_dir: Path, home: Path, analyzer, astronaut: np.ndarray
) -> None:
    from easyphoto.diffusion.ip_adapter import face_adapter

    plain = _generator(tiny_model_dir, home, analyzer).generate(astronaut, ["carol"], FAST).array
    gen = _generator(tiny_model_dir, home, analyzer)
    with_ip = gen.generate(astronaut, ["carol"], FAST.replace(ip_adapter_scale=0.8))
    assert face_adapter(gen.cache).loaded and with_ip.params["ip_adapter"]["carol"].endswith(
        "ip-adapter-full-face_sd15.safetensors"
    )
    diff = np.abs(with_ip.array.astype(int) - plain.astype(int)).max(axis=2)
    assert diff.mean() > 0.05, "the adapter had no effect"
    x0, y0, x1, y1 = crop_face_region(
        astronaut, analyzer.largest(astronaut), FAST.crop_ratio, FAST.short_side
    ).box
    outside = diff.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0, "pixels away from the face changed"
    # the adapter stays in the UNet: scale 0 must give back exactly the portrait without it
    again = gen.generate(astronaut, ["carol"], FAST.replace(ip_adapter_scale=0.0)).array
    assert np.array_equal(again, plain)
    # the default for a trained user is no adapter at all
    assert np.array_equal(gen.generate(astronaut, ["carol"], FAST).array, plain)


def test_a_users_embeddings_are_encoded_once_and_kept_with_the_user_model(
    tiny_model_dir: Path, home: Path, analyzer, astronaut: np.ndarray
) -> None:
    from easyphoto.diffusion.ip_adapter import face_adapter

    (home / "users" / "carol" / IP_EMBEDS_FILE).unlink(missing_ok=True)
    cfg = FAST.replace(ip_adapter_scale=0.6, second_steps=0)
    gen = _generator(tiny_model_dir, home, analyzer)
    first = gen.generate(astronaut, ["carol"], cfg).array
    gen.generate(astronaut, ["carol"], cfg)
    assert face_adapter(gen.cache).encoder_calls == 1  # not once per portrait or per pass
    assert (home / "users" / "carol" / IP_EMBEDS_FILE).is_file()
    # a new process (fresh cache) reads them from the user model: no encoder call, same portrait
    fresh = _generator(tiny_model_dir, home, analyzer)
    assert np.array_equal(fresh.generate(astronaut, ["carol"], cfg).array, first)
    assert face_adapter(fresh.cache).encoder_calls == 0


def test_training_after_an_ip_portrait_trains_the_plain_unet(
    tiny_model_dir: Path, home: Path, analyzer, astronaut: np.ndarray, tmp_path: Path
) -> None:
    """A worker keeps its cache across jobs: a training after an IP-Adapter portrait must not see it."""
    from easyphoto.diffusion.ip_adapter import face_adapter
    from easyphoto.stages.train import train

    gen = _generator(tiny_model_dir, home, analyzer)
    gen.generate(astronaut, ["carol"], FAST.replace(ip_adapter_scale=0.5, second_steps=0))
    assert face_adapter(gen.cache).loaded
    (tmp_path / "ds").mkdir()
    ds = make_tiny_dataset(tmp_path / "ds", astronaut, analyzer)
    result = train("dave", ds, tiny_train_config(max_steps=1, validate_every=1), cache=gen.cache,
                   analyzer=analyzer, home=tmp_path / "home")  # fmt: skip
    assert Path(result.lora_path).is_file()
    assert not face_adapter(gen.cache).loaded
    # and the next IP-Adapter portrait loads it again
    gen.generate(astronaut, ["carol"], FAST.replace(ip_adapter_scale=0.5, second_steps=0))
    assert face_adapter(gen.cache).loaded


def test_no_training_portrait_from_real_photos_through_the_cli(
    tiny_model_dir: Path, faces_dir: Path, tmp_path: Path
) -> None:
    from easyphoto.cli import app

    ids = faces_dir / "identities"
    out = tmp_path / "out"
    template = ids / "rose_leslie" / "img1.jpg"
    photos = ["--photo", str(ids / "obama" / "obama.jpg"), "--photo", str(ids / "obama" / "obama2.jpg")]
    steps = ["--short-side", "96", "--first-steps", "4", "--second-steps", "2", "--seed", "3"]
    args = ["generate", "--base-model", str(tiny_model_dir), "--template", str(template), *photos,
            "--out", str(out), *steps, "--device", "cpu", "--dtype", "float32"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    png = out / "img1-photo.png"
    params = read_png_params(png)
    assert params["photo_users"] == ["photo"] and params["loras"] == {"photo": None}
    assert params["config"]["ip_adapter_scale"] is None and "photo" in params["ip_adapter"]
    from easyphoto.imageio import load_image

    original, result = load_image(template), load_image(png)
    assert result.shape == original.shape and not np.array_equal(result, original)


def test_a_photo_without_a_face_is_a_clear_error(tiny_model_dir: Path, faces_dir: Path, analyzer) -> None:
    gen = _generator(tiny_model_dir, Path("/nonexistent"), analyzer)
    photo = faces_dir / "misc" / "no_face_mountain.jpg"
    with pytest.raises(NoFaceError, match=r"no_face_mountain\.jpg: no face found in this photo"):
        gen.add_photo_user([photo])
    assert gen.cache.loads == 0  # refused before any model was read
