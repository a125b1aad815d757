"""The studio's workflows: the ONE copy of each that the CLI, the job worker, the web UI and the Python
API call. A front door parses its input, calls one of these, and renders what comes back.

* :func:`prepare_and_train` — take the user's lock, prepare the photos (or reuse a prepared set, or
  resume), train with template validation when configured, write the contact sheet even when too few
  photos are usable. Progress arrives as events (``prepare``, ``prepared``, then the training's).
* :func:`train` — the training stage with the extra validation wired in (what ``ep.train`` is).
* :func:`generate_batch` — many templates × the same users; one bad template fails alone, portraits
  already made are kept, and the result lists which templates failed and why.
* :func:`swap` — the instant classical face swap (no diffusion model).

The stages (:mod:`easyphoto.stages`) never import each other; composing them is this module's job.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import GenerateConfig, ModelConfig, PrepareConfig, TrainConfig, easyphoto_home
from .errors import BadImageError, ConfigError, EasyPhotoError, NoFaceError, UserModelError, error_info
from .store import dataset_dir, user_lock, validate_user_id
from .users import PHOTO_USER

log = logging.getLogger("easyphoto.workflows")

EventCallback = Callable[[dict[str, Any]], None]


def _emit(on_event: EventCallback | None, event: dict[str, Any]) -> None:
    if on_event is not None:
        on_event(event)


def _extra_validation(config: TrainConfig) -> Any:
    if not config.validation_templates:
        return None
    from .stages.generate.validation import TemplateValidation

    return TemplateValidation(config.validation_templates, config)


# ------------------------------------------------------------------------------------------ training


def train(
    user_id: str,
    dataset: str | Path | Any,
    config: TrainConfig | None = None,
    **kwargs: Any,
) -> Any:
    """Train a user's face LoRA from a prepared dataset (see :func:`easyphoto.stages.train.train`).

    ``config.validation_templates`` are painted at each validation with the portrait pipeline's first
    pass, on the training's own family. Keyword arguments go to the training stage (``model_config``,
    ``cache``, ``on_event``, ``should_stop``, ``resume``, ``analyzer``, ``home``). An SDXL base model
    trains an SDXL user (:func:`easyphoto.stages.train.training_cache`).
    """
    from .stages.train import train as train_stage

    cfg = config or TrainConfig()
    return train_stage(user_id, dataset, cfg, extra_validation=_extra_validation(cfg), **kwargs)


def prepare_and_train(
    user_id: str,
    photos: Sequence[str | Path] | None = None,
    *,
    dataset: str | Path | None = None,
    train_config: TrainConfig | None = None,
    prepare_config: PrepareConfig | None = None,
    model_config: ModelConfig | None = None,
    cache: Any = None,
    analyzer: Any = None,
    home: Path | None = None,
    prepared_dir: str | Path | None = None,
    contact_sheet: str | Path | None = None,
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
) -> Any:
    """Prepare ``photos`` (or use ``dataset``, or ``resume``) and train ``user_id``, under the user's lock.

    The lock is taken first, so a second training of a busy user is refused before its photos are
    touched. ``prepared_dir``: where the prepared set goes (default ``EASYPHOTO_HOME/datasets/<id>``).
    ``contact_sheet``: also draw the kept/rejected photos there (written even when too few are usable).
    Returns the :class:`~easyphoto.stages.train.TrainResult`.
    """
    from .stages.train import train_locked, training_cache
    from .users import recover

    user_id = validate_user_id(user_id)
    home = home or easyphoto_home()
    for line in recover(home):  # what a crashed earlier run left behind
        log.warning("repaired: %s", line)
    tcfg = train_config or TrainConfig()
    validation = _extra_validation(tcfg)
    if validation is not None and photos and not resume:  # a faceless template is refused before the
        from .face.analyzer import FaceAnalyzer  # photos are prepared and before torch is imported

        analyzer = analyzer or FaceAnalyzer()
        validation.check(analyzer)
    cache = training_cache(cache, model_config)  # SD1.5 or SDXL, by the base model; nothing loaded
    prepare_config = (prepare_config or PrepareConfig()).for_family(cache.family)  # crops at its size
    if not resume and bool(photos) == (dataset is not None):
        raise ConfigError("give either photos or a prepared dataset")
    with user_lock(user_id, home, what="training"):
        if resume:
            dataset = dataset or _resume_dataset(user_id, home)
        elif photos:
            out = Path(prepared_dir) if prepared_dir is not None else dataset_dir(user_id, home)
            prepared = prepare_photos(
                user_id, photos, out, prepare_config, analyzer, contact_sheet, on_event, should_stop
            )
            dataset = prepared.dataset_dir
        return train_locked(
            user_id,
            dataset,
            tcfg,
            model_config=model_config,
            cache=cache,
            analyzer=analyzer,
            home=home,
            on_event=on_event,
            should_stop=should_stop,
            resume=resume,
            extra_validation=validation,
        )


def _resume_dataset(user_id: str, home: Path) -> str:
    from .users import TrainingState

    try:
        return TrainingState.load(user_id, home).dataset
    except UserModelError as exc:
        raise ConfigError(f"nothing to resume for user {user_id!r}: {exc.reason}") from None


def prepare_photos(
    user_id: str,
    photos: Sequence[str | Path],
    out: Path,
    config: PrepareConfig | None = None,
    analyzer: Any = None,
    contact_sheet: str | Path | None = None,
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """Prepare the photos into ``out`` with progress events; the contact sheet is drawn either way."""
    from .errors import TrainingInterrupted
    from .stages.prepare import PreparedSet, prepare, write_contact_sheet

    cfg = config or PrepareConfig()
    _emit(on_event, {"type": "stage", "stage": "prepare"})

    def progress(i: int, total: int, source: str) -> None:
        _emit(on_event, {"type": "prepare", "index": i, "total": total, "photo": Path(source).name})
        if should_stop is not None and should_stop():
            raise TrainingInterrupted("stopped during preparation")

    try:
        prepared = prepare(photos, out, cfg, analyzer=analyzer, user_id=user_id, progress=progress)
    except EasyPhotoError as exc:
        results = getattr(exc, "results", None)
        if contact_sheet is not None and results:
            import numpy as np

            with contextlib.suppress(EasyPhotoError, OSError):
                write_contact_sheet(
                    PreparedSet(out, results, np.zeros(128, np.float32), cfg, user_id), contact_sheet
                )
                _emit(on_event, {"type": "contact_sheet", "file": str(contact_sheet)})
        raise
    if contact_sheet is not None:
        write_contact_sheet(prepared, contact_sheet)
    rejected = [{"photo": Path(p.source).name, "reason": p.reason, "code": p.code} for p in prepared.rejected]
    log.info("prepared %d photo(s), rejected %d", len(prepared.kept), len(rejected))
    for r in rejected:
        log.info("  rejected %s: %s", r["photo"], r["reason"])
    event = {"type": "prepared", "kept": len(prepared.kept), "rejected": rejected, "out": str(out)}
    _emit(on_event, event | ({"contact_sheet": str(contact_sheet)} if contact_sheet is not None else {}))
    return prepared


# ---------------------------------------------------------------------------------------- generation


@dataclass
class BatchResult:
    """What a batch made: one entry per portrait (file, template, scores…), one per failed template."""

    images: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def default_portrait_name(index: int, template: str, user_ids: Sequence[str]) -> str:
    """``<template stem>-<user ids>.png`` (skipped faces left out)."""
    users = "-".join(u for u in user_ids if u.lower() != "none")
    return f"{Path(template).stem}-{users}.png"


def generate_batch(
    templates: Sequence[tuple[str | Path, str]],
    user_ids: Sequence[str],
    config: GenerateConfig | None,
    out_dir: str | Path,
    *,
    generator: Any = None,
    model_config: ModelConfig | None = None,
    home: Path | None = None,
    file_name: Callable[[int, str, Sequence[str]], str] = default_portrait_name,
    keep_intermediates: bool = False,
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    photos: Sequence[Any] | None = None,
    ip_image: Any = None,
    background_image: Any = None,
) -> BatchResult:
    """Paint ``user_ids`` into each template (``(path, display name)`` pairs); PNGs go to ``out_dir``.

    ``photos``: photos of a person to paint without training, as the user ``"photo"`` (the default
    when ``user_ids`` is empty); the IP-Adapter carries their identity. ``ip_image``: a photo whose face
    the IP-Adapter sees instead of each user's own (EasyPhoto's ``ipa_image``). ``background_image``:
    the picture put behind the people (``background="replace"``; else ``background_prompt`` is painted).

    A template that cannot be used (unreadable, no face, too few faces) is recorded in
    ``BatchResult.errors`` and the batch goes on; when no portrait at all could be made, the error is
    raised. ``should_stop`` is checked between templates (:class:`~easyphoto.stages.train.TrainingInterrupted`
    is not used here: a stopped batch raises :class:`BatchStopped` with what it made so far).
    """
    cfg = config or GenerateConfig()
    user_ids = list(user_ids) or ([PHOTO_USER] if photos else [])
    picture = load_background_picture(background_image)
    cfg = with_picture(cfg, picture is not None)
    check_generation(user_ids, cfg, home, photo_users=[PHOTO_USER] if photos else [],
                     background_picture=picture is not None)  # fmt: skip
    check_families(
        user_ids, generator.cache.config if generator is not None else model_config, home,
        [PHOTO_USER] if photos else [], cfg.background,
    )  # fmt: skip
    gen = generator or portrait_generator(model_config=model_config, home=home)
    set_people(gen, photos, ip_image)
    out = Path(out_dir)
    result = BatchResult()
    for i, (path, name) in enumerate(templates):
        if should_stop is not None and should_stop():
            raise BatchStopped(f"stopped after {i} of {len(templates)} template(s)", result)
        _emit(on_event, {"type": "template", "index": i, "total": len(templates), "name": name})
        try:
            portrait = gen.generate(
                path, list(user_ids), cfg, template_name=name, keep_intermediates=keep_intermediates,
                on_event=(lambda e, i=i: _emit(on_event, {**e, "template": i})) if on_event else None,
                background_image=picture,
            )  # fmt: skip
        except (NoFaceError, BadImageError, ConfigError, UserModelError) as exc:
            log.info("template skipped: %s", exc)  # reported in the result; the front door shows it
            coded = {k: v for k, v in error_info(exc).items() if k != "message"}  # clients translate
            result.errors.append({"template": name, "error": str(exc), **coded})
            continue
        target = portrait.save(out / file_name(i, str(name), user_ids))
        entry = {
            "file": target.name,
            "path": str(target),
            "template": name,
            "scores": [s.__dict__ for s in portrait.scores],
            "score": round(portrait.score, 4),
            "seed": portrait.params.get("seed"),
            "seconds": portrait.timings.get("total"),
        }
        if keep_intermediates:
            steps = target.with_name(target.stem + "-steps")
            portrait.save_intermediates(steps)
            entry["intermediates"] = str(steps)
        result.images.append(entry)
        _emit(on_event, {"type": "portrait", "index": i, **entry})
    if not result.images:
        raise errors_to_exception(result.errors)
    return result


class BatchStopped(EasyPhotoError):
    """A batch was stopped between templates; ``result`` holds the portraits made until then."""

    def __init__(self, message: str, result: BatchResult) -> None:
        super().__init__(message)
        self.result = result


def portrait_generator(
    cache: Any = None, analyzer: Any = None, *, model_config: Any = None, home: Any = None
) -> Any:
    """A :class:`~easyphoto.stages.generate.PortraitGenerator` to keep across batches (loaded models,
    reference faces of recent users; a retrained user is reloaded when their LoRA file changes)."""
    from .stages.generate import PortraitGenerator

    return PortraitGenerator(cache, analyzer, model_config=model_config, home=home or easyphoto_home())


def with_picture(config: GenerateConfig, has_picture: bool) -> GenerateConfig:
    """A background picture with the default ``background="keep"`` means ``replace``
    (:func:`~easyphoto.stages.generate.background.with_picture`)."""
    from .stages.generate.background import with_picture as picture_mode

    return picture_mode(config, has_picture)


def load_background_picture(background_image: Any) -> Any:
    """The picture to put behind the people (a path, bytes or an array; ``None`` passes through), read
    once before any work so a bad file is refused naming itself."""
    if background_image is None:
        return None
    from .imageio import load_image

    named = isinstance(background_image, (str, Path))
    return load_image(background_image, name=Path(str(background_image)).name if named else "background")


def set_people(gen: Any, photos: Sequence[Any] | None, ip_image: Any = None) -> None:
    """Give a (possibly kept) generator this request's person-as-photos (user ``"photo"``) and IP-Adapter
    image: the last request's are dropped, so a worker never paints one job's photos into the next."""
    gen.photo_users.clear()
    if photos:
        gen.add_photo_user(photos, PHOTO_USER)
    gen.set_ip_image(ip_image)


def check_generation(
    user_ids: Sequence[str],
    config: GenerateConfig,
    home: Path | None = None,
    photo_users: Sequence[str] = (),
    background_picture: bool = False,
) -> list[str]:
    """Everything a generation can be refused for before any work: users (see :func:`check_users`),
    ControlNet names, a background to replace with nothing to replace it by; returns the user ids
    stripped."""
    from .stages.generate.background import check_background
    from .stages.generate.controls import check_controlnets

    check_controlnets(config)
    check_background(config, background_picture)
    return check_users(user_ids, home, photo_users)


def check_users(
    user_ids: Sequence[str], home: Path | None = None, photo_users: Sequence[str] = ()
) -> list[str]:
    """Refuse an empty list, unsafe ids, unknown users and broken user models; returns the ids stripped.

    ``photo_users``: names of users given as photos (no model on disk to check)."""
    from .users import UserModel

    ids = [u.strip() for u in user_ids if u and u.strip()]
    if not ids:
        raise ConfigError("give at least one user id (or photos of the person)")
    for uid in ids:
        if uid.lower() != "none" and uid not in photo_users:
            UserModel.load(uid, home)  # unknown user, or a broken model: a clear error before any work
    return ids


def check_families(
    user_ids: Sequence[str],
    model_config: ModelConfig | None,
    home: Path | None = None,
    photo_users: Sequence[str] = (),
    background: str = "keep",
) -> None:
    """Refuse, before anything is loaded, what has no model here while the base model is SDXL: an SD1.5
    user, a person given as photos (the IP-Adapter is SD1.5's), a ``background`` other than ``keep`` (its
    passes run on SD1.5's tile net). SDXL users are painted on the SDXL model
    (:func:`~easyphoto.diffusion.sdxl.sdxl_model_config`: an SDXL ``base_model``, else
    ``template_model``). A base of unknown family passes."""
    from .diffusion.families import model_family
    from .users import UserModel

    mc = model_config if model_config is not None else ModelConfig()
    if model_family(str(mc.base_model), local_files_only=True) != "sdxl":
        return
    sd15 = [
        u for u in user_ids
        if u.lower() != "none" and (u in photo_users or UserModel.load(u, home).meta.family == "sd15")
    ]  # fmt: skip
    if sd15:
        named = [f"{u!r} (photos: the IP-Adapter is SD1.5's)" if u in photo_users else repr(u) for u in sd15]
        raise ConfigError(
            f"base model {mc.base_model!r} is SDXL, but {', '.join(named)} "
            f"{'needs' if len(sd15) == 1 else 'need'} SD1.5: give an SD1.5 base model (--base-model, "
            "EASYPHOTO_BASE_MODEL); SDXL users are painted on the SDXL model (--template-model)"
        )
    if background != "keep":
        raise ConfigError(
            f"background {background!r} runs on SD1.5 (its tile ControlNet), but base model "
            f"{mc.base_model!r} is SDXL: give an SD1.5 base model and the SDXL model as --template-model"
        )


def errors_to_exception(errors: list[dict[str, Any]]) -> EasyPhotoError:
    """One readable error for a batch where every template failed."""
    if len(errors) == 1:  # keeps its message code, so a client can still show it in its language
        err = EasyPhotoError(errors[0]["error"])
        err.code, err.params = errors[0].get("code"), errors[0].get("params") or {}
        err.source = errors[0].get("source")  # type: ignore[attr-defined]
        err.kind = errors[0].get("kind")  # type: ignore[attr-defined]
        return err
    return EasyPhotoError("no portrait could be made:\n  " + "\n  ".join(e["error"] for e in errors))


# ---------------------------------------------------------------------------------------------- swap


def template_faces(template: Any, analyzer: Any = None, size: int = 128) -> list[dict[str, Any]]:
    """The faces of a template left to right, as generation maps users to them: each with its box and
    a square ``size`` px crop to show (for a face picker). ``template``: path, bytes or RGB array."""
    from .face.analyzer import FaceAnalyzer
    from .face.geometry import crop_face
    from .imageio import load_image

    image = template if hasattr(template, "shape") else load_image(template)
    faces = (analyzer or FaceAnalyzer()).detect(image)
    out = []
    for i, face in enumerate(faces):
        crop, _ = crop_face(image, face.box, size, ratio=1.6, border=255)
        out.append({"index": i, "box": [round(float(v), 1) for v in face.box], "crop": crop})
    return out


def swap(
    photo: Any,
    template: Any,
    *,
    ratio: float = 1.0,
    face_index: int | None = None,
    analyzer: Any = None,
    photo_name: str | None = None,
    template_name: str | None = None,
) -> Any:
    """Put the largest face of ``photo`` onto a face of ``template`` at once, without diffusion.

    Both are paths, bytes or RGB arrays. Returns a :class:`~easyphoto.face.fusion.FusionResult`
    (``.image`` at the template's size; pixels away from the face unchanged).
    """
    from .face.analyzer import FaceAnalyzer
    from .face.fusion import swap_faces
    from .imageio import load_image

    def image(x: Any, name: str | None) -> Any:
        return x if hasattr(x, "shape") else load_image(x, name=name)

    pname = photo_name or (str(photo) if isinstance(photo, (str, Path)) else "photo")
    tname = template_name or (str(template) if isinstance(template, (str, Path)) else "template")
    return swap_faces(
        image(template, tname), image(photo, pname), analyzer or FaceAnalyzer(), ratio=ratio,
        face_index=face_index, template_name=tname, source_name=pname,
    )  # fmt: skip


__all__ = [
    "BatchResult",
    "BatchStopped",
    "check_families",
    "check_generation",
    "check_users",
    "default_portrait_name",
    "errors_to_exception",
    "generate_batch",
    "load_background_picture",
    "prepare_and_train",
    "portrait_generator",
    "prepare_photos",
    "set_people",
    "swap",
    "template_faces",
    "train",
]
