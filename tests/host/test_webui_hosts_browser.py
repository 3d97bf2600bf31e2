"""The SCG tab in real AUTOMATIC1111 1.10.1 + sd-webui-controlnet 1.1.455 and real Forge f2.0.1, in
headless Chromium, as a user goes: upload a photo (hint and sheet appear), Generate in the tab, then
*Send hint to txt2img ControlNet* with the ControlNet section collapsed (the hosts' default) and open —
Unit 0 shows the hint, is enabled, has preprocessor none and the tab's SCG ControlNet — and Generate
there uses it (the infotext and the detected map say so); the same for img2img."""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devtools.comfy_server import REPO
from devtools import browser

from .webui_server import SCG_CONTROLNET

PHOTO = REPO / "photos" / "chelsea.jpg"


@pytest.fixture
def page(webui):
    if problem := browser.missing():
        pytest.fail(problem)
    driver = browser.headless_chromium(1700, 1200)
    driver.set_script_timeout(60)
    driver.get(webui.url)
    ui = Page(driver, webui)
    ui.wait(lambda: ui.js("return typeof scgSendToControlNet === 'function' && "
                          "!!document.querySelector('#scg_source input[type=file]') && "
                          "!!document.querySelector('#txt2img_controlnet')"), 120, "the page did not load")
    yield ui
    driver.quit()


class Page:
    def __init__(self, driver, webui):
        self.d, self.webui = driver, webui
        self.none = "None" if webui.name == "forge" else "none"

    def js(self, code, *args):
        return self.d.execute_script(code, *args)

    def wait(self, condition, timeout=60, message="timed out"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"{message}\n{self.webui.log_tail(3000)}")

    def switch(self, tab: str) -> None:
        self.js(f"switch_to_{tab}()" if tab != "scg" else
                "[...document.querySelectorAll('#tabs > .tab-nav button')].find(b => b.textContent.trim() === 'SCG').click()")
        time.sleep(0.5)

    def upload(self, selector: str, path) -> None:
        from selenium.webdriver.common.by import By

        self.d.find_element(By.CSS_SELECTOR, selector).send_keys(str(path))

    def set_number(self, elem_id: str, value) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        el = self.d.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
        self.js("arguments[0].scrollIntoView({block: 'center'})", el)
        el.clear()
        el.send_keys(str(value), Keys.TAB)

    def image(self, selector: str) -> np.ndarray | None:
        """The picture an <img> shows, as uint8 RGB (None when there is none)."""
        src = self.js(f"const i = document.querySelector({selector!r}); return i && i.src")
        return self.fetch(src) if src else None

    def fetch(self, src: str) -> np.ndarray:
        """An image URL (a data: URL or a file the host serves) as uint8 RGB."""
        if src.startswith("data:"):
            data = base64.b64decode(src.split(",", 1)[1])
        else:
            data = base64.b64decode(self.d.execute_async_script(
                "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.blob()).then(b => {"
                "const f = new FileReader(); f.onload = () => done(f.result.split(',')[1]); f.readAsDataURL(b); });", src))
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def unit(self, tab: str) -> str:
        return self.js(f"return scgFirstUnit('{tab}')")

    def unit_state(self, tab: str) -> dict:
        u = self.unit(tab)
        return self.js(f"""
            const img = document.querySelector('#{u}_input_image img');
            return {{
                image_shown: !!img && img.clientWidth > 0 && img.naturalWidth > 0,
                enabled: document.querySelector('#{u}_controlnet_enable_checkbox input').checked,
                module: document.querySelector('#{u}_controlnet_preprocessor_dropdown input').value,
                model: document.querySelector('#{u}_controlnet_model_dropdown input').value,
                independent: document.querySelector('#{u}_controlnet_same_img2img_checkbox input')?.checked ?? null,
            }};""")

    def upload_in_the_tab(self) -> np.ndarray:
        self.switch("scg")
        self.upload("#scg_source input[type=file]", PHOTO)
        self.wait(lambda: self.js("return !!document.querySelector('#scg_hint img') && !!document.querySelector('#scg_sheet img')"),
                  120, "no hint and sheet after the upload")
        return self.image("#scg_hint img")

    def generate(self, tab: str) -> str:
        for elem, value in ((f"{tab}_width", 64), (f"{tab}_height", 64), (f"{tab}_steps", 2)):
            self.set_number(elem, value)
        self.js(f"document.querySelector('#{tab}_generate').click()")
        return self.wait(lambda: (lambda t: t if "ControlNet 0" in t else "")(
            self.js(f"const e = document.querySelector('#html_info_{tab}'); return e ? e.innerText : ''")),
            300, f"{tab} did not finish with a ControlNet infotext")

    def gallery(self, tab: str) -> list[np.ndarray]:
        srcs = self.js(f"return [...new Set([...document.querySelectorAll('#{tab}_gallery img')].map(i => i.src))]")
        return [self.fetch(src) for src in srcs]


