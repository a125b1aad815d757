"""Face-LoRA training: the user's "digital double".

:func:`train` fine-tunes a LoRA on the base model's UNet and text encoder(s) from a prepared dataset
(:func:`easyphoto.prepare`), validates it every ``validate_every`` steps by rendering images with fixed
seeds and scoring them by face-ID similarity to the user's mean embedding, and at the end fuses the
best checkpoints exactly (:mod:`easyphoto.diffusion.lora_fuse`) into the user model
(:mod:`easyphoto.users` defines its files and writes it atomically). A crash leaves the previous model
(if any) untouched and the run's checkpoints in ``EASYPHOTO_HOME/work/<id>/`` for ``resume=True``.
The models come from a :class:`~easyphoto.diffusion.ModelCache`, so validation reuses the loaded
modules (EasyPhoto reloads the base checkpoint from disk at every validation).

The base model's family decides the rest (:func:`training_cache`, told from metadata before anything
loads): an SD1.5 base trains on a ``ModelCache`` with
:class:`~easyphoto.diffusion.lora_trainer.LoraTrainer`, an SDXL base (``--base-model`` an SDXL id, folder
or file, or an :class:`~easyphoto.diffusion.sdxl.SDXLCache` passed as ``cache``) on an ``SDXLCache`` with
:class:`~easyphoto.diffusion.lora_trainer_sdxl.SDXLLoraTrainer`, at the family's sizes unless set
(:meth:`TrainConfig.for_family`: 512 / 1024 px). The user model records ``family`` and the base model
in ``meta.json`` and in the LoRA's kohya metadata; a resume must continue on the same family.

More validation images (portraits painted on the user's templates) come from an injected
:class:`ExtraValidation` (:mod:`easyphoto.workflows` builds it): this stage never imports generation.

Steps of one run (:class:`_Run`): start (work folder, resume state, models) → loop (steps, validate and
checkpoint every ``validate_every``) → select and fuse the best checkpoints → write the user model.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...config import ModelConfig, TrainConfig, easyphoto_home
from ...diffusion.families import FAMILY_NAMES
from ...errors import ConfigError, EasyPhotoError, TrainingInterrupted, UserModelError
from ...imageio import save_png
from ...store import atomic_path, user_lock, validate_user_id
from ...users import (
    CHECKPOINTS_DIR,
    TRAIN_LOG,
    VALIDATION_DIR,
    TrainingState,
    UserMeta,
    save_user_model,
    work_dir,
)
from .data import TrainingData, load_training_data, resolve_max_steps
from .selection import (
    ValidationResult,
    best_face_image,
    kohya_metadata,
    saved_alpha,
    score_images,
    select_checkpoints,
)

log = logging.getLogger("easyphoto.train")

EventCallback = Callable[[dict[str, Any]], None]


# ----------------------------------------------------------------------------------------------- data


# ------------------------------------------------------------------------------------------ validation


class ExtraValidation(Protocol):
    """More validation images, rendered with the LoRA being trained (active on the cache's modules)."""

    def prepare(self, data: TrainingData, cache: Any, analyzer: Any, folder: Path) -> None:
        """Load and check what rendering needs; raise before training starts if it cannot work."""

    def render(self, step: int) -> list[tuple[str, np.ndarray, float]]:
        """``(file name, image, face-ID score)`` per image, for the checkpoint at ``step``."""


# ------------------------------------------------------------------------------------------ result


@dataclass
class TrainResult:
    """A finished user model."""

    user_id: str
    path: Path
    lora_path: Path
    steps: int
    fused_steps: list[int]
    best_score: float
    validations: list[ValidationResult]
    meta: dict[str, Any]


def _emit(on_event: EventCallback | None, event: dict[str, Any]) -> None:
    event.setdefault("time", time.time())
    if on_event is not None:
        on_event(event)


def _file_logger(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


# --------------------------------------------------------------------------------------------- the run


def train(
    user_id: str,
    dataset: str | Path | Any,
    config: TrainConfig | None = None,
    *,
    home: Path | None = None,
    **options: Any,
) -> TrainResult:
    """Train the face LoRA of ``user_id`` and write the user model.

    Args (the keyword options are :func:`train_locked`'s):
        user_id: folder-safe id (see :func:`easyphoto.store.validate_user_id`).
        dataset: a prepared dataset folder, or a ``PreparedSet`` (anything with a ``dataset_dir``).
        config: training settings (:class:`TrainConfig`, EasyPhoto's defaults).
        model_config: base model to train on (default: ``ModelConfig`` with environment overrides).
        cache: a :class:`~easyphoto.diffusion.ModelCache` (SD1.5) or
            :class:`~easyphoto.diffusion.sdxl.SDXLCache` to reuse (its modules get a temporary adapter
            that is removed at the end, whatever happens). A ``ModelCache`` whose base model is SDXL is
            not used: the training makes an ``SDXLCache`` of that model (:func:`training_cache`).
        on_event: receives progress events: ``start``, ``step`` (step, loss, eta_s), ``validation``
            (step, scores, images), ``done``.
        should_stop: polled every micro-batch; returning True stops with :class:`TrainingInterrupted`
            after saving a checkpoint.
        resume: continue from the last checkpoint of an interrupted run of this user, with that run's
            settings (``config`` is then ignored, and the log says so).
        analyzer: a :class:`~easyphoto.FaceAnalyzer` to score validation images (created if None).
        home: ``EASYPHOTO_HOME`` override.
        extra_validation: renders more validation images each time (see :class:`ExtraValidation`).

    Raises:
        UserBusyError: another training of this user is running.
        TrainingInterrupted: stopped by ``should_stop`` or Ctrl-C; resumable.
    """
    user_id = validate_user_id(user_id)
    home = home or easyphoto_home()
    with user_lock(user_id, home, what="training"):
        return train_locked(user_id, dataset, config, home=home, **options)


def train_locked(
    user_id: str,
    dataset: str | Path | Any,
    config: TrainConfig | None = None,
    *,
    model_config: ModelConfig | None = None,
    cache: Any = None,
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    analyzer: Any = None,
    home: Path | None = None,
    extra_validation: ExtraValidation | None = None,
) -> TrainResult:
    """:func:`train` for a caller that already holds the user's lock (:func:`easyphoto.store.user_lock`)."""
    user_id = validate_user_id(user_id)
    home = home or easyphoto_home()
    cfg = config or TrainConfig()
    if cfg.validation_templates and extra_validation is None:
        raise ConfigError(
            "validation_templates need the portrait pipeline: train with easyphoto.train "
            "(easyphoto.workflows), which paints them at each validation"
        )
    ds_dir = Path(getattr(dataset, "dataset_dir", dataset))
    run = _Run(user_id, home, cfg, on_event, should_stop, extra_validation)
    return run.execute(ds_dir, resume, model_config, cache, analyzer)


class _Run:
    """One training run: its work folder, trainer, validations and events."""

    def __init__(
        self,
        user_id: str,
        home: Path,
        cfg: TrainConfig,
        on_event: EventCallback | None,
        should_stop: Callable[[], bool] | None,
        extra: ExtraValidation | None,
    ) -> None:
        self.user_id, self.home, self.cfg = user_id, home, cfg
        self.on_event, self.should_stop, self.extra = on_event, should_stop, extra
        self.wdir = work_dir(user_id, home)
        self.validations: list[ValidationResult] = []
        self.trainer: Any = None
        self.start_step = 0

    def execute(
        self, ds_dir: Path, resume: bool, model_config: Any, cache: Any, analyzer: Any
    ) -> TrainResult:
        handler = None
        try:
            saved = self._resume_state(resume)
            self._start(ds_dir, saved, model_config, cache, analyzer)
            # Only now, with data, models and settings known to work, may a fresh run replace an
            # interrupted run's checkpoints: a failed start never destroys resumable state.
            self._open_work_dir(fresh=saved is None)
            handler = _file_logger(self.wdir / TRAIN_LOG)
            self._announce()
            self._loop()
            result = self._finish()
            log.removeHandler(handler)
            handler.close()
            shutil.rmtree(self.wdir, ignore_errors=True)
            return result
        except KeyboardInterrupt:
            log.warning("training of %s interrupted; resume with resume=True", self.user_id)
            raise TrainingInterrupted(
                f"training of {self.user_id!r} interrupted; run again with --resume"
            ) from None
        finally:
            if self.trainer is not None:
                self.trainer.remove_adapters()
            if handler is not None and handler in log.handlers:
                log.removeHandler(handler)
                handler.close()

    def _resume_state(self, resume: bool) -> TrainingState | None:
        """The interrupted run's state and settings (``None`` for a fresh run). Writes nothing."""
        if not resume:
            return None
        try:
            saved = TrainingState.load(self.user_id, self.home)
        except UserModelError as exc:
            raise ConfigError(f"nothing to resume for user {self.user_id!r}: {exc.reason}") from None
        self.cfg = _restored_config(self.cfg, saved)
        return saved

    def _open_work_dir(self, fresh: bool) -> None:
        """The work folder; a fresh run clears what an earlier run left there."""
        if fresh and self.wdir.exists():
            shutil.rmtree(self.wdir)
        (self.wdir / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
        (self.wdir / VALIDATION_DIR).mkdir(parents=True, exist_ok=True)

    def _start(
        self, ds_dir: Path, saved: TrainingState | None, model_config: Any, cache: Any, analyzer: Any
    ) -> None:
        """Data, models, the extra validation and the trainer; raises before anything is written (and,
        for a wrong family or settings it cannot run, before any model is loaded)."""
        from ...face.analyzer import FaceAnalyzer

        self.data = load_training_data(ds_dir)
        self.max_steps = saved.max_steps if saved else resolve_max_steps(self.cfg, len(self.data))
        self.cache = training_cache(cache, model_config)
        self.family = getattr(self.cache, "family", "sd15")
        self._check_family(saved)
        self.cfg = self.cfg.for_family(self.family)
        if self.family == "sdxl":
            from ...diffusion.lora_trainer_sdxl import SDXLLoraTrainer as trainer_class
        else:
            from ...diffusion.ip_adapter import unload_face_adapter
            from ...diffusion.lora_trainer import LoraTrainer as trainer_class

            unload_face_adapter(self.cache)  # a worker's cache may hold it from a portrait: plain UNet
        self.analyzer = analyzer or FaceAnalyzer()
        if self.extra is not None:  # fail before training, not at the first validation
            self.extra.prepare(self.data, self.cache, self.analyzer, self.wdir)
        self.trainer = trainer_class(self.cache, self.data, self.cfg)
        if saved is not None:
            self._restore(saved)

    @property
    def base_model(self) -> str:
        """The model trained on: an SDXL cache's is its ``template_model`` (:func:`sdxl_model_config`
        puts an SDXL ``base_model`` there)."""
        config = self.cache.config
        return str(config.template_model if self.family == "sdxl" else config.base_model)

    def _check_family(self, saved: TrainingState | None) -> None:
        """Refuse, before loading, a resume of another family's run."""
        from ...diffusion.families import check_family

        base = self.base_model
        if saved is not None:
            check_family(
                self.family, saved.family, f"the interrupted training of user {self.user_id!r}",
                f"base model {base!r}",
            )  # fmt: skip

    def _announce(self) -> None:
        cfg = self.cfg
        if self.start_step:
            log.info("resuming %s from step %d of %d", self.user_id, self.start_step, self.max_steps)
        log.info(
            "training %s on %d photos from %s: %d steps, rank %d, alpha %s, device %s",
            self.user_id, len(self.data), self.data.source, self.max_steps, cfg.rank, cfg.alpha,
            self.cache.device,
        )  # fmt: skip
        log.info(
            "base model %s (%s): resolution %d px, validation renders %d px",
            self.base_model, FAMILY_NAMES[self.family], cfg.resolution, cfg.validation_size,
        )  # fmt: skip
        event = {
            "type": "start",
            "user_id": self.user_id,
            "step": self.start_step,
            "max_steps": self.max_steps,
            "family": self.family,
        }
        _emit(self.on_event, event | {"photos": len(self.data)})

    def _restore(self, saved: TrainingState) -> None:
        import torch
        from safetensors.torch import load_file

        trainer = self.trainer
        try:
            trainer.load_peft_state(load_file(str(self.wdir / saved.resume_file)))
            opt_path = self.wdir / saved.optimizer_file
            if opt_path.is_file():
                trainer.optimizer.load_state_dict(torch.load(opt_path, map_location="cpu", weights_only=True))
        except Exception as exc:  # safetensors, torch and peft each raise their own kinds
            raise ConfigError(
                f"the checkpoint of user {self.user_id!r} cannot be read ({type(exc).__name__}); "
                "start a fresh training instead of resuming"
            ) from None
        self.start_step = trainer.global_step = saved.step
        trainer.rng = np.random.default_rng(self.cfg.seed + saved.step)
        trainer.generator.manual_seed(self.cfg.seed + saved.step)
        self.validations = [ValidationResult(**v) for v in saved.validations]

    def _loop(self) -> None:
        trainer, cfg, stop = self.trainer, self.cfg, self.should_stop
        t_start = t_last = time.perf_counter()
        step_times: list[float] = []
        losses: list[float] = []
        while trainer.global_step < self.max_steps:
            before = trainer.global_step
            losses.append(trainer.step())
            if trainer.global_step == before:
                if stop is not None and stop():
                    raise TrainingInterrupted(f"training of {self.user_id!r} stopped at step {before}")
                continue
            step = trainer.global_step
            now = time.perf_counter()
            step_times.append(now - t_last)
            t_last = now
            mean_loss = float(np.mean(losses[-cfg.grad_accum :]))
            eta = float(np.median(step_times[-20:])) * (self.max_steps - step)
            _emit(
                self.on_event,
                {"type": "step", "step": step, "max_steps": self.max_steps, "loss": mean_loss,
                 "eta_s": round(eta, 1), "elapsed_s": round(time.perf_counter() - t_start, 1)},
            )  # fmt: skip
            checkpointed = step % cfg.validate_every == 0 or step == self.max_steps
            if checkpointed:
                self._validate(step)
                self._checkpoint(step)
                t_last = time.perf_counter()  # validation time is not training-step time
            if not math.isfinite(mean_loss):
                raise EasyPhotoError(
                    f"training of {self.user_id!r} diverged at step {step} (loss {mean_loss})"
                )
            if stop is not None and stop():
                if not checkpointed:
                    self._checkpoint(step)
                raise TrainingInterrupted(f"training of {self.user_id!r} stopped at step {step}")

    def _validate(self, step: int) -> None:
        t0 = time.perf_counter()
        cfg, folder = self.cfg, self.wdir / VALIDATION_DIR
        images = self.trainer.render_validation()
        scores = score_images(images, self.data.mean_embedding, self.analyzer)
        names = [f"step-{step:05d}-seed{seed}.png" for seed in cfg.validation_seeds]
        if self.extra is not None:
            with self.trainer.inference():
                for name, image, score in self.extra.render(step):
                    names.append(name)
                    images.append(image)
                    scores.append(score)
        for name, img in zip(names, images, strict=True):
            save_png(img, folder / name)
        result = ValidationResult(step=step, scores=[round(s, 4) for s in scores], images=names)
        self.validations[:] = [v for v in self.validations if v.step != step] + [result]
        log.info(
            "validation at step %d: scores %s (%d without a face) in %.1fs",
            step, result.scores, sum(1 for s in scores if s == 0.0), time.perf_counter() - t0,
        )  # fmt: skip
        event = {"type": "validation", "step": step, "scores": result.scores, "score": result.score}
        _emit(self.on_event, event | {"images": [str(folder / n) for n in names]})

    def _checkpoint(self, step: int) -> None:
        """Save a resumable checkpoint: every file atomically (temp + fsync + rename), ``state.json``
        last. The adapters and optimizer state are per step, so until the new ``state.json`` is in
        place the previous one still names files of its own step; older pairs are deleted after."""
        import torch
        from safetensors.torch import save_file

        trainer, wdir = self.trainer, self.wdir
        resume, optimizer = f"resume-step-{step:05d}.safetensors", f"optimizer-step-{step:05d}.pt"
        with atomic_path(wdir / CHECKPOINTS_DIR / f"step-{step:05d}.safetensors") as tmp:
            save_file(trainer.kohya_state(), str(tmp))
        with atomic_path(wdir / resume) as tmp:
            save_file({k: v.contiguous() for k, v in trainer.peft_state().items()}, str(tmp))
        with atomic_path(wdir / optimizer) as tmp:
            torch.save(trainer.optimizer.state_dict(), tmp)
        TrainingState(
            step=step,
            max_steps=self.max_steps,
            config=self.cfg.to_dict(),
            validations=[asdict(v) for v in self.validations],
            dataset=self.data.source,
            resume_file=resume,
            optimizer_file=optimizer,
            family=self.family,
        ).save(self.user_id, self.home)
        for old in [*wdir.glob("resume-step-*.safetensors"), *wdir.glob("optimizer-step-*.pt")]:
            if old.name not in (resume, optimizer):
                old.unlink(missing_ok=True)

    def _finish(self) -> TrainResult:
        """Select the best checkpoints, fuse them and write the user model."""
        chosen, best = select_checkpoints(self.validations, self.cfg.fuse_top_k)
        lora_state, fuse_info = self._fuse(chosen)
        log.info("selected checkpoints %s (scores %s)", [v.step for v in chosen], [v.score for v in chosen])
        result = self._write(lora_state, chosen, best, fuse_info)
        _emit(
            self.on_event,
            {"type": "done", "user_id": self.user_id, "step": self.max_steps, "path": str(result.path),
             "best_score": result.best_score, "fused_steps": result.fused_steps},
        )  # fmt: skip
        return result

    def _fuse(self, chosen: list[ValidationResult]) -> tuple[dict[str, Any], dict[str, Any]]:
        from safetensors.torch import load_file

        from ...diffusion.lora_fuse import fuse_lora_state_dicts

        folder = self.wdir / CHECKPOINTS_DIR
        states = [load_file(str(folder / f"step-{v.step:05d}.safetensors")) for v in chosen]
        if len(states) == 1:
            return states[0], {"method": "single checkpoint"}
        lora_state, report = fuse_lora_state_dicts(states, rank=self.cfg.fuse_rank or self.cfg.rank)
        info = {
            "method": "exact ΔW average, SVD to rank",
            "rank": report.rank,
            "max_relative_error": round(report.max_relative_error, 6),
        }
        return lora_state, info

    def _write(
        self,
        lora_state: dict[str, Any],
        chosen: list[ValidationResult],
        best: ValidationResult,
        fuse_info: dict,
    ) -> TrainResult:
        from ... import __version__

        cfg, data, base = self.cfg, self.data, self.base_model
        rank = int(max(v.shape[0] for k, v in lora_state.items() if k.endswith(".lora_down.weight")))
        meta = UserMeta(
            user_id=self.user_id,
            easyphoto_version=__version__,
            family=self.family,
            base_model=base,
            rank=rank,
            train_rank=cfg.rank,
            alpha=cfg.alpha,
            steps=self.max_steps,
            photos=len(data),
            fused_steps=[v.step for v in chosen],
            fusion=fuse_info,
            best_step=best.step,
            best_score=round(float(best.score), 4),
            validations=[asdict(v) | {"score": round(v.score, 4)} for v in self.validations],
            config=cfg.to_dict(),
        )
        folder = self.wdir / VALIDATION_DIR
        model = save_user_model(
            self.user_id,
            lora_state=lora_state,
            lora_metadata=kohya_metadata(self.user_id, base, rank, saved_alpha(lora_state), self.max_steps,
                                         len(data), self.validations, meta.fused_steps, self.family),
            meta=meta,
            ref_image=data.ref_image,
            embedding=data.mean_embedding,
            face_id=best_face_image(best, folder),
            validation_images=[folder / n for v in self.validations for n in v.images],
            log_file=self.wdir / TRAIN_LOG,
            home=self.home,
        )  # fmt: skip
        return TrainResult(
            user_id=self.user_id,
            path=model.path,
            lora_path=model.lora_path,
            steps=self.max_steps,
            fused_steps=meta.fused_steps,
            best_score=float(best.score),
            validations=self.validations,
            meta=model.meta.model_dump(),
        )


def training_cache(cache: Any = None, model_config: ModelConfig | None = None) -> Any:
    """The model cache a training runs on, chosen by the base model's family; nothing is loaded.

    ``cache``: an :class:`~easyphoto.diffusion.sdxl.SDXLCache` is used as it is; a
    :class:`~easyphoto.diffusion.ModelCache` is used when its base model is SD1.5 (or of unknown family),
    and replaced by an ``SDXLCache`` of its base model when that is SDXL (a job worker's cache is built
    from the job's base model, whatever its family). Without a cache: ``model_config``'s base model
    (default: :class:`ModelConfig` from the environment) decides between a new ``ModelCache`` and a new
    ``SDXLCache`` (:func:`~easyphoto.diffusion.sdxl.sdxl_model_config`).
    """
    from ...diffusion.families import model_family

    if cache is not None and getattr(cache, "family", "sd15") == "sdxl":
        return cache
    mc = cache.config if cache is not None else (model_config or ModelConfig())
    if model_family(str(mc.base_model), local_files_only=bool(mc.local_files_only)) == "sdxl":
        from ...diffusion.sdxl import SDXLCache, sdxl_model_config

        if cache is not None:
            log.info("base model %s is SDXL: training on an SDXL cache of it", mc.base_model)
        return SDXLCache(sdxl_model_config(mc))
    if cache is not None:
        return cache
    from ...diffusion.models import ModelCache

    return ModelCache(mc)


def _restored_config(given: TrainConfig, saved: TrainingState) -> TrainConfig:
    """The interrupted run's settings (a resume continues the same training); logs what differed."""
    try:
        restored = TrainConfig.from_layers(saved.config)
    except ConfigError as exc:
        raise ConfigError(f"the saved settings cannot be used ({exc}); start a fresh training") from None
    changed = sorted(k for k, v in given.to_dict().items() if restored.to_dict().get(k) != v)
    if changed and given != TrainConfig():
        log.warning("resuming with the interrupted run's settings; ignored: %s", ", ".join(changed))
    return restored


__all__ = [
    "ExtraValidation",
    "TrainResult",
    "TrainingData",
    "TrainingInterrupted",
    "ValidationResult",
    "kohya_metadata",
    "load_training_data",
    "resolve_max_steps",
    "score_images",
    "select_checkpoints",
    "train",
    "train_locked",
    "training_cache",
]
