"""The Generate tab: pick trained users — or give photos of a person to try it without training — and
templates (uploaded or from the templates folder), start a generation job, watch it and see the
portraits with their similarity scores."""

from pathlib import Path
from typing import Any

import gradio as gr

from ...config import GenerateConfig
from ...errors import EasyPhotoError
from ...jobs import FINISHED, Upload
from ...users import PHOTO_USER
from ..error_text import job_error, localize
from ..i18n import t
from .common import API, Tab, form_values, preset_values, progress_html, settings_grid, status_line

GENERATE_FIELDS = list(GenerateConfig.model_fields)
#: Faces the picker offers a user dropdown for (templates with more faces map the rest by order).
MAX_PICKER_FACES = 8
SKIP = "none"


def _numbered_strip(faces: list[dict[str, Any]]) -> Any:
    """The face crops side by side, each numbered as its dropdown is (1 = left-most)."""
    import cv2
    import numpy as np

    tiles = []
    for f in faces:
        tile = np.ascontiguousarray(f["crop"])
        cv2.rectangle(tile, (0, 0), (30, 26), (255, 255, 255), -1)
        cv2.putText(tile, str(f["index"] + 1), (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (230, 90, 20), 2)
        tiles.append(np.pad(tile, ((0, 0), (0, 6), (0, 0)), constant_values=255))
    return np.hstack(tiles)


class GenerateTab(Tab):
    """Handlers and layout of the Generate tab."""

    def refresh_users(self):
        return gr.Dropdown(choices=self.service.user_ids())

    def refresh_templates(self):
        return gr.Dropdown(choices=self.service.list_templates()), self.service.template_thumbnails()

    def choose_template(self, chosen: list[str] | None, evt: gr.SelectData):
        """A click on a gallery template adds it to the chosen library templates."""
        names = self.service.list_templates()  # the gallery's order (template_thumbnails)
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(index, int) or not 0 <= index < len(names):
            return gr.skip()
        name = names[index]
        return gr.Dropdown(value=list(dict.fromkeys([*(chosen or []), name])))

    def start(
        self,
        request: gr.Request,
        users: list[str] | None,
        person: list[str] | None,
        files: list[str] | None,
        library: list[str] | None,
        base: str | None,
        backdrop: str | None,
        n_faces: int,
        *values: Any,
    ):
        code = self.code(request)
        picked, values = values[:MAX_PICKER_FACES], values[MAX_PICKER_FACES:]
        if n_faces and n_faces > 1:  # the face picker decides: one id (or "none") per face, left to right
            users = [p or SKIP for p in picked[: min(n_faces, MAX_PICKER_FACES)]]
            if all(u == SKIP for u in users):
                return self.refuse(t("err.all_kept", code), code, 6)
        if not users and not person:
            return self.refuse(t("err.no_users", code), code, 6)
        if not files and not library:
            return self.refuse(t("err.no_templates", code), code, 6)
        try:
            uploads = [Upload(Path(f).name, Path(f).read_bytes()) for f in files or []]
            photos = [Upload(Path(f).name, Path(f).read_bytes()) for f in person or []]
            settings = form_values(GenerateConfig, GENERATE_FIELDS, values)
            behind = Upload(Path(backdrop).name, Path(backdrop).read_bytes()) if backdrop else None
            job = self.service.submit_generate(
                list(users or []), uploads, list(library or []), settings, photos=photos,
                base_model=base or None, background_image=behind,
            )  # fmt: skip
        except EasyPhotoError as exc:
            return self.refuse(exc, code, 6)
        return job.id, gr.Timer(active=True), progress_html(0, t("state.queued", code)), "", [], None

    def pick_faces(
        self, files: list[str] | None, library: list[str] | None, users: list[str] | None,
        person: list[str] | None, request: gr.Request,
    ):  # fmt: skip
        """The faces of the first template, left to right, each with a user dropdown (several faces)."""
        code = self.code(request)
        hidden = [gr.update(visible=False)] * MAX_PICKER_FACES
        source = (files or [None])[0] or (library or [None])[0]
        if not source:
            return 0, gr.update(visible=False), None, *hidden
        try:
            faces = self.service.template_faces(source)
        except EasyPhotoError:
            return 0, gr.update(visible=False), None, *hidden  # the generation itself will say why
        if len(faces) < 2:
            return len(faces), gr.update(visible=False), None, *hidden
        choices = [(t("gen.keep_face", code), SKIP)] + [(u, u) for u in self.service.user_ids()]
        if person:
            choices.append((t("gen.photo_user", code), PHOTO_USER))
        wanted = list(users or []) or ([PHOTO_USER] if person else [])
        if len(wanted) == 1:  # one user: the largest face, as generation does
            areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
            wanted = [wanted[0] if i == areas.index(max(areas)) else SKIP for i in range(len(faces))]
        updates = []
        for i in range(MAX_PICKER_FACES):
            value = wanted[i] if i < len(wanted) else SKIP
            updates.append(gr.update(visible=i < len(faces), choices=choices, value=value, label=f"{i + 1}"))
        return len(faces), gr.update(visible=True), _numbered_strip(faces[:MAX_PICKER_FACES]), *updates

    def attach(self, request: gr.Request):
        """On page load: follow the running (or queued) generation, if there is one."""
        job_id = self.service.active_job("generate")
        return (job_id or "", self.gr.Timer(active=True)) if job_id else (self.gr.skip(), self.gr.skip())

    def preset(self, name: str):
        return preset_values("generate", name, GENERATE_FIELDS, self.service.defaults("generate"), self.gr)

    def poll(self, job_id: str, request: gr.Request):
        code = self.code(request)
        if not job_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
        view = self.service.job_view(job_id, log_lines=0)
        fraction, line = status_line(view, code)
        result = view.get("result") or {}
        lines = [f"{t('train.job', code)} `{job_id}` · **{t('state.' + view['state'], code)}**"]
        gallery, downloads, rows = [], [], []
        for img in result.get("images", []):
            path = self.job_file(job_id, img["file"])
            if not path:
                continue
            caption = ", ".join(f"{s['user_id']}: {s['similarity']:.3f}" for s in img["scores"]) or "—"
            gallery.append((path, f"{img['template']} · {caption}"))
            downloads.append(path)
            rows += [f"| {img['template']} | {s['user_id']} | {s['similarity']:.3f} |" for s in img["scores"]]
        if gallery:
            lines.append(t("msg.generated", code, n=len(gallery)))
        if rows:
            header = f"| {t('col.template', code)} | {t('col.user', code)} | {t('col.similarity', code)} |"
            lines.append("\n".join([header, "|---|---|---|", *rows]))
        lines += [f"⚠️ {localize(err, code)}" for err in result.get("errors", [])]
        if view.get("error"):
            lines.append(f"❌ {job_error(view, code)}")
        done = view["state"] in FINISHED
        return (
            progress_html(fraction, line),
            "\n\n".join(lines),
            gallery if done else gr.skip(),
            (downloads or None) if done else gr.skip(),
            gr.Timer(active=not done),
        )

    def cancel(self, job_id: str, request: gr.Request):
        code = self.code(request)
        if not job_id:
            return self.refuse(t("err.no_job", code), code, 1)
        try:
            self.service.cancel(job_id)
        except EasyPhotoError as exc:
            return self.refuse(exc, code, 1)
        return gr.Timer(active=True)

    def layout(self) -> tuple[Any, Any, Any]:
        """Build the tab (inside ``gr.Tab``) and wire its events; returns (users dropdown, job state,
        timer) for the page-load refresh and re-attach."""
        L, service = self.L, self.service
        gdef = service.defaults("generate")
        job = gr.State("")
        timer = gr.Timer(1.0, active=False)
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    users = gr.Dropdown(
                        label=L("gen.users"), choices=service.user_ids(), multiselect=True, scale=4,
                        elem_id="gen-users",
                    )  # fmt: skip
                    users_refresh = gr.Button(L("gen.refresh"), scale=1, elem_id="gen-users-refresh")
                person = gr.File(
                    label=L("gen.photos"), file_count="multiple", file_types=["image"], type="filepath",
                    elem_id="gen-photos", height=110,
                )  # fmt: skip
                templates = gr.File(
                    label=L("gen.templates"), file_count="multiple", file_types=["image"], type="filepath",
                    elem_id="gen-templates", height=110,
                )  # fmt: skip
                with gr.Row():
                    library = gr.Dropdown(
                        label=L("gen.library"), choices=service.list_templates(), multiselect=True, scale=4,
                        elem_id="gen-library",
                    )  # fmt: skip
                    library_refresh = gr.Button(L("gen.refresh"), scale=1)
                gallery = gr.Gallery(
                    value=service.template_thumbnails(), label=L("gen.gallery"), columns=6, height=150,
                    allow_preview=False, elem_id="gen-gallery",
                )  # fmt: skip
                with gr.Row():
                    gr.Markdown(L("gen.library_hint"), elem_id="gen-library-hint")
                    gr.Markdown(f"`{service.templates_dir}`")
                n_faces = gr.State(0)
                with gr.Group(visible=False, elem_id="gen-picker") as picker:
                    gr.Markdown(L("gen.picker"))
                    face_crops = gr.Image(
                        height=130, show_label=False, interactive=False, elem_id="gen-faces",
                        buttons=[],
                    )  # fmt: skip
                    with gr.Row():
                        pickers = [
                            gr.Dropdown(visible=False, elem_id=f"gen-face-{i}", min_width=90)
                            for i in range(MAX_PICKER_FACES)
                        ]
                preset = gr.Radio(
                    self.preset_choices(), value="standard", label=L("preset.label"), elem_id="gen-preset"
                )
                with gr.Row():
                    start = gr.Button(L("gen.start"), variant="primary", elem_id="gen-start")
                    cancel = gr.Button(L("gen.cancel"), elem_id="gen-cancel")
                progress = gr.HTML(elem_id="gen-progress")
                status = gr.Markdown(elem_id="gen-status")
                with gr.Accordion(L("gen.advanced"), open=False, elem_id="gen-advanced"):
                    bases = service.base_models()
                    base = gr.Dropdown(
                        label=L("base.label"),
                        info=L("base.help"),
                        choices=bases,
                        value=bases[0],
                        elem_id="gen-base",
                    )
                    backdrop = gr.File(
                        label=L("gen.background_image"), file_types=["image"], type="filepath",
                        elem_id="gen-background", height=90,
                    )  # fmt: skip
                    inputs = settings_grid(gr, GenerateConfig, GENERATE_FIELDS, gdef, L)
            with gr.Column(scale=1):
                results = gr.Gallery(label=L("gen.results"), columns=2, height="auto", elem_id="gen-results")
                downloads = gr.File(label=L("gen.downloads"), file_count="multiple", elem_id="gen-downloads")
        users_refresh.click(self.refresh_users, None, [users], api_visibility=API)
        library_refresh.click(self.refresh_templates, None, [library, gallery], api_visibility=API)
        gallery.select(self.choose_template, [library], [library], api_visibility=API)
        outputs = [job, timer, progress, status, results, downloads]
        asked = [users, person, templates, library, base, backdrop, n_faces, *pickers, *inputs]
        start.click(self.start, asked, outputs, api_visibility=API)
        shown = [n_faces, picker, face_crops, *pickers]
        for source in (templates, library, users, person):
            source.change(self.pick_faces, [templates, library, users, person], shown, api_visibility=API)
        preset.change(self.preset, [preset], inputs, api_visibility=API)
        polled = [progress, status, results, downloads, timer]
        timer.tick(self.poll, [job], polled, show_progress="hidden", api_visibility=API)
        cancel.click(self.cancel, [job], [timer], api_visibility=API)
        return users, job, timer


__all__ = ["GENERATE_FIELDS", "GenerateTab"]
