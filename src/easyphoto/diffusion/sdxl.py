"""SDXL: load the SDXL model once; text-to-photo's templates and SDXL users' portraits run on it.

:class:`SDXLCache` is the SDXL sibling of :class:`~easyphoto.diffusion.models.ModelCache`: an explicit
object holding the SDXL UNet, VAE, both text encoders and tokenizers, the SDXL ControlNets (openpose,
canny), an optional scene LoRA and the current user LoRA, each read from disk once (counted in
:attr:`SDXLCache.load_count`). The model comes from ``ModelConfig.template_model`` (hub id, diffusers
folder or single file; :func:`sdxl_model_config` picks ``base_model`` instead when that is SDXL); its
family is checked from metadata before any weight is read (an SD1.5 model there is a clear error).
:func:`render_template` is the one diffusers call text-to-photo makes; for SDXL users the cache offers
the portrait pipeline's interface of ``ModelCache`` (``inpaint_controlnet``, ``set_lora``, ``set_fast``,
``new_scheduler``, ``controlnet_source``), so :mod:`easyphoto.stages.generate` runs on either.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from easyphoto.config import ModelConfig
from easyphoto.errors import ConfigError, ModelNotFoundError
from easyphoto.registry import effective_source

from .families import check_family, lora_family, model_family
from .sources import (
    _SINGLE_FILE_SUFFIXES,
    _explain_missing,
    _is_url,
    _looks_like_path,
    cache_setup,
    make_scheduler,
)

log = logging.getLogger(__name__)

#: Adapter name of the scene LoRA inside the SDXL UNet / text encoders.
SCENE_ADAPTER = "easyphoto_scene"
#: Adapter name of the SDXL user's LoRA (portraits).
USER_ADAPTER = "easyphoto_user"
#: The SDXL ControlNets by name, and the :class:`ModelConfig` field naming each one's weights.
SDXL_CONTROLNET_FIELDS: dict[str, str] = {
    "openpose": "controlnet_openpose_sdxl",
    "canny": "controlnet_canny_sdxl",
}
_MODULES = ("unet", "vae", "text_encoder", "text_encoder_2")


class SDXLCache:
    """Loaded SDXL components and the ControlNet / scene LoRA of text-to-photo; nothing read before use.

    ``config``: :class:`ModelConfig` (``template_model``, ``template_vae``, ``controlnet_openpose_sdxl``,
    ``controlnet_canny_sdxl``, ``scheduler``, device, dtype, ``local_files_only``). Not thread-safe (the
    LoRAs sit on shared modules).
    """

    #: The model family (the portrait pipeline asks: IP-Adapter and the fast mode are SD1.5's).
    family = "sdxl"
    #: The ControlNets this family has (a portrait pass asking for others runs without them).
    controlnet_names: tuple[str, ...] = tuple(SDXL_CONTROLNET_FIELDS)

    def __init__(
        self, config: ModelConfig | None = None, *, device: str | None = None, dtype: str | None = None
    ) -> None:
        self.config, self.device, self.dtype = cache_setup(config, device, dtype)
        #: How many times each component was read from disk ("sdxl:unet", "sdxl:controlnet:openpose", …).
        self.load_count: Counter[str] = Counter()
        self._base: dict[str, Any] | None = None
        self._scheduler_config: dict[str, Any] | None = None
        self._controlnets: dict[str, Any] = {}
        self._host: Any = None
        self._scene: tuple[str, float] | None = None  # (path, mtime) of the loaded scene LoRA
        #: Loaded user LoRAs, least recently used first: (path, mtime) → adapter name
        #: (``config.sdxl_lora_cache_size`` of them).
        self._users: OrderedDict[tuple[str, float], str] = OrderedDict()
        self._user: tuple[str, float] | None = None  # (path, mtime) of the current user's LoRA
        self._serial = 0
        #: The adapters switched on and their weights (the scene LoRA for templates, the user's for
        #: portraits: never both).
        self._active: dict[str, float] = {}
        #: Weight of the user LoRA while it is switched on (``None``: off).
        self.lora_weight: float | None = None
        #: Where the modules are now: ``self.device``, or ``"cpu"`` while offloaded.
        self.placement: str = str(self.device)

    @classmethod
    def from_components(
        cls, components: dict[str, Any], *, config: ModelConfig | None = None, device: str = "cpu"
    ) -> SDXLCache:
        """A cache over SDXL modules already in memory (``unet``, ``vae``, ``text_encoder``,
        ``text_encoder_2``, ``tokenizer``, ``tokenizer_2``, ``scheduler``, optional ``controlnets``), as
        :func:`easyphoto.diffusion.tiny_sdxl.tiny_sdxl_components` builds: nothing is read from disk."""
        cache = cls(config or ModelConfig(template_model="<in memory>"), device=device)
        parts = {k: components[k] for k in (*_MODULES, "tokenizer", "tokenizer_2")}
        for name in _MODULES:
            parts[name].requires_grad_(False).eval().to(cache.device, cache.dtype)
        cache._scheduler_config = dict(components["scheduler"].config)
        cache._base = parts
        for name, net in (components.get("controlnets") or {}).items():
            cache._controlnets[name] = net.to(cache.device, cache.dtype).eval()
        return cache

    @property
    def loads(self) -> int:
        """Total number of weight loads so far."""
        return sum(self.load_count.values())

    @property
    def loaded(self) -> bool:
        """Whether the base modules are in memory."""
        return self._base is not None

    # ------------------------------------------------------------------ loading
    def check_source(self) -> str:
        """The template model's source, refused early when it is known to be an SD1.5 model."""
        src = str(self.config.template_model)
        found = model_family(src, local_files_only=True)
        check_family("sdxl", found, f"template model {src!r}", "text-to-photo (EASYPHOTO_TEMPLATE_MODEL)")
        return src

    def _ensure_base(self) -> dict[str, Any]:
        if self._base is None:
            self._base = self._load_base()
            self.placement = str(self.device)
        return self._base

    def _load_base(self) -> dict[str, Any]:
        src = self.check_source()
        path = Path(src).expanduser()
        hint = (
            f"download it with `easyphoto models download sdxl` (or `huggingface-cli download {src}`), "
            "or pass a local SDXL diffusers folder / .safetensors file with --template-model "
            "(EASYPHOTO_TEMPLATE_MODEL)"
        )
        if path.is_file() or (_is_url(src) and src.lower().endswith(_SINGLE_FILE_SUFFIXES)):
            parts = self._load_single_file(src)
        elif path.is_dir() or not _looks_like_path(src):
            if path.is_dir() and not (path / "model_index.json").is_file():
                raise ModelNotFoundError(
                    f"template model folder {str(path)!r} is not a diffusers folder (no model_index.json): "
                    "pass an SDXL diffusers folder, a .safetensors checkpoint or a hub id"
                )
            parts = self._load_pretrained(str(path) if path.is_dir() else src, hint)
        else:
            raise ModelNotFoundError(f"template model {src!r} does not exist: {hint}")
        vae = self._load_vae()
        if vae is not None:
            parts["vae"] = vae
        for name in _MODULES:
            parts[name].requires_grad_(False).eval().to(self.device)
        return parts

    def _load_pretrained(self, src: str, hint: str) -> dict[str, Any]:
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        kw: dict[str, Any] = {"local_files_only": bool(self.config.local_files_only)}
        parts: dict[str, Any] = {}
        with _explain_missing("template model", src, hint, offline=bool(self.config.local_files_only)):
            self._scheduler_config = dict(
                EulerDiscreteScheduler.load_config(src, subfolder="scheduler", **kw)
            )
            for name in ("tokenizer", "tokenizer_2"):
                parts[name] = CLIPTokenizer.from_pretrained(src, subfolder=name, **kw)
            parts["text_encoder"] = CLIPTextModel.from_pretrained(
                src, subfolder="text_encoder", dtype=self.dtype, **kw
            )
            parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
                src, subfolder="text_encoder_2", dtype=self.dtype, **kw
            )
            parts["unet"] = UNet2DConditionModel.from_pretrained(
                src, subfolder="unet", torch_dtype=self.dtype, **kw
            )
            parts["vae"] = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=self.dtype, **kw)
        for name in _MODULES:
            self.load_count[f"sdxl:{name}"] += 1
        return parts

    def _load_single_file(self, src: str) -> dict[str, Any]:
        from diffusers import StableDiffusionXLPipeline

        cfg_dir = self.config.config_dir
        if cfg_dir is not None and model_family(cfg_dir) != "sdxl":
            cfg_dir = None  # the configs of the SD1.5 base model do not describe an SDXL file
        hint = (
            "a single-file SDXL checkpoint needs SDXL's diffusers configs offline: point "
            "EASYPHOTO_MODEL_CONFIG_DIR at a local SDXL diffusers folder (e.g. `huggingface-cli download "
            "stabilityai/stable-diffusion-xl-base-1.0 --exclude '*.safetensors'`) or go online once"
        )
        with _explain_missing("configs for the SDXL single-file checkpoint", src, hint):
            pipe = StableDiffusionXLPipeline.from_single_file(
                src, config=str(Path(cfg_dir).expanduser()) if cfg_dir else None, torch_dtype=self.dtype,
                local_files_only=bool(self.config.local_files_only) or cfg_dir is not None,
                add_watermarker=False,
            )  # fmt: skip
        for name in _MODULES:
            self.load_count[f"sdxl:{name}"] += 1
        self._scheduler_config = dict(pipe.scheduler.config)
        return {k: getattr(pipe, k) for k in (*_MODULES, "tokenizer", "tokenizer_2")}

    def vae_source(self) -> str | None:
        """The VAE override to load, or ``None`` for the model's own.

        The default (the fp16-fix VAE) exists because SDXL's VAE overflows in float16: it is used in
        float16 and bfloat16 only; in float32 the model's own VAE is the reference. A VAE set by the
        operator is always used.
        """
        vae = self.config.template_vae
        if not vae:
            return None
        if vae == ModelConfig.default_of("template_vae") and self.dtype == torch.float32:
            return None
        return effective_source(self.config, "template_vae")

    def _load_vae(self) -> Any:
        from diffusers import AutoencoderKL

        src = self.vae_source()
        if src is None:
            return None
        path = Path(src).expanduser()
        hint = "pass a local VAE folder or .safetensors file, or a valid id, with EASYPHOTO_TEMPLATE_VAE"
        with _explain_missing("SDXL VAE", src, hint, offline=bool(self.config.local_files_only)):
            if path.is_file():
                vae = AutoencoderKL.from_single_file(str(path), torch_dtype=self.dtype)
            elif path.is_dir() or not _looks_like_path(src):
                sub = "vae" if (path / "vae" / "config.json").is_file() else None
                vae = AutoencoderKL.from_pretrained(
                    str(path) if path.is_dir() else src, subfolder=sub, torch_dtype=self.dtype,
                    local_files_only=bool(self.config.local_files_only),
                )  # fmt: skip
            else:
                raise ModelNotFoundError(f"SDXL VAE {src!r} does not exist: {hint}")
        self.load_count["sdxl:vae_override"] += 1
        return vae

    def controlnet_source(self, name: str) -> str:
        """Where the SDXL ControlNet ``name`` is read from (a local SDXL folder's ``controlnet/<name>/``
        wins over the default id)."""
        if name not in SDXL_CONTROLNET_FIELDS:
            raise ConfigError(f"unknown SDXL ControlNet {name!r}; known: {', '.join(SDXL_CONTROLNET_FIELDS)}")
        return str(effective_source(self.config, SDXL_CONTROLNET_FIELDS[name]))

    def controlnet(self, name: str = "openpose") -> Any:
        """The SDXL ControlNet ``name`` (:data:`SDXL_CONTROLNET_FIELDS`), loaded on first use."""
        if name in self._controlnets:
            return self._controlnets[name]
        from diffusers import ControlNetModel

        src = self.controlnet_source(name)
        path = Path(src).expanduser()
        env = "EASYPHOTO_" + SDXL_CONTROLNET_FIELDS[name].upper()
        hint = f"pass a diffusers SDXL ControlNet folder or file with {env}"
        with _explain_missing(
            f"SDXL {name} ControlNet", src, hint, offline=bool(self.config.local_files_only)
        ):
            if path.is_dir() or not _looks_like_path(src):
                net = ControlNetModel.from_pretrained(
                    str(path) if path.is_dir() else src, torch_dtype=self.dtype,
                    local_files_only=bool(self.config.local_files_only),
                )  # fmt: skip
            elif path.is_file():
                net = ControlNetModel.from_single_file(str(path), torch_dtype=self.dtype)
            else:
                raise ModelNotFoundError(f"SDXL {name} ControlNet {src!r} does not exist; {hint}")
        self.load_count[f"sdxl:controlnet:{name}"] += 1
        net.requires_grad_(False).eval().to(self.placement)
        self._controlnets[name] = net
        return net

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """The model's ``scheduler/`` config (training adds noise with its schedule)."""
        self._ensure_base()
        return dict(self._scheduler_config or {})

    # ------------------------------------------------------------------ pipelines
    def components(self) -> dict[str, Any]:
        """The shared modules as pipeline keyword arguments (a fresh scheduler each time)."""
        base = self._ensure_base()
        sched = make_scheduler(self._scheduler_config or {}, self.config.scheduler)
        return {**base, "scheduler": sched}

    def pipeline(self, pose: bool = False) -> Any:
        """``StableDiffusionXLPipeline``, or with ``pose`` the ``StableDiffusionXLControlNetPipeline`` with
        the openpose net; both over the same modules (and the same scene LoRA)."""
        from diffusers import StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline

        kw = {"force_zeros_for_empty_prompt": True, "add_watermarker": False}
        if pose:
            pipe = StableDiffusionXLControlNetPipeline(
                **self.components(), controlnet=self.controlnet(), **kw
            )
        else:
            pipe = StableDiffusionXLPipeline(**self.components(), **kw)
        pipe.set_progress_bar_config(disable=True)
        if self.config.vae_tiling:
            pipe.vae.enable_tiling()
        return pipe

    def set_scene_lora(self, path: str | Path | None, weight: float = 0.8) -> None:
        """Style the template with a scene LoRA (SDXL, kohya or diffusers file) at ``weight``; ``None``
        removes it. Refused before loading when the file is an SD1.5 LoRA. The user LoRA is switched off
        (kept loaded) while a scene is on."""
        on = self._place_scene(path)
        self.lora_weight = None
        self._activate({SCENE_ADAPTER: float(weight)} if on else {})

    def set_lora(self, path: str | Path | None, weight: float = 0.9) -> None:
        """Apply an SDXL user's LoRA (kohya or diffusers file) at ``weight`` (EasyPhoto's 0.9) to the
        portrait pipelines; ``None`` switches the users' LoRAs off. An SD1.5 LoRA is refused before
        loading. The last ``config.sdxl_lora_cache_size`` users' LoRAs stay loaded, each its own adapter
        (see :class:`~easyphoto.config.ModelConfig`): a new weight, or a user seen recently, costs no
        file read; a rewritten file is read again. The scene LoRA is off while a user's is on."""
        if path is None:
            self._user, self.lora_weight = None, None
            self._activate({})
            return
        p = self._checked(path, "LoRA", "the SDXL model", " (train the user first)")
        key = (str(p.resolve()), p.stat().st_mtime)
        if key in self._users:
            self._users.move_to_end(key)
        else:
            for old in [k for k in self._users if k[0] == key[0]]:  # the file was rewritten
                self._delete(self._users.pop(old))
            self._serial += 1
            name = f"{USER_ADAPTER}_{self._serial}"
            self._load_adapter(p, name, "lora")
            self._users[key] = name
            while len(self._users) > max(1, int(self.config.sdxl_lora_cache_size)):
                self._delete(self._users.pop(next(iter(self._users))))
        self._user, self.lora_weight = key, float(weight)
        self._activate({self._users[key]: float(weight)})

    def _checked(self, path: str | Path, what: str, target: str, hint: str = "") -> Path:
        """``path`` as a LoRA file of this family: :class:`ModelNotFoundError` when missing, an SD1.5
        file refused before anything is read."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"{what} file {str(p)!r} does not exist{hint}")
        check_family("sdxl", lora_family(p), f"{what} {p.name!r}", target)
        return p

    def _place_scene(self, path: str | Path | None) -> bool:
        """Have the scene adapter hold the LoRA file ``path`` (read only when the file or its mtime
        changed; ``None`` deletes it). Returns whether a scene LoRA is in place."""
        if path is None:
            if self._scene is not None:
                self._delete(SCENE_ADAPTER)
                self._scene = None
            return False
        p = self._checked(path, "scene LoRA", "the template model (SDXL)")
        key = (str(p.resolve()), p.stat().st_mtime)
        if self._scene != key:
            if self._scene is not None:
                self._delete(SCENE_ADAPTER)
                self._scene = None
            self._load_adapter(p, SCENE_ADAPTER, "scene_lora")
            self._scene = key
        return True

    def _loaded(self) -> set[str]:
        """Names of the adapters this cache manages that are loaded now."""
        return set(self._users.values()) | ({SCENE_ADAPTER} if self._scene else set())

    @property
    def lora_path(self) -> str | None:
        """Path of the current user's LoRA (switched on or at weight 0), or ``None``."""
        return self._user[0] if self._user else None

    def set_fast(self, enabled: bool) -> None:
        """The fast mode (LCM-LoRA) is SD1.5's: refused for SDXL users; ``False`` is a no-op."""
        if enabled:
            raise ConfigError(
                "the fast mode (LCM-LoRA) runs on SD1.5 users only: generate SDXL users without --fast"
            )

    def _load_adapter(self, path: Path, name: str, what: str) -> None:
        host = self._lora_host()
        try:
            host.load_lora_weights(str(path), adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            self._delete(name)
            self._activate(self._active)
            raise ModelNotFoundError(f"{path}: not a LoRA for this SDXL model ({exc})") from exc
        self.load_count[f"sdxl:{what}"] += 1

    def _delete(self, name: str) -> None:
        from .lora import delete_adapters

        self._active.pop(name, None)
        base = self._ensure_base()
        for part in ("unet", "text_encoder", "text_encoder_2"):
            delete_adapters(base[part], names={name})

    def _activate(self, weights: dict[str, float]) -> None:
        """Switch on exactly the adapters ``weights`` (none: the exact base model)."""
        self._active = dict(weights)
        if not self._loaded() or self._base is None:
            return
        host = self._lora_host()
        if self._active:
            host.enable_lora()
            host.set_adapters(list(self._active), adapter_weights=list(self._active.values()))
        else:
            host.disable_lora()
        for part in ("unet", "text_encoder", "text_encoder_2"):  # peft marks active adapters trainable
            self._base[part].requires_grad_(False)

    def _lora_host(self) -> Any:
        if self._host is None:
            self._host = self.pipeline(pose=False)
        return self._host

    # ------------------------------------------------------------------ portraits of SDXL users
    def new_scheduler(self, kind: str | None = None) -> Any:
        """A fresh inference scheduler (``config.scheduler`` unless ``kind`` is given; no LCM)."""
        if kind == "lcm":
            self.set_fast(True)  # refused, with the reason
        self._ensure_base()
        return make_scheduler(self._scheduler_config or {}, kind or self.config.scheduler)

    def inpaint_controlnet(self, names: Any) -> Any:
        """diffusers' SDXL ControlNet inpainting pipeline guided by the SDXL ControlNets ``names``
        (several: a ``MultiControlNetModel``, lists of images and scales), over the shared modules and
        their current LoRA; without its unused masked-image VAE pass (:func:`.inpaint.lean_inpaint_class`)."""
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        from .inpaint import lean_inpaint_class

        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"SDXL inpainting needs distinct ControlNet names, got {names}")
        nets = [self.controlnet(n) for n in names]
        controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
        pipe = lean_inpaint_class(sdxl=True)(
            **self.components(), controlnet=controlnet, force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        if self.config.vae_tiling:
            pipe.vae.enable_tiling()
        return pipe

    def reset(self) -> list[str]:
        """Bring the shared modules back to the state the next job expects (as
        :meth:`ModelCache.reset <easyphoto.diffusion.models.ModelCache.reset>`): adapters this cache did
        not load (a failed training's) deleted, training mode, gradients and gradient checkpointing off;
        the scene and user LoRAs it manages are kept. Returns what was cleaned."""
        if self._base is None:
            return []
        from .lora import clean_for_inference

        ours = self._loaded()
        parts = {p: self._base[p] for p in ("unet", "text_encoder", "text_encoder_2")}
        cleaned = clean_for_inference(parts, ours, "sdxl ")
        if ours:
            self._activate(self._active)
        if cleaned:
            log.warning("SDXL model cache cleaned after a job: %s", "; ".join(cleaned))
        return cleaned

    # ------------------------------------------------------------------ memory
    def modules(self) -> list[torch.nn.Module]:
        """Every loaded torch module (base and ControlNets), for memory moves."""
        base = [self._base[n] for n in _MODULES] if self._base is not None else []
        return [*base, *self._controlnets.values()]

    def to(self, device: str | torch.device) -> None:
        """Move every loaded module to ``device`` (``"cpu"`` to offload, ``self.device`` to bring back)."""
        for module in self.modules():
            module.to(device)
        self.placement = str(torch.device(device))

    def release(self) -> None:
        """Drop every loaded component (the next use reads them again) and free device memory."""
        self._host = None
        self._scene = self._user = None
        self._users.clear()
        self._active = {}
        self.lora_weight = None
        self._controlnets.clear()
        self._base = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        state = "loaded" if self._base is not None else "not loaded"
        return f"SDXLCache(template_model={self.config.template_model!r}, device={self.device}, {state})"


def sdxl_model_config(config: ModelConfig) -> ModelConfig:
    """The settings of the process's SDXL model: ``base_model`` when it is an SDXL model (``train
    --base-model SDXL`` trains an SDXL user on it, ``generate --base-model SDXL`` paints SDXL users with
    it), else ``template_model`` (text-to-photo's model, also the base of SDXL users' portraits). One SDXL
    model per process: SDXL users and text-to-photo share its modules (~7 GB in float16)."""
    if model_family(str(config.base_model), local_files_only=True) == "sdxl":
        return config.replace(template_model=str(config.base_model))
    return config


def render_template(
    cache: SDXLCache, prompt: str, negative_prompt: str, *, width: int, height: int, steps: int,
    guidance_scale: float, seed: int, pose: np.ndarray | None = None, pose_weight: float = 1.0,
    on_step: Any = None,
) -> np.ndarray:  # fmt: skip
    """Render one SDXL image (RGB uint8, ``height`` × ``width``) from ``prompt``; with ``pose`` (an
    OpenPose map, RGB uint8, resized to the output) held to it by the openpose ControlNet at
    ``pose_weight``. The initial noise comes from a CPU generator seeded with ``seed``, so a seed gives the
    same image on any device of the same dtype. ``on_step(k, n)`` is called after each step."""
    if width % 8 or height % 8:
        raise ConfigError(f"template size {width}x{height}: both sides must be multiples of 8")
    pipe = cache.pipeline(pose=pose is not None)
    kw: dict[str, Any] = {}
    if pose is not None:
        from PIL import Image

        kw = {
            "image": Image.fromarray(pose).resize((width, height)),
            "controlnet_conditioning_scale": pose_weight,
        }
    if on_step is not None:
        kw["callback_on_step_end"] = lambda p, i, t, d: (on_step(i + 1, steps), d)[1]
    out = pipe(
        prompt=prompt, negative_prompt=negative_prompt or None, width=width, height=height,
        num_inference_steps=steps, guidance_scale=guidance_scale, output_type="np",
        generator=torch.Generator("cpu").manual_seed(int(seed)),
        original_size=(height, width), target_size=(height, width), **kw,
    ).images[0]  # fmt: skip
    if not np.all(np.isfinite(out)):
        raise ConfigError("the SDXL template came out as NaN: use float32 or the fp16-fix VAE (template_vae)")
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


__all__ = [
    "SCENE_ADAPTER",
    "SDXL_CONTROLNET_FIELDS",
    "USER_ADAPTER",
    "SDXLCache",
    "render_template",
    "sdxl_model_config",
]
