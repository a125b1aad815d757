"""Which models are used and where they come from (:class:`ModelConfig`, ``EASYPHOTO_*`` variables)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .base import _env, _Validated


class ModelConfig(_Validated, BaseSettings):
    """Which diffusion weights to load and how (device, dtype, memory options).

    ``base_model``: a Hugging Face id, a local diffusers folder, or a single ``.safetensors``/``.ckpt``
    checkpoint (offline, a single file also needs ``config_dir``: a local diffusers SD1.5 folder whose
    configs describe it). When ``base_model`` is a local folder with a ``controlnet/`` subfolder (like the
    one ``easyphoto tiny-model DIR`` writes), every ControlNet left at its default is taken from
    ``controlnet/<name>/`` instead. ``controlnet_color``: EasyPhoto's ``control_sd15_random_color.pth``,
    an original ControlNet-1.x file (converted with the canny net's config) in no official hub repo: the
    default is the Hugging Face mirror ``ll00292007/easyphoto`` (diffusers fetches hub URLs only); EasyPhoto's
    installer takes https://pai-aigc-photog.oss-cn-hangzhou.aliyuncs.com/webui/control_sd15_random_color.pth
    (the fallback of ``easyphoto models download controlnet-color``). ``cpu_offload`` (CUDA) keeps each
    model on the CPU until it runs: ~3 GB of VRAM instead of ~5. ``lora_cache_size`` 4: each cached user
    LoRA costs ~150 MB in fp16 at rank 128, and switching among cached ones measured 0.013 s, not 0.184 s.
    ``sdxl_lora_cache_size`` 2: an SDXL user's rank-128 LoRA (UNet + both text encoders) is 456 M
    parameters, 0.91 GB in fp16 (counted on SDXL base's architecture), so two — a two-person portrait
    of SDXL users, or jobs alternating between two — read no file, and more is a memory trade.
    ``upscaler_x2`` / ``upscaler_x4``: Real-ESRGAN x2plus / x4plus for ``GenerateConfig.upscale`` (the
    author's release files, fetched on first use; a local base folder's ``upscaler/x2/`` / ``upscaler/x4/``
    wins, as ``easyphoto tiny-model`` writes them). ``face_restorer``: GFPGAN v1.4 for
    ``GenerateConfig.face_restore`` (off by default: trained on FFHQ, whose images are non-commercial;
    a local base folder's ``face_restorer/`` wins).

    Text-to-photo (SDXL): ``template_model`` makes the template, with ``template_vae`` in float16
    (default the fp16-fix VAE: SDXL's own VAE overflows to NaN in float16; in float32 the default means
    the model's own VAE, the numerical reference, unless another VAE is set) and, for a pose,
    ``controlnet_openpose_sdxl`` (xinsir's net, Apache-2.0; a local ``template_model`` folder's
    ``controlnet/openpose/`` wins over the default). ``sdxl_memory``: "offload" (default) moves the
    family not in use to CPU RAM, so SDXL (~7 GB in fp16) and SD1.5 (~4 GB with ControlNets) never sit on
    the GPU together and text-to-photo fits a 16 GB card; "free" drops it (reloaded from disk next time,
    least RAM); "keep" leaves both on the device (fastest when VRAM allows).

    Every field is also read from its environment variable (named in its description); a value given
    to the constructor wins. ``HF_HUB_OFFLINE=1`` never tries the hub.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
        env_prefix="EASYPHOTO_",
        case_sensitive=True,
    )

    base_model: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        min_length=1,
        validation_alias=_env("base_model", "EASYPHOTO_BASE_MODEL"),
        description="Base SD1.5 model: hub id, diffusers folder or single file (EASYPHOTO_BASE_MODEL).",
    )
    vae: str | None = Field(
        None, validation_alias=_env("vae", "EASYPHOTO_VAE"), description="VAE override (EASYPHOTO_VAE)."
    )
    controlnet_canny: str = Field(
        "lllyasviel/control_v11p_sd15_canny",
        validation_alias=_env("controlnet_canny", "EASYPHOTO_CONTROLNET_CANNY"),
        description="Canny ControlNet: id, folder or file (EASYPHOTO_CONTROLNET_CANNY).",
    )
    controlnet_openpose: str = Field(
        "lllyasviel/control_v11p_sd15_openpose",
        validation_alias=_env("controlnet_openpose", "EASYPHOTO_CONTROLNET_OPENPOSE"),
        description="OpenPose ControlNet: id, folder or file (EASYPHOTO_CONTROLNET_OPENPOSE).",
    )
    controlnet_color: str = Field(
        "https://huggingface.co/ll00292007/easyphoto/blob/main/control_sd15_random_color.pth",
        validation_alias=_env("controlnet_color", "EASYPHOTO_CONTROLNET_COLOR"),
        description="Colour ControlNet: id, folder, file or hub URL (EASYPHOTO_CONTROLNET_COLOR).",
    )
    controlnet_tile: str = Field(
        "lllyasviel/control_v11f1e_sd15_tile",
        validation_alias=_env("controlnet_tile", "EASYPHOTO_CONTROLNET_TILE"),
        description="Tile ControlNet: id, folder or file (EASYPHOTO_CONTROLNET_TILE).",
    )
    config_dir: str | None = Field(
        None,
        validation_alias=_env("config_dir", "EASYPHOTO_MODEL_CONFIG_DIR"),
        description="Diffusers configs for single-file checkpoints offline (EASYPHOTO_MODEL_CONFIG_DIR).",
    )
    scheduler: Literal["dpmpp_2m_karras", "dpmpp_2m_sde_karras"] = Field(
        "dpmpp_2m_karras",
        validation_alias=_env("scheduler", "EASYPHOTO_SCHEDULER"),
        description="DPM++ 2M Karras, or EasyPhoto's stochastic 2M SDE Karras (EASYPHOTO_SCHEDULER).",
    )
    device: str | None = Field(
        None,
        pattern=r"^(cpu|mps|cuda(:\d+)?)$",
        validation_alias=_env("device", "EASYPHOTO_DEVICE"),
        description="cpu, cuda, cuda:N or mps; unset picks cuda > mps > cpu (EASYPHOTO_DEVICE).",
    )
    dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        None,
        validation_alias=_env("dtype", "EASYPHOTO_DTYPE"),
        description="Weights dtype; unset: float16 on CUDA, float32 elsewhere (EASYPHOTO_DTYPE).",
    )
    cpu_offload: bool = Field(
        False,
        validation_alias=_env("cpu_offload", "EASYPHOTO_CPU_OFFLOAD"),
        description="CUDA: keep models on the CPU until they run (EASYPHOTO_CPU_OFFLOAD).",
    )
    vae_tiling: bool = Field(
        False,
        validation_alias=_env("vae_tiling", "EASYPHOTO_VAE_TILING"),
        description="Decode large images in tiles (EASYPHOTO_VAE_TILING).",
    )
    attention_slicing: bool = Field(
        False,
        validation_alias=_env("attention_slicing", "EASYPHOTO_ATTENTION_SLICING"),
        description="Slower, less memory (MPS) (EASYPHOTO_ATTENTION_SLICING).",
    )
    local_files_only: bool = Field(
        False,
        validation_alias=_env("local_files_only", "HF_HUB_OFFLINE"),
        description="Never try the hub (HF_HUB_OFFLINE).",
    )
    lcm_lora: str | None = Field(
        None,
        validation_alias=_env("lcm_lora", "EASYPHOTO_LCM_LORA"),
        description="LCM-LoRA of the fast mode: id, folder or file; unset: none (EASYPHOTO_LCM_LORA).",
    )
    ip_adapter: str = Field(
        "h94/IP-Adapter",
        validation_alias=_env("ip_adapter", "EASYPHOTO_IP_ADAPTER"),
        description="IP-Adapter: repo id or folder with models/<file>, models/image_encoder/ "
        "(EASYPHOTO_IP_ADAPTER).",
    )
    ip_adapter_file: str = Field(
        "ip-adapter-full-face_sd15.safetensors",
        validation_alias=_env("ip_adapter_file", "EASYPHOTO_IP_ADAPTER_FILE"),
        description="IP-Adapter weights under models/ (EASYPHOTO_IP_ADAPTER_FILE).",
    )
    upscaler_x2: str = Field(
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
        validation_alias=_env("upscaler_x2", "EASYPHOTO_UPSCALER_X2"),
        description="×2 super-resolution (Real-ESRGAN RRDBNet): .pth/.safetensors file, folder or the "
        "registry URL (EASYPHOTO_UPSCALER_X2).",
    )
    upscaler_x4: str = Field(
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
        validation_alias=_env("upscaler_x4", "EASYPHOTO_UPSCALER_X4"),
        description="×4 super-resolution (Real-ESRGAN RRDBNet): .pth/.safetensors file, folder or the "
        "registry URL (EASYPHOTO_UPSCALER_X4).",
    )
    face_restorer: str = Field(
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
        validation_alias=_env("face_restorer", "EASYPHOTO_FACE_RESTORER"),
        description="Face restoration (GFPGAN v1.3/v1.4): .pth/.safetensors file, folder or the registry URL "
        "(EASYPHOTO_FACE_RESTORER).",
    )
    lora_cache_size: int = Field(
        4,
        ge=1,
        le=64,
        validation_alias=_env("lora_cache_size", "EASYPHOTO_LORA_CACHE"),
        description="User LoRAs kept loaded at once (EASYPHOTO_LORA_CACHE).",
    )
    sdxl_lora_cache_size: int = Field(
        2,
        ge=1,
        le=16,
        validation_alias=_env("sdxl_lora_cache_size", "EASYPHOTO_SDXL_LORA_CACHE"),
        description="SDXL users' LoRAs kept loaded at once (EASYPHOTO_SDXL_LORA_CACHE).",
    )
    template_model: str = Field(
        "stabilityai/stable-diffusion-xl-base-1.0",
        min_length=1,
        validation_alias=_env("template_model", "EASYPHOTO_TEMPLATE_MODEL"),
        description="SDXL model of text-to-photo: hub id, diffusers folder or single file "
        "(EASYPHOTO_TEMPLATE_MODEL).",
    )
    template_vae: str | None = Field(
        "madebyollin/sdxl-vae-fp16-fix",
        validation_alias=_env("template_vae", "EASYPHOTO_TEMPLATE_VAE"),
        description="VAE of the SDXL model; empty: the model's own (EASYPHOTO_TEMPLATE_VAE).",
    )
    controlnet_openpose_sdxl: str = Field(
        "xinsir/controlnet-openpose-sdxl-1.0",
        validation_alias=_env("controlnet_openpose_sdxl", "EASYPHOTO_CONTROLNET_OPENPOSE_SDXL"),
        description="SDXL OpenPose ControlNet of text-to-photo's pose: id, folder or file "
        "(EASYPHOTO_CONTROLNET_OPENPOSE_SDXL).",
    )
    controlnet_canny_sdxl: str = Field(
        "xinsir/controlnet-canny-sdxl-1.0",
        validation_alias=_env("controlnet_canny_sdxl", "EASYPHOTO_CONTROLNET_CANNY_SDXL"),
        description="SDXL Canny ControlNet of SDXL users' portraits: id, folder or file "
        "(EASYPHOTO_CONTROLNET_CANNY_SDXL).",
    )
    sdxl_memory: Literal["keep", "offload", "free"] = Field(
        "offload",
        validation_alias=_env("sdxl_memory", "EASYPHOTO_SDXL_MEMORY"),
        description="SDXL and SD1.5 in one process: keep both on the device, offload the idle one to "
        "RAM, or free it (EASYPHOTO_SDXL_MEMORY).",
    )

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The built-in default of field ``name`` (before any environment variable)."""
        return cls.model_fields[name].default

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **values: Any) -> ModelConfig:
        """Settings from ``environ`` (default: the process environment); ``values`` win."""
        if environ is None:
            return cls(**values)
        names = {
            f.validation_alias: name
            for name, f in cls.model_fields.items()
            if isinstance(f.validation_alias, str)
        }
        from_env = {names[k]: v for k, v in environ.items() if k in names}
        return cls(**{**from_env, **values})
