"""What every tab of the web UI shares: settings inputs built from the schema, progress, language.

The advanced-settings inputs come from :mod:`easyphoto.config`: each field's type picks the widget, its
range bounds it and its one-line description is the help text, so a new setting appears in the UI with
no UI code. (No ``from __future__ import annotations`` in the UI modules: Gradio finds the
``gr.Request`` parameter of a handler by its evaluated annotation.)
"""

import typing
from typing import Any

import annotated_types

from ..error_text import localize
from ..i18n import pick_language, t

#: Every event handler is the UI's own: hidden from Gradio's "Use via API" and from its client
#: libraries (programs use the HTTP API under /v1, which validates and queues the same way).
API = "private"

#: Settings shown as multi-line text boxes.
LONG_TEXT = {"prompt", "negative_prompt", "validation_prompt", "validation_negative_prompt"}


def request_lang(request: Any, setting: str) -> str:
    """The language of one request: the forced one, or the browser's ``Accept-Language``."""
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


def _bounds(field: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in field.metadata:
        if isinstance(m, (annotated_types.Ge, annotated_types.Gt)):
            out["minimum"] = float(getattr(m, "ge", getattr(m, "gt", 0)))
        if isinstance(m, (annotated_types.Le, annotated_types.Lt)):
            out["maximum"] = float(getattr(m, "le", getattr(m, "lt", 0)))
    return out


def input_for(gr: Any, cls: type, name: str, default: Any, L: Any = None) -> Any:
    """A Gradio input for one settings field: widget by type, bounds by range, a readable translated
    label and help (:mod:`..field_text`; ``L`` turns a text key into the UI's language)."""
    field = cls.model_fields[name]
    hint, optional = _optional(field.annotation)
    label = L(f"field.{name}") if L else name
    info = L(f"help.{cls.__name__}.{name}") if L else field.description
    elem = f"{cls.__name__.removesuffix('Config').lower()}-{name.replace('_', '-')}"
    if hint is bool:
        return gr.Checkbox(label=label, value=bool(default), info=info, elem_id=elem)
    if hint in (int, float) and not optional:
        return gr.Number(
            label=label, value=default, precision=0 if hint is int else None, info=info, elem_id=elem,
            **_bounds(field),
        )  # fmt: skip
    if typing.get_origin(hint) is tuple:
        return gr.Textbox(label=label, value=", ".join(str(v) for v in default), info=info, elem_id=elem)
    return gr.Textbox(
        label=label,
        elem_id=elem,
        value="" if default is None else str(default),
        lines=2 if name in LONG_TEXT else 1,
        placeholder="(auto)" if optional else None,
        info=info,
    )


#: Presets of the Train and Generate tabs: a few fields set at once; "standard" is EasyPhoto's defaults.
#: Train "quick": 100 steps, a first look in minutes on a GPU (likeness still weak); "best": 300 steps
#: a photo up to 1,200 (EasyPhoto's 200 up to 800 underfits 15+ photos). Generate "quick": 20 + 10
#: steps, ~2.5× faster (DPM++ 2M holds up at 20); "best": 50 + 30 steps and the refining pass at 2×.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "train": {
        "quick": {"max_steps": 100, "validate_every": 50},
        "standard": {},
        "best": {"steps_per_photo": 300, "max_steps_cap": 1200},
    },
    "generate": {
        "quick": {"first_steps": 20, "second_steps": 10},
        "standard": {},
        "best": {"first_steps": 50, "second_steps": 30, "second_scale": 2.0},
    },
}


def settings_grid(gr: Any, cls: type, names: list[str], defaults: Any, L: Any, per_row: int = 3) -> list[Any]:
    """The settings inputs of ``names`` in a compact grid (``per_row`` a row; prompts on their own)."""
    inputs: list[Any] = []
    row: list[str] = []

    def flush() -> None:
        if row:
            with gr.Row(equal_height=False):
                inputs.extend(input_for(gr, cls, n, getattr(defaults, n), L) for n in row)
            row.clear()

    for name in names:
        if name in LONG_TEXT:
            flush()
            row.append(name)
            flush()
            continue
        row.append(name)
        if len(row) == per_row:
            flush()
    flush()
    return inputs


