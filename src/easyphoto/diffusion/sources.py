"""Where weights come from and how they run: device/dtype choice, schedulers, hub/file errors.

Helpers of :class:`~easyphoto.diffusion.models.ModelCache`, kept apart so each reads on its own: which
device and dtype (:func:`pick_device_dtype`), which sampler (:func:`make_scheduler`), whether a source
is a path or a URL, and how a missing model becomes one :class:`ModelNotFoundError` naming it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from easyphoto.errors import ConfigError, ModelNotFoundError

# transformers warns on every run that torchvision is absent and it uses the PIL image processor (which is
# what we want: the pipelines never preprocess images with it).
logging.getLogger("transformers.utils.import_utils").setLevel(logging.ERROR)


class _NoEmptyFp32Notice(logging.Filter):
    """Drops diffusers' "modules … should be kept in float32: []" warning, which every ``.to(dtype)`` of a
    model without such modules prints (each single-file load, each cast); a non-empty list still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


_EMPTY_FP32_FILTER = _NoEmptyFp32Notice()


class _NoOtherAdaptersReport(logging.Filter):
    """Drops transformers' "LOAD REPORT" that lists only our own LoRA adapters' weights as MISSING.

    Loading a user LoRA into a text encoder that already holds another user's adapter (the LoRA cache
    keeps several) makes transformers 5 count every adapter's weights as expected, so it reports the
    *other* adapter's as missing. Measured: the new adapter loads and applies exactly (text-encoder
    output identical to loading it alone). A report with any other status or key still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        rows = [r for r in message.splitlines()[3:] if "|" in r]
        return not rows or not all("| MISSING" in r and ".easyphoto_" in r for r in rows)


_ADAPTERS_REPORT_FILTER = _NoOtherAdaptersReport()


def quiet_libraries() -> None:
    """No per-file "Loading weights" bars and no notices about stacking LoRA adapters; download bars stay.

    Set ``EASYPHOTO_VERBOSE=1`` to keep the libraries' own output (diffusers' spurious "should be kept in
    float32: []" warning and transformers' report of other LoRA adapters as missing stay silenced even
    then: they say nothing true).
    """
    fp32_logger = logging.getLogger("diffusers.models.modeling_utils")
    if _EMPTY_FP32_FILTER not in fp32_logger.filters:
        fp32_logger.addFilter(_EMPTY_FP32_FILTER)
    peft_logger = logging.getLogger("transformers.integrations.peft")
    if _ADAPTERS_REPORT_FILTER not in peft_logger.filters:
        peft_logger.addFilter(_ADAPTERS_REPORT_FILTER)
    if os.environ.get("EASYPHOTO_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    import warnings

    with contextlib.suppress(ImportError):
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()  # transformers switched the hub bars off too: keep downloads visible
    warnings.filterwarnings("ignore", message=r"Already found a `peft_config` attribute")
    warnings.filterwarnings("ignore", message=r"Adapter \S+ was active which is now deleted")


#: Inference schedulers :func:`make_scheduler` builds (DESIGN §4: EasyPhoto samples with DPM++ 2M Karras).
#: ``lcm`` is the Latent Consistency Model sampler for the fast mode (with an LCM-LoRA, 4–8 steps).
SCHEDULERS: tuple[str, ...] = ("dpmpp_2m_karras", "dpmpp_2m_sde_karras", "lcm")

_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")
_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


def cache_setup(config: Any, device: str | None, dtype: str | None) -> tuple[Any, torch.device, torch.dtype]:
    """What a model cache (SD1.5 or SDXL) starts from: the libraries quietened, its
    :class:`~easyphoto.config.ModelConfig` (the default one when ``None``), and its device and dtype —
    the arguments when given, else the config's (:func:`pick_device_dtype`)."""
    from ..config import ModelConfig

    quiet_libraries()
    cfg = config if config is not None else ModelConfig()
    dev, dt = pick_device_dtype(
        device if device is not None else cfg.device, dtype if dtype is not None else cfg.dtype
    )
    return cfg, dev, dt


