"""EasyPhoto's own endpoints, so its ``api_test/post_train.py`` and ``post_infer.py`` work unchanged.

``/easyphoto/easyphoto_train_forward`` and ``/easyphoto/easyphoto_infer_forward`` take EasyPhoto's JSON
bodies (sent without a Content-Type), map their fields onto ours (:mod:`.compat_fields`), queue the
job like ``/v1`` does and answer when it has finished, in EasyPhoto's response shape. Fields we do not
implement are accepted and named in the answer's ``message``.

Their bodies are large (base64 photos in JSON) and held while the job runs, so: the body is read into
one buffer and parsed by :class:`JsonBody` (nesting and non-image text bounded before ``json.loads``,
images decoded straight from the buffer after their number and size are checked: ≤ ~1.8× the body in
memory), nothing of it is kept while waiting, a client that goes away frees its place, and at most
:data:`MAX_HELD_REQUESTS` wait at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from ..config import ServerSettings
from ..errors import BadImageError, ConfigError, EasyPhotoError
from ..jobs import SUCCEEDED, JobService, Upload, UploadTooLargeError
from ..users import PHOTO_USER
from .compat_fields import (
    IPA_ONLY_USER,
    EasyPhotoInferRequest,
    EasyPhotoTrainRequest,
    infer_settings,
    infer_templates,
    text2photo_settings,
    train_settings,
    without_user_lora,
)
from .errors import public_message
from .security import MAX_JSON_DEPTH, RequestTooLarge, json_too_deep
from .waiting import wait_for_job


def decode_base64_image(value: str, label: str, max_bytes: int | None = None) -> bytes:
    """Bytes of a base64 image (a ``data:image/...;base64,`` prefix is allowed), at most ``max_bytes``."""
    if not isinstance(value, str) or not value.strip():
        raise BadImageError(label, code="upload.empty")
    text = value.strip()
    if text.startswith("data:") and "," in text[:200]:
        text = text.split(",", 1)[1]
    _check_size(len(text), label, max_bytes)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImageError(label, code="upload.base64") from None


def _check_size(b64_chars: int, label: str, max_bytes: int | None) -> None:
    """Refuse an image whose base64 text decodes to more than ``max_bytes`` (before decoding it)."""
    size = b64_chars * 3 // 4 - 2  # padding: up to 2 characters
    if max_bytes is not None and size > max_bytes:
        raise UploadTooLargeError(
            label, code="upload.too_large", size_mb=size / 1e6, limit_mb=max_bytes / 1e6
        )


# ------------------------------------------------------------------------------ bounded JSON bodies

#: Most JSON text besides the large strings: EasyPhoto's api_test bodies hold 0.5 KB (training) and
#: 0.9 KB (inference) besides their images, so 256 KiB is ample, and the worst 256 KiB (~87,000 empty
#: objects) parses into ~6 MB of Python objects (measured with tracemalloc).
MAX_JSON_TEXT = 256 * 1024
#: Strings from this length on (the base64 images) are never copied out of the received buffer: images
#: are decoded straight from it. Shorter strings (ids, prompts) are parsed as usual.
LARGE_STRING = 1024
#: Base64 characters decoded per call (a multiple of 4): ~1.5 ms of CPU, after which the event loop
#: can take the GIL back. Whole 4 MB images held it ~25 ms each, and four EasyPhoto uploads at once
#: raised the p95 of ``GET /v1/jobs/{id}`` from 46 to 316 ms (benchmarks/api.py).
B64_PIECE = 256 * 1024
#: One body parsed and decoded at a time (in a worker thread): the GIL serializes that work anyway,
#: and several decoding threads starve the event loop (4 threads decoding 20 MB bodies delayed it by
#: 44 ms at p95, one at a time by 11 ms). It also keeps one body's decoded copy in memory at a time.
DECODE_LOCK = threading.Lock()
#: Fields whose strings are base64 images.
IMAGE_FIELDS = frozenset(
    {"instance_images", "init_image", "selected_template_images", "uploaded_template_images", "ipa_image"}
    | {"ipa_only_image"}
)
_WHITESPACE = b" \t\r\n"


def _invalid(msg: str, kind: str = "json_invalid") -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": msg, "type": kind}])


def _too_much() -> RequestValidationError:
    limit = MAX_JSON_TEXT // 1024
    return _invalid(f"too much JSON besides the images (limit {limit} KB)", "json_too_large")


class JsonBody:
    """A JSON request body parsed with bounded memory.

    One pass of ``bytes.find`` over the received buffer finds the strings; those of
    :data:`LARGE_STRING` characters or more stay in the buffer and appear in :attr:`data` as marker
    strings, everything else (at most :data:`MAX_JSON_TEXT` bytes, nested at most
    :data:`MAX_JSON_DEPTH` deep, checked before ``json.loads``) is parsed as usual. :meth:`image`
    decodes one image straight from the buffer, so the server holds the body plus the decoded images
    (and one image's pieces while they are joined): ~1.8× the body at most. Large strings outside
    :data:`IMAGE_FIELDS` are parsed into text.
    """

    def __init__(self, buf: bytearray) -> None:
        self.buf = buf
        self._nonce = "\x00" + secrets.token_hex(4) + ":"
        self.spans: list[tuple[int, int, bool]] = []  # (start, end, has escapes) of each large string
        skeleton, shifts = self._skeleton()
        self._check_depth(skeleton)
        try:
            data = json.loads(skeleton or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = ""
            if isinstance(exc, json.JSONDecodeError):
                pos = exc.pos + sum(shift for at, shift in shifts if at <= exc.pos)
                where = f" at character {pos}"
            raise _invalid(f"not valid JSON{where}") from None
        self._text = len(skeleton)
        if isinstance(data, dict):
            data = {k: v if k in IMAGE_FIELDS else self._materialize(v) for k, v in data.items()}
        else:
            data = self._materialize(data)
        self.data: Any = data

    def _skeleton(self) -> tuple[bytes, list[tuple[int, int]]]:
        """The body with each large string replaced by a marker, and (marker position, length lost)."""
        buf, view, find = self.buf, memoryview(self.buf), self.buf.find
        parts: list[Any] = []
        shifts: list[tuple[int, int]] = []
        size = pos = 0
        while True:
            quote = find(b'"', pos)
            stop = len(buf) if quote < 0 else quote
            size += stop - pos
            if size > MAX_JSON_TEXT:
                raise _too_much()
            parts.append(view[pos:stop])
            if quote < 0:
                break
            end = quote + 1
            while True:  # the closing quote: one preceded by an even number of backslashes
                end = find(b'"', end)
                if end < 0:
                    raise _invalid("not valid JSON: a string is not closed")
                k = end - 1
                while buf[k] == 0x5C:
                    k -= 1
                size += end - 1 - k  # backslash runs next to quotes count as JSON text (bounded work)
                if size > MAX_JSON_TEXT:
                    raise _too_much()
                if (end - 1 - k) % 2 == 0:
                    break
                end += 1
            if end - quote - 1 >= LARGE_STRING:
                marker = json.dumps(f"{self._nonce}{len(self.spans)}").encode()
                self.spans.append((quote + 1, end, find(b"\\", quote + 1, end) >= 0))
                shifts.append((size, end + 1 - quote - len(marker)))
                parts.append(marker)
                size += len(marker)
            else:
                parts.append(view[quote : end + 1])
                size += end + 1 - quote
            if size > MAX_JSON_TEXT:
                raise _too_much()
            pos = end + 1
        return b"".join(parts), shifts

    @staticmethod
    def _check_depth(skeleton: bytes) -> None:
        if json_too_deep(skeleton, MAX_JSON_DEPTH):
            raise _invalid(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")

    def _index(self, value: Any) -> int | None:
        if isinstance(value, str) and value.startswith(self._nonce):
            return int(value[len(self._nonce) :])
        return None

    def _materialize(self, value: Any) -> Any:
        """``value`` with its large-string markers replaced by the strings (JSON text budget applies)."""
        index = self._index(value)
        if index is not None:
            start, end, _ = self.spans[index]
            self._text += end - start
            if self._text > MAX_JSON_TEXT:
                raise _too_much()
            return json.loads(bytes(memoryview(self.buf)[start - 1 : end + 1]))
        if isinstance(value, list):
            return [self._materialize(v) for v in value]
        if isinstance(value, dict):
            return {k: self._materialize(v) for k, v in value.items()}
        return value

    def image(self, value: Any, label: str, max_bytes: int | None) -> bytes:
        """The bytes of one base64 image of :attr:`data` (a marker or a short string)."""
        index = self._index(value)
        if index is None:
            return decode_base64_image(value, label, max_bytes)
        start, end, escaped = self.spans[index]
        view = memoryview(self.buf)
        if escaped:  # e.g. "\/" from PHP's json_encode: parse this one string (bounded by max_bytes)
            _check_size((end - start) // 6, label, max_bytes)  # an escape takes at most 6 characters
            return decode_base64_image(json.loads(bytes(view[start - 1 : end + 1])), label, max_bytes)
        head = bytes(view[start : min(end, start + 200)])
        if head.startswith(b"data:") and b"," in head:
            start += head.index(b",") + 1
        while start < end and self.buf[start] in _WHITESPACE:
            start += 1
        while end > start and self.buf[end - 1] in _WHITESPACE:
            end -= 1
        _check_size(end - start, label, max_bytes)
        try:
            pieces = [
                binascii.a2b_base64(view[i : min(i + B64_PIECE, end)], strict_mode=True)
                for i in range(start, end, B64_PIECE)
            ]
        except (binascii.Error, ValueError):
            raise BadImageError(label, code="upload.base64") from None
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def model(self, model: type[BaseModel]) -> Any:
        """:attr:`data` validated by ``model`` (422 naming the field, never echoing the input)."""
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            errors = [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
            raise RequestValidationError(errors) from None


async def read_body(request: Request, limit: int) -> bytearray:
    """The request body in one buffer (allocated once from Content-Length), at most ``limit`` bytes."""
    length = request.headers.get("content-length", "")
    declared = int(length) if length.isdigit() else 0
    if declared > limit:
        raise RequestTooLarge(limit)
    buf = bytearray(declared)
    pos = 0
    async for chunk in request.stream():
        end = pos + len(chunk)
        if end > limit:
            raise RequestTooLarge(limit)
        if end <= len(buf):
            buf[pos:end] = chunk
        else:
            del buf[pos:]
            buf += chunk
        pos = end
    del buf[pos:]
    return buf


def _json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def infer_response(service: JobService, view: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """EasyPhoto's answer: base64 portraits, face-ID images with scores, a message."""
    outputs: list[str] = []
    face_ids: list[list[Any]] = []
    scores: list[dict[str, Any]] = []
    if view["state"] == SUCCEEDED:
        result = view["result"] or {}
        for img in result.get("images", []):
            outputs.append(base64.b64encode(service.job_file(view["id"], img["file"]).read_bytes()).decode())
            scores.append({"template": img["template"], "scores": img["scores"]})
            for s in img["scores"]:
                with contextlib.suppress(EasyPhotoError):
                    face = service.job_file(view["id"], f"face_id_{s['user_id']}.png").read_bytes()
                    face_ids.append(
                        [base64.b64encode(face).decode(), f"{s['user_id']}: {s['similarity']:.4f}"]
                    )
        message = "Success"
        notes = notes + [public_message(err["error"]) for err in result.get("errors", [])]
    else:
        message = f"Infer error, error info: {public_message(view.get('error') or view['state'])}"
    if notes:
        message += " (" + "; ".join(notes) + ")"
    return {
        "message": message,
        "outputs": outputs,
        "face_id_outputs": face_ids,
        "scores": scores,
        "job_id": view["id"],
        "state": view["state"],
    }


#: EasyPhoto-compatible requests held at once (each waits for its job, for hours when training): its
#: api_test clients send one request and wait. One worker runs one job at a time, so a 5th held request
#: would only wait behind four jobs; the cap also bounds the bodies in memory at once (4 × ~1.8 ×
#: max_request_mb). More get 429: queue through /v1 instead, which answers at once with a job id.
MAX_HELD_REQUESTS = 4
#: Retry-After of that 429, s: about one tiny job; a real job takes minutes, so clients poll gently.
HELD_RETRY_AFTER_S = 30


class _HeldRequests:
    """A counter of held requests: one more over ``limit`` is refused with 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.held >= self.limit:
            raise HTTPException(
                429,
                f"too many EasyPhoto-compatible requests waiting for their jobs ({self.limit}): retry "
                "later, or queue the job through /v1, which answers at once with its id",
                headers={"Retry-After": str(HELD_RETRY_AFTER_S)},
            )
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


async def _until_disconnect(receive: Any) -> None:
    """Return when the client has gone (the body was read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _wait_while_connected(request: Request, service: JobService, job_id: str, timeout: float) -> Any:
    """The job's view when it has finished (or after ``timeout``); None if the client went away first
    (the job goes on)."""
    waiter = asyncio.ensure_future(wait_for_job(service, job_id, timeout))
    watcher = asyncio.ensure_future(_until_disconnect(request.receive))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, watcher):
            task.cancel()
    return waiter.result() if waiter.done() and not waiter.cancelled() else None


def _images(
    body: JsonBody, raw: list[tuple[str, Any]], limit: int, what: str, max_bytes: int
) -> list[Upload]:
    """Decode the images of ``raw`` — (label, value) pairs — after checking their number."""
    if len(raw) > limit:
        raise ConfigError(f"too many {what}: {len(raw)} (limit {limit})")
    return [Upload(name=label.split("[")[0], data=body.image(v, label, max_bytes)) for label, v in raw]


def checkpoint_by_name(service: JobService, name: str | None, notes: list[str]) -> str | None:
    """EasyPhoto's ``sd_model_checkpoint`` as one of this server's base models (by file name, with or
    without its extension); one it does not have adds a note and the server's default is used."""
    if not name:
        return None
    try:
        service.resolve_base_model(name)
    except ConfigError:
        notes.append(
            f"sd_model_checkpoint {name!r} is not on this server (put it in the checkpoints folder): "
            f"the default base model was used; available: {', '.join(service.base_models())}"
        )
        return None
    return name


def submit_train_body(service: JobService, buf: bytearray) -> tuple[Any, str, list[str]]:
    """Parse a training body, decode its photos and queue the job: (job, user id, notes)."""
    with DECODE_LOCK:
        body = JsonBody(buf)
        req = body.model(EasyPhotoTrainRequest)
        train, prepare, notes = train_settings(req)
        raw = [(f"instance_images[{i}]", img) for i, img in enumerate(req.instance_images)]
        uploads = _images(body, raw, service.limits.max_photos, "photos", service.limits.max_file_bytes)
        del body
    for i, up in enumerate(uploads):
        uploads[i] = Upload(name=f"instance_{i:02d}", data=up.data)
    base = checkpoint_by_name(service, req.sd_model_checkpoint, notes)
    job = service.submit_train(req.user_id, uploads, train, prepare, notes=notes, base_model=base)
    return job, req.user_id, notes


def submit_infer_body(service: JobService, buf: bytearray) -> tuple[Any, list[str]]:
    """Parse an inference body, decode its templates and queue the job: (job, notes)."""
    with DECODE_LOCK:
        body = JsonBody(buf)
        req = body.model(EasyPhotoInferRequest)
        ids = [req.user_ids] if isinstance(req.user_ids, str) else list(req.user_ids)
        raw = infer_templates(req)
        gen, notes = infer_settings(req, service.defaults("generate").prompt)
        most = service.limits.max_file_bytes
        uploads = _images(body, raw, service.limits.max_templates, "templates", most)
        photos, ip_image = [], None
        if without_user_lora(req):
            if not req.ipa_only_image:
                raise ConfigError("'Infer without User Lora' needs ipa_only_image (a photo of the person)")
            photos = _images(body, [("ipa_only_image", req.ipa_only_image)], 1, "photos", most)
            # EasyPhoto sends ["ipa_control_only", "none", ...]: the person goes on the (largest) face
            ids = [PHOTO_USER if u == IPA_ONLY_USER else u for u in ids if u != "none"] or [PHOTO_USER]
        elif req.ipa_control and req.ipa_image:
            ip_image = _images(body, [("ipa_image", req.ipa_image)], 1, "ipa_image", most)[0]
        del body
    base = checkpoint_by_name(service, req.sd_model_checkpoint, notes)
    if req.tabs == 3:
        t2p = text2photo_settings(req)
        return service.submit_text2photo(ids, t2p, gen, notes=notes, base_model=base), notes
    job = service.submit_generate(
        ids, uploads, (), gen, notes=notes, photos=photos, ip_image=ip_image, base_model=base
    )
    return job, notes


def build_router(service: JobService, settings: ServerSettings) -> APIRouter:
    """The two EasyPhoto-compatible routes over ``service`` (at most :data:`MAX_HELD_REQUESTS` held)."""
    router = APIRouter(tags=["easyphoto-compatible"])
    held = _HeldRequests(MAX_HELD_REQUESTS)

    @router.post("/easyphoto/easyphoto_train_forward", openapi_extra=_json_body_doc(EasyPhotoTrainRequest))
    async def easyphoto_train_forward(request: Request) -> JSONResponse:
        """EasyPhoto's training endpoint: answers when the training has finished."""
        with held.slot():
            buf = await read_body(request, settings.max_request_bytes)
            job, user_id, notes = await run_in_threadpool(submit_train_body, service, buf)
            del buf  # nothing of the body is held while waiting
            view = await _wait_while_connected(request, service, job.id, settings.compat_timeout_s)
        if view is None:
            return JSONResponse({"message": "client went away", "job_id": job.id}, status_code=499)
        if view["state"] == SUCCEEDED:
            res = view["result"] or {}
            message = (
                f"The training has been completed. User {user_id!r}: {res.get('steps')} steps, "
                f"best face-ID score {res.get('best_score')}."
            )
        else:
            message = f"Train error, error info: {public_message(view.get('error') or view['state'])}"
        if notes:
            message += " (" + "; ".join(notes) + ")"
        return JSONResponse({"message": message, "job_id": job.id, "state": view["state"]})

    @router.post("/easyphoto/easyphoto_infer_forward", openapi_extra=_json_body_doc(EasyPhotoInferRequest))
    async def easyphoto_infer_forward(request: Request) -> JSONResponse:
        """EasyPhoto's inference endpoint: answers with base64 PNG portraits when they are done."""
        with held.slot():
            buf = await read_body(request, settings.max_request_bytes)
            job, notes = await run_in_threadpool(submit_infer_body, service, buf)
            del buf
            view = await _wait_while_connected(request, service, job.id, settings.compat_timeout_s)
        if view is None:
            return JSONResponse({"message": "client went away", "job_id": job.id}, status_code=499)
        return JSONResponse(await run_in_threadpool(infer_response, service, view, notes))

    return router


__all__ = [
    "IMAGE_FIELDS",
    "MAX_HELD_REQUESTS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_TEXT",
    "JsonBody",
    "EasyPhotoInferRequest",
    "EasyPhotoTrainRequest",
    "build_router",
    "decode_base64_image",
    "read_body",
    "submit_infer_body",
    "submit_train_body",
]
