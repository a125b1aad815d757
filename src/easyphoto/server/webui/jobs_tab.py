"""The Jobs tab: the recent trainings and generations with their state and progress, and a cancel."""

from typing import Any

import gradio as gr

from ...errors import EasyPhotoError
from ..i18n import t
from .common import API, Tab, status_line
from .models_tab import local_time


class JobsTab(Tab):
    """Handlers and layout of the Jobs tab."""

    def table(self, request: gr.Request):
        import pandas as pd  # a gradio dependency

        code = self.code(request)
        headers = [t(f"col.{k}", code) for k in ("job", "kind", "user", "state", "progress", "created")]
        rows = []
        for job in self.service.recent_jobs(limit=30):
            view = {"state": job["state"], "progress": job.get("progress") or {}, "queue_position": None}
            fraction, line = status_line(view, code)
            state = t(f"state.{job['state']}", code)
            rows.append(
                [job["id"], t(f"kind.{job['kind']}", code), job.get("user_id") or "—", state,
                 f"{fraction:.0%} · {line}" if job["state"] == "running" else "", local_time(job["created"])]
            )  # fmt: skip
        return gr.Dataframe(value=pd.DataFrame(rows, columns=headers), headers=headers)

    def cancel(self, job_id: str, request: gr.Request):
        code = self.code(request)
        if not (job_id or "").strip():
            return self.refuse(t("err.no_job", code), code, 1)
        try:
            self.service.cancel(job_id.strip())
        except EasyPhotoError as exc:
            return self.refuse(exc, code, 1)
        gr.Info(t("msg.cancelling", code, job=job_id.strip()))
        return self.table(request)

    def layout(self) -> Any:
        """Build the tab (inside ``gr.Tab``) and wire its events; returns the table to fill on open."""
        L = self.L
        with gr.Row():
            refresh = gr.Button(L("jobs.refresh"), elem_id="jobs-refresh")
        table = gr.Dataframe(label=L("jobs.list"), interactive=False, elem_id="jobs-table")
        with gr.Row():
            job_id = gr.Textbox(label=L("jobs.id"), elem_id="jobs-id", scale=3)
            cancel = gr.Button(L("jobs.cancel"), variant="stop", elem_id="jobs-cancel", scale=1)
        timer = gr.Timer(3.0, active=True)
        refresh.click(self.table, None, [table], api_visibility=API)
        timer.tick(self.table, None, [table], show_progress="hidden", api_visibility=API)
        cancel.click(self.cancel, [job_id], [table], api_visibility=API)
        return table


__all__ = ["JobsTab"]
