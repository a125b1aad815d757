"""Portrait generation: a template photo in, the same photo with the user's face in it out.

For each template face (left to right, mapped to the user ids in order; ``"none"`` skips a face), the
named steps of :meth:`PortraitGenerator.face`:

1. **crop** a region around the face (``crop_ratio`` face sizes, clipped to the photo), both sides
   multiples of 8 (:mod:`.regions`): at the template's own pixels when its short side lies between
   ``short_side`` and ``max_short_side`` (:mod:`.resolution`), else resized to the nearer of the two.
   The rest of the photo is never touched.
2. **fuse** the user's reference face onto it (classical warp + colour + blend, ``before_fusion_ratio``)
   and draw the first pass's control images (:mod:`.controls`: canny and colour of the fused crop,
   openpose of the user's landmarks placed on the template face).
3. **first pass**: ControlNet inpainting with the user's LoRA inside the face mask
   (:func:`easyphoto.diffusion.inpaint.controlnet_inpaint`); outside the mask the input is kept;
   Reinhard colour transfer toward the template face (``color_shift_middle``).
4. **second pass**: fuse again (``after_fusion_ratio``), refine at ``second_scale`` × with canny + tile
   inside a ring along the face edge plus the eyes and mouth (only those pixels come back).
5. **paste back** colour-matched (``color_shift_last``) with a feathered mask — a crop worked below the
   template's size enlarged by Real-ESRGAN where ``face_upscale`` allows — and **score** the new face
   against the user's identity (calibrated similarity).

Then the whole portrait is enlarged ``upscale`` × by Real-ESRGAN, in tiles (:mod:`.resolution`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...config import TRIGGER_CAPTION, GenerateConfig, ModelConfig, easyphoto_home
from ...errors import ConfigError, NoFaceError
from ...imageio import ImageSource, load_image
from ...users import IP_EMBEDS_FILE, PHOTO_USER, lora_mtime
from .background import background_step, check_background, default_segmenter, with_picture
from .controls import CONTROLS, ControlInputs, check_controlnets, control_images, family_config
from .portrait import FaceScore, Portrait, read_png_params
from .regions import FaceCrop, crop_face_region, inpaint_mask, refine_mask, reinhard_face, round8
from .resolution import enlarge_face, max_crop_side, merge_refined, paste_resize, upscale_portrait
from .restore import restore_step
from .users import PortraitUser, load_user, photo_user

log = logging.getLogger("easyphoto.generate")

SKIP = "none"
#: IP-Adapter scale for a user given as photos only, when ``ip_adapter_scale`` is unset (GenerateConfig).
PHOTO_IP_SCALE = 0.7


class PortraitGenerator:
    """Holds the model caches and face analyzer across calls; switching users switches LoRAs only.

    ``cache``: the SD1.5 :class:`~easyphoto.diffusion.ModelCache`; ``sdxl_cache``: the
    :class:`~easyphoto.diffusion.sdxl.SDXLCache` SDXL users are painted on (made on first use, from
    :func:`~easyphoto.diffusion.sdxl.sdxl_model_config`). Both share the device under
    ``ModelConfig.sdxl_memory`` (:attr:`memory`).
    """

    def __init__(
        self,
        cache: Any = None,
        analyzer: Any = None,
        *,
        model_config: ModelConfig | None = None,
        home: Path | None = None,
        sdxl_cache: Any = None,
    ) -> None:
        from ...diffusion.memory import FamilyMemory
        from ...diffusion.models import ModelCache
        from ...face.analyzer import FaceAnalyzer

        self.cache = cache or ModelCache(model_config or ModelConfig())
        #: Keeps, offloads or frees the family not in use (text-to-photo switches through it too).
        self.memory = FamilyMemory(self.cache.config.sdxl_memory, {"sd15": self.cache})
        self._sdxl: Any = None
        if sdxl_cache is not None:
            self.sdxl_cache = sdxl_cache
        #: The cache of the face being painted (its user's family), set by :meth:`face`.
        self._working: Any = self.cache
        self.analyzer = analyzer or FaceAnalyzer()
        self.home = home
        self._users: dict[str, tuple[float, PortraitUser]] = {}
        #: Progress callback of the running :meth:`generate` (``{"type": "step", ...}`` events).
        self._on_event: Callable[[dict[str, Any]], None] | None = None
        #: Users given as photos (:meth:`add_photo_user`), by name: they win over trained users.
        self.photo_users: dict[str, PortraitUser] = {}
        #: The IP-Adapter's reference face for every user instead of their own (:meth:`set_ip_image`).
        self.ip_reference: PortraitUser | None = None
        self._upscalers: Any = None
        self._segmenter: Any = None
        self._restorer: Any = None

    @property
    def sdxl_cache(self) -> Any:
        """The SDXL model's cache (SDXL users, text-to-photo's template), made on first use."""
        if self._sdxl is None:
            from ...diffusion.sdxl import SDXLCache, sdxl_model_config

            self.sdxl_cache = SDXLCache(sdxl_model_config(self.cache.config))
        return self._sdxl

    @sdxl_cache.setter
    def sdxl_cache(self, cache: Any) -> None:
        self._sdxl = cache
        self.memory.add("sdxl", cache)

    def use_family(self, family: str) -> Any:
        """Make room for ``family`` on the device (:attr:`memory`) and return its cache."""
        cache = self.sdxl_cache if family == "sdxl" else self.cache
        if len(self.memory.caches) > 1 and self.memory.active != family:
            self.memory.use(family)
        return cache

    @property
    def upscalers(self) -> Any:
        """The super-resolution networks (:class:`~easyphoto.diffusion.upscale.Upscalers`), loaded on
        first use on the cache's device."""
        if self._upscalers is None:
            from ...diffusion.upscale import Upscalers

            self._upscalers = Upscalers(self.cache.config, self.cache.device, self.cache.dtype)
        return self._upscalers

    def face_restorer(self) -> Any:
        """GFPGAN (``ModelConfig.face_restorer``) on the cache's device, loaded on first use and kept."""
        if self._restorer is None:
            from ...diffusion.face_restore import load_face_restorer

            self._restorer = load_face_restorer(self.cache.config).to(self.cache.device)
        return self._restorer

    def person_segmenter(self) -> Any:
        """The person segmenter of background replacement, loaded on first use and kept."""
        if self._segmenter is None:
            self._segmenter = default_segmenter()
        return self._segmenter

    def set_ip_image(self, image: ImageSource | None) -> None:
        """Condition the IP-Adapter on the largest face of ``image`` for every user (EasyPhoto's
        ``ipa_image``); ``None``: each user's own reference face. :class:`NoFaceError` without a face."""
        if image is None:
            self.ip_reference = None
            return
        self.ip_reference = photo_user([image], self.analyzer, "ip_image")

    def add_photo_user(self, photos: Sequence[ImageSource], name: str = PHOTO_USER) -> PortraitUser:
        """Register a user given as photos only under ``name`` (see :func:`photo_user`)."""
        user = photo_user(photos, self.analyzer, name)
        self.photo_users[name] = user
        return user

    def user(self, user_id: str) -> PortraitUser:
        """A trained user's assets (cached until their LoRA file changes: a retrained user reloads)."""
        if user_id in self.photo_users:
            return self.photo_users[user_id]
        mtime = lora_mtime(user_id, self.home)
        hit = self._users.get(user_id)
        if hit is None or hit[0] != mtime:
            model = load_user(user_id, self.analyzer, self.home)
            self._check_base(model)
            self._users[user_id] = hit = (mtime, model)
        return hit[1]

    def _check_base(self, user: PortraitUser) -> None:
        if user.family == "sdxl":
            current = self.sdxl_cache.config.template_model
        else:
            current = self.cache.config.base_model
        if user.base_model and str(user.base_model) != str(current):
            log.warning(
                "user %r was trained on %r but portraits use %r: fine for SD1.5 fine-tunes, "
                "but an SDXL/SD2 base will not accept this LoRA",
                user.user_id, user.base_model, current,
            )  # fmt: skip

    # -- one diffusion pass ------------------------------------------------------------------------
    def _diffuse(
        self, names: Sequence[str], inputs: ControlInputs, mask: np.ndarray, cfg: GenerateConfig,
        second: bool, seed: int, clock: _Clock, ip: tuple[Any, float] = (None, 0.0),
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
        """Draw the controls and repaint ``inputs.image`` inside ``mask``; the input is kept outside it
        (blended at the edge). Returns the result and the control images by name."""
        from ...diffusion.inpaint import controlnet_inpaint
        from ...face.masks import feather

        controls, weights = control_images(names, inputs, cfg, second)
        clock.tick("controls")
        if cfg.fast:
            steps = cfg.fast_second_steps if second else cfg.fast_first_steps
        else:
            steps = cfg.second_steps if second else cfg.first_steps
        image = inputs.image
        emit, label = self._on_event, "second" if second else "first"
        on_step = (
            (lambda k, n: emit({"type": "step", "pass": label, "step": k, "steps": n})) if emit else None
        )
        result = controlnet_inpaint(
            self._working, names, image, mask, controls, weights,
            steps=steps, strength=cfg.second_denoise if second else cfg.first_denoise,
            prompt=cfg.prompt, negative_prompt=cfg.negative_prompt,
            guidance_scale=cfg.fast_guidance_scale if cfg.fast else cfg.guidance_scale,
            seed=seed, lcm=cfg.fast, ip_embeds=ip[0], ip_scale=ip[1], on_step=on_step,
        )  # fmt: skip
        h, w = image.shape[:2]
        alpha = feather(mask, max(2.0, 0.01 * max(h, w)))[..., None]
        out = np.clip(image * (1 - alpha) + result * alpha + 0.5, 0, 255).astype(np.uint8)
        return out, dict(zip(names, controls, strict=True))

    # -- the steps of one face ------------------------------------------------------------------------
    def face(
        self,
        template: np.ndarray,
        face: Any,
        user: PortraitUser,
        cfg: GenerateConfig,
        seed: int,
        timings: dict[str, float],
        keep: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, float]:
        """Repaint one template face with one user's identity; returns (new template, similarity).

        ``keep``: when given, receives the stage images (crop, fused, controls, masks, each pass).
        """
        keep = keep if keep is not None else {}
        clock = _Clock(timings)
        cache = self._working = self.use_family(user.family)
        cfg = family_config(cfg, cache)
        limit = max_crop_side(cfg, cache.device)
        crop = crop_face_region(template, face, cfg.crop_ratio, cfg.short_side, limit)
        mask1 = inpaint_mask(crop.face.landmarks, crop.image.shape, cfg.mask_grow)
        clock.tick("analysis")
        if user.lora is not None:
            cache.set_lora(user.lora, cfg.lora_weight)
        elif user.photo_only:
            cache.set_lora(None)
        cache.set_fast(cfg.fast)
        clock.tick("lora")  # the user's LoRA (a first use also loads the model)
        ip = self._ip_adapter(user, cfg)
        clock.tick("ip_adapter")
        first = self._first_pass(crop, mask1, user, cfg, seed, clock, keep, ip)
        refined = self._second_pass(crop, first, user, cfg, seed + 1, clock, keep, ip)
        if cfg.color_shift_last:
            refined = reinhard_face(refined, crop.image, mask1)
        refined = enlarge_face(self.upscalers, refined, crop, cfg, self.cache.device, clock)
        out = _paste_back(template, crop, refined, mask1, face, cfg)
        clock.tick("paste_back")
        x0, y0, x1, y1 = crop.box
        keep["result"] = out[y0:y1, x0:x1]
        score = self._score(out, face, user)
        clock.tick("score")
        return out, score

    @staticmethod
    def _ip_scale(user: PortraitUser, cfg: GenerateConfig) -> float:
        """The IP-Adapter scale for ``user`` (unset: :data:`PHOTO_IP_SCALE` for a photo-only user, else
        0); refused for an SDXL user (the adapter is SD1.5's)."""
        scale = cfg.ip_adapter_scale
        if scale is None:
            scale = PHOTO_IP_SCALE if user.photo_only else 0.0
        if scale > 0 and user.family != "sd15":
            raise ConfigError(
                f"user {user.user_id!r} is an SDXL user: the IP-Adapter runs with SD1.5 users only "
                "(leave ip_adapter_scale unset or 0)"
            )
        return float(scale)

    def _ip_adapter(self, user: PortraitUser, cfg: GenerateConfig) -> tuple[Any, float]:
        """The user's IP-Adapter embeddings and scale (``(None, 0.0)``: the adapter is not used).

        The reference face (the user's, or :attr:`ip_reference`) is encoded once per user and adapter:
        kept on the user, and for a trained user in their folder (``ip_embeds.safetensors``), so a later
        process does not encode it again.
        """
        scale = self._ip_scale(user, cfg)
        if scale <= 0:
            return None, 0.0
        from ...diffusion.ip_adapter import FaceEmbeds, face_adapter
        from ...face.geometry import crop_face

        adapter = face_adapter(self.cache)
        adapter.load()
        user = self.ip_reference or user
        if user.ip_embeds is not None and user.ip_embeds.adapter == adapter.name:
            return user.ip_embeds, scale
        cached = user.folder / IP_EMBEDS_FILE if user.folder is not None else None
        found = FaceEmbeds.from_file(cached) if cached is not None and cached.is_file() else None
        if found is None or found.adapter != adapter.name:
            face = user.ref_face
            crop, _ = crop_face(user.ref_image, face.box, 224, ratio=1.5, roll=face.roll)
            found = adapter.encode(crop)
            if cached is not None:
                try:
                    found.to_file(cached)
                except OSError as exc:  # a read-only user folder costs one encode per process
                    log.warning("could not cache IP-Adapter embeddings in %s: %s", cached, exc)
        user.ip_embeds = found
        return found, scale

    def _first_pass(
        self, crop: FaceCrop, mask: np.ndarray, user: PortraitUser, cfg: GenerateConfig, seed: int,
        clock: _Clock, keep: dict[str, np.ndarray], ip: tuple[Any, float] = (None, 0.0),
    ) -> np.ndarray:  # fmt: skip
        """Fuse, draw the controls, inpaint with the user's LoRA; colour-match toward the template."""
        from ...face.fusion import fuse_face
        from ...face.keypoints import replace_face_points

        base = crop.image
        fused = base
        if cfg.apply_fusion_before and cfg.before_fusion_ratio > 0:
            fused = fuse_face(base, crop.face, user.ref_image, user.ref_face, cfg.before_fusion_ratio).image
        clock.tick("fusion")
        inputs = ControlInputs(fused, replace_face_points(crop.face, user.ref_face))
        first, controls = self._diffuse(cfg.first_controlnets, inputs, mask, cfg, False, seed, clock, ip)
        keep.update(crop=base, fused=fused, mask=mask, **controls)
        clock.tick("first_diffusion")
        keep["first"] = first
        return reinhard_face(first, base, mask) if cfg.color_shift_middle else first

    def _second_pass(
        self, crop: FaceCrop, first: np.ndarray, user: PortraitUser, cfg: GenerateConfig, seed: int,
        clock: _Clock, keep: dict[str, np.ndarray], ip: tuple[Any, float] = (None, 0.0),
    ) -> np.ndarray:  # fmt: skip
        """Fuse again and refine at ``second_scale`` × inside the ring + eyes + mouth mask."""
        import cv2

        from ...face.fusion import fuse_face
        from ...face.keypoints import replace_face_points

        again = first
        found = self.analyzer.find_near(first, crop.face.box)  # the face is where it was: search there
        if cfg.apply_fusion_after and cfg.after_fusion_ratio > 0 and found is not None:
            again = fuse_face(first, found, user.ref_image, user.ref_face, cfg.after_fusion_ratio).image
        clock.tick("fusion")
        steps = cfg.fast_second_steps if cfg.fast else cfg.second_steps
        if steps <= 0 or cfg.second_denoise <= 0:
            return again
        h, w = again.shape[:2]
        W2, H2 = round8(w * cfg.second_scale), round8(h * cfg.second_scale)
        big = cv2.resize(again, (W2, H2), interpolation=cv2.INTER_CUBIC) if (w, h) != (W2, H2) else again
        scale = np.array([W2 / w, H2 / h], np.float32)
        mask2 = refine_mask((found.landmarks if found is not None else crop.face.landmarks) * scale,
                            big.shape, cfg.ring_width)  # fmt: skip
        keep.update(fused_again=again, refine_mask=mask2)
        pose = replace_face_points(crop.face, user.ref_face) * scale
        second, _ = self._diffuse(
            cfg.second_controlnets, ControlInputs(big, pose), mask2, cfg, True, seed, clock, ip
        )
        refined = merge_refined(again, second, mask2)
        clock.tick("second_diffusion")
        keep["second"] = refined
        return refined

    def _score(self, out: np.ndarray, face: Any, user: PortraitUser) -> float:
        """Face-ID similarity of the new face (found near the old one) to the user; 0 without a face."""
        from ...face.analyzer import similarity

        new_face = self.analyzer.find_near(out, face.box)
        return similarity(new_face, user.embedding) if new_face is not None else 0.0

    # -- one template ---------------------------------------------------------------------------------
    def generate(
        self,
        template: ImageSource | np.ndarray,
        user_ids: Sequence[str],
        config: GenerateConfig | None = None,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        template_name: str | None = None,
        keep_intermediates: bool = False,
        background_image: np.ndarray | None = None,
    ) -> Portrait:
        """One portrait from one template (see :func:`generate`); ``background_image``: the picture
        put behind the people with ``background="replace"`` (else ``background_prompt`` is painted)."""
        cfg = with_picture(config or GenerateConfig(), background_image is not None)
        check_controlnets(cfg)
        check_background(cfg, background_image is not None)
        if not user_ids:
            raise ConfigError("give at least one user id")
        label = template_name or (str(template) if isinstance(template, (str, Path)) else "template")
        if cfg.upscale > 1:
            self.upscalers.get(cfg.upscale)  # a missing or broken upscaler too
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        image = template if isinstance(template, np.ndarray) else load_image(template, name=template_name)
        t0 = time.perf_counter()
        faces = self.analyzer.detect(image)
        timings["analysis"] = time.perf_counter() - t0
        ids = assign_faces(faces, user_ids, cfg, label)
        users = {u: self.user(u) for u in ids if u.lower() != SKIP}
        for family in sorted({u.family for u in users.values()}):  # before any diffusion: a missing
            (self.sdxl_cache if family == "sdxl" else self.cache).set_fast(cfg.fast)  # LCM-LoRA, SDXL
        for user in users.values():
            self._ip_scale(user, cfg)
        seed = (
            cfg.seed
            if cfg.seed is not None and cfg.seed >= 0
            else int(np.random.default_rng().integers(2**31))
        )
        out, scores, intermediates = image, [], {}
        todo = [i for i, uid in enumerate(ids) if uid.lower() != SKIP]
        for i, (face, uid) in enumerate(zip(faces, ids, strict=False)):
            if uid.lower() == SKIP:
                continue
            if on_event:
                on_event({"type": "face", "face_index": i, "user_id": uid, "faces": len(faces),
                          "face": todo.index(i) + 1, "of": len(todo)})  # fmt: skip
            stages: dict[str, np.ndarray] = {}
            self._on_event = on_event
            try:
                out, score = self.face(out, face, users[uid], cfg, seed + 1000 * i, timings, stages)
            finally:
                self._on_event = None
            if keep_intermediates:
                intermediates.update({f"face{i}_{k}": v for k, v in stages.items()})
            box = tuple(round(float(v), 1) for v in face.box)
            scores.append(FaceScore(i, uid, round(float(score), 4), box))
        t0 = time.perf_counter()
        made = [f for f, uid in zip(faces, ids, strict=False) if uid.lower() != SKIP]
        if cfg.background != "keep":
            self.use_family("sd15")  # the background passes run on SD1.5 (tile and canny nets)
        out, backdrop = background_step(
            self.cache, out, faces, made, cfg, seed, picture=background_image,
            segmenter=self.person_segmenter, on_event=on_event,
        )  # fmt: skip
        if backdrop:
            timings["background"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out, upscaled = upscale_portrait(self.upscalers, out, cfg, on_event)
        if upscaled:
            timings["upscale"] = time.perf_counter() - t0
            scores = [s.scaled(cfg.upscale) for s in scores]
        t0 = time.perf_counter()
        out, restored = restore_step(self.face_restorer, out, made, cfg, cfg.upscale, self.cache.device)
        if restored:
            timings["face_restore"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_all
        return Portrait(
            array=out,
            scores=scores,
            params=self._params(label, ids, seed, users, cfg) | upscaled | backdrop | restored,
            timings={k: round(v, 3) for k, v in timings.items()},
            intermediates=intermediates,
        )

    def _params(
        self, label: str, ids: list[str], seed: int, users: dict[str, PortraitUser], cfg: GenerateConfig
    ) -> dict[str, Any]:
        """Every parameter a portrait was made with (kept in the PNG)."""
        families = {u: m.family for u, m in users.items()}
        nets = dict.fromkeys([*cfg.first_controlnets, *cfg.second_controlnets])
        params: dict[str, Any] = {
            "template": label,
            "user_ids": ids,
            "seed": seed,
            "base_model": str(self.cache.config.base_model),
            "controlnets": {n: self.cache.controlnet_source(n) for n in nets},
        }
        if "sdxl" in families.values():
            sdxl = family_config(cfg, self.sdxl_cache)
            params |= {
                "families": families,
                "sdxl_model": str(self.sdxl_cache.config.template_model),
                "sdxl_controlnets": {
                    n: self.sdxl_cache.controlnet_source(n)
                    for n in dict.fromkeys([*sdxl.first_controlnets, *sdxl.second_controlnets])
                },
            }
        return params | {
            "loras": {u: (None if m.photo_only else str(m.lora)) for u, m in users.items()},
            "photo_users": sorted(u for u, m in users.items() if m.photo_only),
            "ip_adapter": {u: m.ip_embeds.adapter for u, m in users.items() if m.ip_embeds is not None},
            "lcm_lora": self.cache.config.lcm_lora if cfg.fast else None,
            "config": cfg.to_dict() | {"seed": seed},
        }


def assign_faces(faces: list[Any], user_ids: Sequence[str], cfg: GenerateConfig, label: str) -> list[str]:
    """The user id of each template face, left to right (``"none"`` skips a face).

    One id with several faces: only the largest (``single_user_face="largest"``) or the left-most face.
    """
    if not faces:
        raise NoFaceError(label, code="face.none_in_template")
    ids = [u.strip() for u in user_ids]
    if len(ids) > len(faces):
        raise ConfigError(
            f"{label}: {len(ids)} user ids ({', '.join(ids)}) but only {len(faces)} face(s) in the "
            "template (faces map to user ids left to right; use 'none' to skip a face)"
        )
    if len(ids) == 1 and len(faces) > 1 and cfg.single_user_face == "largest":
        target = max(range(len(faces)), key=lambda i: faces[i].area)
        ids = [SKIP] * len(faces)
        ids[target] = user_ids[0].strip()
    return ids


def _paste_back(
    template: np.ndarray,
    crop: FaceCrop,
    refined: np.ndarray,
    mask: np.ndarray,
    face: Any,
    cfg: GenerateConfig,
) -> np.ndarray:
    """The refined crop blended into the full template with a grown, feathered face mask."""
    import cv2

    from ...face.masks import feather, grow_mask

    x0, y0, x1, y1 = crop.box
    size = (x1 - x0, y1 - y0)
    region = paste_resize(refined, size)
    hard = cv2.resize(
        grow_mask(mask, cfg.paste_grow * crop.face.width), size, interpolation=cv2.INTER_NEAREST
    )
    alpha = feather(hard, cfg.paste_feather * face.width, inside=True)[..., None]
    out = template.copy()
    patch = template[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(patch * (1 - alpha) + region * alpha + 0.5, 0, 255).astype(np.uint8)
    return out


class _Clock:
    """Adds the time since the last tick to ``timings[name]``."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.t = time.perf_counter()

    def tick(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


def generate(
    template: ImageSource | np.ndarray | Sequence[ImageSource],
    user_ids: str | Sequence[str],
    config: GenerateConfig | None = None,
    *,
    generator: PortraitGenerator | None = None,
    model_config: ModelConfig | None = None,
    home: Path | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    keep_intermediates: bool = False,
) -> list[Portrait]:
    """Paint trained users into template photos.

    Args:
        template: one template (path, bytes or RGB array) or a list of template paths.
        user_ids: a user id or a list; template faces sorted left to right map to them in order
            (``"none"`` skips a face). One id with several faces: the largest face (``config``).
        config: every switch and number of the two-pass pipeline (:class:`GenerateConfig`).
        generator: reuse a :class:`PortraitGenerator` (loaded models) across calls.
        model_config: base model / ControlNets to load when no ``generator`` is given.
        home: ``EASYPHOTO_HOME`` override.
        on_event: progress callback (``{"type": "face", …}`` per face, ``"portrait"`` per template).
        keep_intermediates: fill :attr:`Portrait.intermediates` with every face's stage images.

    Returns:
        One :class:`Portrait` per template, at the template's size.
    """
    ids = [user_ids] if isinstance(user_ids, str) else list(user_ids)
    gen = generator or PortraitGenerator(model_config=model_config, home=home or easyphoto_home())
    templates: list[Any] = (
        [template] if isinstance(template, (np.ndarray, str, Path, bytes, bytearray)) else list(template)
    )
    out = []
    for i, tpl in enumerate(templates):
        portrait = gen.generate(tpl, ids, config, on_event=on_event, keep_intermediates=keep_intermediates)
        out.append(portrait)
        if on_event:
            on_event({"type": "portrait", "index": i, "scores": [s.__dict__ for s in portrait.scores]})
    return out


__all__ = [
    "CONTROLS",
    "FaceScore",
    "Portrait",
    "PortraitGenerator",
    "PortraitUser",
    "TRIGGER_CAPTION",
    "assign_faces",
    "crop_face_region",
    "generate",
    "inpaint_mask",
    "load_user",
    "photo_user",
    "read_png_params",
    "refine_mask",
]
