"""Face-LoRA training: the user's "digital double".

:func:`train` fine-tunes a LoRA on SD1.5's UNet and text encoder from a prepared dataset
(:func:`easyphoto.prepare`), validates it every ``validate_every`` steps by rendering images with fixed
seeds and scoring them by face-ID similarity to the user's mean embedding, and at the end fuses the
best checkpoints exactly (:mod:`easyphoto.diffusion.lora_fuse`) into the user model::

    EASYPHOTO_HOME/users/<id>/
        lora.safetensors   kohya/A1111 keys (lora_unet_…, lora_te_…), alpha per module, metadata
        face_id.png        the best validation image      ref.png   the reference photo
        embedding.npy      mean identity embedding        meta.json settings, steps, scores
        validation/        every validation image         train.log the run's log

The user folder appears in one rename when everything is written; a crash leaves the previous model
(if any) untouched and the run's checkpoints in ``EASYPHOTO_HOME/work/<id>/`` for ``resume=True``.
The models come from a :class:`~easyphoto.diffusion.ModelCache`, so validation reuses the loaded
modules (EasyPhoto reloads the base checkpoint from disk at every validation).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import TRIGGER_CAPTION, ModelConfig, TrainConfig, easyphoto_home, env_overrides
from .errors import ConfigError, EasyPhotoError
from .imageio import load_image, save_png
from .store import atomic_dir, user_dir, user_lock, validate_user_id, write_json_atomic

log = logging.getLogger("easyphoto.train")

#: Name of the peft adapter while training.
TRAIN_ADAPTER = "easyphoto_train"

EventCallback = Callable[[dict[str, Any]], None]


class TrainingInterrupted(EasyPhotoError):
    """Training was stopped (cancelled or interrupted); its checkpoints allow ``resume=True``."""


# ----------------------------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """Images and captions to train on, plus the identity the validation is scored against."""

    images: list[np.ndarray]
    captions: list[str]
    mean_embedding: np.ndarray | None
    ref_image: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.images)


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def load_training_data(dataset: str | Path) -> TrainingData:
    """Read a prepared dataset folder (Hugging Face imagefolder: ``metadata.jsonl`` + images).

    The mean embedding (``embedding.npy`` / ``mean_embedding.npy``) and the reference image
    (``ref.png``) are looked for in the folder and its parent.
    """
    root = Path(dataset)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        if (root / "train" / "metadata.jsonl").is_file():
            return load_training_data(root / "train")
        raise ConfigError(
            f"{root}: not a prepared dataset (no metadata.jsonl); run `easyphoto prepare` first"
        )
    images, captions = [], []
    for n, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = row["file_name"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{meta}:{n}: expected a JSON object with 'file_name'") from None
        path = (root / name).resolve()
        if root.resolve() not in path.parents:
            raise ConfigError(f"{meta}:{n}: file_name {name!r} points outside the dataset")
        images.append(load_image(path))
        captions.append(str(row.get("text") or TRIGGER_CAPTION))
    if not images:
        raise ConfigError(f"{root}: the dataset has no images")
    emb_path = _first_existing(
        *(d / n for d in (root, root.parent) for n in ("embedding.npy", "mean_embedding.npy"))
    )
    ref_path = _first_existing(root / "ref.png", root.parent / "ref.png")
    return TrainingData(
        images=images,
        captions=captions,
        mean_embedding=np.load(emb_path).astype(np.float32).ravel() if emb_path else None,
        ref_image=load_image(ref_path) if ref_path else None,
        source=str(root),
    )


def resolve_max_steps(config: TrainConfig, n_photos: int) -> int:
    """Optimizer steps to run: ``config.max_steps`` or ``min(n × steps_per_photo, cap)``."""
    if config.max_steps is not None:
        if config.max_steps < 1:
            raise ConfigError(f"max_steps must be ≥ 1, got {config.max_steps}")
        return int(config.max_steps)
    return max(1, min(n_photos * config.steps_per_photo, config.max_steps_cap))


# ----------------------------------------------------------------------------------------- trainer


@dataclass
class ValidationResult:
    """Scores of one checkpoint's validation images."""

    step: int
    scores: list[float]
    images: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else 0.0