def hint_as_the_host_resizes_it(hint: np.ndarray, size: int) -> np.ndarray:
    """The detected map of a unit with preprocessor none: the image cropped to the square and resized."""
    h, w = hint.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.asarray(Image.fromarray(hint[top : top + side, left : left + side]).resize((size, size), Image.Resampling.BOX))


def check_sent(page, tab: str, hint: np.ndarray) -> None:
    state = page.unit_state(tab)
    assert state["image_shown"], f"the hint is not visible in {tab}'s Unit 0: {state}"
    shown = page.image(f"#{page.unit(tab)}_input_image img")
    assert shown.shape == hint.shape and np.abs(shown.astype(int) - hint).max() <= 1
    model = page.js("return document.querySelector('#scg_model input').value")
    assert model == page.webui.model_name(SCG_CONTROLNET)
    assert state["enabled"] and state["module"] == page.none and state["model"] == model, state
    if tab == "img2img":
        assert state["independent"] is True
    assert f"Sent the hint to {tab}'s ControlNet Unit 0" in page.js("return document.querySelector('#scg_info').innerText")


def check_generation_used_it(page, tab: str, hint: np.ndarray) -> None:
    info = page.generate(tab)
    model = page.webui.model_name(SCG_CONTROLNET)
    assert f"Module: {page.none}" in info and f"Model: {model}" in info, info
    expected = hint_as_the_host_resizes_it(hint, 64).astype(int)
    closest = min(np.abs(img.astype(int) - expected).mean() for img in page.gallery(tab) if img.shape == expected.shape)
    assert closest < 8, f"no detected map showing the hint among {tab}'s results (closest: {closest:.1f}/255)"


def test_upload_generate_in_the_tab_and_send_to_txt2img_with_the_section_collapsed(page):
    hint = page.upload_in_the_tab()
    assert hint.shape == (300, 451, 3)
    page.set_number("scg_width", 64)
    page.set_number("scg_height", 64)
    page.set_number("scg_steps", 2)
    page.js("document.querySelector('#scg_generate').click()")
    info = lambda: page.js("return document.querySelector('#scg_info').innerText")  # noqa: E731
    try:
        page.wait(lambda: "Generated 1 image" in info(), 300, "the tab's Generate did not finish")
    except AssertionError as e:
        raise AssertionError(f"the tab says: {info()!r}\n{e}") from None
    assert page.js("return document.querySelectorAll('#scg_gallery img').length") >= 2  # the hint, then the image

    page.switch("txt2img")  # the ControlNet section starts collapsed
    assert not page.js(f"return document.querySelector('#{page.unit('txt2img')}_controlnet_enable_checkbox').offsetParent")
    page.switch("scg")
    page.js("document.querySelector('#scg_send_txt2img').click()")
    page.wait(lambda: page.unit_state("txt2img")["image_shown"] and page.js(
        "return document.querySelector('#scg_info').innerText.includes('Sent the hint')"), 60, "the send did not arrive")
    assert page.js("return gradioApp().querySelector('#tab_txt2img').offsetParent !== null")
    check_sent(page, "txt2img", hint)
    if shots := os.environ.get("SCG_SCREENSHOT_DIR"):  # the README's pictures
        shot = Path(shots) / f"webui_{page.webui.name}_sent.png"
        page.js(f"document.querySelector('#{page.unit('txt2img')}_input_image').scrollIntoView({{block: 'start'}}); "
                "window.scrollBy(0, -60)")
        time.sleep(1)
        page.d.save_screenshot(str(shot))
        with Image.open(shot) as full:
            full.convert("RGB").crop((0, 0, full.width // 2 + 60, full.height)).resize(
                (760, round(full.height * 760 / (full.width // 2 + 60))), Image.Resampling.LANCZOS).save(shot, optimize=True)
    check_generation_used_it(page, "txt2img", hint)


def test_send_to_txt2img_with_the_section_open(page):
    page.switch("txt2img")
    page.js("document.querySelector('#txt2img_controlnet .label-wrap').click()")
    page.wait(lambda: page.js(f"return !!document.querySelector('#{page.unit('txt2img')}_controlnet_enable_checkbox')"
                              ".closest('.gradio-accordion, .input-accordion, [id$=_controlnet]').offsetParent"), 10)
    hint = page.upload_in_the_tab()
    page.js("document.querySelector('#scg_send_txt2img').click()")
    page.wait(lambda: page.unit_state("txt2img")["image_shown"], 60, "the hint is not shown in Unit 0")
    check_sent(page, "txt2img", hint)


def test_send_to_img2img(page):
    page.switch("img2img")
    page.upload("#img2img_image input[type=file]", PHOTO)  # img2img's own input image
    hint = page.upload_in_the_tab()
    page.js("document.querySelector('#scg_send_img2img').click()")
    page.wait(lambda: page.unit_state("img2img")["image_shown"], 60, "the hint is not shown in img2img's Unit 0")
    check_sent(page, "img2img", hint)
    check_generation_used_it(page, "img2img", hint)
