"""The LoRA training loop's state on a :class:`~easyphoto.diffusion.models.ModelCache`'s modules.

:class:`LoraTrainer` adds peft LoRA adapters to the cache's UNet (and text encoder), holds the optimizer
and the VAE latents of the training images, and runs one micro-batch per :meth:`LoraTrainer.step` under
accelerate (gradient accumulation, mixed precision on CUDA). It knows images and captions, never faces:
the training stage (:mod:`easyphoto.stages.train`) scores what :meth:`LoraTrainer.render_validation`
renders. If construction fails half-way, the adapters it added are removed again, so the shared cache
is never left with a half-built training on it.

What the SD1.5 and SDXL trainers (:class:`~easyphoto.diffusion.lora_trainer_sdxl.SDXLLoraTrainer`)
share lives here once: :class:`AdapterTraining` (evaluation mode for validation renders, the peft state
of a resumable checkpoint, the seeded validation renders), :func:`make_accelerator` and the optimizer
choice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from easyphoto.config import TrainConfig
from easyphoto.errors import ConfigError

#: Name of the peft adapter while training.
TRAIN_ADAPTER = "easyphoto_train"


class TrainingImages(Protocol):
    """What the trainer needs of a dataset: RGB images and one caption each."""

    images: Sequence[np.ndarray]
    captions: Sequence[str]

    def __len__(self) -> int: ...


class AdapterTraining:
    """What every LoRA trainer offers the training stage: the optimizer step (:meth:`step`), evaluation
    mode for the validation renders (:meth:`inference`), the adapters' peft state for a resumable
    checkpoint (:meth:`peft_state`, :meth:`load_peft_state`) and the seeded validation renders
    (:meth:`_render`).

    A subclass sets ``accelerator``, ``config``, ``unet``, ``optimizer`` and ``global_step``, provides
    ``sample_batch()`` and ``loss()``, lists its text encoders by peft-state prefix in
    :meth:`_text_encoders` (SD1.5: ``text_encoder``; SDXL: also ``text_encoder_2``), and names what
    :meth:`step` accumulates over and clips (:meth:`_accumulated`, :meth:`_trainable`).
    """

    accelerator: Any
    config: TrainConfig
    unet: Any
    optimizer: Any
    global_step: int

    def _text_encoders(self) -> dict[str, Any]:
        """The text encoders (as prepared by accelerate) by their peft-state prefix."""
        raise NotImplementedError

    def _accumulated(self) -> tuple[Any, ...]:
        """The models gradient accumulation runs over (accelerate's ``accumulate``)."""
        raise NotImplementedError

    def _trainable(self) -> list[Any]:
        """The trainable LoRA parameters (gradient clipping)."""
        raise NotImplementedError

    def step(self, batch: dict[str, Any] | None = None, noise: Any = None, timesteps: Any = None) -> float:
        """One micro-batch: forward, backward, and (every ``grad_accum`` calls) a clipped optimizer step.

        Returns the micro-batch loss. ``global_step`` counts optimizer steps.
        """
        batch = batch if batch is not None else self.sample_batch()
        with self.accelerator.accumulate(*self._accumulated()):
            loss = self.loss(batch, noise, timesteps)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self._trainable(), self.config.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator.sync_gradients:
            self.global_step += 1
        return float(loss.detach())

    def _unwrap(self, model: Any) -> Any:
        return self.accelerator.unwrap_model(model) if hasattr(self, "accelerator") else model

    def _parts(self) -> dict[str, Any]:
        """The unwrapped UNet and text encoders by peft-state prefix."""
        parts = {"unet": self.unet, **self._text_encoders()}
        return {k: self._unwrap(v) for k, v in parts.items()}

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode, no gradients, and autocast under mixed precision (as diffusers' LoRA scripts)."""
        import torch

        parts = self._parts()
        unet, encoders = parts.pop("unet"), list(parts.values())
        was_training = unet.training
        for module in (unet, *encoders):
            module.eval()
        device = self.accelerator.device
        mp = self.accelerator.mixed_precision
        autocast: Any = contextlib.nullcontext()
        if mp in ("fp16", "bf16") and _autocast_ok(device.type, mp):
            autocast = torch.autocast(device.type, dtype=torch.bfloat16 if mp == "bf16" else torch.float16)
        try:
            with torch.no_grad(), autocast:
                yield
        finally:
            unet.train(was_training)
            for te in encoders:
                te.train(was_training and self.config.train_text_encoder)

    def peft_state(self) -> dict[str, Any]:
        """The adapters as peft state dicts (keys prefixed ``unet.``, ``text_encoder.``, …), for resuming."""
        from peft.utils import get_peft_model_state_dict

        parts = self._parts()
        if not self.config.train_text_encoder:
            parts = {"unet": parts["unet"]}
        out: dict[str, Any] = {}
        for prefix, model in parts.items():
            state = get_peft_model_state_dict(model, adapter_name=TRAIN_ADAPTER, save_embedding_layers=False)
            out.update({f"{prefix}.{k}": v.detach().cpu() for k, v in state.items()})
        return out

    def load_peft_state(self, state: dict[str, Any]) -> None:
        """Restore adapters saved by :meth:`peft_state`."""
        from peft.utils import set_peft_model_state_dict

        for prefix, model in self._parts().items():
            part = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            if part:
                set_peft_model_state_dict(model, part, adapter_name=TRAIN_ADAPTER)

    def _render(self, pipe: Any, size: int, **extra: Any) -> list[np.ndarray]:
        """One ``size``² text-to-image render per validation seed (RGB uint8) with the live adapters."""
        import logging

        import torch

        cfg = self.config
        pipe.set_progress_bar_config(disable=True)
        images = []
        with self.inference():
            for seed in cfg.validation_seeds:
                out = pipe(
                    cfg.validation_prompt,
                    negative_prompt=cfg.validation_negative_prompt,
                    num_inference_steps=cfg.validation_steps,
                    guidance_scale=cfg.validation_guidance,
                    height=size,
                    width=size,
                    generator=torch.Generator(device="cpu").manual_seed(int(seed)),
                    output_type="np",
                    **extra,
                ).images[0]
                if not np.all(np.isfinite(out)):  # an fp16 overflow: a black image scores 0, not a crash
                    logging.getLogger("easyphoto.train").warning("validation render (seed %s) is NaN", seed)
                    out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
                images.append(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8))
        return images


class LoraTrainer(AdapterTraining):
    """The training loop's state: LoRA adapters on the cache's UNet/text encoder, optimizer, data.

    Kept small and explicit so tests can drive single steps (:meth:`step`) on tiny models. Sizes left
    unset in ``config`` are SD1.5's (:meth:`TrainConfig.for_family`: 512).
    """

    def __init__(self, cache: Any, data: TrainingImages, config: TrainConfig) -> None:
        import torch
        from accelerate.utils import set_seed

        config = config.for_family("sd15")
        self.cache = cache
        self.data = data
        self.config = config
        device = cache.device
        optimizer_cls, optimizer_kw = _optimizer_class(config, device)  # refuses before touching the cache
        self.accelerator = make_accelerator(config, device, getattr(cache, "dtype", None))
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
        try:
            self._add_adapters()
            # Trainable LoRA parameters stay in fp32 even when the frozen base is fp16.
            unet_params = [p for p in self.unet.parameters() if p.requires_grad]
            te_params = [p for p in self.text_encoder.parameters() if p.requires_grad]
            for p in unet_params + te_params:
                p.data = p.data.float()
            if config.gradient_checkpointing:
                self.unet.enable_gradient_checkpointing()
                if config.train_text_encoder:
                    te = self.text_encoder
                    enable = (
                        getattr(te, "activation_checkpointing_enable", None)
                        or te.gradient_checkpointing_enable
                    )
                    enable()
            groups = [{"params": unet_params, "lr": config.learning_rate}]
            if te_params:
                groups.append(
                    {"params": te_params, "lr": config.learning_rate * config.text_encoder_lr_ratio}
                )
            self.optimizer = optimizer_cls(groups, weight_decay=config.weight_decay, **optimizer_kw)
            self.unet.train()
            self.text_encoder.train(config.train_text_encoder)
            self.unet, self.text_encoder, self.optimizer = self.accelerator.prepare(
                self.unet, self.text_encoder, self.optimizer
            )
        except BaseException:
            self.unet, self.text_encoder = cache.unet, cache.text_encoder
            self.remove_adapters()
            raise
        self.params = unet_params + te_params
        self.global_step = 0
        self._latent_cache: dict[tuple[int, bool], tuple[Any, Any]] = {}
        self._token_cache: dict[str, Any] = {}

    def _add_adapters(self) -> None:
        from peft import LoraConfig

        from .lora import TEXT_ENCODER_TARGETS, UNET_TARGETS

        cfg = self.config
        parts = [(self.unet, UNET_TARGETS)]
        if cfg.train_text_encoder:
            parts.append((self.text_encoder, TEXT_ENCODER_TARGETS))
        for module, targets in parts:
            lora = LoraConfig(
                r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(targets), init_lora_weights="gaussian"
            )
            module.add_adapter(lora, adapter_name=TRAIN_ADAPTER)
        self._set_active_adapter()

    # -- adapters --------------------------------------------------------------------------------
    def _set_active_adapter(self) -> None:
        self._unwrap(self.unet).set_adapters(TRAIN_ADAPTER)
        if self.config.train_text_encoder:
            from peft.tuners.tuners_utils import BaseTunerLayer

            for module in self._unwrap(self.text_encoder).modules():
                if isinstance(module, BaseTunerLayer):
                    module.set_adapter(TRAIN_ADAPTER)

    def _text_encoders(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder}

    def kohya_state(self) -> dict[str, Any]:
        """The current adapters as a kohya state dict (CPU, fp32)."""
        from ..diffusion.lora import kohya_state_dict

        te = self._unwrap(self.text_encoder) if self.config.train_text_encoder else None
        state = kohya_state_dict(self._unwrap(self.unet), te, adapter_name=TRAIN_ADAPTER)
        return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}

    def remove_adapters(self) -> None:
        """Take the training adapters off the shared modules (the cache's base is clean again).

        Safe on a half-built trainer: whatever was added is removed, gradient checkpointing is switched
        off, and the modules are back in eval mode without gradients.
        """
        from .lora import delete_adapters

        unet = self.accelerator.unwrap_model(self.unet, keep_fp32_wrapper=False)
        te = self.accelerator.unwrap_model(self.text_encoder, keep_fp32_wrapper=False)
        for module in (unet, te):
            delete_adapters(module, names={TRAIN_ADAPTER})
            disable_checkpointing(module)
            module.eval()
            module.requires_grad_(False)

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

    def _accumulated(self) -> tuple[Any, ...]:
        return (self.unet, self.text_encoder)

    def _trainable(self) -> list[Any]:
        return self.params

    # -- validation ------------------------------------------------------------------------------
    def render_validation(self) -> list[np.ndarray]:
        """Text-to-image renders with the current adapters, one per validation seed."""
        from diffusers import StableDiffusionPipeline

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
        return self._render(pipe, self.config.validation_size)  # set: for_family in __init__


