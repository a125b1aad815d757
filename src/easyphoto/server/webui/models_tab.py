"""The Models tab: every trained user with scores and dates, their face image, LoRA download, delete."""

from typing import Any
from urllib.parse import quote

import gradio as gr

from ...diffusion.families import FAMILY_NAMES
from ...errors import EasyPhotoError
from ..i18n import t
from .common import API, Tab


def local_time(when: str | float | None) -> str:
    """An ISO time (``2026-11-28T05:41:07+00:00``) or a Unix time as ``2026-11-28 05:41``, local."""
    from datetime import datetime

    if when in (None, ""):
        return ""
    try:
        moment = (
            datetime.fromtimestamp(when) if isinstance(when, (int, float)) else datetime.fromisoformat(when)
        )
        return moment.astimezone().strftime("%Y-%m-%d %H:%M")
    except (ValueError, OSError, OverflowError, TypeError):
        return str(when)


class ModelsTab(Tab):
    """Handlers and layout of the Models tab."""

    def table(self, request: gr.Request):
        code = self.code(request)
        columns = ("user", "family", "created", "steps", "photos", "score", "rank")
        headers = [t(f"col.{k}", code) for k in columns]
        rows = [
            [
                u["user_id"],
                FAMILY_NAMES.get(u.get("family") or "sd15", u.get("family")),  # SD1.5 / SDXL
                local_time(u.get("created")),
                u.get("steps"),
                u.get("photos"),
                f"{u['best_score']:.3f}" if u.get("best_score") else "—",  # 0: never scored
                u.get("rank"),
            ]
            for u in self.service.list_users()
        ]
        import pandas as pd  # a gradio dependency; zero rows shows the header, not a blank row

        table = pd.DataFrame(rows, columns=headers)
        picker = gr.Dropdown(choices=[r[0] for r in rows], value=None)
        return gr.Dataframe(value=table, headers=headers), picker

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
            return self.refuse(t("err.no_users", code), code, 3)
        if not confirm:
            return self.refuse(t("msg.confirm_delete", code), code, 3)
        try:
            self.service.delete_user(user_id)
        except EasyPhotoError as exc:
            return self.refuse(exc, code, 3)
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
                confirm = gr.Checkbox(label=L("models.confirm"), value=False, elem_id="models-confirm")
                delete = gr.Button(L("models.delete"), variant="stop", elem_id="models-delete")
            with gr.Column():
                face = gr.Image(label=L("models.face"), type="filepath", interactive=False)
        refresh.click(self.table, None, [table, pick], api_visibility=API)
        pick.change(self.pick, [pick], [face, lora, link], api_visibility=API)
        delete.click(self.delete, [pick, confirm], [table, pick, confirm], api_visibility=API)
        return table, pick


__all__ = ["ModelsTab"]