class LoraTrainer:
    """The training loop's state: LoRA adapters on the cache's UNet/text encoder, optimizer, data.

    Kept small and explicit so tests can drive single steps (:meth:`step`) on tiny models.
    """

    def __init__(self, cache: Any, data: TrainingData, config: TrainConfig) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from peft import LoraConfig

        from .diffusion.lora import TEXT_ENCODER_TARGETS, UNET_TARGETS

        if config.resolution < 64 or config.resolution % 8:
            raise ConfigError(f"resolution must be a multiple of 8 and ≥ 64, got {config.resolution}")
        self.cache = cache
        self.data = data
        self.config = config
        device = cache.device
        mp = config.mixed_precision
        if mp is None:
            mp = "fp16" if device.type == "cuda" else "no"
        self.accelerator = Accelerator(
            gradient_accumulation_steps=config.grad_accum,
            mixed_precision=mp,
            cpu=device.type == "cpu",
        )
        set_seed(config.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)

        if hasattr(cache, "unload_lora"):
            cache.unload_lora()  # train on the base model, not on a user LoRA left from generation
        self.unet = cache.unet
        self.text_encoder = cache.text_encoder
        self.vae = cache.vae
        self.tokenizer = cache.tokenizer
        self.noise_scheduler = cache.noise_scheduler
        for module in (self.unet, self.text_encoder, self.vae):
            module.requires_grad_(False)
        self.unet.add_adapter(
            LoraConfig(
                r=config.rank,
                lora_alpha=config.alpha,
                target_modules=list(UNET_TARGETS),
                init_lora_weights="gaussian",
            ),
            adapter_name=TRAIN_ADAPTER,
        )
        if config.train_text_encoder:
            self.text_encoder.add_adapter(
                LoraConfig(
                    r=config.rank,
                    lora_alpha=config.alpha,
                    target_modules=list(TEXT_ENCODER_TARGETS),
                    init_lora_weights="gaussian",
                ),
                adapter_name=TRAIN_ADAPTER,
            )
        self._set_active_adapter()
        # Trainable LoRA parameters stay in fp32 even when the frozen base is fp16.
        unet_params = [p for p in self.unet.parameters() if p.requires_grad]
        te_params = [p for p in self.text_encoder.parameters() if p.requires_grad]
        for p in unet_params + te_params:
            p.data = p.data.float()
        if config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if config.train_text_encoder:
                self.text_encoder.gradient_checkpointing_enable()
        groups = [{"params": unet_params, "lr": config.learning_rate}]
        if te_params:
            groups.append({"params": te_params, "lr": config.learning_rate * config.text_encoder_lr_ratio})
        optimizer_cls: Any = torch.optim.AdamW
        optimizer_kw: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
        if config.use_8bit_adam:
            if device.type != "cuda":
                raise ConfigError("use_8bit_adam needs a CUDA GPU (bitsandbytes)")
            try:
                import bitsandbytes as bnb
            except ImportError:
                raise ConfigError("use_8bit_adam needs `pip install bitsandbytes`") from None
            optimizer_cls, optimizer_kw = bnb.optim.AdamW8bit, {}
        self.optimizer = optimizer_cls(groups, weight_decay=config.weight_decay, **optimizer_kw)
        self.unet.train()
        self.text_encoder.train(config.train_text_encoder)
        self.unet, self.text_encoder, self.optimizer = self.accelerator.prepare(
            self.unet, self.text_encoder, self.optimizer
        )
        self.params = unet_params + te_params
        self.global_step = 0
        self._latent_cache: dict[tuple[int, bool], tuple[Any, Any]] = {}
        self._token_cache: dict[str, Any] = {}

    # -- adapters --------------------------------------------------------------------------------
    def _set_active_adapter(self) -> None:
        self._unwrap(self.unet).set_adapters(TRAIN_ADAPTER)
        if self.config.train_text_encoder:
            from peft.tuners.tuners_utils import BaseTunerLayer

            for module in self._unwrap(self.text_encoder).modules():
                if isinstance(module, BaseTunerLayer):
                    module.set_adapter(TRAIN_ADAPTER)

    def _unwrap(self, model: Any) -> Any:
        return self.accelerator.unwrap_model(model) if hasattr(self, "accelerator") else model

    def kohya_state(self) -> dict[str, Any]:
        """The current adapters as a kohya state dict (CPU, fp32)."""
        from .diffusion.lora import kohya_state_dict

        te = self._unwrap(self.text_encoder) if self.config.train_text_encoder else None
        state = kohya_state_dict(self._unwrap(self.unet), te, adapter_name=TRAIN_ADAPTER)
        return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}

    def peft_state(self) -> dict[str, Any]:
        """The adapters as peft state dicts, for resuming."""
        from peft.utils import get_peft_model_state_dict

        out = {
            f"unet.{k}": v.detach().cpu()
            for k, v in get_peft_model_state_dict(
                self._unwrap(self.unet), adapter_name=TRAIN_ADAPTER, save_embedding_layers=False
            ).items()
        }
        if self.config.train_text_encoder:
            te = get_peft_model_state_dict(
                self._unwrap(self.text_encoder), adapter_name=TRAIN_ADAPTER, save_embedding_layers=False
            )
            out.update({f"text_encoder.{k}": v.detach().cpu() for k, v in te.items()})
        return out

    def load_peft_state(self, state: dict[str, Any]) -> None:
        """Restore adapters saved by :meth:`peft_state`."""
        from peft.utils import set_peft_model_state_dict

        for prefix, model in (("unet.", self.unet), ("text_encoder.", self.text_encoder)):
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if part:
                set_peft_model_state_dict(self._unwrap(model), part, adapter_name=TRAIN_ADAPTER)

    def remove_adapters(self) -> None:
        """Take the training adapters off the shared modules (the cache's base is clean again)."""
        unet = self.accelerator.unwrap_model(self.unet, keep_fp32_wrapper=False)
        te = self.accelerator.unwrap_model(self.text_encoder, keep_fp32_wrapper=False)
        unet.delete_adapters(TRAIN_ADAPTER)
        if self.config.train_text_encoder:
            from peft.tuners.tuners_utils import BaseTunerLayer

            for module in te.modules():
                if isinstance(module, BaseTunerLayer):
                    module.delete_adapter(TRAIN_ADAPTER)
            if hasattr(te, "peft_config"):
                te.peft_config.pop(TRAIN_ADAPTER, None)
                if not te.peft_config:
                    del te.peft_config
                    te._hf_peft_config_loaded = False
        unet.eval()
        te.eval()
        unet.requires_grad_(False)
        te.requires_grad_(False)

    # -- data ------------------------------------------------------------------------------------
    def _pixels(self, image: np.ndarray, flip: bool) -> Any:
        """The image with its short side resized to the resolution (and mirrored), as a [-1, 1] tensor."""
        import cv2
        import torch

        res = self.config.resolution
        h, w = image.shape[:2]
        scale = res / min(h, w)
        if min(h, w) != res:
            size = (max(res, round(w * scale)), max(res, round(h * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        if flip:
            image = image[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0

    def _latent_dist(self, index: int, flip: bool) -> tuple[Any, Any]:
        """Mean and std of the VAE posterior of a random ``resolution``² crop of one image.

        The whole resized image is encoded once per (image, flip) and cropped in latent space (8 px
        steps), so non-square datasets do not pay a VAE pass per step.
        """
        import torch

        key = (index, flip)
        if key not in self._latent_cache:
            pixels = self._pixels(self.data.images[index], flip)
            with torch.no_grad():
                dist = self.vae.encode(pixels[None].to(self.vae.device, self.vae.dtype)).latent_dist
            self._latent_cache[key] = (dist.mean.float(), dist.std.float())
        mean, std = self._latent_cache[key]
        side = self.config.resolution // 8
        lh, lw = mean.shape[-2:]
        y = int(self.rng.integers(0, lh - side + 1))
        x = int(self.rng.integers(0, lw - side + 1))
        return mean[..., y : y + side, x : x + side], std[..., y : y + side, x : x + side]

    def _tokens(self, caption: str) -> Any:
        if caption not in self._token_cache:
            self._token_cache[caption] = self.tokenizer(
                caption,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
        return self._token_cache[caption]

    def sample_batch(self) -> dict[str, Any]:
        """A random batch: latents (sampled from the cached posterior), token ids."""
        import torch

        idx = self.rng.integers(0, len(self.data), self.config.batch_size)
        flips = (
            self.rng.random(self.config.batch_size) < 0.5 if self.config.random_flip else [False] * len(idx)
        )
        latents, ids = [], []
        for i, flip in zip(idx, flips, strict=True):
            mean, std = self._latent_dist(int(i), bool(flip))
            noise = torch.randn(mean.shape, generator=self.generator)
            latents.append(mean + std * noise.to(mean.device))
            ids.append(self._tokens(self.data.captions[int(i)]))
        scaling = self.vae.config.scaling_factor
        return {"latents": torch.cat(latents) * scaling, "input_ids": torch.cat(ids)}

    # -- one step --------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Any], noise: Any = None, timesteps: Any = None) -> Any:
        """The diffusion loss of one batch (noise and timesteps random unless given)."""
        import torch
        import torch.nn.functional as F

        device = self.accelerator.device
        latents = batch["latents"].to(device)
        if noise is None:
            noise = torch.randn(latents.shape, generator=self.generator).to(device)
        if timesteps is None:
            n = self.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, n, (latents.shape[0],), generator=self.generator)
        timesteps = timesteps.to(device).long()
        noisy = self.noise_scheduler.add_noise(latents, noise.to(device), timesteps)
        encoder_hidden_states = self.text_encoder(batch["input_ids"].to(device), return_dict=False)[0]
        dtype = self._unwrap(self.unet).dtype
        pred = self.unet(noisy.to(dtype), timesteps, encoder_hidden_states.to(dtype), return_dict=False)[0]
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ConfigError(f"unsupported prediction type {kind!r}")
        return F.mse_loss(pred.float(), target.float().to(device), reduction="mean")

    def step(self, batch: dict[str, Any] | None = None, noise: Any = None, timesteps: Any = None) -> float:
        """One micro-batch: forward, backward, and (every ``grad_accum`` calls) an optimizer step.

        Returns the micro-batch loss. ``global_step`` counts optimizer steps.
        """
        batch = batch if batch is not None else self.sample_batch()
        with self.accelerator.accumulate(self.unet, self.text_encoder):
            loss = self.loss(batch, noise, timesteps)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.params, self.config.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator.sync_gradients:
            self.global_step += 1
        return float(loss.detach())

    # -- validation ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode, no gradients, and autocast under mixed precision (as diffusers' LoRA scripts)."""
        import torch

        unet = self._unwrap(self.unet)
        te = self._unwrap(self.text_encoder)
        was_training = unet.training
        unet.eval()
        te.eval()
        device = self.accelerator.device
        mp = self.accelerator.mixed_precision
        autocast: Any = contextlib.nullcontext()
        if device.type == "cuda" and mp in ("fp16", "bf16"):
            autocast = torch.autocast(device.type, dtype=torch.bfloat16 if mp == "bf16" else torch.float16)
        try:
            with torch.no_grad(), autocast:
                yield
        finally:
            unet.train(was_training)
            te.train(was_training and self.config.train_text_encoder)

    def render_validation(self) -> list[np.ndarray]:
        """Text-to-image renders with the current adapters, one per validation seed."""
        import torch
        from diffusers import StableDiffusionPipeline

        cfg = self.config
        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self._unwrap(self.text_encoder),
            tokenizer=self.tokenizer,
            unet=self._unwrap(self.unet),
            scheduler=self.cache.new_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        images = []
        with self.inference():
            for seed in cfg.validation_seeds:
                gen = torch.Generator(device="cpu").manual_seed(int(seed))
                out = pipe(
                    cfg.validation_prompt,
                    negative_prompt=cfg.validation_negative_prompt,
                    num_inference_steps=cfg.validation_steps,
                    guidance_scale=cfg.validation_guidance,
                    height=cfg.validation_size,
                    width=cfg.validation_size,
                    generator=gen,
                    output_type="np",
                ).images[0]
                images.append(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8))
        return images

    def render_templates(
        self, templates: list[ValidationTemplate], user: Any, analyzer: Any
    ) -> tuple[list[np.ndarray], list[float]]:
        """Paint the user into each validation template with the portrait pipeline's first pass.

        The LoRA being trained is already active on the shared modules, so no file is loaded. Returns
        the full-size portraits and their face-ID scores (no face found → 0).
        """
        from .generate import PortraitGenerator

        gen_cfg = template_validation_config(self.config)
        generator = PortraitGenerator(cache=self.cache, analyzer=analyzer)
        images, scores = [], []
        with self.inference():
            for i, tpl in enumerate(templates):
                out, score = generator.face(
                    tpl.image, tpl.face, user, gen_cfg, int(gen_cfg.seed or 0) + i, timings={}
                )
                images.append(out)
                scores.append(float(score))
        return images, scores


@dataclass
class ValidationTemplate:
    """A template photo that validation paints the user into (its largest face)."""

    name: str
    image: np.ndarray
    face: Any


def template_validation_config(cfg: TrainConfig) -> Any:
    """The :class:`GenerateConfig` of template validation: first pass only, fixed seed."""
    from .config import GenerateConfig

    return GenerateConfig(
        first_steps=cfg.validation_template_steps,
        second_steps=0,
        seed=int(cfg.validation_seeds[0]) if cfg.validation_seeds else 0,
    )


def load_validation_templates(paths: Sequence[str | Path], analyzer: Any) -> list[ValidationTemplate]:
    """Read validation templates; each must show a face (the largest one is repainted)."""
    from .errors import NoFaceError

    out = []
    for p in paths:
        image = load_image(p)
        face = analyzer.largest(image)
        if face is None:
            raise NoFaceError(str(p), "no face found in this validation template")
        out.append(ValidationTemplate(Path(p).name, image, face))
    return out


def validation_user(data: TrainingData, analyzer: Any, folder: Path) -> Any:
    """The training user as the portrait pipeline sees it (reference face, identity, no LoRA file)."""
    from .generate import UserModel

    candidates = ([data.ref_image] if data.ref_image is not None else []) + data.images
    for image in candidates:
        face = analyzer.largest(image)
        if face is not None:
            embedding = data.mean_embedding if data.mean_embedding is not None else face.embedding
            return UserModel("training", folder, None, image, face, embedding, {})
    raise ConfigError(f"{data.source}: no face in the dataset's reference or training images")


def score_images(images: list[np.ndarray], mean_embedding: np.ndarray | None, analyzer: Any) -> list[float]:
    """Face-ID similarity of each image's largest face to the user (no face or no identity → 0)."""
    from .face.analyzer import similarity

    scores = []
    for img in images:
        if mean_embedding is None:
            scores.append(0.0)
            continue
        face = analyzer.largest(img, fallback=False)
        scores.append(similarity(face, mean_embedding) if face is not None else 0.0)
    return scores


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


def work_dir(user_id: str, home: Path | None = None) -> Path:
    """Where an unfinished training of ``user_id`` keeps its checkpoints and log."""
    return (home or easyphoto_home()) / "work" / validate_user_id(user_id)


def train(
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
) -> TrainResult:
    """Train the face LoRA of ``user_id`` and write the user model.

    Args:
        user_id: folder-safe id (see :func:`easyphoto.store.validate_user_id`).
        dataset: a prepared dataset folder, or a ``PreparedSet`` (anything with a ``dataset_dir``).
        config: training settings (:class:`TrainConfig`, EasyPhoto's defaults).
        model_config: base model to train on (default: ``ModelConfig`` with environment overrides).
        cache: a :class:`~easyphoto.diffusion.ModelCache` to reuse (its modules get a temporary adapter
            that is removed at the end).
        on_event: receives progress events: ``start``, ``step`` (step, loss, eta_s), ``validation``
            (step, scores, images), ``done``.
        should_stop: polled every micro-batch; returning True stops with :class:`TrainingInterrupted`
            after saving a checkpoint.
        resume: continue from the last checkpoint of an interrupted run of this user.
        analyzer: a :class:`~easyphoto.FaceAnalyzer` to score validation images (created if None).
        home: ``EASYPHOTO_HOME`` override.

    Raises:
        UserBusyError: another training of this user is running.
        TrainingInterrupted: stopped by ``should_stop`` or Ctrl-C; resumable.
    """
    cfg = config or TrainConfig()
    validate_user_id(user_id)
    home = home or easyphoto_home()
    ds_dir = Path(getattr(dataset, "dataset_dir", dataset))
    with user_lock(user_id, home, what="training"):
        return _train_locked(
            user_id, ds_dir, cfg, model_config, cache, on_event, should_stop, resume, analyzer, home
        )


def _train_locked(
    user_id: str,
    ds_dir: Path,
    cfg: TrainConfig,
    model_config: ModelConfig | None,
    cache: Any,
    on_event: EventCallback | None,
    should_stop: Callable[[], bool] | None,
    resume: bool,
    analyzer: Any,
    home: Path,
) -> TrainResult:
    import torch
    from safetensors.torch import load_file, save_file

    from .diffusion.lora_fuse import fuse_lora_state_dicts
    from .diffusion.models import ModelCache
    from .face.analyzer import FaceAnalyzer

    wdir = work_dir(user_id, home)
    state_file = wdir / "state.json"
    if not resume and wdir.exists():
        shutil.rmtree(wdir)
    if resume and not state_file.is_file():
        raise ConfigError(f"nothing to resume for user {user_id!r}: no interrupted training in {wdir}")
    (wdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (wdir / "validation").mkdir(parents=True, exist_ok=True)
    handler = _file_logger(wdir / "train.log")
    trainer = None
    try:
        data = load_training_data(ds_dir)
        max_steps = resolve_max_steps(cfg, len(data))
        if cache is None:
            cache = ModelCache(model_config or env_overrides(ModelConfig()))
        analyzer = analyzer or FaceAnalyzer()
        validations: list[ValidationResult] = []
        start_step = 0
        if resume:
            saved = json.loads(state_file.read_text())
            saved_cfg = saved.get("config", {})
            for key in ("rank", "alpha", "train_text_encoder", "resolution"):
                if key in saved_cfg and saved_cfg[key] != getattr(cfg, key):
                    cfg = replace(cfg, **{key: type(getattr(cfg, key))(saved_cfg[key])})
            max_steps = int(saved.get("max_steps", max_steps))
        templates: list[ValidationTemplate] = []
        val_user = None
        if cfg.validation_templates:
            # Fail before training, not at the first validation: faces and ControlNets must be there.
            templates = load_validation_templates(cfg.validation_templates, analyzer)
            val_user = validation_user(data, analyzer, wdir)
            for name in template_validation_config(cfg).first_controlnets:
                cache.controlnet(name)
        trainer = LoraTrainer(cache, data, cfg)
        if resume:
            trainer.load_peft_state(load_file(str(wdir / "resume.safetensors")))
            opt_path = wdir / "optimizer.pt"
            if opt_path.is_file():
                trainer.optimizer.load_state_dict(torch.load(opt_path, map_location="cpu", weights_only=True))
            start_step = int(saved["step"])
            trainer.global_step = start_step
            trainer.rng = np.random.default_rng(cfg.seed + start_step)
            trainer.generator.manual_seed(cfg.seed + start_step)
            validations = [ValidationResult(**v) for v in saved.get("validations", [])]
            log.info("resuming %s from step %d of %d", user_id, start_step, max_steps)
        log.info(
            "training %s on %d photos from %s: %d steps, rank %d, alpha %s, device %s",
            user_id,
            len(data),
            data.source,
            max_steps,
            cfg.rank,
            cfg.alpha,
            cache.device,
        )
        _emit(
            on_event,
            {
                "type": "start",
                "user_id": user_id,
                "step": start_step,
                "max_steps": max_steps,
                "photos": len(data),
            },
        )

        def checkpoint(step: int) -> None:
            save_file(trainer.kohya_state(), str(wdir / "checkpoints" / f"step-{step:05d}.safetensors"))
            save_file(
                {k: v.contiguous() for k, v in trainer.peft_state().items()}, str(wdir / "resume.safetensors")
            )
            torch.save(trainer.optimizer.state_dict(), wdir / "optimizer.pt")
            write_json_atomic(
                state_file,
                {
                    "step": step,
                    "max_steps": max_steps,
                    "config": asdict(cfg),
                    "validations": [asdict(v) for v in validations],
                    "dataset": data.source,
                },
            )

        def validate(step: int) -> None:
            t0 = time.perf_counter()
            images = trainer.render_validation()
            scores = score_images(images, data.mean_embedding, analyzer)
            names = [f"step-{step:05d}-seed{seed}.png" for seed in cfg.validation_seeds]
            if templates:
                portraits, template_scores = trainer.render_templates(templates, val_user, analyzer)
                images += portraits
                scores += template_scores
                stems = [re.sub(r"[^A-Za-z0-9_-]+", "_", Path(t.name).stem)[:40] for t in templates]
                names += [f"step-{step:05d}-template{i}-{stem}.png" for i, stem in enumerate(stems)]
            for name, img in zip(names, images, strict=True):
                save_png(img, wdir / "validation" / name)
            result = ValidationResult(step=step, scores=[round(s, 4) for s in scores], images=names)
            validations[:] = [v for v in validations if v.step != step] + [result]
            no_face = sum(1 for s in scores if s == 0.0)
            log.info(
                "validation at step %d: scores %s (%d without a face) in %.1fs",
                step,
                result.scores,
                no_face,
                time.perf_counter() - t0,
            )
            _emit(
                on_event,
                {
                    "type": "validation",
                    "step": step,
                    "scores": result.scores,
                    "score": result.score,
                    "images": [str(wdir / "validation" / n) for n in names],
                },
            )

        t_start = t_last = time.perf_counter()
        step_times: list[float] = []
        losses: list[float] = []
        while trainer.global_step < max_steps:
            before = trainer.global_step
            loss = trainer.step()
            losses.append(loss)
            if trainer.global_step == before:
                if should_stop is not None and should_stop():
                    raise TrainingInterrupted(f"training of {user_id!r} stopped at step {before}")
                continue
            step = trainer.global_step
            now = time.perf_counter()
            step_times.append(now - t_last)
            t_last = now
            mean_loss = float(np.mean(losses[-cfg.grad_accum :]))
            eta = float(np.median(step_times[-20:])) * (max_steps - step)
            _emit(
                on_event,
                {
                    "type": "step",
                    "step": step,
                    "max_steps": max_steps,
                    "loss": mean_loss,
                    "eta_s": round(eta, 1),
                    "elapsed_s": round(time.perf_counter() - t_start, 1),
                },
            )
            if step % cfg.validate_every == 0 or step == max_steps:
                validate(step)
                checkpoint(step)
                t_last = time.perf_counter()  # validation time is not training-step time
            if not math.isfinite(mean_loss):
                raise EasyPhotoError(f"training of {user_id!r} diverged at step {step} (loss {mean_loss})")
            if should_stop is not None and should_stop():
                if step % cfg.validate_every != 0 and step != max_steps:
                    checkpoint(step)
                raise TrainingInterrupted(f"training of {user_id!r} stopped at step {step}")

        # ---- selection and fusion
        ranked = sorted(validations, key=lambda v: (v.score, v.step), reverse=True)
        if not ranked:
            raise EasyPhotoError("no checkpoint was validated")
        if ranked[0].score <= 0.0:
            chosen = [max(validations, key=lambda v: v.step)]
            log.warning("no validation image showed a recognisable face: using the last checkpoint")
        else:
            chosen = [v for v in ranked[: max(1, cfg.fuse_top_k)] if v.score > 0.0]
        states = [load_file(str(wdir / "checkpoints" / f"step-{v.step:05d}.safetensors")) for v in chosen]
        if len(states) == 1:
            lora_state = states[0]
            fuse_info: dict[str, Any] = {"method": "single checkpoint"}
        else:
            lora_state, report = fuse_lora_state_dicts(states, rank=cfg.fuse_rank or cfg.rank)
            fuse_info = {
                "method": "exact ΔW average, SVD to rank",
                "rank": report.rank,
                "max_relative_error": round(report.max_relative_error, 6),
            }
        log.info("selected checkpoints %s (scores %s)", [v.step for v in chosen], [v.score for v in chosen])
        best = ranked[0]
        result = _write_user_model(
            user_id, home, wdir, data, cfg, cache, lora_state, chosen, best, validations, max_steps, fuse_info
        )
        _emit(
            on_event,
            {
                "type": "done",
                "user_id": user_id,
                "step": max_steps,
                "path": str(result.path),
                "best_score": result.best_score,
                "fused_steps": result.fused_steps,
            },
        )
        log.removeHandler(handler)
        handler.close()
        shutil.rmtree(wdir, ignore_errors=True)
        return result
    except KeyboardInterrupt:
        log.warning("training of %s interrupted; resume with resume=True", user_id)
        raise TrainingInterrupted(f"training of {user_id!r} interrupted; run again with --resume") from None
    finally:
        if trainer is not None:
            trainer.remove_adapters()
        if handler in log.handlers:
            log.removeHandler(handler)
            handler.close()


def _write_user_model(
    user_id: str,
    home: Path,
    wdir: Path,
    data: TrainingData,
    cfg: TrainConfig,
    cache: Any,
    lora_state: dict[str, Any],
    chosen: list[ValidationResult],
    best: ValidationResult,
    validations: list[ValidationResult],
    steps: int,
    fuse_info: dict[str, Any],
) -> TrainResult:
    from safetensors.torch import save_file

    from . import __version__

    target = user_dir(user_id, home)
    best_score = float(best.score)
    meta = {
        "user_id": user_id,
        "easyphoto_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base_model": cache.config.base_model,
        "trigger": TRIGGER_CAPTION,
        "rank": int(max(v.shape[0] for k, v in lora_state.items() if k.endswith(".lora_down.weight"))),
        "train_rank": cfg.rank,
        "alpha": cfg.alpha,
        "steps": steps,
        "photos": len(data),
        "fused_steps": [v.step for v in chosen],
        "fusion": fuse_info,
        "best_step": best.step,
        "best_score": round(best_score, 4),
        "validations": [asdict(v) | {"score": round(v.score, 4)} for v in validations],
        "config": asdict(cfg),
    }
    with atomic_dir(target) as stage:
        st_meta = {
            "ss_base_model_version": "sd_v1",
            "ss_sd_model_name": str(cache.config.base_model),
            "ss_network_dim": str(meta["rank"]),
            "ss_network_alpha": str(meta["rank"]),
            "ss_network_module": "networks.lora",
            "ss_tag_frequency": json.dumps({"easyphoto": {TRIGGER_CAPTION: len(data)}}),
            "ss_max_train_steps": str(steps),
            "easyphoto_user_id": user_id,
            "easyphoto_trigger": TRIGGER_CAPTION,
            "easyphoto_scores": json.dumps({str(v.step): round(v.score, 4) for v in validations}),
            "easyphoto_fused_steps": json.dumps(meta["fused_steps"]),
            "format": "pt",
        }
        save_file(
            {k: v.contiguous() for k, v in lora_state.items()},
            str(stage / "lora.safetensors"),
            metadata=st_meta,
        )
        (stage / "validation").mkdir()
        for v in validations:
            for name in v.images:
                src = wdir / "validation" / name
                if src.is_file():
                    shutil.copy2(src, stage / "validation" / name)
        best_image = None
        if best.score > 0 and best.images:
            # A text-to-image render shows the user alone; a template portrait only when none has a face.
            renders = [i for i, n in enumerate(best.images) if "-seed" in n and best.scores[i] > 0]
            pool = renders or list(range(len(best.scores)))
            best_idx = max(pool, key=lambda i: best.scores[i])
            best_image = stage / "validation" / best.images[best_idx]
        if best_image is not None and best_image.is_file():
            shutil.copy2(best_image, stage / "face_id.png")
        elif data.ref_image is not None:
            save_png(data.ref_image, stage / "face_id.png")
        if data.ref_image is not None:
            save_png(data.ref_image, stage / "ref.png")
        if data.mean_embedding is not None:
            np.save(stage / "embedding.npy", data.mean_embedding)
        if (wdir / "train.log").is_file():
            shutil.copy2(wdir / "train.log", stage / "train.log")
        (stage / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return TrainResult(
        user_id=user_id,
        path=target,
        lora_path=target / "lora.safetensors",
        steps=steps,
        fused_steps=meta["fused_steps"],
        best_score=best_score,
        validations=validations,
        meta=meta,
    )
