"""The Text-to-photo tab: pick a trained user (or give photos of a person: no training, no template),
say what the picture shows (or take a shipped prompt), optionally a pose; SDXL draws the template and
the person is painted in. The job is a generation job, so
progress, results and downloads work as in the Generate tab (whose poll this tab reuses)."""

from pathlib import Path
from typing import Any

import gradio as gr

from ...config import Text2PhotoConfig
from ...errors import EasyPhotoError
from ...jobs import Upload
from ..i18n import TRANSLATIONS, t
from .common import API, form_values, progress_html, settings_grid
from .generate_tab import GenerateTab

#: Template settings shown under "advanced" (the prompt has its own box).
T2P_FIELDS = [n for n in Text2PhotoConfig.model_fields if n != "prompt"]
NO_POSE = ""

#: This tab's interface text. Added to :data:`~easyphoto.server.i18n.TRANSLATIONS` where a key is not
#: there yet, so entries written into ``i18n.py`` later win.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "tab.text2photo": "Text to photo",
        "t2p.users": "Trained user (painted into the picture)",
        "t2p.prompt": "What the picture shows (SDXL draws it, then you are painted in)",
        "t2p.preset": "Or start from a shipped prompt",
        "t2p.pose": "Pose (optional)",
        "t2p.no_pose": "no pose",
        "t2p.pose_file": "Or your own OpenPose image",
        "t2p.start": "Create",
        "t2p.advanced": "Template settings (SDXL)",
        "t2p.template": "the template SDXL drew",
        "err.no_prompt": "Say what the picture should show.",
    },
    "zh-CN": {
        "tab.text2photo": "文生图",
        "t2p.users": "已训练的用户（画入图片）",
        "t2p.prompt": "图片内容（由 SDXL 生成，再把你画进去）",
        "t2p.preset": "或使用内置提示词",
        "t2p.pose": "姿势（可选）",
        "t2p.no_pose": "不指定姿势",
        "t2p.pose_file": "或上传自己的 OpenPose 姿势图",
        "t2p.start": "生成",
        "t2p.advanced": "模板参数（SDXL）",
        "t2p.template": "SDXL 生成的模板",
        "err.no_prompt": "请填写图片内容。",
    },
}


def register_texts() -> None:
    """Add :data:`TEXTS` and the labels of :class:`Text2PhotoConfig`'s fields where missing."""
    from ..field_text import field_texts

    for lang, texts in field_texts((Text2PhotoConfig,)).items():
        for key, value in {**texts, **TEXTS[lang]}.items():
            TRANSLATIONS[lang].setdefault(key, value)


register_texts()


