"""The library's error messages in the web UI's languages.

Errors with a stable code (:data:`easyphoto.errors.MESSAGES`) are translated whole from their code and
params; an error without one keeps its English detail behind a translated lead that says what kind
of problem it is (``ZH_KINDS``), so nobody meets a bare English line in the Chinese UI. Settings
refused by the schema are translated field by field (the field's label from the settings schema and
the kind of limit broken). Every text goes through :func:`~easyphoto.server.errors.public_message`
(server paths cut to their last component).
"""

from __future__ import annotations

from typing import Any

from ..errors import error_info
from .i18n import t

#: Chinese text of the coded messages (same keys and fields as ``errors.MESSAGES``).
ZH: dict[str, str] = {
    "image.not_found": "找不到文件",
    "image.broken_link": "符号链接已失效（指向 {target}，该文件不存在）",
    "image.link_loop": "符号链接循环",
    "image.permission": "没有权限：无法读取此文件",
    "image.not_dir": "找不到文件（路径中的某个文件夹其实是文件）",
    "image.is_dir": "这是文件夹，不是图片文件",
    "image.char_device": "这是字符设备，不是图片文件",
    "image.block_device": "这是块设备，不是图片文件",
    "image.fifo": "这是命名管道（FIFO），不是图片文件",
    "image.socket": "这是套接字，不是图片文件",
    "image.not_regular": "不是普通文件",
    "image.name_too_long": "文件名太长",
    "image.no_device": "没有这样的设备或地址",
    "image.read_failed": "无法读取文件（{detail}）",
    "image.stream_failed": "无法读取数据流（{detail}）",
    "image.empty": "空文件（0 字节）",
    "image.file_too_large": "文件太大（{size}，上限 {limit}）",
    "image.stream_too_large": "文件太大（超过 {limit}）",
    "image.mode": "不支持的图像模式 {mode!r}",
    "image.bomb": "图像太大（上限 {max_pixels:,} 像素）",
    "image.not_image": "不是图片，或是无法读取的格式",
    "image.corrupt_header": "图像文件头损坏（{detail}）",
    "image.invalid_size": "无效的图像尺寸 {width}×{height}",
    "image.too_many_pixels": "图像太大：{width}×{height} = {mp:.1f} 百万像素（上限 {limit_mp:.1f} 百万像素）",
    "image.too_small": "图像太小：{width}×{height}，每边至少需要 {min_side} 像素",
    "image.truncated": "图像文件被截断或不完整",
    "image.decode_failed": "无法解码图像（{detail}）",
    "upload.too_large": "文件太大（{size_mb:.1f} MB，上限 {limit_mb:.1f} MB）",
    "upload.none": "没有上传任何文件",
    "upload.too_many": "{what} 太多：{n} 个（上限 {limit}）",
    "upload.empty": "图像数据为空",
    "upload.base64": "不是有效的 base64 图像数据",
    "face.none": "没有检测到人脸",
    "face.none_in_photo": "这张照片中没有检测到人脸（正面、清晰的照片效果最好）",
    "face.none_in_template": "模板中没有检测到人脸",
    "face.none_in_reference": "参考图像 ref.png 中没有人脸",
    "face.none_in_validation": "这张验证模板中没有检测到人脸",
    "face.index": "没有第 {index} 号人脸（共找到 {found} 张，从 0 开始编号）",
    "user_id.invalid": "无效的用户 ID {user_id!r}：请使用 1–64 个字母、数字、“_”“-”或“.”，并以字母或数字开头",
    "user_id.dotdot": "无效的用户 ID {user_id!r}：不允许包含“..”",
    "user_id.reserved": "无效的用户 ID {user_id!r}：这是保留名称",
    "user.unknown": "用户 {user_id!r} 还没有训练好的模型：请先训练",
    "user.busy_job": "用户 {user_id!r} 正忙：其训练任务 {job_id} 正在排队或运行",
    "user.busy_training": "用户 {user_id!r} 正忙：此用户的另一个训练正在排队或运行",
    "user.busy_lock": "用户 {user_id!r} 正忙：此用户的 {holder} 正在运行",
    "photos.not_enough": "只有 {n} 张可用照片，至少需要 {minimum} 张（建议 5–20 张）",
    "job.cancelled": "已取消",
    "job.interrupted": "已中断：{detail}",
    "job.interrupted_resumable": "已中断：{detail}；可点击“继续训练”接着训练",
    "job.cancelled_resumable": "已取消；可点击“继续训练”接着训练",
    "job.internal": "内部错误（详情见任务日志）",
}

