"""The library's errors in the UI's languages: stable codes, every code translated, real errors localised."""

from __future__ import annotations

import io
import string

import numpy as np
import pytest
from PIL import Image

from easyphoto.errors import MESSAGES, BadImageError, ModelNotFoundError, error_info
from easyphoto.server.error_text import ZH, job_error, localize, reject_reason


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_coded_message_has_a_chinese_text_with_the_same_fields() -> None:
    assert set(ZH) == set(MESSAGES), "a coded message without its Chinese text (or a stale one)"
    for code, english in MESSAGES.items():
        assert _fields(ZH[code]) == _fields(english), code


def test_a_real_bad_photo_is_localised_from_its_code() -> None:
    from easyphoto.imageio import load_image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(buf, format="PNG")
    with pytest.raises(BadImageError) as caught:
        load_image(buf.getvalue(), name="tiny.png", min_side=64)
    err = caught.value
    assert err.code == "image.too_small" and err.params == {"width": 30, "height": 20, "min_side": 64}
    assert localize(err, "en") == str(err) == "tiny.png: image too small: 30×20, at least 64 px on each side"
    assert localize(err, "zh-CN") == "tiny.png: 图像太小：30×20，每边至少需要 64 像素"


def test_unreadable_file_reasons_are_coded(tmp_path) -> None:
    from easyphoto.imageio import load_image

    with pytest.raises(BadImageError) as caught:
        load_image(tmp_path / "missing.jpg")
    assert caught.value.code == "image.not_found"
    with pytest.raises(BadImageError) as caught:
        load_image(tmp_path)
    assert caught.value.code == "image.is_dir"
    assert localize(caught.value, "zh-CN").endswith("这是文件夹，不是图片文件")


def test_refused_settings_are_translated_field_by_field() -> None:
    from easyphoto.config import TrainConfig
    from easyphoto.errors import ConfigError
    from easyphoto.server.i18n import t

    with pytest.raises(ConfigError) as caught:
        TrainConfig(rank=100_000)
    err = caught.value
    assert err.code == "config.fields" and err.params["errors"][0]["field"] == "rank"
    zh = localize(err, "zh-CN")
    assert zh.startswith(t("field.rank", "zh-CN") + "：必须小于或等于"), zh
    assert "rank" not in zh.lower().replace("lora", "")  # no English field name left
    assert localize(err, "en") == str(err)


def test_an_error_without_a_code_gets_a_translated_lead_and_keeps_its_detail() -> None:
    err = ModelNotFoundError("controlnet 'canny' not found in /srv/models/x")
    assert localize(err, "zh-CN") == "找不到模型：controlnet 'canny' not found in …/x"
    assert localize(err, "en") == "controlnet 'canny' not found in …/x"  # server path cut in both


def test_a_failed_job_is_shown_from_its_stored_code() -> None:
    info = error_info(BadImageError("a.png", code="image.empty"))
    view = {"state": "failed", "error": info["message"], "result": {"error": info}}
    assert job_error(view, "zh-CN") == "a.png: 空文件（0 字节）"
    assert job_error(view, "en") == "a.png: empty file (0 bytes)"
    # a job recorded before codes existed: English detail behind the Chinese lead
    assert job_error({"state": "failed", "error": "something odd"}, "zh-CN") == "出错了：something odd"
    assert job_error({"state": "succeeded", "error": None}, "zh-CN") is None


def test_rejected_photos_say_why_in_chinese() -> None:
    rejected = {"photo": "03_sky.jpg", "reason": "no face found", "code": "no_face"}
    assert reject_reason(rejected, "zh-CN") == "没有检测到人脸"
    assert reject_reason(rejected, "en") == "no face found"
    assert reject_reason({"photo": "x", "reason": "odd", "code": "new_code"}, "zh-CN") == "odd"