class Text2PhotoTab(GenerateTab):
    """Handlers and layout of the Text-to-photo tab (results shown as the Generate tab shows them)."""

    def use_preset(self, name: str | None):
        """A shipped prompt fills the prompt box."""
        prompts = self.service_presets()["prompts"]
        return prompts[name] if name in prompts else gr.skip()

    def service_presets(self) -> dict[str, Any]:
        from ...text_to_photo import text2photo_presets

        return text2photo_presets()

    def start_text2photo(
        self, request: gr.Request, users: list[str] | None, person: list[str] | None, prompt: str,
        pose_name: str | None, pose_file: str | None, backdrop: str | None, *values: Any,
    ):  # fmt: skip
        code = self.code(request)
        if not users and not person:
            return self.refuse(t("err.no_users", code), code, 6)
        if not (prompt or "").strip():
            return self.refuse(t("err.no_prompt", code), code, 6)
        try:
            settings = form_values(Text2PhotoConfig, T2P_FIELDS, values) | {"prompt": prompt.strip()}
            pose = Upload(Path(pose_file).name, Path(pose_file).read_bytes()) if pose_file else None
            photos = [Upload(Path(f).name, Path(f).read_bytes()) for f in person or []]
            behind = Upload(Path(backdrop).name, Path(backdrop).read_bytes()) if backdrop else None
            job = self.service.submit_text2photo(
                list(users or []), settings, {}, pose=pose, pose_name=None if pose else (pose_name or None),
                photos=photos, background_image=behind,
            )  # fmt: skip
        except EasyPhotoError as exc:
            return self.refuse(exc, code, 6)
        return job.id, gr.Timer(active=True), progress_html(0, t("state.queued", code)), "", [], None

    def poll(self, job_id: str, request: gr.Request):
        """The Generate tab's poll, with each portrait's SDXL template shown after it."""
        out = list(super().poll(job_id, request))
        if isinstance(out[2], list) and out[2]:
            result = self.service.job_view(job_id, log_lines=0).get("result") or {}
            label = t("t2p.template", self.code(request))
            for img in result.get("images", []):
                path = self.job_file(job_id, img.get("template_file"))
                if path:
                    out[2].append((path, label))
                    out[3] = [*(out[3] or []), path]
        return tuple(out)

    def layout(self) -> tuple[Any, Any, Any]:  # type: ignore[override]
        """Build the tab (inside ``gr.Tab``); returns (users dropdown, job state, timer)."""
        L, presets = self.L, self.service_presets()
        job, timer = gr.State(""), gr.Timer(1.0, active=False)
        with gr.Row():
            with gr.Column(scale=1):
                users = gr.Dropdown(
                    label=L("t2p.users"),
                    choices=self.service.user_ids(),
                    multiselect=True,
                    elem_id="t2p-users",
                )
                person = gr.File(
                    label=L("gen.photos"), file_count="multiple", file_types=["image"], type="filepath",
                    elem_id="t2p-photos", height=110,
                )  # fmt: skip
                prompt = gr.Textbox(label=L("t2p.prompt"), lines=3, elem_id="t2p-prompt")
                preset = gr.Dropdown(
                    label=L("t2p.preset"), choices=list(presets["prompts"]), elem_id="t2p-preset"
                )
                poses = [(L("t2p.no_pose"), NO_POSE)] + [(p, p) for p in presets["poses"]]
                pose = gr.Radio(poses, value=NO_POSE, label=L("t2p.pose"), elem_id="t2p-pose")
                pose_file = gr.File(
                    label=L("t2p.pose_file"),
                    file_types=["image"],
                    type="filepath",
                    height=90,
                    elem_id="t2p-pose-file",
                )
                backdrop = gr.File(
                    label=L("gen.background_image"), file_types=["image"], type="filepath",
                    elem_id="t2p-background", height=90,
                )  # fmt: skip
                with gr.Row():
                    start = gr.Button(L("t2p.start"), variant="primary", elem_id="t2p-start")
                    cancel = gr.Button(L("gen.cancel"), elem_id="t2p-cancel")
                progress = gr.HTML(elem_id="t2p-progress")
                status = gr.Markdown(elem_id="t2p-status")
                with gr.Accordion(L("t2p.advanced"), open=False, elem_id="t2p-advanced"):
                    inputs = settings_grid(gr, Text2PhotoConfig, T2P_FIELDS, Text2PhotoConfig(), L)
            with gr.Column(scale=1):
                results = gr.Gallery(label=L("gen.results"), columns=1, height="auto", elem_id="t2p-results")
                downloads = gr.File(label=L("gen.downloads"), file_count="multiple", elem_id="t2p-downloads")
        preset.change(self.use_preset, [preset], [prompt], api_visibility=API)
        outputs = [job, timer, progress, status, results, downloads]
        start.click(
            self.start_text2photo,
            [users, person, prompt, pose, pose_file, backdrop, *inputs],
            outputs,
            api_visibility=API,
        )
        polled = [progress, status, results, downloads, timer]
        timer.tick(self.poll, [job], polled, show_progress="hidden", api_visibility=API)
        cancel.click(self.cancel, [job], [timer], api_visibility=API)
        return users, job, timer


__all__ = ["T2P_FIELDS", "TEXTS", "Text2PhotoTab", "register_texts"]