#: A Chinese lead for errors without a code, by class name (the English detail follows it).
ZH_KINDS: dict[str, str] = {
    "ConfigError": "设置有误",
    "ModelNotFoundError": "找不到模型",
    "UserModelError": "用户模型已损坏",
    "UnknownUserError": "找不到用户",
    "UserBusyError": "用户正忙",
    "BadImageError": "图片无法使用",
    "NoFaceError": "没有检测到人脸",
    "NotEnoughPhotosError": "可用照片不足",
    "JobNotFoundError": "找不到任务",
    "JobStateError": "任务状态不允许此操作",
    "TrainingInterrupted": "训练已中断",
    "EasyPhotoError": "出错了",
}

#: Chinese words for the settings limits pydantic reports (``type`` of a validation error).
ZH_LIMITS: dict[str, str] = {
    "greater_than": "必须大于 {gt}",
    "greater_than_equal": "必须大于或等于 {ge}",
    "less_than": "必须小于 {lt}",
    "less_than_equal": "必须小于或等于 {le}",
    "int_parsing": "必须是整数",
    "int_from_float": "必须是整数",
    "float_parsing": "必须是数字",
    "bool_parsing": "必须是“是”或“否”",
    "literal_error": "必须是以下之一：{expected}",
    "string_too_long": "最多 {max_length} 个字符",
    "string_too_short": "至少 {min_length} 个字符",
    "extra_forbidden": "未知的设置",
    "missing": "必须填写",
}

LANG_TEXTS: dict[str, dict[str, str]] = {"zh-CN": ZH}


def _fill(template: str, params: dict[str, Any]) -> str | None:
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError, TypeError):  # params of an older version: English then
        return None


def _field_error(err: dict[str, Any], lang: str) -> str:
    """One refused setting in ``lang``: its translated label and the limit it broke."""
    field = str(err.get("field") or "")
    label = t(f"field.{field}", lang) if field else ""
    label = field if label == f"field.{field}" else label
    limit = ZH_LIMITS.get(str(err.get("type")))
    text = _fill(limit, dict(err.get("ctx") or {})) if limit else None
    return f"{label}：{text or err.get('msg', '')}" if label else (text or str(err.get("msg", "")))


def localize(error: BaseException | dict[str, Any], lang: str) -> str:
    """``error`` (an exception, or its :func:`~easyphoto.errors.error_info` as stored in a job) as one
    line in ``lang`` (English: the message as raised), server paths cut to their last component."""
    from .errors import public_message

    info = error_info(error) if isinstance(error, BaseException) else dict(error)
    english = str(info.get("message") or info.get("error") or "")
    texts = LANG_TEXTS.get(lang)
    if texts is None:
        return public_message(english)
    code, params, source = info.get("code"), dict(info.get("params") or {}), info.get("source")
    text = None
    if code == "config.fields":
        text = "；".join(_field_error(e, lang) for e in params.get("errors", []))
    elif code in texts:
        text = _fill(texts[code], params)
    if text is None:
        kind = ZH_KINDS.get(str(info.get("kind")), ZH_KINDS["EasyPhotoError"])
        return public_message(f"{kind}：{english}")
    return public_message(f"{source}: {text}" if source else text)


def reject_reason(rejected: dict[str, Any], lang: str) -> str:
    """Why preparation left a photo out (``{photo, reason, code}``), in ``lang``: the full English
    reason, or the translated kind of reason (its numbers stay in the English contact sheet)."""
    code = rejected.get("code")
    if lang == "en" or not code:
        return str(rejected.get("reason", ""))
    text = t(f"reject.{code}", lang)
    return str(rejected.get("reason", "")) if text == f"reject.{code}" else text


def job_error(view: dict[str, Any], lang: str) -> str | None:
    """Why a finished job has no (full) result, in ``lang``; ``None`` when it has no error."""
    if not view.get("error"):
        return None
    coded = (view.get("result") or {}).get("error")
    info = {**coded, "message": view["error"]} if isinstance(coded, dict) else {"message": view["error"]}
    return localize(info, lang)


__all__ = ["LANG_TEXTS", "ZH", "ZH_KINDS", "ZH_LIMITS", "job_error", "localize", "reject_reason"]
