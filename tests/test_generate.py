"""Portrait generation end to end on the tiny random SD1.5 (CPU, one thread)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import train_tiny_users

from easyphoto import NoFaceError, UnknownUserError
from easyphoto.config import GenerateConfig, ModelConfig
from easyphoto.errors import ConfigError
from easyphoto.imageio import load_image, save_png
from easyphoto.stages.generate import (
    PortraitGenerator,
    crop_face_region,
    generate,
    inpaint_mask,
    read_png_params,
)

FAST = GenerateConfig(short_side=96, first_steps=4, second_steps=3, second_scale=1.5, seed=7)


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, astronaut: np.ndarray, analyzer
) -> Path:
    """An EASYPHOTO_HOME with two tiny trained users (alice, bob)."""
    return train_tiny_users(tmp_path_factory, tiny_model_dir, astronaut, analyzer, ("alice", "bob"))


@pytest.fixture(scope="module")
def gen(tiny_model_dir: Path, home: Path, analyzer) -> PortraitGenerator:
    from easyphoto.diffusion.models import ModelCache

    cache = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    return PortraitGenerator(cache, analyzer, home=home)


def _changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int] | None:
    diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 0
    if not diff.any():
        return None
    ys, xs = np.nonzero(diff)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _inside(inner: tuple, outer: tuple) -> bool:
    return inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def test_crop_region_is_multiple_of_8_and_maps_landmarks(astronaut: np.ndarray, analyzer) -> None:
    face = analyzer.largest(astronaut)
    crop = crop_face_region(astronaut, face, 3.0, 96)
    h, w = crop.image.shape[:2]
    assert h % 8 == 0 and w % 8 == 0 and min(h, w) == 96
    x0, y0, x1, y1 = crop.box
    assert 0 <= x0 < face.box[0] and 0 <= y0 <= face.box[1] and x1 > face.box[2] and y1 > face.box[3]
    # The crop's landmarks land on the same pixels as the template's.
    lx, ly = crop.face.landmarks[30]
    tx, ty = face.landmarks[30]
    assert abs(lx / crop.scale[0] + x0 - tx) < 0.5 and abs(ly / crop.scale[1] + y0 - ty) < 0.5
    mask = inpaint_mask(crop.face.landmarks, crop.image.shape, 0.05)
    pts = crop.face.landmarks.astype(int)
    assert (mask[np.clip(pts[:, 1], 0, h - 1), np.clip(pts[:, 0], 0, w - 1)] > 0).mean() > 0.95


@pytest.mark.slow
def test_single_person_portrait(gen: PortraitGenerator, astronaut: np.ndarray, tmp_path: Path) -> None:
    portrait = gen.generate(astronaut, ["alice"], FAST)
    assert portrait.array.shape == astronaut.shape and portrait.array.dtype == np.uint8
    face = gen.analyzer.largest(astronaut)
    crop = crop_face_region(astronaut, face, FAST.crop_ratio, FAST.short_side)
    changed = _changed_box(astronaut, portrait.array)
    assert changed is not None, "the face was not repainted"
    assert _inside(changed, crop.box), f"pixels changed outside the face region: {changed} vs {crop.box}"
    # Every changed pixel is near the face: within 1.5 face sizes of its centre.
    cx, cy = face.center
    assert max(abs(changed[0] - cx), abs(changed[2] - cx), abs(changed[1] - cy), abs(changed[3] - cy)) < (
        1.5 * face.size
    )
    assert [s.user_id for s in portrait.scores] == ["alice"]
    assert 0.0 <= portrait.scores[0].similarity <= 1.0
    for stage in ("analysis", "fusion", "controls", "first_diffusion", "second_diffusion", "paste_back"):
        assert stage in portrait.timings

    path = portrait.save(tmp_path / "p.png")
    assert np.array_equal(load_image(path), portrait.array)
    params = read_png_params(path)
    assert params == json.loads(json.dumps(portrait.params, default=str))
    assert params["seed"] == 7 and params["config"]["first_steps"] == 4 and params["user_ids"] == ["alice"]


@pytest.mark.slow
def test_same_seed_same_portrait_and_cache_reused(gen: PortraitGenerator, astronaut: np.ndarray) -> None:
    first = gen.generate(astronaut, ["alice"], FAST)
    loads = dict(gen.cache.load_count)
    again = gen.generate(astronaut, ["alice"], FAST)
    assert np.array_equal(first.array, again.array)
    assert dict(gen.cache.load_count) == loads, "a second portrait must not load weights again"
    other_user = gen.generate(astronaut, ["bob"], FAST)
    assert {k: v for k, v in gen.cache.load_count.items() if k != "lora"} == {
        k: v for k, v in loads.items() if k != "lora"
    }, "switching users may only switch LoRAs"
    assert other_user.array.shape == astronaut.shape
    # Both LoRAs stay loaded: back to alice reads no file and gives exactly her portrait.
    loras = gen.cache.load_count["lora"]
    back = gen.generate(astronaut, ["alice"], FAST)
    assert gen.cache.load_count["lora"] == loras
    assert np.array_equal(back.array, first.array)


@pytest.mark.slow
def test_two_person_template(gen: PortraitGenerator, faces_dir: Path) -> None:
    path = faces_dir / "groups" / "two_people.jpg"
    template = load_image(path)
    faces = gen.analyzer.detect(template)
    assert len(faces) == 2
    both = gen.generate(path, ["alice", "bob"], FAST)
    assert both.array.shape == template.shape
    assert [(s.face_index, s.user_id) for s in both.scores] == [(0, "alice"), (1, "bob")]
    regions = [crop_face_region(template, f, FAST.crop_ratio, FAST.short_side).box for f in faces]
    diff = np.abs(both.array.astype(int) - template.astype(int)).max(axis=2) > 0
    for x0, y0, x1, y1 in regions:
        assert diff[y0:y1, x0:x1].any(), "each mapped face must be repainted"
        diff[y0:y1, x0:x1] = False
    assert not diff.any(), "pixels away from all faces must stay unchanged"

    right_only = gen.generate(path, ["none", "alice"], FAST)
    x0, y0, x1, y1 = regions[1]
    changed = _changed_box(template, right_only.array)
    assert changed is not None and _inside(changed, regions[1])
    assert [s.face_index for s in right_only.scores] == [1]


@pytest.mark.slow
def test_mapping_errors(gen: PortraitGenerator, astronaut: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="2 user ids .* only 1 face"):
        gen.generate(astronaut, ["alice", "bob"], FAST)
    with pytest.raises(UnknownUserError, match="nobody"):
        gen.generate(astronaut, ["nobody"], FAST)
    with pytest.raises(NoFaceError, match="no face"):
        gen.generate(np.full((128, 128, 3), 200, np.uint8), ["alice"], FAST, template_name="blank.png")


@pytest.mark.slow
def test_generate_function_with_paths(
    tiny_model_dir: Path, home: Path, astronaut: np.ndarray, tmp_path: Path, gen: PortraitGenerator
) -> None:
    tpl = tmp_path / "t.jpg"
    save_png(astronaut, tmp_path / "t.png")
    tpl = tmp_path / "t.png"
    events: list[dict] = []
    out = generate([tpl, tpl], "alice", FAST, generator=gen, on_event=events.append)
    assert len(out) == 2 and np.array_equal(out[0].array, out[1].array)
    assert [e["type"] for e in events].count("portrait") == 2


@pytest.mark.slow
def test_fast_mode_stacks_lcm_lora_and_switches_back_exactly(
    tiny_model_dir: Path, home: Path, analyzer, astronaut: np.ndarray, tmp_path: Path
) -> None:
    """Fast mode: LCM scheduler, fewer steps, LCM-LoRA stacked on the user's; off again → bit-identical."""
    import torch
    from safetensors.torch import load_file, save_file

    from easyphoto.diffusion.models import LCM_ADAPTER, LORA_ADAPTER, ModelCache

    # Stand-in LCM-LoRA weights of the right shapes (real ones: latent-consistency/lcm-lora-sdv1-5).
    state = load_file(str(home / "users" / "bob" / "lora.safetensors"))
    lcm = tmp_path / "lcm.safetensors"
    unet_only = {k: v * -3.0 if "lora_up" in k else v for k, v in state.items() if k.startswith("lora_unet_")}
    save_file(unet_only, str(lcm))

    plain = ModelCache(ModelConfig(base_model=str(tiny_model_dir)), device="cpu", dtype="float32")
    with pytest.raises(ConfigError, match="EASYPHOTO_LCM_LORA"):
        PortraitGenerator(plain, analyzer, home=home).generate(astronaut, ["alice"], FAST.replace(fast=True))
    assert plain.lora_path is None and plain.loads == 0, "the config error comes before any loading"

    cache = ModelCache(
        ModelConfig(base_model=str(tiny_model_dir), lcm_lora=str(lcm)), device="cpu", dtype="float32"
    )
    gen = PortraitGenerator(cache, analyzer, home=home)
    calls: list[tuple[frozenset[str], int]] = []
    hook = cache.unet.register_forward_pre_hook(
        lambda m, args: calls.append((frozenset(m.active_adapters()), args[0].shape[0]))
    )
    try:
        normal = gen.generate(astronaut, ["alice"], FAST)
        n_normal = len(calls)
        (user_adapter,) = {a for adapters, _ in calls for a in adapters}
        assert user_adapter.startswith(LORA_ADAPTER)
        calls.clear()
        fast_cfg = FAST.replace(fast=True, fast_first_steps=8, fast_second_steps=8)
        fast = gen.generate(astronaut, ["alice"], fast_cfg)
        # int(8 × 0.45) + int(8 × 0.35) LCM steps, both LoRAs active, CFG at 1.5 (batch of 2).
        assert len(calls) == 3 + 2
        assert {adapters for adapters, _ in calls} == {frozenset({user_adapter, LCM_ADAPTER})}
        assert all(batch == 2 for _, batch in calls)
        assert not np.array_equal(fast.array, normal.array)
        assert fast.params["lcm_lora"] == str(lcm) and fast.params["config"]["fast"] is True
        gen.generate(astronaut, ["bob"], fast_cfg)
        assert cache.load_count["lcm_lora"] == 1, "the LCM-LoRA is read once"
        # Switching users under the LCM-LoRA applies the new user's text-encoder LoRA exactly.
        ids = cache.tokenizer("a photo", return_tensors="pt").input_ids
        plain.set_lora(home / "users" / "bob" / "lora.safetensors", FAST.lora_weight)
        with torch.no_grad():
            torch.testing.assert_close(cache.text_encoder(ids)[0], plain.text_encoder(ids)[0], rtol=0, atol=0)
        plain.unload_lora()
        calls.clear()
        again = gen.generate(astronaut, ["alice"], FAST)
        assert len(calls) == n_normal
        assert np.array_equal(again.array, normal.array), "fast mode off must give the normal result exactly"
    finally:
        hook.remove()
    # Unloading removes both LoRAs: the UNet is the base model again.
    cache.unload_lora()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(cache.unet(x, 5, cond).sample, plain.unet(x, 5, cond).sample)


def test_generation_reports_each_face_pass_and_step(gen: PortraitGenerator, astronaut: np.ndarray) -> None:
    events: list[dict] = []
    gen.generate(astronaut, ["alice"], FAST, on_event=events.append)
    faces = [e for e in events if e["type"] == "face"]
    assert len(faces) == 1 and (faces[0]["face"], faces[0]["of"]) == (1, 1)
    steps = [(e["pass"], e["step"], e["steps"]) for e in events if e["type"] == "step"]
    first = [s for s in steps if s[0] == "first"]
    second = [s for s in steps if s[0] == "second"]
    n1, n2 = (
        int(FAST.first_steps * FAST.first_denoise) or 1,
        int(FAST.second_steps * FAST.second_denoise) or 1,
    )
    assert [s[1] for s in first] == list(range(1, n1 + 1)) and {s[2] for s in first} == {n1}
    assert [s[1] for s in second] == list(range(1, n2 + 1)) and {s[2] for s in second} == {n2}
    assert gen._on_event is None  # not kept after the call
