"""The web UI (Gradio): Train, Generate and Models tabs over :class:`easyphoto.jobs.JobService`.

Nothing here trains or generates: buttons submit jobs, a timer polls the job and shows its progress,
log, contact sheet, validation images and results. Bad input (no face, unreadable photo, unknown
user) shows as a readable message (``gr.Error`` or the status line), never as a stack trace. Interface
text comes from :mod:`easyphoto.i18n` (English / Simplified Chinese, by the browser's language unless
``lang`` forces one). Gradio is imported only when the UI is served. (No ``from __future__ import
annotations`` here: Gradio finds the ``gr.Request`` parameter of a handler by its evaluated annotation.)
"""

import os
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from .config import GenerateConfig, TrainConfig
from .errors import EasyPhotoError
from .i18n import TRANSLATIONS, pick_language, t
from .jobs import FINISHED, INTERRUPTED, JobService, Upload
from .store import users_dir

#: Settings shown in the Generate tab's accordion (the rest keep their defaults).
_LONG_TEXT = {"prompt", "negative_prompt", "validation_prompt", "validation_negative_prompt"}


def _lang(request: Any, setting: str) -> str:
    headers = getattr(request, "headers", None) or {}
    try:
        accept = headers.get("accept-language", "")
    except AttributeError:
        accept = ""
    return pick_language(accept, setting)


