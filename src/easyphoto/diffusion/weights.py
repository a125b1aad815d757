"""Single-file networks beside the diffusion models (upscalers, face restorers): where a setting's
file is, and its tensors.

A setting (a :class:`~easyphoto.config.ModelConfig` field) holds a weights file, a folder holding one
(as ``easyphoto tiny-model`` writes), or its registry default, which is downloaded on first use with
progress bars unless offline. Files are ``.safetensors`` or ``.pth`` read with torch's safe unpickler
(``weights_only``), unwrapped from the ``params_ema`` / ``params`` / ``state_dict`` their trainers
(BasicSR) save them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelNotFoundError

#: File types a weights setting may name.
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; :class:`ModelNotFoundError` naming ``what``, the file and the
    reason when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{what} {path}: no such file")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any reader error means: not a weights file we can read)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelNotFoundError(
            f"{what} {path}: not a readable weights file ({type(exc).__name__}: {first})"
        ) from None
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelNotFoundError(f"{what} {path}: holds no state dict of tensors")
    return state


def weights_file(config: Any, setting: str, what: str, *, download: bool = True) -> Path:
    """The file ``config.<setting>`` means: a file, a folder holding exactly one weights file, or the
    registry's default — fetched on first use unless offline or ``download`` is false.
    :class:`ModelNotFoundError` says what to do."""
    from ..download import download as fetch
    from ..registry import by_setting, effective_source, local_files

    value = effective_source(config, setting)
    path = Path(value).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES)
        if len(files) != 1:
            raise ModelNotFoundError(
                f"{what} folder {path}: expected one weights file ({', '.join(WEIGHT_SUFFIXES)}), "
                f"found {len(files)}"
            )
        return files[0]
    if path.is_file():
        return path
    entry = by_setting(setting, getattr(config, setting))
    if entry is None:
        raise ModelNotFoundError(
            f"{what} {value!r} (EASYPHOTO_{setting.upper()}): no such file or folder; give a local "
            ".pth/.safetensors file or leave the setting at its default"
        )
    found = local_files(entry)
    if found is not None:
        return found[1][0]
    if config.local_files_only or not download:
        offline = " and offline mode is on" if config.local_files_only else ""
        raise ModelNotFoundError(
            f"{entry.name}: not on this machine{offline}; "
            f"run `easyphoto models download {entry.name}` once online"
        )
    return fetch(entry).paths[0]


__all__ = ["WEIGHT_SUFFIXES", "read_state_dict", "weights_file"]
