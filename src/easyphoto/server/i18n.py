"""Interface text of the web UI in English and Simplified Chinese.

:data:`TRANSLATIONS` maps a language code to ``{key: text}``. The web UI hands all of it to Gradio
(``gr.I18n``), whose page picks the browser's language; messages made on the server (progress, errors)
use :func:`pick_language` on the request's ``Accept-Language`` header. ``EASYPHOTO_UI_LANG=en`` or
``zh-CN`` forces one language.
"""

from __future__ import annotations

LANGUAGES = ("en", "zh-CN")

EN: dict[str, str] = {
    "title": "# EasyPhoto\nTrain your digital double from a few photos, then paint yourself into any photo.",
    "tab.train": "Train",
    "tab.generate": "Generate",
    "tab.models": "Models",
    "tab.jobs": "Jobs",
    "jobs.refresh": "Refresh",
    "jobs.list": "Recent jobs (refreshed every few seconds)",
    "jobs.id": "Job id",
    "jobs.cancel": "Cancel this job",
    "col.job": "job",
    "col.kind": "kind",
    "col.state": "state",
    "col.progress": "progress",
    "kind.train": "training",
    "kind.generate": "generation",
    "msg.cancelling": "Cancelling {job}…",
    "train.photos": "Photos of one person (5–20, face clearly visible)",
    "train.user_id": "User id (letters, digits, _ - .)",
    "train.advanced": "Advanced training options",
    "train.retouch": "Skin retouching of the training photos",
    "train.start": "Start training",
    "train.cancel": "Cancel",
    "train.resume": "Resume",
    "train.contact_sheet": "Prepared photos (kept and rejected)",
    "train.hint": (
        "5–20 photos of the same person: face clearly visible and at least 128 px, different days, light "
        "and expressions, no sunglasses, nobody else large in the picture. Each photo is checked and the "
        "contact sheet says why one was left out. Training takes ~3 min on a recent GPU, hours on a CPU."
    ),
    "train.replace": "Replace an existing user model with this id",
    "train.kept": "kept",
    "base.label": "Base model",
    "base.help": "The server's default, or a checkpoint from its models/checkpoints folder.",
    "preset.label": "Preset",
    "preset.quick": "Quick test",
    "preset.standard": "Standard",
    "preset.best": "Best quality",
    "train.validation": "Validation images and face-ID scores",
    "train.log": "Log",
    "train.job": "Job",
    "gen.users": "Trained user ids (template faces left to right)",
    "gen.refresh": "Refresh",
    "gen.templates": "Template photos",
    "gen.photos": "No training yet? Photos of the person: try it now (train a user for the best likeness)",
    "gen.library": "Templates from the templates folder",
    "gen.library_hint": "Put template photos in the server's templates folder to pick them here:",
    "gen.picker": "Faces in the template, left to right: who goes on each (a user may be used twice).",
    "gen.keep_face": "keep this face",
    "gen.gallery": "Templates folder (click to use; two public-domain samples to start with)",
    "gen.photo_user": "the person in the photos",
    "gen.advanced": "Advanced generation options",
    "gen.background_image": "Background picture (optional): put behind the people instead of the template's",
    "gen.start": "Generate",
    "gen.cancel": "Cancel",
    "gen.results": "Results",
    "gen.downloads": "Download",
    "gen.scores": "Scores",
    "models.list": "Trained users",
    "models.pick": "User",
    "models.delete": "Delete this user",
    "models.confirm": "Yes, delete it",
    "models.download": "Download LoRA",
    "models.face": "Best validation image",
    "models.refresh": "Refresh",
    "col.user": "user",
    "col.created": "created",
    "col.steps": "steps",
    "col.photos": "photos",
    "col.score": "best score",
    "col.rank": "rank",
    "col.family": "model",
    "col.template": "template",
    "col.similarity": "similarity",
    "state.queued": "queued",
    "state.running": "running",
    "state.succeeded": "finished",
    "state.failed": "failed",
    "state.cancelled": "cancelled",
    "state.interrupted": "interrupted",
    "msg.queued_ahead": "{n} job(s) ahead in the queue",
    "msg.preparing": "Preparing photos… {photo}/{photos}",
    "msg.step": "Step {step}/{max_steps} · loss {loss} · ETA {eta}",
    "msg.prepared": "{kept} photo(s) kept, {rejected} rejected",
    "msg.trained": "User model **{user}** is ready: best face-ID score {score}",
    "msg.generated": "{n} portrait(s) made",
    "msg.template": "Template {template}/{templates}",
    "msg.gen_face": "Template {template}/{templates} · face {face}/{faces}",
    "msg.gen_step": (
        "Template {template}/{templates} · face {face}/{faces} · {pass_name} · step {step}/{steps}"
    ),
    "pass.first": "first pass",
    "pass.second": "refining pass",
    "pass.background": "background",
    "pass.upscale": "super-resolution",
    "msg.resumable": "A checkpoint was kept: press Resume to continue.",
    "msg.deleted": "Deleted {user}.",
    "msg.confirm_delete": "Tick the confirmation box first.",
    "err.no_photos": "Upload some photos first.",
    "err.no_user": "Enter a user id.",
    "err.user_exists": "A user model '{user}' exists: tick 'Replace an existing…' or pick another id.",
    "err.no_users": "Pick at least one trained user id, or give photos of the person.",
    "err.no_templates": "Upload a template photo or pick one from the templates folder.",
    "err.all_kept": "Every face is set to 'keep this face': choose a user for at least one.",
    "err.no_job": "No job to act on.",
    "err.error": "Error",
}

