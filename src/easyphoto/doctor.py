"""``easyphoto doctor``: what this machine has for the studio, and the one command that fetches the rest.

:func:`report` gathers plain data (JSON-able): Python, torch and its device (CUDA GPUs with free and
total memory, Apple MPS), free disk where user models and downloads go, and for every registry model
where the current settings point and whether it is here. Nothing is downloaded and the hub is never
asked; importing torch is the slowest part (~2 s).
"""

from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from .config import ModelConfig, easyphoto_home
from .registry import REGISTRY, by_setting, effective_source, local_copy, models_dir


def _free_gb(path: Path) -> float | None:
    for p in (path, *path.parents):
        if p.exists():
            return round(shutil.disk_usage(p).free / 1e9, 1)
    return None


def devices() -> dict[str, Any]:
    """torch's version and the accelerators it sees (CUDA devices with memory in GB, MPS)."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        return {"torch": None, "error": str(exc)}
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            info["gpus"].append(
                {
                    "index": i,
                    "name": torch.cuda.get_device_name(i),
                    "free_gb": round(free / 1e9, 1),
                    "total_gb": round(total / 1e9, 1),
                }
            )
    mps = getattr(torch.backends, "mps", None)
    info["mps"] = bool(mps is not None and mps.is_available())
    info["device"] = "cuda" if info["gpus"] else ("mps" if info["mps"] else "cpu")
    return info


def _configured_present(source: str) -> bool | None:
    """A configured path: whether it exists; a hub id or URL: ``None`` (not checked offline)."""
    if Path(source).expanduser().exists():
        return True
    looks_like_path = source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1
    return False if looks_like_path and "://" not in source else None


def model_rows(config: ModelConfig | None = None) -> list[dict[str, Any]]:
    """One row per registry model: where the settings point, whether it is here, its licence."""
    from .download import status

    config = config or ModelConfig()
    rows = []
    for e in REGISTRY.values():
        row: dict[str, Any] = {"name": e.name, "role": e.role, "default": e.default, "licence": e.licence}
        row["commercial"] = e.commercial
        value = getattr(config, e.setting) if e.setting else None
        source = effective_source(config, e.setting) if e.setting else None
        overridden = e.setting is not None and value is not None and source is not None
        overridden = overridden and (
            by_setting(e.setting, value) is not e
            or (source != value and local_copy(e.setting, value) is None)
        )
        if overridden and source is not None:
            # the settings point somewhere else (or at a local base's controlnet/): report that path
            row.update(setting=e.setting, configured=source, present=_configured_present(source))
        else:
            st = status(e)
            row.update(setting=e.setting, configured=e.ref, present=st.present)
            row["size_mb"] = round(st.size_bytes / 1e6) if st.present else e.size_mb
            row["from"] = st.source.describe() if st.source else None
        rows.append(row)
    return rows


def fleet(url: str) -> dict[str, Any]:
    """A job fleet as plain data (``easyphoto doctor --queue URL``): its workers (host, pid, GPU,
    queues, current job), queued jobs per kind, broker messages per queue, the jobs in flight."""
    from .jobs.fleet import fleet_status

    return fleet_status(url)


def fleet_lines(rep: dict[str, Any]) -> list[str]:
    """:func:`fleet`'s report as the lines the CLI prints."""
    lines = [f"queue {rep['queue']}: {len(rep['workers'])} worker(s)"]
    for w in rep["workers"]:
        gpu = (
            f"GPU {w['gpu']} ({w.get('gpu_name') or 'unknown'})" if w.get("gpu") is not None else "no GPU set"
        )
        job = f"running {w['job']}" if w.get("job") else "idle"
        queues = ",".join(q.rsplit(".", 1)[-1] for q in w.get("queues", []))
        lines.append(
            f"  {w['host']}:{w['pid']}  {gpu}  takes {queues}  {job}  ({w.get('jobs_done', 0)} done)"
        )
    queued = ", ".join(f"{k} {n}" for k, n in rep["queued"].items())
    messages = ", ".join(f"{k} {n}" for k, n in rep["messages"].items())
    lines.append(f"queued jobs: {queued} (broker messages: {messages})")
    lines.append(f"in flight: {len(rep['in_flight'])}")
    for j in rep["in_flight"]:
        w = j["worker"] or {}
        frac = j["progress"].get("fraction")
        done = f"{frac:.0%}" if isinstance(frac, (int, float)) else "starting"
        lines.append(f"  {j['id']} {j['kind']} {j['user_id'] or ''} on {w.get('host')}:{w.get('pid')} {done}")
    lines.append("jobs: " + (", ".join(f"{k} {n}" for k, n in sorted(rep["jobs"].items())) or "none"))
    return lines


def report(config: ModelConfig | None = None) -> dict[str, Any]:
    """The whole doctor report as plain data."""
    home = easyphoto_home()
    try:
        from huggingface_hub import constants

        hub_cache = Path(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        hub_cache = Path.home() / ".cache" / "huggingface" / "hub"
    rows = model_rows(config)
    missing = [r["name"] for r in rows if r["default"] and r["present"] is False]
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **devices(),
        "home": str(home),
        "home_free_gb": _free_gb(home),
        "hub_cache": str(hub_cache),
        "hub_cache_free_gb": _free_gb(hub_cache),
        "models_dir": str(models_dir()),
        "models": rows,
        "missing": missing,
        "fix": f"easyphoto models download {' '.join(missing)}" if missing else None,
    }