def preset_values(kind: str, preset: str, names: list[str], defaults: Any, gr: Any) -> list[Any]:
    """New values of the inputs ``names`` for ``preset``: the fields any preset sets go to this preset's
    value or back to the default; the rest keep what the user typed."""
    touched = set().union(*PRESETS[kind].values())
    chosen = PRESETS[kind].get(preset, {})
    out = []
    for name in names:
        if name not in touched:
            out.append(gr.skip())
            continue
        value = chosen.get(name, getattr(defaults, name))
        out.append("" if value is None else value)
    return out


def form_values(cls: type, names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    """Raw widget values → settings overrides (empty text = unset for optional fields)."""
    out: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        _, optional = _optional(cls.model_fields[name].annotation)
        if isinstance(value, str):
            value = value.strip()
            if value == "" and optional:
                value = None
        out[name] = value
    return out


def progress_html(fraction: float | None, text: str) -> str:
    """A progress bar with one line of text under it."""
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


def status_line(view: dict[str, Any], lang: str) -> tuple[float, str]:
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
            return float(prog.get("fraction") or 0.0), _generate_line(prog, lang)
        return float(prog.get("fraction") or 0.0), label
    return (1.0 if state == "succeeded" else float(prog.get("fraction") or 0.0)), label


def _generate_line(prog: dict[str, Any], lang: str) -> str:
    """``Template 1/2 · face 1/1 · first pass · step 5/22`` (as far as the progress goes)."""
    where = {"template": prog.get("template"), "templates": prog.get("templates")}
    if not prog.get("face"):
        return t("msg.template", lang, **where)
    where |= {"face": prog["face"], "faces": prog.get("faces")}
    if not prog.get("steps"):
        return t("msg.gen_face", lang, **where)
    name = t(f"pass.{prog.get('pass', 'first')}", lang)
    return t("msg.gen_step", lang, **where, pass_name=name, step=prog.get("step"), steps=prog["steps"])


class Tab:
    """What a tab's handlers share: the service, the language setting, error and file helpers."""

    def __init__(self, gr: Any, service: Any, lang: str, label: Any) -> None:
        self.gr, self.service, self.lang, self.L = gr, service, lang, label

    def code(self, request: Any) -> str:
        return request_lang(request, self.lang)

    def preset_choices(self) -> list[tuple[Any, str]]:
        """The preset radio's choices: (translated label, preset name)."""
        return [(self.L(f"preset.{name}"), name) for name in ("quick", "standard", "best")]

    def refuse(self, problem: Exception | str, code: str, outputs: int) -> Any:
        """Say what is wrong in a toast and leave the handler's ``outputs`` as they are.

        Raising ``gr.Error`` would do the toast too, but Gradio then marks every output of the event
        with an error overlay that covers tables, dropdowns and checkboxes until each is dismissed —
        a failed Delete locked the Models tab. A warning toast plus ``gr.skip()`` keeps every control
        usable. Our errors are shown with server paths cut to their last component."""
        message = localize(problem, code) if isinstance(problem, Exception) else problem
        self.gr.Warning(message, title=t("err.error", code))
        skipped = tuple(self.gr.skip() for _ in range(outputs))
        return skipped[0] if outputs == 1 else skipped

    def job_file(self, job_id: str, name: str | None) -> str | None:
        from ...errors import EasyPhotoError

        if not name:
            return None
        try:
            return str(self.service.job_file(job_id, name))
        except EasyPhotoError:
            return None


__all__ = ["Tab", "form_values", "input_for", "progress_html", "request_lang", "status_line"]