def _optional(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _input_for(gr: Any, cls: type, name: str, default: Any) -> Any:
    """A Gradio input for one settings field, showing its current default."""
    hint, optional = _optional(typing.get_type_hints(cls)[name])
    if hint is bool:
        return gr.Checkbox(label=name, value=bool(default))
    if hint in (int, float) and not optional:
        return gr.Number(label=name, value=default, precision=0 if hint is int else None)
    if typing.get_origin(hint) is tuple:
        return gr.Textbox(label=name, value=", ".join(str(v) for v in default))
    return gr.Textbox(
        label=name,
        value="" if default is None else str(default),
        lines=2 if name in _LONG_TEXT else 1,
        placeholder="(auto)" if optional else None,
    )


def _form_values(cls: type, names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    """Raw widget values → settings overrides (empty text = None for optional fields)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        _, optional = _optional(hints[name])
        if isinstance(value, str):
            value = value.strip()
            if value == "" and optional:
                value = None
        out[name] = value
    return out


def _progress_html(fraction: float | None, text: str) -> str:
    pct = max(0.0, min(1.0, float(fraction or 0.0))) * 100
    return (
        '<div class="ep-progress" style="margin:4px 0 8px 0">'
        '<div style="background:#e5e7eb;border-radius:6px;height:14px;overflow:hidden">'
        f'<div style="width:{pct:.1f}%;height:14px;background:#f97316;transition:width .4s"></div></div>'
        f'<div style="font-size:0.9em;margin-top:4px">{text}</div></div>'
    )


def _eta(seconds: Any) -> str:
    if seconds is None:
        return "…"
    s = int(round(float(seconds)))
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _status_line(view: dict[str, Any], lang: str) -> tuple[float, str]:
    """(fraction, one-line text) of a job view."""
    state = view["state"]
    prog = view.get("progress") or {}
    label = t(f"state.{state}", lang)
    if state == "queued":
        ahead = view.get("queue_position") or 0
        return 0.0, f"{label} · {t('msg.queued_ahead', lang, n=ahead)}"
    if state == "running":
        if prog.get("stage") == "prepare":
            return 0.0, t("msg.preparing", lang, photo=prog.get("photo", 0), photos=prog.get("photos", "?"))
        if "step" in prog and prog.get("stage") in ("train", "done"):
            loss = prog.get("loss")
            return float(prog.get("fraction") or 0.0), t(
                "msg.step",
                lang,
                step=prog.get("step"),
                max_steps=prog.get("max_steps"),
                loss="…" if loss is None else f"{loss:.4f}",
                eta=_eta(prog.get("eta_s")),
            )
        if prog.get("stage") == "generate":
            return float(prog.get("fraction") or 0.0), t(
                "msg.template", lang, template=prog.get("template"), templates=prog.get("templates")
            )
        return float(prog.get("fraction") or 0.0), label
    return (1.0 if state == "succeeded" else float(prog.get("fraction") or 0.0)), label


def build_ui(service: JobService, lang: str = "auto") -> tuple[Any, Any]:
    """The Gradio Blocks and its ``gr.I18n`` (``None`` when ``lang`` forces one language)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    i18n = gr.I18n(**TRANSLATIONS) if lang not in TRANSLATIONS else None

    def L(key: str) -> Any:  # noqa: N802 - short on purpose: every label goes through it
        return i18n(key) if i18n is not None else t(key, lang)

    tdef = service.defaults("train")
    pdef = service.defaults("prepare")
    gdef = service.defaults("generate")
    # Server file paths are the operator's business, not a form field.
    train_names = [f.name for f in fields(TrainConfig) if f.name != "validation_templates"]
    gen_names = [f.name for f in fields(GenerateConfig)]

    def fail(exc: Exception, code: str) -> gr.Error:
        return gr.Error(str(exc), title=t("err.error", code), print_exception=False)

    def job_file(job_id: str, name: str | None) -> str | None:
        if not name:
            return None
        try:
            return str(service.job_file(job_id, name))
        except EasyPhotoError:
            return None

    # ------------------------------------------------------------------ train handlers
    def start_training(
        request: gr.Request, files: list[str] | None, user_id: str, retouch: bool, *values: Any
    ):
        code = _lang(request, lang)
        if not files:
            raise gr.Error(t("err.no_photos", code), print_exception=False)
        if not (user_id or "").strip():
            raise gr.Error(t("err.no_user", code), print_exception=False)
        try:
            uploads = [Upload(Path(f).name, Path(f).read_bytes()) for f in files]
            job = service.submit_train(
                user_id.strip(),
                uploads,
                _form_values(TrainConfig, train_names, values),
                {"retouch": bool(retouch)},
            )
        except EasyPhotoError as exc:
            raise fail(exc, code) from None
        return (
            job.id,
            gr.Timer(active=True),
            _progress_html(0, t("state.queued", code)),
            f"{t('train.job', code)} `{job.id}`",
        )

    def poll_training(job_id: str, request: gr.Request):
        code = _lang(request, lang)
        if not job_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
        view = service.job_view(job_id, log_lines=200)
        fraction, line = _status_line(view, code)
        prog = view.get("progress") or {}
        lines = [f"{t('train.job', code)} `{job_id}` · **{t('state.' + view['state'], code)}**"]
        if "kept" in prog:
            lines.append(t("msg.prepared", code, kept=prog["kept"], rejected=prog.get("rejected", 0)))
        if view["state"] == "succeeded" and view.get("result"):
            lines.append(
                t("msg.trained", code, user=view["result"]["user_id"], score=view["result"]["best_score"])
            )
        if view.get("error"):
            lines.append(f"❌ {view['error']}")
        if view["state"] in (INTERRUPTED, "cancelled", "failed") and view.get("resumable"):
            lines.append(t("msg.resumable", code))
        gallery = []
        for v in prog.get("validations", []) or []:
            for name, score in zip(v.get("images", []), v.get("scores", []), strict=False):
                path = job_file(job_id, name)
                if path:
                    gallery.append((path, f"step {v['step']}: {score:.3f}"))
        sheet = job_file(job_id, prog.get("contact_sheet"))
        done = view["state"] in FINISHED
        return (
            _progress_html(fraction, line),
            "\n\n".join(lines),
            view.get("log_tail", ""),
            sheet,
            gallery,
            gr.Timer(active=not done),
        )

    def cancel_job(job_id: str, request: gr.Request):
        code = _lang(request, lang)
        if not job_id:
            raise gr.Error(t("err.no_job", code), print_exception=False)
        try:
            service.cancel(job_id)
        except EasyPhotoError as exc:
            raise fail(exc, code) from None
        return gr.Timer(active=True)

    def resume_training(job_id: str, request: gr.Request):
        code = _lang(request, lang)
        if not job_id:
            raise gr.Error(t("err.no_job", code), print_exception=False)
        try:
            service.resume(job_id)
        except EasyPhotoError as exc:
            raise fail(exc, code) from None
        return gr.Timer(active=True)

    # ------------------------------------------------------------------ generate handlers
    def refresh_users():
        return gr.Dropdown(choices=service.user_ids())

    def refresh_templates():
        return gr.Dropdown(choices=service.list_templates())

    def start_generation(
        request: gr.Request,
        users: list[str] | None,
        files: list[str] | None,
        library: list[str] | None,
        *values: Any,
    ):
        code = _lang(request, lang)
        if not users:
            raise gr.Error(t("err.no_users", code), print_exception=False)
        if not files and not library:
            raise gr.Error(t("err.no_templates", code), print_exception=False)
        try:
            uploads = [Upload(Path(f).name, Path(f).read_bytes()) for f in files or []]
            job = service.submit_generate(
                list(users), uploads, list(library or []), _form_values(GenerateConfig, gen_names, values)
            )
        except EasyPhotoError as exc:
            raise fail(exc, code) from None
        return job.id, gr.Timer(active=True), _progress_html(0, t("state.queued", code)), "", [], None

    def poll_generation(job_id: str, request: gr.Request):
        code = _lang(request, lang)
        if not job_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
        view = service.job_view(job_id, log_lines=0)
        fraction, line = _status_line(view, code)
        result = view.get("result") or {}
        lines = [f"{t('train.job', code)} `{job_id}` · **{t('state.' + view['state'], code)}**"]
        gallery, downloads = [], []
        rows = []
        for img in result.get("images", []):
            path = job_file(job_id, img["file"])
            if not path:
                continue
            caption = ", ".join(f"{s['user_id']}: {s['similarity']:.3f}" for s in img["scores"]) or "—"
            gallery.append((path, f"{img['template']} · {caption}"))
            downloads.append(path)
            for s in img["scores"]:
                rows.append(f"| {img['template']} | {s['user_id']} | {s['similarity']:.3f} |")
        if gallery:
            lines.append(t("msg.generated", code, n=len(gallery)))
        if rows:
            header = f"| {t('col.template', code)} | {t('col.user', code)} | {t('col.similarity', code)} |"
            lines.append("\n".join([header, "|---|---|---|", *rows]))
        for err in result.get("errors", []):
            lines.append(f"⚠️ {err['error']}")
        if view.get("error"):
            lines.append(f"❌ {view['error']}")
        done = view["state"] in FINISHED
        return (
            _progress_html(fraction, line),
            "\n\n".join(lines),
            gallery if done else gr.skip(),
            (downloads or None) if done else gr.skip(),
            gr.Timer(active=not done),
        )

    # ------------------------------------------------------------------ models handlers
    def users_table(request: gr.Request):
        code = _lang(request, lang)
        headers = [t(f"col.{k}", code) for k in ("user", "created", "steps", "photos", "score", "rank")]
        rows = [
            [
                u["user_id"],
                u.get("created") or "",
                u.get("steps"),
                u.get("photos"),
                u.get("best_score"),
                u.get("rank"),
            ]
            for u in service.list_users()
        ]
        return gr.Dataframe(value=rows or [["", "", None, None, None, None]], headers=headers), gr.Dropdown(
            choices=[r[0] for r in rows], value=None
        )

    def pick_user(user_id: str | None):
        if not user_id:
            return None, gr.DownloadButton(value=None, interactive=False), ""
        try:
            face = service.user_file(user_id, "face_id.png")
            lora = service.user_file(user_id, "lora.safetensors")
        except EasyPhotoError:
            return None, gr.DownloadButton(value=None, interactive=False), ""
        link = f"[{user_id}.safetensors](/v1/users/{user_id}/lora)"
        return str(face), gr.DownloadButton(value=str(lora), interactive=True), link

    def delete_user(user_id: str | None, confirm: bool, request: gr.Request):
        code = _lang(request, lang)
        if not user_id:
            raise gr.Error(t("err.no_users", code), print_exception=False)
        if not confirm:
            raise gr.Error(t("msg.confirm_delete", code), print_exception=False)
        try:
            service.delete_user(user_id)
        except EasyPhotoError as exc:
            raise fail(exc, code) from None
        gr.Info(t("msg.deleted", code, user=user_id))
        table, dropdown = users_table(request)
        return table, dropdown, False

    # ------------------------------------------------------------------ layout
    with gr.Blocks(title="EasyPhoto", analytics_enabled=False) as demo:
        gr.Markdown(L("title"))
        with gr.Tabs():
            with gr.Tab(L("tab.train"), id="train", elem_id="tab-train"):
                train_job = gr.State("")
                train_timer = gr.Timer(1.0, active=False)
                with gr.Row():
                    with gr.Column(scale=1):
                        photos = gr.File(
                            label=L("train.photos"),
                            file_count="multiple",
                            file_types=["image"],
                            type="filepath",
                            elem_id="train-photos",
                        )
                        user_id = gr.Textbox(label=L("train.user_id"), elem_id="train-user-id", max_length=64)
                        with gr.Accordion(L("train.advanced"), open=False, elem_id="train-advanced"):
                            retouch = gr.Checkbox(label=L("train.retouch"), value=pdef.retouch)
                            train_inputs = [
                                _input_for(gr, TrainConfig, n, getattr(tdef, n)) for n in train_names
                            ]
                        with gr.Row():
                            train_btn = gr.Button(L("train.start"), variant="primary", elem_id="train-start")
                            train_cancel = gr.Button(L("train.cancel"), elem_id="train-cancel")
                            train_resume = gr.Button(L("train.resume"), elem_id="train-resume")
                    with gr.Column(scale=1):
                        train_progress = gr.HTML(elem_id="train-progress")
                        train_status = gr.Markdown(elem_id="train-status")
                        contact = gr.Image(
                            label=L("train.contact_sheet"),
                            type="filepath",
                            interactive=False,
                            elem_id="train-sheet",
                        )
                        validation = gr.Gallery(
                            label=L("train.validation"), columns=4, height="auto", elem_id="train-validation"
                        )
                        train_log = gr.Textbox(
                            label=L("train.log"),
                            lines=8,
                            max_lines=16,
                            autoscroll=True,
                            interactive=False,
                            elem_id="train-log",
                        )
            with gr.Tab(L("tab.generate"), id="generate", elem_id="tab-generate"):
                gen_job = gr.State("")
                gen_timer = gr.Timer(1.0, active=False)
                with gr.Row():
                    with gr.Column(scale=1):
                        with gr.Row():
                            users = gr.Dropdown(
                                label=L("gen.users"),
                                choices=service.user_ids(),
                                multiselect=True,
                                scale=4,
                                elem_id="gen-users",
                            )
                            users_refresh = gr.Button(L("gen.refresh"), scale=1, elem_id="gen-users-refresh")
                        templates = gr.File(
                            label=L("gen.templates"),
                            file_count="multiple",
                            file_types=["image"],
                            type="filepath",
                            elem_id="gen-templates",
                        )
                        with gr.Row():
                            library = gr.Dropdown(
                                label=L("gen.library"),
                                choices=service.list_templates(),
                                multiselect=True,
                                scale=4,
                                elem_id="gen-library",
                            )
                            library_refresh = gr.Button(L("gen.refresh"), scale=1)
                        gr.Markdown(t("gen.library_hint", "en", folder=service.templates_dir))
                        with gr.Accordion(L("gen.advanced"), open=False, elem_id="gen-advanced"):
                            gen_inputs = [
                                _input_for(gr, GenerateConfig, n, getattr(gdef, n)) for n in gen_names
                            ]
                        with gr.Row():
                            gen_btn = gr.Button(L("gen.start"), variant="primary", elem_id="gen-start")
                            gen_cancel = gr.Button(L("gen.cancel"), elem_id="gen-cancel")
                    with gr.Column(scale=1):
                        gen_progress = gr.HTML(elem_id="gen-progress")
                        gen_status = gr.Markdown(elem_id="gen-status")
                        results = gr.Gallery(
                            label=L("gen.results"), columns=2, height="auto", elem_id="gen-results"
                        )
                        downloads = gr.File(
                            label=L("gen.downloads"), file_count="multiple", elem_id="gen-downloads"
                        )
            with gr.Tab(L("tab.models"), id="models", elem_id="tab-models"):
                with gr.Row():
                    models_refresh = gr.Button(L("models.refresh"), elem_id="models-refresh")
                table = gr.Dataframe(label=L("models.list"), interactive=False, elem_id="models-table")
                with gr.Row():
                    with gr.Column():
                        pick = gr.Dropdown(
                            label=L("models.pick"), choices=service.user_ids(), elem_id="models-pick"
                        )
                        lora_btn = gr.DownloadButton(
                            L("models.download"), interactive=False, elem_id="models-lora"
                        )
                        lora_link = gr.Markdown()
                        confirm = gr.Checkbox(label=L("models.confirm"), value=False)
                        delete_btn = gr.Button(L("models.delete"), variant="stop", elem_id="models-delete")
                    with gr.Column():
                        face = gr.Image(label=L("models.face"), type="filepath", interactive=False)

        # events
        train_btn.click(
            start_training,
            [photos, user_id, retouch, *train_inputs],
            [train_job, train_timer, train_progress, train_status],
        )
        train_outputs = [train_progress, train_status, train_log, contact, validation, train_timer]
        train_timer.tick(poll_training, [train_job], train_outputs, show_progress="hidden")
        train_cancel.click(cancel_job, [train_job], [train_timer])
        train_resume.click(resume_training, [train_job], [train_timer])

        users_refresh.click(refresh_users, None, [users])
        library_refresh.click(refresh_templates, None, [library])
        gen_btn.click(
            start_generation,
            [users, templates, library, *gen_inputs],
            [gen_job, gen_timer, gen_progress, gen_status, results, downloads],
        )
        gen_timer.tick(
            poll_generation,
            [gen_job],
            [gen_progress, gen_status, results, downloads, gen_timer],
            show_progress="hidden",
        )
        gen_cancel.click(cancel_job, [gen_job], [gen_timer])

        models_refresh.click(users_table, None, [table, pick])
        pick.change(pick_user, [pick], [face, lora_btn, lora_link])
        delete_btn.click(delete_user, [pick, confirm], [table, pick, confirm])
        demo.load(users_table, None, [table, pick])
        demo.load(refresh_users, None, [users])
    return demo, i18n


def mount_ui(app: Any, service: JobService, lang: str = "auto", path: str = "/") -> Any:
    """Mount the UI on a FastAPI app (call after every API route is declared)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    demo, i18n = build_ui(service, lang)
    theme = gr.themes.Default(
        primary_hue="orange", font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    return gr.mount_gradio_app(
        app,
        demo,
        path=path,
        allowed_paths=[str(service.store.jobs_root), str(users_dir(service.home))],
        i18n=i18n,
        theme=theme,
        show_error=True,
        max_file_size=service.limits.max_file_bytes,
    )


__all__ = ["build_ui", "mount_ui"]