def disable_checkpointing(module: Any) -> bool:
    """Switch gradient (activation) checkpointing off on a diffusers or transformers model; True if
    it was on."""
    if hasattr(module, "is_activation_checkpointing"):  # transformers ≥ 5 (the old name warns)
        on = bool(module.is_activation_checkpointing)
    else:
        on = bool(getattr(module, "is_gradient_checkpointing", False))
    if on:
        if hasattr(module, "disable_gradient_checkpointing"):  # diffusers
            module.disable_gradient_checkpointing()
        elif hasattr(module, "activation_checkpointing_disable"):  # transformers ≥ 5
            module.activation_checkpointing_disable()
        else:
            module.gradient_checkpointing_disable()
    return on


def make_accelerator(config: TrainConfig, device: Any, dtype: Any = None) -> Any:
    """accelerate's :class:`~accelerate.Accelerator` for a training on ``device`` (gradient accumulation,
    :func:`mixed_precision`); a mode this device cannot run is a :class:`ConfigError`."""
    import torch
    from accelerate import Accelerator

    mp = mixed_precision(config.mixed_precision, device, dtype)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # accelerate trains on the current GPU: make it the cache's
    try:
        return Accelerator(
            gradient_accumulation_steps=config.grad_accum, mixed_precision=mp, cpu=device.type == "cpu"
        )
    except ValueError as exc:  # e.g. bf16 on a GPU without it, fp16 on an old torch for MPS
        raise ConfigError(f"mixed_precision {mp!r} cannot run on {device}: {exc}") from None


