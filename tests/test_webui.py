"""The web UI in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Upload photos, train at tiny settings, generate, and see an image with its score in the results.
Screenshots go to ``tmp_path`` (and to ``$EASYPHOTO_SCREENSHOT_DIR`` when set).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
TWO_PEOPLE = next(
    p / "groups" / "two_people.jpg"
    for p in (Path(__file__).resolve().parents[2] / "shared" / "faces", Path(__file__).parent / "faces")
    if (p / "groups" / "two_people.jpg").is_file()
)

from test_api import make_photos, start_server, stop_server  # noqa: E402

CHROMIUM = os.environ.get("EASYPHOTO_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.slow
def test_train_and_generate_in_the_browser(tmp_path: Path, tiny_model_dir: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    photos, template = make_photos(tmp_path / "photos")
    (template.parent / "bad.jpg").write_bytes(b"this is not a photo")
    home = tmp_path / "home"
    home.mkdir()
    proc, url = start_server(home, tiny_model_dir, ui=True)
    shots = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
            page.goto(url + "/")
            expect = sync_api.expect

            # Train tab: a bad photo gives a readable message, not a stack trace.
            page.locator("#train-photos input[type=file]").set_input_files([str(template.parent / "bad.jpg")])
            page.locator("#train-user-id input, #train-user-id textarea").first.fill("browser")
            page.locator("#train-start").click()
            toast = page.get_by_text("bad.jpg: not an image, or a format we cannot read")
            expect(toast).to_be_visible(timeout=30_000)
            assert page.get_by_text("Traceback").count() == 0
            page.locator("#train-photos button[aria-label='Clear']").first.click()

            sky = tmp_path / "sky.jpg"  # no face: preparation refuses it and the gallery says so
            from PIL import Image

            Image.new("RGB", (400, 300), (120, 170, 230)).save(sky)
            page.locator("#train-photos input[type=file]").set_input_files([str(p) for p in [*photos, sky]])
            page.wait_for_timeout(1000)
            page.locator("#train-start").click()
            expect(page.locator("#train-status")).to_contain_text("finished", timeout=120_000)
            expect(page.locator("#train-photos")).to_contain_text("✓ kept")
            expect(page.locator("#train-photos")).to_contain_text("✗ no face found")
            expect(page.locator("#train-validation img").first).to_be_visible(timeout=10_000)
            expect(page.locator("#train-sheet img").first).to_be_visible(timeout=10_000)
            expect(page.locator("#train-log textarea")).to_have_value(re.compile("training browser on"))
            shots.append(tmp_path / "train.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            # Training the same id again is refused until "replace" is ticked; nothing gets locked.
            page.locator("#train-start").click()
            expect(page.get_by_text("A user model 'browser' exists").first).to_be_visible(timeout=10_000)
            # Options: readable labels in a grid, presets fill them in.
            page.locator("#train-advanced").click()
            expect(page.get_by_text("LoRA rank", exact=True).first).to_be_visible()
            page.locator("#train-preset").get_by_text("Quick test").click()
            expect(page.locator("#train-max-steps input, #train-max-steps textarea").first).to_have_value(
                "100"
            )
            shots.append(tmp_path / "train_options.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            page.locator("#train-preset").get_by_text("Standard").click()
            # "Standard" puts back the server's defaults (this test server's operator preset: 4 steps)
            expect(page.locator("#train-max-steps input, #train-max-steps textarea").first).to_have_value("4")

            # Generate tab: pick the user, upload a template, see the portrait and its score.
            page.get_by_role("tab", name="Generate").click()
            page.locator("#gen-users-refresh").click()
            page.wait_for_timeout(500)
            page.locator("#gen-users input").click()
            page.get_by_role("option", name="browser").click()
            page.keyboard.press("Escape")
            page.locator("#gen-templates input[type=file]").set_input_files([str(template)])
            page.wait_for_timeout(1000)
            page.locator("#gen-start").click()
            expect(page.locator("#gen-results img").first).to_be_visible(timeout=120_000)
            expect(page.locator("#gen-status")).to_contain_text(re.compile(r"browser\s+\d\.\d{3}"))
            expect(page.locator("#gen-downloads")).to_contain_text("portrait_00_template")
            time.sleep(0.5)
            shots.append(tmp_path / "generate.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            # A two-person template: the face picker maps users to faces; the same user twice.
            page.locator("#gen-templates button[aria-label='Clear']").first.click()
            page.locator("#gen-templates input[type=file]").set_input_files([str(TWO_PEOPLE)])
            expect(page.locator("#gen-picker").first).to_be_visible(timeout=30_000)
            expect(page.locator("#gen-face-1")).to_be_visible()
            assert page.locator("#gen-face-2").is_hidden()
            for i in (0, 1):
                page.locator(f"#gen-face-{i} input").click()
                page.locator(f"#gen-face-{i}").get_by_role("option", name="browser").click()
                page.keyboard.press("Escape")
            shots.append(tmp_path / "generate_picker.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            page.locator("#gen-start").click()
            expect(page.locator("#gen-status")).to_contain_text(
                re.compile(r"browser\s+\d\.\d{3}[\s\S]*browser\s+\d\.\d{3}"), timeout=120_000
            )

            # A reload during a generation re-attaches to it.
            page.locator("#gen-start").click()
            expect(page.locator("#gen-status")).to_contain_text("Job", timeout=10_000)
            page.reload()
            page.get_by_role("tab", name="Generate").click()
            expect(page.locator("#gen-status")).to_contain_text("Job", timeout=20_000)
            expect(page.locator("#gen-status")).to_contain_text("finished", timeout=120_000)
            # The templates folder starts with two public-domain samples; a click picks one.
            page.locator("#gen-gallery img").first.click()
            expect(page.locator("#gen-library")).to_contain_text("sample-astronaut.png", timeout=10_000)
            # The Jobs tab lists both jobs.
            page.get_by_role("tab", name="Jobs").click()
            expect(page.locator("#jobs-table")).to_contain_text("generation", timeout=10_000)
            expect(page.locator("#jobs-table")).to_contain_text("training")

            # Models tab lists the user with its score.
            page.get_by_role("tab", name="Models").click()
            page.locator("#models-refresh").click()
            expect(page.locator("#models-table")).to_contain_text("browser", timeout=10_000)
            expect(page.locator("#models-table")).to_contain_text("SD1.5")  # the user model's family
            # A refused Delete (nobody picked, then not confirmed) says why and locks nothing.
            page.locator("#models-delete").click()
            expect(page.get_by_text("Pick at least one trained user id").first).to_be_visible(timeout=10_000)
            page.locator("#models-pick input").click(timeout=5_000)  # no error overlay in the way
            page.get_by_role("option", name="browser").click()
            page.locator("#models-delete").click()
            expect(page.get_by_text("Tick the confirmation").first).to_be_visible(timeout=10_000)
            assert page.locator(".error").count() == 0, "an error overlay covers the tab's controls"
            page.locator("#models-confirm input").click(timeout=5_000)
            page.locator("#models-delete").click()
            expect(page.locator("#models-table")).not_to_contain_text("browser", timeout=10_000)
            shots.append(tmp_path / "models.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            # The same page in Chinese: tabs, labels, presets and help in Chinese.
            zh = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
            zh.goto(url + "/")
            expect(zh.get_by_role("tab", name="训练")).to_be_visible(timeout=30_000)
            zh.locator("#train-advanced").click()
            for text in ("LoRA 秩", "快速试用", "梯度累积", "开始训练"):
                expect(zh.get_by_text(text, exact=True).first).to_be_visible()
            assert zh.get_by_text("Gradient accumulation", exact=True).count() == 0
            shots.append(tmp_path / "train_zh.png")
            zh.screenshot(path=str(shots[-1]), full_page=True)
            assert not _english_left(zh), "English interface text in the Chinese Train tab"
            for tab, accordion in (("生成", "#gen-advanced"), ("模型", None), ("任务", None)):
                zh.get_by_role("tab", name=tab).click()
                if accordion:
                    zh.locator(accordion).click()
                zh.wait_for_timeout(500)
                assert not _english_left(zh), f"English interface text in the Chinese {tab} tab"
            shots.append(tmp_path / "generate_zh.png")
            zh.get_by_role("tab", name="生成").click()
            zh.screenshot(path=str(shots[-1]), full_page=True)

            # The visible switch: an English browser opens the Chinese page, where the toasts are Chinese too.
            page.locator("#lang-switch").get_by_text("中文").click()
            expect(page.get_by_role("tab", name="训练")).to_be_visible(timeout=30_000)
            page.locator("#train-start").click()
            expect(page.get_by_text("请先上传照片").first).to_be_visible(timeout=10_000)
            # ...and so are the library's own errors (a bad photo: its code translated, the file named)
            page.locator("#train-photos input[type=file]").set_input_files([str(template.parent / "bad.jpg")])
            page.locator("#train-user-id input, #train-user-id textarea").first.fill("browser2")
            page.locator("#train-start").click()
            toast = page.get_by_text("bad.jpg: 不是图片，或是无法读取的格式").first
            expect(toast).to_be_visible(timeout=30_000)
            assert page.get_by_text("not an image, or a format we cannot read").count() == 0
            page.locator("#lang-switch").get_by_text("English").click()
            expect(page.get_by_role("tab", name="Train")).to_be_visible(timeout=30_000)
            browser.close()
    finally:
        stop_server(proc)
        out = os.environ.get("EASYPHOTO_SCREENSHOT_DIR")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            for shot in shots:
                shutil.copy(shot, Path(out) / shot.name)


def _english_left(page) -> list[str]:
    """Our English interface texts (those that differ in Chinese) visible on ``page``."""
    from easyphoto.server.i18n import EN, ZH

    shown = page.locator("body").inner_text()
    return [  # whole words only: a folder path such as …/templates is not interface text
        text
        for key, text in EN.items()
        if len(text) > 3
        and ZH.get(key, text) != text
        and re.search(rf"(?<![\w/.-]){re.escape(text)}(?![\w/.-])", shown)
    ]


def test_internal_ui_handlers_are_not_offered_as_an_api(tmp_path: Path) -> None:
    """Gradio's "Use via API" lists nothing: the UI's handlers are private (programs use /v1)."""
    from fastapi.testclient import TestClient

    from easyphoto.config import ServerSettings
    from easyphoto.server.app import create_app

    client = TestClient(create_app(ServerSettings(home=tmp_path, start_workers=False)))
    info = client.get("/gradio_api/info").json()
    assert info == {"named_endpoints": {}, "unnamed_endpoints": {}}
    config = client.get("/config").json()
    assert len(config["dependencies"]) >= 14  # the handlers exist: they are only hidden


def test_every_setting_has_labels_in_both_languages() -> None:
    """The advanced options show a readable, translated label and help for every settings field."""
    from easyphoto.server.field_text import FIELDS
    from easyphoto.server.webui.generate_tab import GENERATE_FIELDS
    from easyphoto.server.webui.train_tab import TRAIN_FIELDS

    missing = [name for name in [*TRAIN_FIELDS, *GENERATE_FIELDS] if name not in FIELDS]
    assert missing == [], "add these to server/field_text.py: " + ", ".join(missing)