def pick_device_dtype(
    device: str | None = None, dtype: str | None = None
) -> tuple[torch.device, torch.dtype]:
    """Choose the torch device and dtype: explicit values win, else CUDA > MPS > CPU.

    Defaults: float16 on CUDA (SD1.5 is trained to run in half precision there, half the VRAM), float32 on
    Apple's MPS and on the CPU (float16 on the CPU is slow and lacks kernels; on MPS its VAE decode can
    overflow into black images). An explicit float16 on MPS or the CPU is kept, with a warning. Raises
    :class:`~easyphoto.errors.ConfigError` for an unknown dtype or a device torch cannot use (no CUDA,
    a GPU index past the last one, no MPS: a torch built without it or a macOS before 12.3).
    """
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and bool(mps.is_available())
    if device is None or device == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif mps_ok:
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"device {device!r} is not a torch device (use cpu, cuda, cuda:1, mps)"
            ) from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} requested but torch sees no CUDA GPU (torch {torch.__version__})"
            )
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} requested but torch sees {torch.cuda.device_count()} GPU(s)"
            )
        if dev.type == "mps" and not mps_ok:
            raise ConfigError(f"device {device!r} requested but Apple MPS is not available")
    if dtype is None or dtype == "auto":
        dt = torch.float16 if dev.type == "cuda" else torch.float32
    else:
        key = str(dtype).lower().removeprefix("torch.")
        if key not in _DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not supported (use float16, bfloat16 or float32)")
        dt = _DTYPES[key]
        if dt == torch.float16 and dev.type in ("mps", "cpu"):
            logging.getLogger("easyphoto.diffusion").warning(
                "float16 on %s: %s; float32 is the safe choice there",
                dev.type,
                "images may come out black" if dev.type == "mps" else "slow, some operations are missing",
            )
    return dev, dt


def make_scheduler(scheduler_config: dict[str, Any], kind: str = "dpmpp_2m_karras"):
    """A fresh inference scheduler built from a model's ``scheduler/`` config.

    ``dpmpp_2m_karras``: DPM++ 2M with Karras sigmas, deterministic given the initial noise (good quality
    in 20–50 steps). ``dpmpp_2m_sde_karras``: EasyPhoto's sampler, adds seeded noise at every step.
    ``lcm``: the LCM sampler, for models distilled with latent consistency (an LCM-LoRA), 4–8 steps.
    Schedulers hold per-run state, so each pipeline gets its own.
    """
    from diffusers import DPMSolverMultistepScheduler, LCMScheduler

    if kind not in SCHEDULERS:
        raise ConfigError(f"scheduler {kind!r} is unknown; choose one of {', '.join(SCHEDULERS)}")
    if kind == "lcm":
        return LCMScheduler.from_config(scheduler_config)
    algorithm = "sde-dpmsolver++" if kind == "dpmpp_2m_sde_karras" else "dpmsolver++"
    return DPMSolverMultistepScheduler.from_config(
        scheduler_config, algorithm_type=algorithm, solver_order=2, use_karras_sigmas=True
    )


@contextlib.contextmanager
def _diffusers_errors_only() -> Iterator[None]:
    """Silence diffusers' warnings for a moment (e.g. "no text-encoder keys" for UNet-only LoRAs)."""
    from diffusers.utils import logging as diffusers_logging

    before = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(before)


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    with contextlib.suppress(ImportError):
        from huggingface_hub.errors import EntryNotFoundError

        errors.append(EntryNotFoundError)
    with contextlib.suppress(ImportError):
        import httpx

        errors.append(httpx.HTTPError)
    with contextlib.suppress(ImportError):
        import requests

        errors.append(requests.RequestException)
    return tuple(errors)


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~", "\\"))
        or source.lower().endswith(_SINGLE_FILE_SUFFIXES)
        or source.count("/") > 1
        or (len(source) > 1 and source[1] == ":")
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clause(text: str) -> str:
    """``text`` without colour codes, surrounding blanks or a final period (so joined sentences get one)."""
    return _ANSI.sub("", text).strip().rstrip(".").rstrip()


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (as its traceback shows), outermost first."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not e for e in out):
        out.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return out