def mixed_precision(requested: str | None, device: Any, dtype: Any = None) -> str:
    """accelerate's mixed-precision mode for a training on ``device`` with frozen weights of ``dtype``.

    ``requested`` (the ``mixed_precision`` setting) wins. Else it follows the weights: ``fp16`` for
    float16 weights on a GPU (CUDA or MPS; the CPU has no fp16 autocast: ``no``), ``bf16`` for bfloat16
    weights, and for float32 weights ``fp16`` on CUDA (autocast, as diffusers' scripts) and ``no`` on
    MPS and the CPU (float32 throughout: fp16 autocast is unsafe on MPS and missing on the CPU).
    """
    import torch

    if requested:
        return requested
    if dtype == torch.float16:
        return "no" if device.type == "cpu" else "fp16"
    if dtype == torch.bfloat16:
        return "bf16"
    return "fp16" if device.type == "cuda" else "no"


def _autocast_ok(device_type: str, mode: str) -> bool:
    """Whether torch can autocast to ``mode`` (fp16 / bf16) on this kind of device."""
    import torch

    if mode == "fp16" and device_type == "cpu":
        return False  # as accelerate: no fp16 autocast on the CPU
    is_available = getattr(getattr(torch, "amp", None), "is_autocast_available", None)
    return bool(is_available(device_type)) if is_available is not None else device_type == "cuda"


def _optimizer_class(config: TrainConfig, device: Any) -> tuple[Any, dict[str, Any]]:
    """AdamW (fused on CUDA) or bitsandbytes' 8-bit AdamW; refuses what this machine cannot run."""
    import torch

    if not config.use_8bit_adam:
        return torch.optim.AdamW, ({"fused": True} if device.type == "cuda" else {})
    if device.type != "cuda":
        raise ConfigError("use_8bit_adam needs a CUDA GPU (bitsandbytes)")
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError("use_8bit_adam needs `pip install bitsandbytes`") from None
    return bnb.optim.AdamW8bit, {}


__all__ = [
    "TRAIN_ADAPTER",
    "AdapterTraining",
    "LoraTrainer",
    "TrainingImages",
    "disable_checkpointing",
    "make_accelerator",
    "mixed_precision",
]
