"""The job worker: claims queued jobs one at a time and runs each through its workflow.

A worker process (``python -m easyphoto.jobs worker``) holds one model cache, face analyzer and
portrait generator for its whole life (a second generation loads nothing again). For each job it calls
:func:`easyphoto.workflows.prepare_and_train` or :func:`easyphoto.workflows.generate_batch`, turns their
events into job progress, copies what the UI shows into ``jobs/<id>/files/`` and records the outcome.
Whatever a job does — succeed, fail in setup, run out of memory — the shared model cache is brought back
to its clean state (:meth:`~easyphoto.diffusion.models.ModelCache.reset`) before the next job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import ModelConfig, easyphoto_home
from ..errors import EasyPhotoError, error_info, message
from ..store import atomic_path, pid_alive, user_dir, validate_user_id
from ..users import FACE_ID_FILE, PHOTO_USER, has_checkpoint, work_dir
from .store import CANCELLED, FAILED, INTERRUPTED, SUCCEEDED, Job, JobStore

log = logging.getLogger("easyphoto.jobs")


class JobCancelled(EasyPhotoError):
    """Raised inside the worker when a job's cancellation was requested."""


class _JobLog:
    """Route the ``easyphoto`` loggers into the job's log file while it runs."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.logger = logging.getLogger("easyphoto")

    def __enter__(self) -> _JobLog:
        self.logger.addHandler(self.handler)
        if self.logger.level == logging.NOTSET or self.logger.level > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy a file so that ``dst`` is never seen half-written."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


class Worker:
    """Runs queued jobs one at a time with models kept loaded between jobs.

    ``model_config``: base model etc. (default: :class:`ModelConfig`, which reads ``EASYPHOTO_*``).
    ``parent_pid``: exit (interrupting the running job at its next check) when this process is gone.
    ``stop_file``: stop the same way once this file exists (how the supervisor asks a worker to stop
    on every OS: Windows has no SIGTERM a process can catch). ``store``: the job table (default: the
    SQLite :class:`JobStore` under ``home``; a fleet worker passes its Redis store).
    """

    def __init__(
        self,
        home: Path | None = None,
        *,
        model_config: Any = None,
        parent_pid: int | None = None,
        poll: float = 0.1,
        stop_file: Path | None = None,
        store: Any = None,
    ) -> None:
        self.home = Path(home or easyphoto_home())
        self.stop_file = Path(stop_file) if stop_file is not None else None
        self.store = store if store is not None else JobStore(self.home)
        self.model_config = model_config
        self.parent_pid = parent_pid
        self.poll = poll
        self.pid = os.getpid()
        self.stopping = False
        self._cache: Any = None
        self._job_config: Any = None  # the running job's ModelConfig when it names a base model
        self._analyzer: Any = None
        self._generator: Any = None
        self._maker: Any = None  # text-to-photo's TemplateMaker, over the generator's SDXL cache
        self._cancel_checked = 0.0
        self._cancel_flag = False

    # ------------------------------------------------------------------ lazily loaded models
    @property
    def cache(self) -> Any:
        if self._cache is None:
            from ..diffusion.models import ModelCache

            self._cache = ModelCache(self._job_config or self.model_config or ModelConfig())
        return self._cache

    @property
    def analyzer(self) -> Any:
        if self._analyzer is None:
            from ..face.analyzer import FaceAnalyzer

            self._analyzer = FaceAnalyzer().load()
        return self._analyzer

    @property
    def generator(self) -> Any:
        if self._generator is None:
            from ..workflows import portrait_generator

            self._generator = portrait_generator(self.cache, self.analyzer, home=self.home)
        return self._generator

    # ------------------------------------------------------------------ loop
    def parent_alive(self) -> bool:
        """Whether the parent server still runs: POSIX re-parents an orphan (``getppid`` changes),
        Windows does not (its ``getppid`` keeps the dead parent's id), hence the liveness check too."""
        if self.parent_pid is None:
            return True
        return os.getppid() == self.parent_pid and pid_alive(self.parent_pid)

    def stop_requested(self) -> bool:
        """Whether the worker should stop: a signal set ``stopping``, or the stop file appeared."""
        if not self.stopping and self.stop_file is not None and self.stop_file.exists():
            log.info("worker %d asked to stop (%s)", self.pid, self.stop_file.name)
            self.stopping = True
        return self.stopping

    def run_forever(self) -> None:
        """Claim and run jobs until stopped (stop file, SIGTERM/SIGINT) or the parent process is gone."""
        log.info("worker %d ready (home %s)", self.pid, self.home)
        while not self.stop_requested() and self.parent_alive():
            job = self.store.claim_next(self.pid)
            if job is None:
                time.sleep(self.poll)
                continue
            self.run_job(job)
        log.info("worker %d stopping", self.pid)

    def should_stop(self, job_id: str) -> bool:
        """Polled by the running job: cancellation requested, worker stopping, or parent gone."""
        if self.stopping or not self.parent_alive():
            return True
        now = time.monotonic()
        if now - self._cancel_checked > 0.25:
            self._cancel_checked = now
            self._cancel_flag = self.store.cancel_requested(job_id)
            if self.stop_requested():
                return True
        return self._cancel_flag

    def run_job(self, job: Job) -> None:
        """Run one claimed job and record its outcome (never raises for a job's own errors)."""
        self._cancel_checked, self._cancel_flag = 0.0, False
        folder = self.store.job_dir(job.id)
        (folder / "files").mkdir(parents=True, exist_ok=True)
        with _JobLog(Path(job.log_path)):
            log.info("job %s (%s) started by worker %d, attempt %d", job.id, job.kind, self.pid, job.attempts)
            t0 = time.perf_counter()
            try:
                self._use_base_model(job.params.get("base_model"))
                run = self._run_train if job.kind == "train" else self._run_generate
                result = run(job, folder)
            except BaseException as exc:
                self._record_failure(job, exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                log.info("job %s succeeded in %.1fs", job.id, time.perf_counter() - t0)
                self.store.finish(job.id, self.pid, SUCCEEDED, result=result)
            finally:
                self._clean_models()

    def _use_base_model(self, base_model: str | None) -> None:
        """Load the job's base model (a name the service resolved), keeping the worker's models when it
        is the one loaded: switching frees the old one first (one base model in memory at a time)."""
        default = self.model_config or ModelConfig()
        wanted = default.replace(base_model=base_model) if base_model else default
        if self._cache is not None and self._cache.config == wanted:
            return
        if self._cache is not None:
            log.info("switching base model: %s -> %s", self._cache.config.base_model, wanted.base_model)
            self._cache.release()
        if self._generator is not None and self._generator._sdxl is not None:
            self._generator._sdxl.release()  # SDXL follows the base model too (sdxl_model_config)
        self._cache, self._generator, self._job_config = None, None, wanted
        self._maker = None  # it held the old generator's SDXL cache

    def _record_failure(self, job: Job, exc: BaseException) -> None:
        from ..errors import TrainingInterrupted
        from ..workflows import BatchStopped

        resumable = job.kind == "train" and has_checkpoint(job.user_id, self.home)
        self._clean_after_failure(job, resumable)
        stopped = isinstance(exc, (TrainingInterrupted, JobCancelled, BatchStopped))
        if stopped or not isinstance(exc, Exception):
            state = CANCELLED if self.store.cancel_requested(job.id) else INTERRUPTED
            code = "job.cancelled" if state == CANCELLED else "job.interrupted"
            code += "_resumable" if job.kind == "train" and resumable else ""
            info = {"code": code, "params": {"detail": str(exc)}, "source": None}
            info["message"] = message(code, **info["params"])
            log.warning("job %s %s", job.id, info["message"])
        elif isinstance(exc, EasyPhotoError):
            state, info = FAILED, error_info(exc)
            log.error("job %s failed: %s", job.id, exc)
        else:
            log.exception("job %s failed with an unexpected error", job.id, exc_info=exc)
            # library text and paths stay in the log
            state, info = FAILED, {"code": "job.internal", "params": {}, "source": None}
            info["message"] = message("job.internal")
        # the message in English, and its code in the result so clients can show their own words
        result = {"error": {k: v for k, v in info.items() if k != "message"}}
        self.store.finish(job.id, self.pid, state, result=result, error=info["message"], resumable=resumable)

    def _clean_after_failure(self, job: Job, resumable: bool) -> None:
        """A job that ended without a result keeps only what a retry needs: a training its uploaded
        photos (and its checkpoints when it can resume), a generation nothing but its log."""
        folder = self.store.job_dir(job.id)
        if job.kind == "generate":
            shutil.rmtree(folder / "inputs", ignore_errors=True)
        elif (
            not resumable
        ):  # a resume trains on the prepared set; without a checkpoint a retry prepares again
            shutil.rmtree(folder / "dataset", ignore_errors=True)
            if job.user_id:
                shutil.rmtree(work_dir(job.user_id, self.home), ignore_errors=True)

    def _clean_models(self) -> None:
        """The shared caches (SD1.5, and SDXL when the generator made one: SDXL trainings and portraits
        run on it) back to their clean state, whatever the job left on them."""
        if self._cache is None:
            return
        caches = [self._cache]
        if self._generator is not None and "sdxl" in self._generator.memory.caches:
            caches.append(self._generator.memory.caches["sdxl"])
        try:
            for cache in caches:
                cache.reset()
        except Exception:  # a cache that cannot be cleaned is dropped: the next job loads afresh
            log.exception("could not clean the model caches; they will be reloaded")
            for cache in caches:
                with contextlib.suppress(Exception):
                    cache.release()
            self._cache = self._generator = None

    # ------------------------------------------------------------------ training
    def _training_cache(self) -> Any:
        """The cache of the job's base model: an SDXL base trains on the generator's SDXL cache (the one
        text-to-photo and SDXL users' portraits use), made room for on the device like a portrait of an
        SDXL user (``ModelConfig.sdxl_memory``)."""
        from ..diffusion.families import model_family

        config = self.cache.config
        if model_family(str(config.base_model), local_files_only=bool(config.local_files_only)) == "sdxl":
            return self.generator.use_family("sdxl")
        return self.cache

    def _run_train(self, job: Job, folder: Path) -> dict[str, Any]:
        from ..config import PrepareConfig, TrainConfig
        from ..workflows import prepare_and_train

        params = job.params
        user_id = validate_user_id(params["user_id"])
        files = folder / "files"
        resume = bool(params.get("resume")) and has_checkpoint(user_id, self.home)
        progress = _TrainProgress(self.store, job.id, files)
        result = prepare_and_train(
            user_id,
            None if resume else [folder / "inputs" / p["file"] for p in params["photos"]],
            train_config=TrainConfig.from_layers(params.get("train")),
            prepare_config=PrepareConfig.from_layers(params.get("prepare")),
            cache=self._training_cache(),
            analyzer=self.analyzer,
            home=self.home,
            prepared_dir=folder / "dataset",
            contact_sheet=None if resume else files / "contact_sheet.png",
            on_event=progress,
            should_stop=lambda: self.should_stop(job.id),
            resume=resume,
        )
        face = user_dir(user_id, self.home) / FACE_ID_FILE
        if face.is_file():
            copy_atomic(face, files / FACE_ID_FILE)
        return {
            "user_id": user_id,
            "steps": result.steps,
            "best_score": round(float(result.best_score), 4),
            "fused_steps": list(result.fused_steps),
            "validations": progress.final_validations(result.validations),
            "contact_sheet": "contact_sheet.png" if (files / "contact_sheet.png").is_file() else None,
            "face_id": FACE_ID_FILE if (files / FACE_ID_FILE).is_file() else None,
        }

    # ------------------------------------------------------------------ generation
    def _run_generate(self, job: Job, folder: Path) -> dict[str, Any]:
        from ..config import GenerateConfig
        from ..workflows import generate_batch

        params = job.params
        if params.get("text2photo") is not None:
            return _run_text2photo(self, job, folder)
        ids = list(params["user_ids"])
        files = folder / "files"
        templates = params["templates"]
        total = len(templates)

        tracker = GenerateProgress(total)

        def on_event(event: dict[str, Any]) -> None:
            progress = tracker.update(event)
            if event.get("type") == "step":  # many per second on a GPU: progress only, throttled
                if progress is not None:
                    self.store.set_progress(job.id, progress)
                return
            self.store.add_event(job.id, event, progress)

        batch = generate_batch(
            [(folder / "inputs" / t["file"], t["name"]) for t in templates],
            ids,
            GenerateConfig.from_layers(params.get("generate")),
            files,
            generator=self.generator,
            home=self.home,
            file_name=lambda i, name, _ids: f"portrait_{i:02d}_{name}.png",
            on_event=on_event,
            should_stop=lambda: self.should_stop(job.id),
            **_people_inputs(params, folder),
        )
        photo_users = {PHOTO_USER} if params.get("photos") else set()
        for uid in dict.fromkeys(u for u in ids if u.lower() != "none" and u not in photo_users):
            face = user_dir(uid, self.home) / FACE_ID_FILE
            if face.is_file():
                copy_atomic(face, files / f"face_id_{uid}.png")
        self.store.add_event(job.id, {"type": "done"}, {"stage": "done", "fraction": 1.0})
        images = [{k: v for k, v in img.items() if k != "path"} for img in batch.images]
        return {"images": images, "errors": batch.errors, "user_ids": ids}


def _people_inputs(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A generation job's stored person-as-photos, IP-Adapter image and background picture, as the
    workflows take them (``photos``, ``ip_image``, ``background_image``; ``None`` when not given)."""
    inputs = folder / "inputs"
    return {
        "photos": [inputs / p["file"] for p in params.get("photos", [])] or None,
        "ip_image": inputs / params["ip_image"]["file"] if params.get("ip_image") else None,
        "background_image": (
            inputs / params["background_image"]["file"] if params.get("background_image") else None
        ),
    }


def _run_text2photo(worker: Any, job: Job, folder: Path) -> dict[str, Any]:
    """A text-to-photo job: SDXL draws the template, the portrait pipeline paints the users in
    (:func:`easyphoto.text_to_photo.text_to_photo_files`); the SDXL model stays loaded across jobs."""
    from ..config import GenerateConfig, Text2PhotoConfig
    from ..text_to_photo import resolve_scene_lora, template_maker, text_to_photo_files

    params, files = job.params, folder / "files"
    if worker._maker is None or worker._maker.cache is not worker.generator.sdxl_cache:
        worker._maker = template_maker(worker.generator.sdxl_cache)  # SDXL users share its modules
    t2p = Text2PhotoConfig.from_layers(params["text2photo"])
    pose = folder / "inputs" / params["pose"]["file"] if params.get("pose") else params.get("pose_name")
    tracker = GenerateProgress(1)

    def on_event(event: dict[str, Any]) -> None:
        progress = tracker.update(event)
        if event.get("type") != "step":
            worker.store.add_event(job.id, event, progress)
        elif progress is not None:
            worker.store.set_progress(job.id, progress)

    inputs = _people_inputs(params, folder)
    batch = text_to_photo_files(
        params["user_ids"], t2p, GenerateConfig.from_layers(params.get("generate")), files,
        file_name="portrait_00_text2photo.png", pose=pose, scene_lora=resolve_scene_lora(t2p.scene_lora),
        generator=worker.generator, maker=worker._maker, home=worker.home, on_event=on_event, **inputs,
    )  # fmt: skip
    photo_users = {PHOTO_USER} if inputs["photos"] else set()
    for uid in dict.fromkeys(u for u in params["user_ids"] if u.lower() != "none" and u not in photo_users):
        face = user_dir(uid, worker.home) / FACE_ID_FILE
        if face.is_file():
            copy_atomic(face, files / f"face_id_{uid}.png")
    worker.store.add_event(job.id, {"type": "done"}, {"stage": "done", "fraction": 1.0})
    images = [
        {k: v for k, v in img.items() if k not in ("path", "template_path")}
        | {"template_file": Path(img["template_path"]).name}
        for img in batch.images
    ]
    return {"images": images, "errors": [], "user_ids": list(params["user_ids"])}


class GenerateProgress:
    """A generation's progress from its events: template i/n, face j/m, pass, step k/N and a fraction
    (each template an equal share; within a face the first pass ~75%, the second ~25%, as their
    default step counts 50 × 0.45 and 20 × 0.35 × 1.5² area go). Step updates at most every 0.25 s."""

    #: (start, share) of a face's progress; the background and upscale passes come after the faces.
    PASS_SHARE = {
        "first": (0.0, 0.75),
        "second": (0.75, 0.25),
        "background": (1.0, 0.0),
        "upscale": (1.0, 0.0),
    }

    def __init__(self, templates: int, min_interval_s: float = 0.25) -> None:
        self.state: dict[str, Any] = {"stage": "generate", "templates": templates, "template": 1}
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def update(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The new progress after ``event`` (``None``: a step update skipped by the throttle)."""
        kind, s = event.get("type"), self.state
        if kind == "template":
            s.update(template=event["index"] + 1, face=None, faces=None, step=None, steps=None)
        elif kind == "face":
            s.update(face=event.get("face", 1), faces=event.get("of", 1), step=None, steps=None)
        elif kind == "step":
            s.update(step=event["step"], steps=event["steps"], pass_=event["pass"])
            now = time.monotonic()
            if event["step"] < event["steps"] and now - self._last < self.min_interval_s:
                return None
            self._last = now
        elif kind != "portrait":
            return None
        s["fraction"] = round(self._fraction(), 4)
        return {("pass" if k == "pass_" else k): v for k, v in s.items()}

    def _fraction(self) -> float:
        s = self.state
        within_face = 0.0
        if s.get("steps"):
            start, share = self.PASS_SHARE.get(s.get("pass_", "first"), (0.0, 1.0))
            within_face = start + share * s["step"] / s["steps"]
        faces = s.get("faces") or 1
        within_template = ((s.get("face") or 1) - 1 + within_face) / faces if s.get("face") else 0.0
        return min(1.0, (s["template"] - 1 + within_template) / max(1, s["templates"]))


class _TrainProgress:
    """Turns the training workflow's events into job events and progress (and copies validation
    images into the job's ``files/`` so the UI can show them)."""

    def __init__(self, store: JobStore, job_id: str, files: Path) -> None:
        self.store, self.job_id, self.files = store, job_id, files
        self.validations: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        emit = self.store.add_event
        if kind == "stage":
            emit(self.job_id, event, {"stage": event["stage"], "fraction": 0.0})
        elif kind == "prepare":
            emit(
                self.job_id,
                event,
                {"stage": "prepare", "photo": event["index"] + 1, "photos": event["total"]},
            )
        elif kind == "contact_sheet":
            emit(self.job_id, {"type": "contact_sheet", "file": "contact_sheet.png"})
        elif kind == "prepared":
            event = {k: v for k, v in event.items() if k != "out"} | {"contact_sheet": "contact_sheet.png"}
            progress = {"stage": "train", "kept": event["kept"], "rejected": len(event["rejected"])}
            progress["rejected_photos"] = event["rejected"]  # [{photo, reason, code}]: the UI marks them
            emit(self.job_id, event, progress | {"contact_sheet": "contact_sheet.png"})
        elif kind in ("start", "step"):
            progress = {"stage": "train", "step": event["step"], "max_steps": event["max_steps"]}
            if kind == "step":
                frac = event["step"] / max(1, event["max_steps"])
                progress |= {"loss": round(float(event["loss"]), 5), "eta_s": event.get("eta_s")}
                progress |= {"fraction": round(frac, 4)}
            else:
                progress["fraction"] = 0.0
            emit(self.job_id, event, progress)
        elif kind == "validation":
            self._validation(event)
        elif kind == "done":
            emit(
                self.job_id,
                {k: v for k, v in event.items() if k != "path"},
                {"stage": "done", "fraction": 1.0},
            )

    def _validation(self, event: dict[str, Any]) -> None:
        names = []
        for src in event.get("images", []):
            name = f"val_{Path(src).name}"
            with contextlib.suppress(OSError):
                copy_atomic(Path(src), self.files / name)
                names.append(name)
        entry = {"step": event["step"], "scores": event["scores"], "images": names}
        self.validations[:] = [v for v in self.validations if v["step"] != event["step"]] + [entry]
        self.store.add_event(self.job_id, {"type": "validation", **entry}, {"validations": self.validations})

    def final_validations(self, results: list[Any]) -> list[dict[str, Any]]:
        """Every validation of the run (those from before a resume without images)."""
        out = list(self.validations)
        for v in results:
            if not any(x["step"] == v.step for x in out):
                out.append({"step": v.step, "scores": v.scores, "images": []})
        return sorted(out, key=lambda v: v["step"])


__all__ = ["JobCancelled", "Worker", "copy_atomic"]
