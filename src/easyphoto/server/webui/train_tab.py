"""The Train tab: upload photos, start a training job, watch it (progress, contact sheet, validation
images with face-ID scores, log), cancel or resume it."""

from pathlib import Path
from typing import Any

import gradio as gr

from ...config import TrainConfig
from ...errors import EasyPhotoError
from ...jobs import FINISHED, INTERRUPTED, Upload
from ..error_text import job_error, reject_reason
from ..i18n import t
from .common import API, Tab, form_values, preset_values, progress_html, settings_grid, status_line

#: Settings of the advanced accordion (server file paths are the operator's business, not a form field).
TRAIN_FIELDS = [n for n in TrainConfig.model_fields if n != "validation_templates"]


def _marked(shown: list[Any] | None, rejected: list[dict[str, Any]] | None, code: str) -> Any:
    """The uploaded photos captioned kept / refused with the reason, once preparation has run (the
    n-th upload is stored as ``NN_<name>``); ``gr.skip()`` when nothing changes."""
    if not shown or rejected is None:
        return gr.skip()
    why = {int(r["photo"][:2]): reject_reason(r, code) for r in rejected if r["photo"][:2].isdigit()}
    items = [(item[0] if isinstance(item, (tuple, list)) else item) for item in shown]
    marked = [
        (path, f"✗ {why[i]}" if i in why else f"✓ {t('train.kept', code)}") for i, path in enumerate(items)
    ]
    old = [item[1] if isinstance(item, (tuple, list)) and len(item) > 1 else None for item in shown]
    return gr.skip() if old == [c for _, c in marked] else marked