ZH: dict[str, str] = {
    "title": "# EasyPhoto 艺术照\n用几张照片训练你的数字分身，再把自己画进任何一张照片。",
    "tab.train": "训练",
    "tab.generate": "生成",
    "tab.models": "模型",
    "tab.jobs": "任务",
    "jobs.refresh": "刷新",
    "jobs.list": "最近的任务（每隔几秒刷新）",
    "jobs.id": "任务 ID",
    "jobs.cancel": "取消此任务",
    "col.job": "任务",
    "col.kind": "类型",
    "col.state": "状态",
    "col.progress": "进度",
    "kind.train": "训练",
    "kind.generate": "生成",
    "msg.cancelling": "正在取消 {job}…",
    "train.photos": "同一个人的照片（5–20 张，脸部清晰）",
    "train.user_id": "用户 ID（字母、数字、_ - .）",
    "train.advanced": "高级训练参数",
    "train.retouch": "训练照片磨皮美颜",
    "train.start": "开始训练",
    "train.cancel": "取消",
    "train.resume": "继续训练",
    "train.contact_sheet": "预处理结果（保留与剔除的照片）",
    "train.hint": (
        "同一个人的 5–20 张照片：脸部清晰、至少 128 像素，不同日子、光线和表情，"
        "不戴墨镜，画面中没有其他大的人脸。每张照片都会检查，"
        "预处理结果会说明剔除的原因。训练在较新的 GPU 上约 3 分钟，"
        "在 CPU 上需数小时。"
    ),
    "train.replace": "替换同名的已有用户模型",
    "train.kept": "保留",
    "base.label": "基础模型",
    "base.help": "服务器的默认模型，或其 models/checkpoints 文件夹中的模型。",
    "preset.label": "预设",
    "preset.quick": "快速试用",
    "preset.standard": "标准",
    "preset.best": "最佳质量",
    "train.validation": "验证图像与人脸相似度",
    "train.log": "日志",
    "train.job": "任务",
    "gen.users": "已训练的用户 ID（按模板中人脸从左到右）",
    "gen.refresh": "刷新",
    "gen.templates": "模板照片",
    "gen.photos": "还没训练？上传此人的照片即可立即试用（训练用户模型可获得最佳相似度）",
    "gen.library": "模板文件夹中的模板",
    "gen.library_hint": "把模板照片放进服务器的模板文件夹，即可在这里选择：",
    "gen.picker": "模板中的人脸（从左到右）：为每张脸选择用户（同一用户可用多次）。",
    "gen.keep_face": "保留这张脸",
    "gen.gallery": "模板文件夹（点击即可使用；自带两张公有领域示例）",
    "gen.photo_user": "照片中的人",
    "gen.advanced": "高级生成参数",
    "gen.background_image": "背景图片（可选）：替换模板原有的背景",
    "gen.start": "生成",
    "gen.cancel": "取消",
    "gen.results": "生成结果",
    "gen.downloads": "下载",
    "gen.scores": "相似度",
    "models.list": "已训练的用户",
    "models.pick": "用户",
    "models.delete": "删除该用户",
    "models.confirm": "确认删除",
    "models.download": "下载 LoRA",
    "models.face": "最佳验证图像",
    "models.refresh": "刷新",
    "col.user": "用户",
    "col.created": "创建时间",
    "col.steps": "步数",
    "col.photos": "照片数",
    "col.score": "最佳得分",
    "col.rank": "秩",
    "col.family": "模型",
    "col.template": "模板",
    "col.similarity": "相似度",
    "state.queued": "排队中",
    "state.running": "运行中",
    "state.succeeded": "已完成",
    "state.failed": "失败",
    "state.cancelled": "已取消",
    "state.interrupted": "已中断",
    "msg.queued_ahead": "前面还有 {n} 个任务",
    "msg.preparing": "正在预处理照片… {photo}/{photos}",
    "msg.step": "第 {step}/{max_steps} 步 · 损失 {loss} · 预计剩余 {eta}",
    "msg.prepared": "保留 {kept} 张照片，剔除 {rejected} 张",
    "msg.trained": "用户模型 **{user}** 已就绪：最佳人脸相似度 {score}",
    "msg.generated": "已生成 {n} 张照片",
    "msg.template": "模板 {template}/{templates}",
    "msg.gen_face": "模板 {template}/{templates} · 人脸 {face}/{faces}",
    "msg.gen_step": "模板 {template}/{templates} · 人脸 {face}/{faces} · {pass_name} · 第 {step}/{steps} 步",
    "pass.first": "第一遍生成",
    "pass.second": "精修",
    "pass.background": "背景",
    "pass.upscale": "超分辨率",
    "msg.resumable": "已保存检查点：点击“继续训练”即可接着训练。",
    "msg.deleted": "已删除 {user}。",
    "msg.confirm_delete": "请先勾选确认框。",
    "err.no_photos": "请先上传照片。",
    "err.no_user": "请输入用户 ID。",
    "err.user_exists": "用户模型“{user}”已存在：勾选“替换同名的已有用户模型”，或换一个 ID。",
    "err.no_users": "请至少选择一个已训练的用户 ID，或上传此人的照片。",
    "err.no_templates": "请上传模板照片，或从模板文件夹中选择。",
    "err.all_kept": "所有人脸都设为“保留这张脸”：请至少为一张脸选择用户。",
    "err.no_job": "没有可操作的任务。",
    "err.error": "错误",
    "reject.unreadable": "无法读取",
    "reject.listed_twice": "同一文件重复上传",
    "reject.no_face": "没有检测到人脸",
    "reject.ambiguous": "有多张大小相近的人脸：请把照片裁剪到只剩一个人",
    "reject.face_too_small": "人脸太小",
    "reject.face_cut_off": "人脸被照片边缘截断",
    "reject.blurry": "太模糊",
    "reject.duplicate": "与另一张照片几乎相同",
    "reject.different_person": "看起来是另一个人",
    "reject.not_selected": "未入选（不在最相似的照片之列）",
}

TRANSLATIONS: dict[str, dict[str, str]] = {"en": EN, "zh-CN": ZH}


def _add_field_texts() -> None:
    """Every settings field's label and help (``field.<name>``, ``help.<Class>.<name>``)."""
    from ..config import GenerateConfig, PrepareConfig, TrainConfig
    from .field_text import field_texts

    for lang, texts in field_texts((TrainConfig, GenerateConfig, PrepareConfig)).items():
        TRANSLATIONS[lang].update(texts)


_add_field_texts()


def pick_language(accept_language: str | None, setting: str = "auto") -> str:
    """``en`` or ``zh-CN``: the setting when it names one, else the first supported browser language."""
    if setting in TRANSLATIONS:
        return setting
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"


def t(key: str, lang: str = "en", **values: object) -> str:
    """The text of ``key`` in ``lang`` (English when missing), formatted with ``values``."""
    text = TRANSLATIONS.get(lang, EN).get(key) or EN.get(key, key)
    return text.format(**values) if values else text


__all__ = ["EN", "LANGUAGES", "TRANSLATIONS", "ZH", "pick_language", "t"]
