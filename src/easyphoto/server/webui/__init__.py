"""The web UI (Gradio): Train, Generate, Text-to-photo, Models and Jobs tabs over
:class:`easyphoto.jobs.JobService`.

One module per tab (:mod:`.train_tab`, :mod:`.generate_tab`, :mod:`.text2photo_tab`, :mod:`.models_tab`,
:mod:`.jobs_tab`); :mod:`.common` builds
the settings inputs from the schema. Nothing here trains or generates: buttons submit jobs, a timer
polls the job and shows its progress, log, contact sheet, validation images and results. Bad input
(no face, unreadable photo, unknown user) shows as a readable message, never as a stack trace.
Interface text comes from :mod:`easyphoto.server.i18n` (English / Simplified Chinese, by the browser's
language unless ``lang`` forces one). Gradio is imported only when the UI is served.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...jobs import JobService
from ...store import users_dir
from ..i18n import TRANSLATIONS, t

#: A page per language (everything in it — labels, toasts, statuses — in that language), besides ``/``,
#: which follows the browser (or ``EASYPHOTO_UI_LANG``).
LANGUAGE_PATHS = {"en": "/en", "zh-CN": "/zh"}
LANGUAGE_SWITCH = (
    '<div style="text-align:right;font-size:0.95em">'
    '<a href="/en/" lang="en">English</a> · <a href="/zh/" lang="zh-CN">中文</a></div>'
)


def build_ui(service: JobService, lang: str = "auto") -> tuple[Any, Any]:
    """The Gradio Blocks and its ``gr.I18n`` (``None`` when ``lang`` forces one language)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from .common import API
    from .generate_tab import GenerateTab
    from .jobs_tab import JobsTab
    from .models_tab import ModelsTab
    from .text2photo_tab import Text2PhotoTab
    from .train_tab import TrainTab

    i18n = gr.I18n(**TRANSLATIONS) if lang not in TRANSLATIONS else None

    def label(key: str) -> Any:
        return i18n(key) if i18n is not None else t(key, lang)

    with gr.Blocks(title="EasyPhoto", analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown(label("title"))
            gr.HTML(LANGUAGE_SWITCH, elem_id="lang-switch", padding=False)
        with gr.Tabs():
            with gr.Tab(label("tab.train"), id="train", elem_id="tab-train"):
                train = TrainTab(gr, service, lang, label)
                train_job, train_timer = train.layout()
            with gr.Tab(label("tab.generate"), id="generate", elem_id="tab-generate") as gen_tab:
                generate = GenerateTab(gr, service, lang, label)
                users, gen_job, gen_timer = generate.layout()
            with gr.Tab(label("tab.text2photo"), id="text2photo", elem_id="tab-text2photo") as t2p_tab:
                text2photo = Text2PhotoTab(gr, service, lang, label)
                t2p_users, _, _ = text2photo.layout()
            with gr.Tab(label("tab.models"), id="models", elem_id="tab-models") as models_tab:
                models = ModelsTab(gr, service, lang, label)
                table, pick = models.layout()
            with gr.Tab(label("tab.jobs"), id="jobs", elem_id="tab-jobs") as jobs_tab:
                jobs = JobsTab(gr, service, lang, label)
                jobs_table = jobs.layout()
        demo.load(models.table, None, [table, pick], api_visibility=API)
        demo.load(generate.refresh_users, None, [users], api_visibility=API)
        # a reloaded page follows the jobs still running
        demo.load(train.attach, None, [train_job, train_timer], api_visibility=API)
        demo.load(generate.attach, None, [gen_job, gen_timer], api_visibility=API)
        # lists refresh themselves when their tab is opened (after a training, a delete…)
        gen_tab.select(generate.refresh_users, None, [users], api_visibility=API)
        t2p_tab.select(text2photo.refresh_users, None, [t2p_users], api_visibility=API)
        models_tab.select(models.table, None, [table, pick], api_visibility=API)
        jobs_tab.select(jobs.table, None, [jobs_table], api_visibility=API)
    return demo, i18n


def shown_files(service: JobService) -> Callable[[tuple[str, ...]], bool]:
    """What the UI shows, as a test on a path's lower-cased components relative to ``service.home``:
    a job's ``files/`` (portraits, contact sheets, validation images) and a user's ``face_id.png``.

    Job inputs and logs, LoRAs, checkpoints and ``jobs.db`` are not shown (the LoRA download is the
    ``/v1/users/{id}/lora`` link); :class:`~easyphoto.server.security.UiFileGuard` applies this test.
    """
    home = Path(os.path.realpath(service.home))

    def parts_of(folder: Path) -> tuple[str, ...]:
        try:
            return tuple(p.lower() for p in Path(os.path.realpath(folder)).relative_to(home).parts)
        except ValueError:
            return ("\x00",)  # not under home: nothing there is ever shown

    jobs, users = parts_of(service.store.jobs_root), parts_of(users_dir(service.home))

    def shown(parts: tuple[str, ...]) -> bool:
        j, u = len(jobs), len(users)
        if parts[:j] == jobs and len(parts) == j + 3 and parts[j + 1] == "files":
            return not parts[j + 2].startswith(".")
        return parts[:u] == users and len(parts) == u + 2 and parts[u + 1] == "face_id.png"

    return shown


def mount_ui(app: Any, service: JobService, lang: str = "auto", path: str = "/") -> Any:
    """Mount the UI on a FastAPI app (call after every API route is declared).

    Gradio may serve files under the jobs and users folders; the app's
    :class:`~easyphoto.server.security.UiFileGuard` narrows that to :func:`shown_files`. Errors other
    than our readable ``gr.Error`` messages show as a generic one (``show_error=False``): a raw
    exception's text can hold server paths.
    """
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
        show_error=False,
        max_file_size=service.limits.max_file_bytes,
    )


__all__ = ["LANGUAGE_PATHS", "LANGUAGE_SWITCH", "build_ui", "mount_ui", "shown_files"]