class TrainTab(Tab):
    """Handlers and layout of the Train tab."""

    def start(
        self,
        request: gr.Request,
        files: list[str] | None,
        user_id: str,
        replace: bool,
        base: str | None,
        retouch: bool,
        *values: Any,
    ):
        gr, code = self.gr, self.code(request)
        if not files:
            return self.refuse(t("err.no_photos", code), code, 4)
        if not (user_id or "").strip():
            return self.refuse(t("err.no_user", code), code, 4)
        if user_id.strip().lower() in self.service.user_ids() and not replace:
            return self.refuse(t("err.user_exists", code, user=user_id.strip()), code, 4)
        try:
            paths = [Path(f[0] if isinstance(f, (tuple, list)) else f) for f in files]
            uploads = [Upload(p.name, p.read_bytes()) for p in paths]
            train = form_values(TrainConfig, TRAIN_FIELDS, values)
            prep = {"retouch": bool(retouch)}
            job = self.service.submit_train(user_id.strip(), uploads, train, prep, base_model=base or None)
        except EasyPhotoError as exc:
            return self.refuse(exc, code, 4)
        status = f"{t('train.job', code)} `{job.id}`"
        return job.id, gr.Timer(active=True), progress_html(0, t("state.queued", code)), status

    def attach(self, request: gr.Request):
        """On page load: follow the running (or queued) training, if there is one."""
        job_id = self.service.active_job("train")
        return (job_id or "", self.gr.Timer(active=True)) if job_id else (self.gr.skip(), self.gr.skip())

    def preset(self, name: str):
        return preset_values("train", name, TRAIN_FIELDS, self.service.defaults("train"), self.gr)

    def poll(self, job_id: str, shown: list[Any] | None, request: gr.Request):
        gr, code = self.gr, self.code(request)
        if not job_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False), gr.skip()
        view = self.service.job_view(job_id, log_lines=200)
        fraction, line = status_line(view, code)
        prog = view.get("progress") or {}
        lines = [f"{t('train.job', code)} `{job_id}` · **{t('state.' + view['state'], code)}**"]
        if "kept" in prog:
            lines.append(t("msg.prepared", code, kept=prog["kept"], rejected=prog.get("rejected", 0)))
        if view["state"] == "succeeded" and view.get("result"):
            result = view["result"]
            lines.append(t("msg.trained", code, user=result["user_id"], score=result["best_score"]))
        if view.get("error"):
            lines.append(f"❌ {job_error(view, code)}")
        if view["state"] in (INTERRUPTED, "cancelled", "failed") and view.get("resumable"):
            lines.append(t("msg.resumable", code))
        gallery = []
        for v in prog.get("validations", []) or []:
            for name, score in zip(v.get("images", []), v.get("scores", []), strict=False):
                path = self.job_file(job_id, name)
                if path:
                    gallery.append((path, f"step {v['step']}: {score:.3f}"))
        sheet = self.job_file(job_id, prog.get("contact_sheet"))
        done = view["state"] in FINISHED
        log_tail = view.get("log_tail", "")
        return (
            progress_html(fraction, line),
            "\n\n".join(lines),
            log_tail,
            sheet,
            gallery,
            gr.Timer(active=not done),
            _marked(shown, prog.get("rejected_photos"), code),
        )

    def cancel(self, job_id: str, request: gr.Request):
        return self._act(self.service.cancel, job_id, request)

    def resume(self, job_id: str, request: gr.Request):
        return self._act(self.service.resume, job_id, request)

    def _act(self, action: Any, job_id: str, request: gr.Request):
        gr, code = self.gr, self.code(request)
        if not job_id:
            return self.refuse(t("err.no_job", code), code, 1)
        try:
            action(job_id)
        except EasyPhotoError as exc:
            return self.refuse(exc, code, 1)
        return gr.Timer(active=True)

    def layout(self) -> Any:
        """Build the tab (inside ``gr.Tab``) and wire its events; returns (job state, timer) for the
        page-load re-attach."""
        gr, L = self.gr, self.L
        tdef, pdef = self.service.defaults("train"), self.service.defaults("prepare")
        job = gr.State("")
        timer = gr.Timer(1.0, active=False)
        with gr.Row():
            with gr.Column(scale=1):
                photos = gr.Gallery(
                    label=L("train.photos"), file_types=["image"], type="filepath", interactive=True,
                    columns=5, height=230, object_fit="cover", elem_id="train-photos",
                )  # fmt: skip
                gr.Markdown(L("train.hint"), elem_id="train-hint")
                with gr.Row():
                    user_id = gr.Textbox(
                        label=L("train.user_id"), elem_id="train-user-id", max_length=64, scale=2
                    )
                    replace = gr.Checkbox(
                        label=L("train.replace"), value=False, elem_id="train-replace", scale=1
                    )
                preset = gr.Radio(
                    self.preset_choices(), value="standard", label=L("preset.label"), elem_id="train-preset"
                )
                with gr.Row():
                    start = gr.Button(L("train.start"), variant="primary", elem_id="train-start")
                    cancel = gr.Button(L("train.cancel"), elem_id="train-cancel")
                    resume = gr.Button(L("train.resume"), elem_id="train-resume")
                progress = gr.HTML(elem_id="train-progress")
                status = gr.Markdown(elem_id="train-status")
                with gr.Accordion(L("train.advanced"), open=False, elem_id="train-advanced"):
                    bases = self.service.base_models()
                    with gr.Row():
                        base = gr.Dropdown(
                            label=L("base.label"), info=L("base.help"), choices=bases, value=bases[0],
                            elem_id="train-base",
                        )  # fmt: skip
                        retouch = gr.Checkbox(label=L("train.retouch"), value=pdef.retouch)
                    inputs = settings_grid(gr, TrainConfig, TRAIN_FIELDS, tdef, L)
            with gr.Column(scale=1):
                sheet = gr.Image(
                    label=L("train.contact_sheet"), type="filepath", interactive=False, elem_id="train-sheet"
                )
                validation = gr.Gallery(
                    label=L("train.validation"), columns=4, height="auto", elem_id="train-validation"
                )
                log = gr.Textbox(
                    label=L("train.log"), lines=8, max_lines=16, autoscroll=True, interactive=False,
                    elem_id="train-log",
                )  # fmt: skip
        start.click(
            self.start,
            [photos, user_id, replace, base, retouch, *inputs],
            [job, timer, progress, status],
            api_visibility=API,
        )
        preset.change(self.preset, [preset], inputs, api_visibility=API)
        outputs = [progress, status, log, sheet, validation, timer, photos]
        timer.tick(self.poll, [job, photos], outputs, show_progress="hidden", api_visibility=API)
        cancel.click(self.cancel, [job], [timer], api_visibility=API)
        resume.click(self.resume, [job], [timer], api_visibility=API)
        return job, timer


__all__ = ["TRAIN_FIELDS", "TrainTab"]
