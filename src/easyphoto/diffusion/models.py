"""Load SD1.5, its VAE, ControlNets and user LoRAs once; build the pipelines EasyPhoto needs from them.

:class:`ModelCache` is an explicit object (no module-level state): create one per process or per
worker, pass it to the stages, call :meth:`ModelCache.release` when done. Every weight load is counted
in :attr:`ModelCache.load_count`, so tests can prove a pipeline was built without reading weights again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from easyphoto.config import ModelConfig
from easyphoto.errors import ConfigError, ModelNotFoundError
from easyphoto.registry import effective_source

from .inpaint import lean_inpaint_class
from .sources import (
    _SINGLE_FILE_SUFFIXES,
    SCHEDULERS,
    _diffusers_errors_only,
    _explain_missing,
    _is_url,
    _looks_like_path,
    cache_setup,
    controlnet_config_dir,
    make_scheduler,
    pick_device_dtype,
)

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline, StableDiffusionPipeline

log = logging.getLogger(__name__)


#: ControlNets EasyPhoto knows, by the name stages use, mapped to their :class:`ModelConfig` field.
CONTROLNET_FIELDS: dict[str, str] = {
    "canny": "controlnet_canny",
    "openpose": "controlnet_openpose",
    "color": "controlnet_color",
    "tile": "controlnet_tile",
}

#: Prefix of the adapter names user LoRAs get inside the UNet / text encoder (``easyphoto_user_3``).
LORA_ADAPTER = "easyphoto_user"
#: Adapter name of the LCM-LoRA (fast mode), stacked with the user LoRA.
LCM_ADAPTER = "easyphoto_lcm"


class ModelCache:
    """Loaded SD1.5 components, ControlNets and the current user LoRA; builds pipelines that share them.

    ``config``: which weights and options (default: :class:`ModelConfig` with ``EASYPHOTO_*`` environment
    overrides). ``device``/``dtype`` override the config's. Nothing is read from disk until a component is
    needed; each component is loaded once and every pipeline this cache builds holds the same modules.
    Not thread-safe: one request at a time per cache (the LoRA is set on the shared UNet).

    Example::

        cache = ModelCache(ModelConfig(base_model="runs/tiny"))
        pipe = cache.inpaint_controlnet(["canny", "openpose", "color"])
        cache.set_lora("users/alice/lora.safetensors", 0.9)
    """

    #: The model family (SDXL users run on :class:`~easyphoto.diffusion.sdxl.SDXLCache`).
    family = "sd15"
    #: The ControlNets this family has.
    controlnet_names: tuple[str, ...] = tuple(CONTROLNET_FIELDS)

    def __init__(
        self, config: ModelConfig | None = None, *, device: str | None = None, dtype: str | None = None
    ) -> None:
        self.config, self.device, self.dtype = cache_setup(config, device, dtype)
        if self.config.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler {self.config.scheduler!r} is unknown; choose one of {SCHEDULERS}")
        #: How many times each component was read from disk ("unet", "vae", "controlnet:canny", "lora", …).
        self.load_count: Counter[str] = Counter()
        self._base: dict[str, Any] | None = None
        self._scheduler_config: dict[str, Any] | None = None
        self._noise_scheduler = None
        self._controlnets: dict[str, ControlNetModel] = {}
        self._lora_host: StableDiffusionPipeline | None = None
        self._lora_key: tuple[str, float] | None = None
        self.lora_weight: float | None = None
        #: Loaded user LoRAs, least recently used first: (path, mtime) → adapter name.
        self._user_adapters: OrderedDict[tuple[str, float], str] = OrderedDict()
        self._adapter_serial = 0
        self._lcm_loaded = False
        #: Whether the LCM-LoRA is active (:meth:`set_fast`).
        self.fast = False

    @classmethod
    def from_components(
        cls,
        components: dict[str, Any],
        *,
        config: ModelConfig | None = None,
        device: str | None = "cpu",
        dtype: str | None = None,
    ) -> ModelCache:
        """A cache over modules already in memory (``unet``, ``vae``, ``text_encoder``, ``tokenizer``,
        ``scheduler``, and optionally ``controlnets``: ``{name: ControlNetModel}``), like diffusers'
        dummy components in its own tests: nothing is read from disk. :func:`easyphoto.diffusion.tiny.
        tiny_components` builds a tiny random set."""
        cache = cls(config or ModelConfig(base_model="<in memory>"), device=device, dtype=dtype)
        parts = {k: components[k] for k in ("unet", "vae", "text_encoder", "tokenizer")}
        for name in ("unet", "vae", "text_encoder"):
            parts[name].requires_grad_(False)
            parts[name].eval()
            parts[name].to(cache.device, cache.dtype)
        cache._scheduler_config = dict(components["scheduler"].config)
        cache._base = parts
        for name, net in (components.get("controlnets") or {}).items():
            cache._controlnets[name] = net.to(cache.device, cache.dtype).eval()
        return cache

    # ------------------------------------------------------------------ sources
    @property
    def loads(self) -> int:
        """Total number of weight loads so far (all components)."""
        return sum(self.load_count.values())

    def _lfo(self) -> bool:
        return bool(self.config.local_files_only)

    def controlnet_source(self, name: str) -> str:
        """Where ControlNet ``name`` comes from: the configured value, or ``<base>/controlnet/<name>``.

        A local base folder's ``controlnet/<name>/`` wins over the *default* id only; a value set in the
        config or environment always wins; a default whose registry fallback was downloaded resolves to
        it (:func:`easyphoto.registry.effective_source`).
        """
        if name not in CONTROLNET_FIELDS:
            raise ConfigError(f"unknown ControlNet {name!r}; known: {', '.join(CONTROLNET_FIELDS)}")
        return effective_source(self.config, CONTROLNET_FIELDS[name])

    # ------------------------------------------------------------------ base components
    def _ensure_base(self) -> dict[str, Any]:
        if self._base is None:
            self._base = self._load_base()
        return self._base

    def _load_base(self) -> dict[str, Any]:
        from diffusers import AutoencoderKL

        src = effective_source(self.config, "base_model")
        path = Path(src).expanduser()
        hint_src = (
            f"download it with `huggingface-cli download {src}` (then set HF_HUB_OFFLINE=0 or use the local "
            "folder) or pass a local diffusers folder / .safetensors file with --base-model "
            "(EASYPHOTO_BASE_MODEL)"
        )
        if path.is_file() or (_is_url(src) and src.lower().endswith(_SINGLE_FILE_SUFFIXES)):
            parts = self._load_single_file(src)
        elif path.is_dir():
            if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
                raise ModelNotFoundError(
                    f"base model folder {str(path)!r} is not a diffusers folder (no model_index.json or "
                    "unet/): pass a diffusers SD1.5 folder, a .safetensors checkpoint, or a Hugging Face id"
                )
            parts = self._load_pretrained(str(path), hint_src)
        elif _looks_like_path(src):
            raise ModelNotFoundError(
                f"base model {src!r} does not exist: pass an existing diffusers folder or .safetensors file, "
                "or a Hugging Face id such as stable-diffusion-v1-5/stable-diffusion-v1-5 (--base-model, "
                "EASYPHOTO_BASE_MODEL)"
            )
        else:
            parts = self._load_pretrained(src, hint_src)

        if self.config.vae:
            vae_src = self.config.vae
            vpath = Path(vae_src).expanduser()
            hint = "pass a local VAE folder or .safetensors file, or a valid id, with EASYPHOTO_VAE"
            with _explain_missing("VAE", vae_src, hint):
                if vpath.is_file():
                    cfg_src = self.config.config_dir or (src if path.is_dir() else None)
                    parts["vae"] = AutoencoderKL.from_single_file(
                        str(vpath),
                        config=cfg_src,
                        subfolder="vae" if cfg_src else None,
                        torch_dtype=self.dtype,
                        local_files_only=self._lfo() or cfg_src is not None,
                    )
                elif vpath.is_dir():
                    sub = "vae" if (vpath / "vae" / "config.json").is_file() else None
                    parts["vae"] = AutoencoderKL.from_pretrained(
                        str(vpath), subfolder=sub, torch_dtype=self.dtype
                    )
                elif _looks_like_path(vae_src):
                    raise ModelNotFoundError(f"VAE {vae_src!r} does not exist: {hint}")
                else:
                    parts["vae"] = AutoencoderKL.from_pretrained(
                        vae_src, torch_dtype=self.dtype, local_files_only=self._lfo()
                    )
            self.load_count["vae"] += 1

        for name in ("unet", "vae", "text_encoder"):
            module = parts[name]
            module.requires_grad_(False)
            module.eval()
            if not self.config.cpu_offload and module.device != self.device:
                module.to(self.device)
        if self.config.vae_tiling:
            parts["vae"].enable_tiling()
        return parts

    def _load_pretrained(self, src: str, hint: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        kw = {"local_files_only": self._lfo()}
        with _explain_missing("base model", src, hint):
            self._scheduler_config = dict(
                DPMSolverMultistepScheduler.load_config(src, subfolder="scheduler", **kw)
            )
            tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **kw)
            self.load_count["tokenizer"] += 1
            text_encoder = CLIPTextModel.from_pretrained(
                src, subfolder="text_encoder", dtype=self.dtype, **kw
            )
            self.load_count["text_encoder"] += 1
            unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=self.dtype, **kw)
            self.load_count["unet"] += 1
            vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=self.dtype, **kw)
            self.load_count["vae"] += 1
        return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}

    def _load_single_file(self, src: str) -> dict[str, Any]:
        from diffusers import StableDiffusionPipeline

        cfg_dir = self.config.config_dir
        if cfg_dir is not None and not Path(cfg_dir).expanduser().is_dir() and _looks_like_path(cfg_dir):
            raise ModelNotFoundError(
                f"model config folder {cfg_dir!r} (EASYPHOTO_MODEL_CONFIG_DIR) does not exist"
            )
        hint = (
            "a single-file checkpoint needs SD1.5's diffusers configs: pass a local diffusers SD1.5 folder "
            "with --model-config-dir (EASYPHOTO_MODEL_CONFIG_DIR), e.g. one made by "
            "`huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --exclude '*.safetensors' "
            "'*.bin' '*.ckpt'` or `easyphoto tiny-model`, or go online once"
        )
        with _explain_missing("configs for single-file checkpoint", src, hint):
            pipe = StableDiffusionPipeline.from_single_file(
                src,
                config=str(Path(cfg_dir).expanduser()) if cfg_dir else None,
                torch_dtype=self.dtype,
                local_files_only=self._lfo() or cfg_dir is not None,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        for name in ("unet", "vae", "text_encoder", "tokenizer"):
            self.load_count[name] += 1
        self._scheduler_config = dict(pipe.scheduler.config)
        parts = {k: getattr(pipe, k) for k in ("unet", "vae", "text_encoder", "tokenizer")}
        del pipe
        return parts

    @property
    def unet(self):
        """The shared ``UNet2DConditionModel`` (loaded on first use)."""
        return self._ensure_base()["unet"]

    @property
    def vae(self):
        """The shared ``AutoencoderKL`` (the override from ``config.vae`` when set)."""
        return self._ensure_base()["vae"]

    @property
    def text_encoder(self):
        """The shared ``CLIPTextModel``."""
        return self._ensure_base()["text_encoder"]

    @property
    def tokenizer(self):
        """The shared ``CLIPTokenizer``."""
        return self._ensure_base()["tokenizer"]

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """The base model's ``scheduler/`` config (beta schedule, prediction type, …)."""
        self._ensure_base()
        assert self._scheduler_config is not None
        return dict(self._scheduler_config)

    @property
    def noise_scheduler(self):
        """A ``DDPMScheduler`` with the base model's training schedule (for adding noise in training)."""
        if self._noise_scheduler is None:
            from diffusers import DDPMScheduler

            self._noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        return self._noise_scheduler

    def new_scheduler(self, kind: str | None = None):
        """A fresh inference scheduler (``config.scheduler`` unless ``kind`` is given)."""
        return make_scheduler(self.scheduler_config, kind or self.config.scheduler)

    # ------------------------------------------------------------------ ControlNets
    def controlnet(self, name: str) -> ControlNetModel:
        """The ControlNet ``name`` (canny, openpose, color, tile), loaded on first use."""
        if name in self._controlnets:
            return self._controlnets[name]
        from diffusers import ControlNetModel

        src = self.controlnet_source(name)
        path = Path(src).expanduser()
        env = "EASYPHOTO_" + CONTROLNET_FIELDS[name].upper()
        hint = f"download it with `huggingface-cli download {src}` or pass a local folder or file with {env}"
        if _is_url(src):
            hint = f"run `easyphoto models download controlnet-{name}` or pass a downloaded copy with {env}"
        elif path.exists() or _looks_like_path(src):
            hint = f"pass a diffusers ControlNet folder or an original .safetensors/.pth file with {env}"
        with _explain_missing(f"ControlNet {name!r}", src, hint, offline=self._lfo()):
            if path.is_dir():
                net = ControlNetModel.from_pretrained(str(path), torch_dtype=self.dtype)
            elif path.is_file() or _is_url(src):
                net = self._controlnet_single_file(name, src)
            elif _looks_like_path(src):
                raise ModelNotFoundError(f"ControlNet {name!r}: {src!r} does not exist; {hint}")
            else:
                net = ControlNetModel.from_pretrained(
                    src, torch_dtype=self.dtype, local_files_only=self._lfo()
                )
        self.load_count[f"controlnet:{name}"] += 1
        net.requires_grad_(False)
        net.eval()
        if not self.config.cpu_offload and net.device != self.device:
            net.to(self.device)
        self._controlnets[name] = net
        return net

    def _controlnet_single_file(self, name: str, src: str) -> ControlNetModel:
        """An original-format (A1111 / ControlNet 1.x) file, converted with the canny net's diffusers config.

        The config is made local first (:func:`controlnet_config_dir`): only the offline setting keeps a
        URL's weights from downloading, and a missing config is reported as such, not as a bad file.
        """
        from diffusers import ControlNetModel

        ref = self.controlnet_source("canny") if name != "canny" else None
        config = controlnet_config_dir(ref, name, offline=self._lfo())
        return ControlNetModel.from_single_file(
            src, config=config, torch_dtype=self.dtype, local_files_only=self._lfo()
        )

    # ------------------------------------------------------------------ pipelines
    def _parts(self) -> dict[str, Any]:
        base = self._ensure_base()
        return {
            "vae": base["vae"],
            "text_encoder": base["text_encoder"],
            "tokenizer": base["tokenizer"],
            "unet": base["unet"],
            "scheduler": self.new_scheduler(),
            "safety_checker": None,
            "feature_extractor": None,
            "requires_safety_checker": False,
        }

    def _finish(self, pipe):
        pipe.set_progress_bar_config(disable=True)
        if self.config.attention_slicing:
            pipe.enable_attention_slicing()
        if self.config.cpu_offload:
            if self.device.type != "cuda":
                raise ConfigError("cpu_offload needs a CUDA device (EASYPHOTO_CPU_OFFLOAD=0 on CPU/MPS)")
            pipe.enable_model_cpu_offload(device=self.device)
        return pipe

    def inpaint_controlnet(self, names: Sequence[str]) -> StableDiffusionControlNetInpaintPipeline:
        """An inpainting pipeline guided by the ControlNets ``names`` (in this order).

        One name gives a single ``ControlNetModel``; several give a ``MultiControlNetModel``, whose
        ``image`` and ``controlnet_conditioning_scale`` arguments must be lists of the same length (check
        with :func:`check_control_inputs`: diffusers silently drops nets when a list is too short).
        """
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        names = list(names)
        if not names:
            raise ConfigError("inpaint_controlnet needs at least one ControlNet name")
        if len(set(names)) != len(names):
            raise ConfigError(f"ControlNet names repeat: {names}")
        nets = [self.controlnet(n) for n in names]
        controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
        return self._finish(lean_inpaint_class()(**self._parts(), controlnet=controlnet))

    # ------------------------------------------------------------------ LoRA
    def _host(self) -> StableDiffusionPipeline:
        if self._lora_host is None:
            from diffusers import StableDiffusionPipeline

            self._lora_host = StableDiffusionPipeline(**self._parts())
        return self._lora_host

    def set_lora(self, path: str | Path | None, weight: float = 0.9) -> None:
        """Apply a user LoRA (kohya/A1111 or diffusers ``.safetensors``) at ``weight`` to every pipeline.

        Each file is read once and kept as its own adapter (the base weights are never changed): a new
        weight costs nothing, switching back to one of the last ``config.lora_cache_size`` users costs
        no file read, and :meth:`unload_lora` restores the base model exactly. ``path=None`` removes the
        user LoRAs. The LCM-LoRA of the fast mode stays as it is. EasyPhoto's default weight is 0.9.
        """
        if path is None:
            if self._lcm_loaded:
                for key in list(self._user_adapters):
                    self._delete_user_adapter(key)
                self._apply_adapters()
            else:
                self.unload_lora()
            return
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"LoRA file {str(p)!r} does not exist (train the user first)")
        key = (str(p.resolve()), p.stat().st_mtime)
        host = self._host()
        if key in self._user_adapters:
            self._user_adapters.move_to_end(key)
        else:
            for old in [k for k in self._user_adapters if k[0] == key[0]]:  # the file was rewritten
                self._delete_user_adapter(old)
            self._adapter_serial += 1
            name = f"{LORA_ADAPTER}_{self._adapter_serial}"
            try:
                host.load_lora_weights(str(p), adapter_name=name)
            except (ValueError, KeyError, RuntimeError) as exc:
                with contextlib.suppress(ValueError, KeyError, RuntimeError):
                    host.delete_adapters(name)
                self._lora_key = None
                self._apply_adapters()
                raise ModelNotFoundError(f"{p}: not a LoRA for this SD1.5 model ({exc})") from exc
            self.load_count["lora"] += 1
            self._user_adapters[key] = name
            while len(self._user_adapters) > max(1, int(self.config.lora_cache_size)):
                self._delete_user_adapter(next(iter(self._user_adapters)))
        self._lora_key = key
        self.lora_weight = float(weight)
        self._apply_adapters()

    def _delete_user_adapter(self, key: tuple[str, float]) -> None:
        name = self._user_adapters.pop(key)
        with contextlib.suppress(ValueError, KeyError):
            self._host().delete_adapters(name)
        if self._lora_key == key:
            self._lora_key = None
            self.lora_weight = None

    def set_fast(self, enabled: bool) -> None:
        """Stack the LCM-LoRA (``config.lcm_lora``, read once) on the user LoRA, or switch it off.

        With it, sample with ``new_scheduler("lcm")``, 4–8 steps and guidance 1–2.
        """
        if not enabled:
            if self.fast:
                self.fast = False
                self._apply_adapters()
            return
        if self.fast:  # already on (set_lora keeps it in the active set)
            return
        src = effective_source(self.config, "lcm_lora")
        if not src:
            raise ConfigError(
                "fast mode needs LCM-LoRA weights: set EASYPHOTO_LCM_LORA (ModelConfig.lcm_lora) to "
                "latent-consistency/lcm-lora-sdv1-5, a local folder or a .safetensors file"
            )
        if not self._lcm_loaded:
            host = self._host()
            hint = (
                f"download it with `huggingface-cli download {src}` or pass a local folder or "
                ".safetensors file with EASYPHOTO_LCM_LORA"
            )
            path = Path(src).expanduser()
            if _looks_like_path(src) and not path.exists():
                raise ModelNotFoundError(f"LCM-LoRA {src!r} does not exist; {hint}")
            kw: dict[str, Any] = {} if path.exists() else {"local_files_only": self._lfo()}
            where = str(path) if path.exists() else src
            with _explain_missing("LCM-LoRA", src, hint), _diffusers_errors_only():
                try:
                    host.load_lora_weights(where, adapter_name=LCM_ADAPTER, **kw)
                except (ValueError, KeyError, RuntimeError) as exc:
                    with contextlib.suppress(ValueError, KeyError, RuntimeError):
                        host.delete_adapters(LCM_ADAPTER)
                    raise ModelNotFoundError(f"{src}: not an LCM-LoRA for this SD1.5 model ({exc})") from exc
            self.load_count["lcm_lora"] += 1
            self._lcm_loaded = True
        self.fast = True
        self._apply_adapters()

    def _apply_adapters(self) -> None:
        """Activate the loaded adapters that are switched on; none on → the exact base model."""
        if self._base is None or (not self._user_adapters and not self._lcm_loaded):
            return
        names, weights = [], []
        if self._lora_key is not None:
            names.append(self._user_adapters[self._lora_key])
            weights.append(float(self.lora_weight if self.lora_weight is not None else 1.0))
        if self.fast and self._lcm_loaded:
            names.append(LCM_ADAPTER)
            weights.append(1.0)
        host = self._host()
        if names:
            host.enable_lora()
            host.set_adapters(names, adapter_weights=weights)
        else:
            host.disable_lora()
        for part in ("unet", "text_encoder"):  # inference state: peft marks active adapters trainable
            self._base[part].requires_grad_(False)

    def reset(self) -> list[str]:
        """Bring the shared modules back to the state the next job expects; returns what was cleaned.

        A job that failed half-way (a training whose optimizer could not be built, an out-of-memory
        error during a step) can leave a foreign adapter on the UNet or text encoder, modules in
        training mode, gradients switched on or gradient checkpointing enabled. Every adapter this cache
        did not load itself is deleted; the user LoRAs and the LCM-LoRA it manages are kept. Called by
        the job worker after every job, whatever its outcome.
        """
        if self._base is None:
            return []
        from .lora import clean_for_inference

        ours = set(self._user_adapters.values()) | ({LCM_ADAPTER} if self._lcm_loaded else set())
        cleaned = clean_for_inference({p: self._base[p] for p in ("unet", "text_encoder")}, ours)
        if ours:
            self._apply_adapters()
        if cleaned:
            log.warning("model cache cleaned after a job: %s", "; ".join(cleaned))
        return cleaned

    def unload_lora(self, force: bool = False) -> None:
        """Remove every LoRA (user and LCM); the UNet and text encoder are the base modules again."""
        if (not self._user_adapters and not self._lcm_loaded and not force) or self._base is None:
            return
        host = self._host()
        host.enable_lora()
        host.unload_lora_weights()
        self._user_adapters.clear()
        self._lora_key = None
        self.lora_weight = None
        self._lcm_loaded = False
        self.fast = False

    @property
    def lora_path(self) -> str | None:
        """Path of the LoRA currently applied, or ``None``."""
        return self._lora_key[0] if self._lora_key else None

    # ------------------------------------------------------------------ memory
    def release(self) -> None:
        """Drop every loaded component and free GPU memory; the next use loads them again."""
        self._lora_host = None
        self.__dict__.pop("_face_adapter", None)  # it lived in the host pipeline just dropped
        self._lora_key = None
        self.lora_weight = None
        self._user_adapters.clear()
        self._lcm_loaded = False
        self.fast = False
        self._controlnets.clear()
        self._base = None
        self._noise_scheduler = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            with contextlib.suppress(AttributeError, RuntimeError):
                torch.mps.empty_cache()

    def __repr__(self) -> str:
        loaded = "loaded" if self._base is not None else "not loaded"
        return (
            f"ModelCache(base={self.config.base_model!r}, device={self.device}, dtype={self.dtype}, "
            f"{loaded}, controlnets={sorted(self._controlnets)}, lora={self.lora_path!r})"
        )


def check_control_inputs(names: Sequence[str], images: Sequence[Any], scales: Sequence[float]) -> None:
    """Raise :class:`ConfigError` unless there is exactly one control image and one scale per ControlNet."""
    if not (len(names) == len(images) == len(scales)):
        raise ConfigError(
            f"{len(names)} ControlNets ({', '.join(names)}) need as many control images and scales; "
            f"got {len(images)} images and {len(scales)} scales"
        )


__all__ = [
    "CONTROLNET_FIELDS",
    "LCM_ADAPTER",
    "LORA_ADAPTER",
    "SCHEDULERS",
    "ModelCache",
    "check_control_inputs",
    "make_scheduler",
    "pick_device_dtype",
]