def _reason(exc: BaseException) -> str:
    """One line saying why loading failed (type and first line, ≤ 200 characters, no final period).

    Library wrappers hide the cause: diffusers' "Unable to load weights" stands for the real read error
    (e.g. torch's safe unpickler refusing a ``.pth``: said so, with what to do if the file is trusted),
    and its "does not appear to have a file" for the hub's "not in the cache".
    """
    chain = _chain(exc)
    shown = next((e for e in chain if type(e).__name__ == "LocalEntryNotFoundError"), exc)
    if "Unable to load weights" in str(exc):
        shown = chain[-1]
    text = _ANSI.sub("", str(shown))
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. |\.?\n|$)", text)
    if isinstance(shown, pickle.UnpicklingError) and m:
        text = m.group(1)
        if "global" in text.lower():
            return (
                f"torch's safe loader (weights_only=True) refused the file: {_clause(text)}; only if you "
                "trust the file, load it once with torch.load(path, weights_only=False), save its tensors "
                "with safetensors.torch.save_file and use that .safetensors file"
            )
    lines = text.strip().splitlines()
    return f"{type(shown).__name__}: {_clause(lines[0][:200]) if lines else ''}".rstrip(": ")


@contextlib.contextmanager
def _explain_missing(what: str, source: str, hint: str, *, offline: bool = False) -> Iterator[None]:
    """Turn hub / file errors into one :class:`ModelNotFoundError` naming ``what`` and how to provide it.

    ``offline``: the caller forbade the hub (``local_files_only``); ``HF_HUB_OFFLINE`` also counts.
    """
    try:
        yield
    except ModelNotFoundError:
        raise
    except _hub_errors() as exc:
        reason, hint = _reason(exc), _clause(hint)
        if Path(source).expanduser().exists():
            msg = f"{what} {source!r} could not be loaded: {reason}. {hint[:1].upper()}{hint[1:]}."
        else:
            env_offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
            where = (
                "offline mode is on (HF_HUB_OFFLINE / local_files_only)"
                if offline or env_offline
                else "the hub is unreachable"
            )
            msg = f"{what} {source!r} not found locally and {where} (or the id is wrong): {hint}. [{reason}]"
        raise ModelNotFoundError(msg) from None


def controlnet_config_dir(canny: str | None, name: str, *, offline: bool) -> str:
    """A local folder with the diffusers ``config.json`` that converts ControlNet ``name``'s original file.

    ``canny``: the canny net's source (``None`` when converting the canny file itself). Its folder when
    it is one; else its hub id's ``config.json`` (cached, or downloaded unless ``offline``); when canny
    is a file or URL too, diffusers' own SD1.5 choice (our default canny id). Errors name this config
    and the setting that points to it, not the weights file.
    """
    from easyphoto.config import ModelConfig

    from_canny = canny is not None and not (Path(canny).expanduser().is_file() or _is_url(canny))
    ref = canny if from_canny and canny is not None else str(ModelConfig.default_of("controlnet_canny"))
    path = Path(ref).expanduser()
    setting = "EASYPHOTO_CONTROLNET_CANNY (controlnet_canny)"
    if path.is_dir() or _looks_like_path(ref):
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"canny ControlNet {ref!r} is not a folder with a config.json, which converting the {name!r} "
                f"ControlNet file needs: point {setting} at a diffusers ControlNet folder"
            )
        return str(path)
    hint = f"download it with `huggingface-cli download {ref} config.json`, " + (
        f"or point {setting} at a local diffusers ControlNet folder" if from_canny else "or go online once"
    )
    what = f"diffusers config of the canny ControlNet (needed to convert the {name!r} ControlNet file)"
    with _explain_missing(what, ref, hint, offline=offline):
        from huggingface_hub import hf_hub_download

        return str(Path(hf_hub_download(ref, "config.json", local_files_only=offline)).parent)
