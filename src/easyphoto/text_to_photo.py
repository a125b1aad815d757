"""Text-to-photo's workflows (EasyPhoto's ``tabs=3``): SDXL draws a template from a prompt, then the
portrait pipeline paints the users in. Beside :mod:`easyphoto.workflows` and built like it: the ONE copy
the CLI (``generate --prompt``), the job worker (``POST /v1/text2photo``, the compat ``tabs=3``), the
web UI's Text-to-photo tab and ``ep.generate(prompt=...)`` call. It composes the text2photo stage (the
template) and the generate stage (the portrait); the stages never import each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import GenerateConfig, ModelConfig
from .errors import ConfigError
from .users import PHOTO_USER
from .workflows import (
    BatchResult,
    EventCallback,
    _emit,
    check_families,
    check_generation,
    load_background_picture,
    portrait_generator,
    set_people,
    with_picture,
)


def preset_prompt(name: str) -> str:
    """The text of shipped text-to-photo prompt ``name`` (:class:`ConfigError` listing the names)."""
    from .stages.text2photo import preset_prompt as lookup

    return lookup(name)


def text2photo_presets() -> dict[str, Any]:
    """The shipped text-to-photo presets: ``{"prompts": {name: text}, "poses": {name: keypoints}}``."""
    from .stages.text2photo import presets

    return presets()


def scene_loras_dir() -> Path:
    """Where the operator puts the SDXL scene LoRAs requests may name: ``<models dir>/loras``."""
    from .registry import models_dir

    return models_dir() / "loras"


def resolve_scene_lora(name: str | None) -> Path | None:
    """The file of scene LoRA ``name`` in :func:`scene_loras_dir` (a request names one, never a path);
    :class:`ConfigError` listing the available ones when there is no such file."""
    if not name:
        return None
    folder = scene_loras_dir()
    found = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    for path in found:
        if name in (path.name, path.stem):
            return path
    names = ", ".join(p.stem for p in found) or f"none (put .safetensors files in {folder})"
    raise ConfigError(f"scene_lora {name!r} is not on this server; available: {names}")


def template_maker(cache: Any = None, *, model_config: ModelConfig | None = None) -> Any:
    """A :class:`~easyphoto.stages.text2photo.TemplateMaker` to keep across requests (the SDXL model)."""
    from .stages.text2photo import TemplateMaker

    return TemplateMaker(cache, model_config=model_config)


def check_text_to_photo(
    user_ids: Sequence[str], config: GenerateConfig, home: Path | None = None,
    model_config: ModelConfig | None = None, *, photos: bool = False, background_picture: bool = False,
) -> list[str]:  # fmt: skip
    """:func:`check_generation` and :func:`check_families` (an SD1.5 user needs an SD1.5 base; SDXL
    users are painted on the template's own SDXL model), before any model is loaded. ``photos``: a
    person is given as photos (the user ``"photo"``, the default when ``user_ids`` is empty)."""
    ids = list(user_ids) or ([PHOTO_USER] if photos else [])
    people = [PHOTO_USER] if photos else []
    ids = check_generation(ids, config, home, photo_users=people, background_picture=background_picture)
    check_families(ids, model_config, home, people, config.background)
    return ids


def text_to_photo(
    user_ids: Sequence[str],
    config: Any = None,
    generate_config: GenerateConfig | None = None,
    *,
    pose: Any = None,
    scene_lora: str | Path | None = None,
    generator: Any = None,
    maker: Any = None,
    model_config: ModelConfig | None = None,
    home: Path | None = None,
    on_event: EventCallback | None = None,
    keep_intermediates: bool = False,
    photos: Sequence[Any] | None = None,
    ip_image: Any = None,
    background_image: Any = None,
) -> Any:
    """SDXL draws a template from ``config.prompt`` (a :class:`~easyphoto.config.Text2PhotoConfig`),
    optionally held to ``pose`` (a shipped pose name or an OpenPose image) and styled by ``scene_lora``
    (a file; default ``config.scene_lora``); then the portrait pipeline paints ``user_ids`` in.

    ``photos``, ``ip_image``, ``background_image``: as in :func:`~easyphoto.workflows.generate_batch` —
    a person painted from photos without training (no template and no training: the IP-Adapter carries
    the identity), the face the IP-Adapter sees, a picture put behind the people.

    The SDXL and SD1.5 models share the device under the generator's ``ModelConfig.sdxl_memory``
    (:attr:`PortraitGenerator.memory`); SDXL users are painted on the template's SDXL model (the same
    loaded modules: the maker's cache is the generator's SDXL cache). The portrait's seed is the
    template's unless ``generate_config.seed`` is set. Returns the
    :class:`~easyphoto.stages.generate.Portrait`: its ``params["text2photo"]`` holds every template
    parameter (prompt, seed, size, model, pose, LoRA) and ``intermediates["template"]`` the template.
    """
    from .config import Text2PhotoConfig

    t2p = config or Text2PhotoConfig()
    gcfg = generate_config or GenerateConfig()
    picture = load_background_picture(background_image)
    gcfg = with_picture(gcfg, picture is not None)
    ids = check_text_to_photo(
        user_ids, gcfg, home, generator.cache.config if generator is not None else model_config,
        photos=bool(photos), background_picture=picture is not None,
    )  # fmt: skip
    gen = generator or portrait_generator(model_config=model_config, home=home)
    set_people(gen, photos, ip_image)
    if maker is None:
        maker = template_maker(gen.sdxl_cache)
    elif maker.cache is not gen.sdxl_cache:
        gen.sdxl_cache = maker.cache  # one SDXL model in memory: the template's paints SDXL users
    memory = gen.memory
    switches = memory.switches
    gen.use_family("sdxl")
    _emit(on_event, {"type": "stage", "stage": "template"})
    on_step = (
        (lambda k, n: _emit(on_event, {"type": "step", "pass": "template", "step": k, "steps": n}))
        if on_event
        else None
    )
    template = maker.make(t2p, pose, scene_lora=scene_lora, on_step=on_step)
    seed = template.params["seed"]
    if gcfg.seed is None or gcfg.seed < 0:
        gcfg = gcfg.replace(seed=seed)
    portrait = gen.generate(
        template.array, ids, gcfg, template_name=f"text-to-photo template (seed {seed})",
        keep_intermediates=keep_intermediates, on_event=on_event, background_image=picture,
    )  # fmt: skip
    portrait.params["template"] = "text-to-photo"
    portrait.params["text2photo"] = template.params
    portrait.params["memory"] = {"policy": memory.policy, "moves": memory.moves_since(switches)}
    portrait.timings["template"] = template.seconds
    portrait.intermediates["template"] = template.array
    return portrait


def generate(
    template: Any = None,
    user_ids: str | Sequence[str] = (),
    config: GenerateConfig | None = None,
    *,
    prompt: str | None = None,
    text2photo: Any = None,
    pose: Any = None,
    scene_lora: str | Path | None = None,
    **kwargs: Any,
) -> list[Any]:
    """``ep.generate``: paint users into template photos (:func:`easyphoto.stages.generate.generate`), or,
    given ``prompt`` (or a :class:`~easyphoto.config.Text2PhotoConfig` as ``text2photo``), into a
    template SDXL draws (:func:`text_to_photo`, with ``pose`` and ``scene_lora``). Returns the portraits.

    Keyword arguments go to the one that runs (``generator``, ``model_config``, ``home``, ``on_event``,
    ``keep_intermediates``; text-to-photo also takes ``maker``).
    """
    if prompt is None and text2photo is None:
        if template is None:
            raise ConfigError("give a template photo, or a prompt for text-to-photo")
        from .stages.generate import generate as paint

        return paint(template, user_ids, config, **kwargs)
    if template is not None:
        raise ConfigError("give a template photo or a prompt, not both")
    from .config import Text2PhotoConfig

    t2p = text2photo or Text2PhotoConfig()
    t2p = t2p.replace(prompt=prompt) if prompt is not None else t2p
    ids = [user_ids] if isinstance(user_ids, str) else list(user_ids)
    return [text_to_photo(ids, t2p, config, pose=pose, scene_lora=scene_lora, **kwargs)]


def text_to_photo_files(
    user_ids: Sequence[str],
    config: Any,
    generate_config: GenerateConfig | None,
    out_dir: str | Path,
    *,
    file_name: str | None = None,
    **kwargs: Any,
) -> BatchResult:
    """:func:`text_to_photo`, written to ``out_dir``: the portrait (``text2photo-<seed>-<users>.png``, its
    PNG holding every parameter) and the template beside it (``…-template.png``)."""
    from .imageio import save_png

    portrait = text_to_photo(user_ids, config, generate_config, **kwargs)
    seed = portrait.params["text2photo"]["seed"]
    users = "-".join(u for u in portrait.params["user_ids"] if u.lower() != "none")
    target = portrait.save(Path(out_dir) / (file_name or f"text2photo-{seed}-{users}.png"))
    tpl = save_png(
        portrait.intermediates["template"], target.with_name(target.stem + "-template.png"),
        text={"easyphoto_template": json.dumps(portrait.params["text2photo"]), "Software": "easyphoto"},
    )  # fmt: skip
    if kwargs.get("keep_intermediates"):
        portrait.save_intermediates(target.with_name(target.stem + "-steps"))
    entry = {
        "file": target.name, "path": str(target), "template": "text-to-photo", "template_path": str(tpl),
        "scores": [s.__dict__ for s in portrait.scores], "score": round(portrait.score, 4),
        "seed": portrait.params.get("seed"), "template_seed": seed, "seconds": portrait.timings.get("total"),
    }  # fmt: skip
    return BatchResult(images=[entry])


__all__ = [
    "check_text_to_photo",
    "generate",
    "preset_prompt",
    "resolve_scene_lora",
    "scene_loras_dir",
    "template_maker",
    "text2photo_presets",
    "text_to_photo",
    "text_to_photo_files",
]
