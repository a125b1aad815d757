"""The Models tab: every trained user with scores and dates, their face image, LoRA download, delete."""

from typing import Any
from urllib.parse import quote

import gradio as gr

from ...errors import EasyPhotoError
from ..i18n import t
from .common import API, Tab


class ModelsTab(Tab):
    """Handlers and layout of the Models tab."""

    def table(self, request: gr.Request):
        code = self.code(request)
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
            for u in self.service.list_users()
        ]
        empty = [["", "", None, None, None, None]]
        return gr.Dataframe(value=rows or empty, headers=headers), gr.Dropdown(
            choices=[r[0] for r in rows], value=None
        )

    def pick(self, user_id: str | None):
        none = None, gr.Button(link=None, interactive=False), ""
        if not user_id:
            return none
        try:
            face = self.service.user_file(user_id, "face_id.png")
            self.service.user_file(user_id, "lora.safetensors")
        except EasyPhotoError:
            return none
        url = f"/v1/users/{quote(user_id)}/lora"  # served by the API, not as a file path by the UI
        link = f"[{user_id}.safetensors]({url})"
        return str(face), gr.Button(link=url, interactive=True), link

    def delete(self, user_id: str | None, confirm: bool, request: gr.Request):
        code = self.code(request)
        if not user_id:
            raise gr.Error(t("err.no_users", code), print_exception=False)
        if not confirm:
            raise gr.Error(t("msg.confirm_delete", code), print_exception=False)
        try:
            self.service.delete_user(user_id)
        except EasyPhotoError as exc:
            raise self.error(exc, code) from None
        gr.Info(t("msg.deleted", code, user=user_id))
        table, dropdown = self.table(request)
        return table, dropdown, False

    def layout(self) -> tuple[Any, Any]:
        """Build the tab (inside ``gr.Tab``) and wire its events; returns (table, picker) to fill on load."""
        L = self.L
        with gr.Row():
            refresh = gr.Button(L("models.refresh"), elem_id="models-refresh")
        table = gr.Dataframe(label=L("models.list"), interactive=False, elem_id="models-table")
        with gr.Row():
            with gr.Column():
                pick = gr.Dropdown(
                    label=L("models.pick"), choices=self.service.user_ids(), elem_id="models-pick"
                )
                lora = gr.Button(L("models.download"), interactive=False, elem_id="models-lora")
                link = gr.Markdown()
                confirm = gr.Checkbox(label=L("models.confirm"), value=False)
                delete = gr.Button(L("models.delete"), variant="stop", elem_id="models-delete")
            with gr.Column():
                face = gr.Image(label=L("models.face"), type="filepath", interactive=False)
        refresh.click(self.table, None, [table, pick], api_visibility=API)
        pick.change(self.pick, [pick], [face, lora, link], api_visibility=API)
        delete.click(self.delete, [pick, confirm], [table, pick, confirm], api_visibility=API)
        return table, pick


__all__ = ["ModelsTab"]
