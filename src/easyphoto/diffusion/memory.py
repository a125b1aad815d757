"""One device, two model families: keep, offload or free the one not in use (``ModelConfig.sdxl_memory``).

Text-to-photo runs SDXL (the template) and then SD1.5 (the portrait). On a 16 GB GPU in float16 SDXL
takes ~7 GB and SD1.5 with its four ControlNets ~4 GB, plus activations: both at once do not leave
room for SDXL's 1024 px activations. :class:`FamilyMemory` is told which family is about to run and
applies the policy to the other:

* ``"keep"``: nothing moves (fastest; both stay on the device);
* ``"offload"``: the idle family's modules go to CPU RAM, and come back (a copy over PCIe, about a
  second per GB) when it runs again; on a CPU device there is nothing to move;
* ``"free"``: the idle family's modules are dropped; it is read from disk again when next used (the
  least memory of all, RAM included; the slowest switch).

Each switch is recorded in :attr:`FamilyMemory.moves` (what moved where, seconds taken).
"""

from __future__ import annotations

import gc
import time
from typing import Any

import torch

from easyphoto.errors import ConfigError

POLICIES = ("keep", "offload", "free")
#: Switches :attr:`FamilyMemory.moves` keeps.
KEEP_MOVES = 50


def _sd15_modules(cache: Any) -> list[torch.nn.Module]:
    """The loaded modules of a :class:`~easyphoto.diffusion.models.ModelCache` (base + ControlNets)."""
    base = cache._base or {}  # same package: the cache exposes no public module list yet
    mods = [base[n] for n in ("unet", "vae", "text_encoder") if n in base]
    return mods + list(cache._controlnets.values())


def _modules(cache: Any) -> list[torch.nn.Module]:
    """The modules this policy may move; none for a cache whose pipelines already offload themselves
    (``cpu_offload``: accelerate's hooks move each model in and out as it runs)."""
    if getattr(getattr(cache, "config", None), "cpu_offload", False):
        return []
    return cache.modules() if hasattr(cache, "modules") else _sd15_modules(cache)


def _release(cache: Any) -> None:
    cache.release()


def _move(cache: Any, device: torch.device | str) -> None:
    if hasattr(cache, "to"):
        cache.to(device)
        return
    for module in _modules(cache):
        module.to(device)


class FamilyMemory:
    """Applies the memory policy between an SD1.5 cache and an SDXL cache sharing one device.

    ``caches``: ``{"sd15": ModelCache, "sdxl": SDXLCache}`` (either may be added later with
    :meth:`add`). ``policy``: one of :data:`POLICIES`.
    """

    def __init__(self, policy: str, caches: dict[str, Any] | None = None) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"sdxl_memory {policy!r} is unknown; choose one of {', '.join(POLICIES)}")
        self.policy = policy
        self.caches: dict[str, Any] = dict(caches or {})
        self.active: str | None = None
        #: The last :data:`KEEP_MOVES` switches: ``{"to": family, "actions": […], "seconds": …}``.
        self.moves: list[dict[str, Any]] = []
        #: How many switches there were (a caller takes ``moves[-(switches - before):]`` as its own).
        self.switches = 0

    def add(self, family: str, cache: Any) -> None:
        """Register ``cache`` as the cache of ``family``."""
        self.caches[family] = cache

    def use(self, family: str) -> None:
        """Make room for ``family`` (the other family per the policy) and bring it to its device."""
        if family not in self.caches:
            raise ConfigError(f"no model cache for family {family!r}")
        t0 = time.perf_counter()
        cache = self.caches[family]
        actions = []
        for other, idle in self.caches.items():
            if other == family or self.policy == "keep" or not _modules(idle):
                continue
            if self.policy == "free":
                _release(idle)
                actions.append(f"freed {other}")
            elif idle.device.type != "cpu" and _on(idle) != "cpu":  # on a CPU there is nowhere to go
                _move(idle, "cpu")
                actions.append(f"offloaded {other}")
        if _modules(cache) and _on(cache) != cache.device.type:
            _move(cache, cache.device)
            actions.append(f"restored {family}")
        if actions:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.active = family
        self.moves.append({"to": family, "actions": actions, "seconds": round(time.perf_counter() - t0, 3)})
        del self.moves[:-KEEP_MOVES]  # a worker's generator lives for days
        self.switches += 1

    def moves_since(self, switches: int) -> list[dict[str, Any]]:
        """The switches made since :attr:`switches` was ``switches``."""
        return self.moves[len(self.moves) - min(self.switches - switches, len(self.moves)) :]


def _on(cache: Any) -> str:
    """The device type a cache's first module is on (``"cpu"``, ``"cuda"``, ``"mps"``)."""
    mods = _modules(cache)
    if not mods:
        return "none"
    param = next(mods[0].parameters(), None)
    return param.device.type if param is not None else "cpu"


__all__ = ["POLICIES", "FamilyMemory"]
