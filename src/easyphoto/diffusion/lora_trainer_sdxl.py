"""The SDXL face-LoRA trainer on an :class:`~easyphoto.diffusion.sdxl.SDXLCache`'s modules.

:class:`SDXLLoraTrainer` is the SDXL sibling of :class:`~easyphoto.diffusion.lora_trainer.LoraTrainer`
(same settings, :class:`~easyphoto.config.TrainConfig`, and the same interface to the training stage,
:mod:`easyphoto.stages.train`, which picks one or the other by the base model's family): peft LoRA
adapters on the UNet and on *both* text encoders, AdamW (8-bit only on CUDA, refused elsewhere),
optional gradient checkpointing, and cached latents (each training image is encoded by the VAE once per
flip, in float32: SDXL's own VAE overflows in float16). What SDXL adds to a step: the prompt embedding
is both encoders' penultimate hidden states side by side, and the UNet also reads the second encoder's
pooled projection and six size numbers (original size, crop corner, target size; the crop corner is the
random crop's).

Sizes left unset in the settings are SDXL's (1024 px, :meth:`TrainConfig.for_family`). Validation renders
run diffusers' ``StableDiffusionXLPipeline`` over the cache's modules with the live adapters; a
resumable checkpoint holds the peft state of the UNet and both encoders (``unet.``, ``text_encoder.``,
``text_encoder_2.``); :meth:`SDXLLoraTrainer.kohya_state` is the export (``lora_unet_``, ``lora_te1_``,
``lora_te2_``) that diffusers' SDXL pipeline and A1111 load, and that
:mod:`~easyphoto.diffusion.lora_fuse` fuses like SD1.5's (it is key-prefix agnostic).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from easyphoto.config import TrainConfig
from easyphoto.errors import ConfigError

from .lora import TEXT_ENCODER_TARGETS, UNET_TARGETS
from .lora_trainer import (
    TRAIN_ADAPTER,
    AdapterTraining,
    TrainingImages,
    _optimizer_class,
    disable_checkpointing,
    make_accelerator,
)


class SDXLLoraTrainer(AdapterTraining):
    """LoRA adapters on an SDXL cache's UNet and text encoders, their optimizer and the cached latents.

    The training stage's interface is :class:`~easyphoto.diffusion.lora_trainer.LoraTrainer`'s:
    :meth:`step`, ``global_step`` (optimizer steps), ``optimizer``, ``rng`` / ``generator`` (the data and
    noise randomness a resume reseeds), :meth:`inference`, :meth:`render_validation`,
    :meth:`kohya_state`, :meth:`peft_state` / :meth:`load_peft_state`, :meth:`remove_adapters`.
    """

    def __init__(self, cache: Any, data: TrainingImages, config: TrainConfig) -> None:
        import torch
        from accelerate.utils import set_seed
        from diffusers import DDPMScheduler

        config = config.for_family("sdxl")
        if config.resolution % 8:
            raise ConfigError(f"TrainConfig.resolution {config.resolution}: must be a multiple of 8")
        self.cache, self.data, self.config = cache, data, config
        device = cache.device
        optimizer_cls, optimizer_kw = _optimizer_class(config, device)  # refuses 8-bit Adam off CUDA first
        self.accelerator = make_accelerator(config, device, cache.dtype)
        set_seed(config.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        cache.set_scene_lora(None)  # train on the base model: no scene LoRA …
        cache.set_lora(None)  # … and no user LoRA left from painting a portrait
        parts = cache.components()
        self.unet, self.vae = parts["unet"], parts["vae"]
        self.encoders = [parts["text_encoder"], parts["text_encoder_2"]]
        self.tokenizers = [parts["tokenizer"], parts["tokenizer_2"]]
        self.noise_scheduler = DDPMScheduler.from_config(cache.scheduler_config)
        for module in (self.unet, self.vae, *self.encoders):
            module.requires_grad_(False)
        try:
            self.params = self._add_adapters()
            groups = [{"params": self.params["unet"], "lr": config.learning_rate}]
            if self.params["text"]:
                lr = config.learning_rate * config.text_encoder_lr_ratio
                groups.append({"params": self.params["text"], "lr": lr})
            self.optimizer = optimizer_cls(groups, weight_decay=config.weight_decay, **optimizer_kw)
            self.unet.train()
            for te in self.encoders:
                te.train(config.train_text_encoder)
            # mixed precision: accelerate wraps the forwards in autocast and scales the fp16 loss
            self.unet, te1, te2, self.optimizer = self.accelerator.prepare(
                self.unet, *self.encoders, self.optimizer
            )
            self.encoders = [te1, te2]
        except BaseException:
            self.remove_adapters()
            raise
        self.global_step = 0
        self._latent_cache: dict[tuple[int, bool], Any] = {}
        #: How many VAE encodes ran (each image once per flip: the latents are cached).
        self.vae_encodes = 0

    def _add_adapters(self) -> dict[str, list[Any]]:
        """Gaussian-initialised adapters (so a first step already moves the output); trainable weights in
        float32; gradient checkpointing when asked. Returns the trainable parameters by part."""
        from peft import LoraConfig

        cfg = self.config
        parts = [(self.unet, UNET_TARGETS)]
        if cfg.train_text_encoder:
            parts += [(te, TEXT_ENCODER_TARGETS) for te in self.encoders]
        for module, targets in parts:
            lora = LoraConfig(
                r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(targets), init_lora_weights="gaussian"
            )
            module.add_adapter(lora, adapter_name=TRAIN_ADAPTER)  # the active adapter (the scene LoRA is off)
            _enable_lora_layers(module)
            if cfg.gradient_checkpointing:
                enable = getattr(module, "enable_gradient_checkpointing", None) or getattr(
                    module, "activation_checkpointing_enable", None
                )
                (enable or module.gradient_checkpointing_enable)()
        params = {"unet": [p for p in self.unet.parameters() if p.requires_grad], "text": []}
        for te in self.encoders:
            params["text"] += [p for p in te.parameters() if p.requires_grad]
        for p in params["unet"] + params["text"]:
            p.data = p.data.float()
        return params

    # -- data ------------------------------------------------------------------------------------
    def _latents(self, index: int, flip: bool) -> Any:
        """The VAE posterior mean and std of one image (short side → resolution), encoded once."""
        import cv2
        import torch

        key = (index, flip)
        if key not in self._latent_cache:
            image = self.data.images[index]
            res = self.config.resolution
            h, w = image.shape[:2]
            size = (max(res, round(w * res / min(h, w))), max(res, round(h * res / min(h, w))))
            image = cv2.resize(
                image, size, interpolation=cv2.INTER_AREA if min(h, w) > res else cv2.INTER_CUBIC
            )
            image = image[:, ::-1] if flip else image
            pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0
            vae_dtype = self.vae.dtype
            with torch.no_grad():
                self.vae.to(dtype=torch.float32)
                dist = self.vae.encode(pixels[None].to(self.vae.device)).latent_dist
                self.vae.to(dtype=vae_dtype)
            self._latent_cache[key] = (dist.mean, dist.std)
            self.vae_encodes += 1
        return self._latent_cache[key]

    def sample_batch(self) -> dict[str, Any]:
        """Random images, flips and crops: latents (scaled), captions, and SDXL's six size numbers each."""
        import torch

        cfg = self.config
        idx = self.rng.integers(0, len(self.data), cfg.batch_size)
        latents, time_ids, captions = [], [], []
        for i in idx:
            flip = bool(cfg.random_flip and self.rng.random() < 0.5)
            mean, std = self._latents(int(i), flip)
            side = cfg.resolution // 8
            y = int(self.rng.integers(0, mean.shape[-2] - side + 1))
            x = int(self.rng.integers(0, mean.shape[-1] - side + 1))
            crop = (slice(None), slice(None), slice(y, y + side), slice(x, x + side))
            noise = torch.randn(mean[crop].shape, generator=self.generator).to(mean.device)
            latents.append(mean[crop] + std[crop] * noise)
            full = (mean.shape[-2] * 8, mean.shape[-1] * 8)
            time_ids.append([*full, y * 8, x * 8, cfg.resolution, cfg.resolution])
            captions.append(self.data.captions[int(i)])
        scale = self.vae.config.scaling_factor
        return {
            "latents": torch.cat(latents) * scale,
            "time_ids": torch.tensor(time_ids),
            "captions": captions,
        }

    def encode_prompt(self, captions: list[str]) -> tuple[Any, Any]:
        """(prompt embeddings ``[B, 77, d1 + d2]``, pooled ``[B, proj]``), as SDXL's pipeline makes them:
        both encoders' penultimate hidden states, and the second encoder's projected end token."""
        import torch

        device = self.accelerator.device
        states, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
            ids = tokenizer(
                captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)  # fmt: skip
            out = encoder(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's: CLIPTextModelWithProjection's text_embeds
        return torch.cat(states, dim=-1), pooled

    # -- one step --------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Any], noise: Any = None, timesteps: Any = None) -> Any:
        """The diffusion loss of one batch (noise and timesteps random unless given)."""
        import torch
        import torch.nn.functional as F

        device = self.accelerator.device
        latents = batch["latents"].to(device)
        noise = (noise if noise is not None else torch.randn(latents.shape, generator=self.generator)).to(
            device
        )
        if timesteps is None:
            n = self.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, n, (latents.shape[0],), generator=self.generator)
        timesteps = timesteps.to(device).long()
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        embeds, pooled = self.encode_prompt(batch["captions"])
        dtype = self.unet.dtype
        added = {"text_embeds": pooled.to(dtype), "time_ids": batch["time_ids"].to(device, dtype)}
        pred = self.unet(
            noisy.to(dtype), timesteps, embeds.to(dtype), added_cond_kwargs=added, return_dict=False
        )[0]
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ConfigError(f"unsupported prediction type {kind!r}")
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def _accumulated(self) -> tuple[Any, ...]:
        return (self.unet,)

    def _trainable(self) -> list[Any]:
        return self.params["unet"] + self.params["text"]

    # -- validation ------------------------------------------------------------------------------
    def render_validation(self) -> list[np.ndarray]:
        """Text-to-image renders with the current adapters, one per validation seed, by diffusers'
        ``StableDiffusionXLPipeline`` over the cache's modules (``validation_size``², which is also the
        original and target size SDXL is conditioned on)."""
        from diffusers import StableDiffusionXLPipeline

        parts = self.cache.components()  # the shared VAE, tokenizers and a fresh scheduler
        te1, te2 = (self._unwrap(te) for te in self.encoders)
        pipe = StableDiffusionXLPipeline(
            vae=self.vae, text_encoder=te1, text_encoder_2=te2, tokenizer=self.tokenizers[0],
            tokenizer_2=self.tokenizers[1], unet=self._unwrap(self.unet), scheduler=parts["scheduler"],
            force_zeros_for_empty_prompt=True, add_watermarker=False,
        )  # fmt: skip
        size = self.config.validation_size  # set: for_family in __init__
        return self._render(pipe, size, original_size=(size, size), target_size=(size, size))

    # -- export and clean-up -----------------------------------------------------------------------
    def _text_encoders(self) -> dict[str, Any]:
        return {"text_encoder": self.encoders[0], "text_encoder_2": self.encoders[1]}

    def kohya_state(self) -> dict[str, Any]:
        """The adapters as a kohya SDXL state dict (lora_unet_, lora_te1_, lora_te2_; CPU, float32)."""
        from .lora_sdxl import sdxl_kohya_state_dict

        unwrap = self._unwrap
        te1, te2 = (unwrap(te) for te in self.encoders) if self.config.train_text_encoder else (None, None)
        state = sdxl_kohya_state_dict(unwrap(self.unet), te1, te2, adapter_name=TRAIN_ADAPTER)
        return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}

    def remove_adapters(self) -> None:
        """Take the training adapters off the shared modules: the cache's SDXL is its base again."""
        from .lora import delete_adapters

        for model in (self.unet, *self.encoders):
            module = self.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
            delete_adapters(module, names={TRAIN_ADAPTER})
            disable_checkpointing(module)
            module.eval()
            module.requires_grad_(False)


def _enable_lora_layers(module: Any) -> None:
    """Switch the LoRA layers of ``module`` on: a cache that turned its LoRAs off (``disable_lora``, the
    scene or user LoRA removed) leaves its layers disabled, and an adapter added to them would be too."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer) and layer.disable_adapters:
            layer.enable_adapters(True)


__all__ = ["SDXLLoraTrainer"]
