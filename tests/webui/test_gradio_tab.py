"""The SCG tab under the real gradio of each host: 3.41.2 (A1111 1.10) and 4.40.0 (Forge).

Each version runs in a child process (gradio_app.py) whose PYTHONPATH starts with that gradio,
installed once into a cache folder (gradio_envs.py; needs PyPI the first time). The browser test
drives the served tab in headless Debian Chromium.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from devtools import browser

from .gradio_envs import REPO, child_env

VERSIONS = ["3.41.2", "4.40.0"]
APP = Path(__file__).with_name("gradio_app.py")


@pytest.mark.parametrize("version", VERSIONS)
def test_tab_builds_and_its_events_give_the_scg_core_hint(version, tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(APP), "check", str(out)], env=child_env(version, tmp_path), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["gradio"] == version and report["blocks"] == "Blocks"
    for elem in ("scg_source", "scg_groups", "scg_gains", "scg_hint", "scg_sheet", "scg_model", "scg_model_note",
                 "scg_generate", "scg_send_txt2img", "scg_send_img2img", "scg_gallery"):
        assert elem in report["elem_ids"]
    assert report["preview_equals_scg_core"] and report["preview_equals_model_hint"]
    assert report["reselect_equals_colour_hint"]
    assert report["group_choices"][:2] == ["colour", "brightness"] and {"edges_coarse (edges)", "edges_fine (edges)"} <= set(report["group_choices"])
    assert report["generate"]["hint_shape"] == [48, 64, 3] and report["generate"]["size"] == [64, 48]
    assert report["generate"]["gallery"] == 2 and "Generated 1 image" in report["generate"]["info"]
    assert report["settings"]["scg_autoencoder"] == {"component": "Dropdown", "section": ["scg", "SCG"]}
    assert report["settings"]["scg_keep_on_cpu"]["component"] == "Checkbox"
    assert report["settings_choices"][0] == "default (bundled)"
    start = report["entry"].pop("start")
    assert report["entry"] == {"hooks": ["on_before_ui", "on_ui_settings", "on_ui_tabs"], "tab": ["Blocks", "SCG", "scg"],
                               "settings": ["scg_autoencoder", "scg_device", "scg_keep_on_cpu"],
                               "preprocessors": ["scg_hypercolumn"]}
    # one default: the tab and the preprocessor start on the same group, brightness
    assert report["groups_start"] == start["tab"] == ["brightness"]
    assert report["group_choices"][start["preprocessor"] - 1] == "brightness"
    assert start["preprocessor_label"].startswith("SCG group: 0 = all modules, 1 colour, 2 brightness")
    # the entry script's start-up line reaches the console (stdout) with the hosts' logging left unconfigured
    assert ("SCG: added the scg_hypercolumn preprocessor to sd-webui-controlnet (A1111); its slider picks the group "
            "(0 = all modules, 1–5 the groups), starting on 2 = brightness") in proc.stdout.splitlines()

    scg, none = report["models"]["scg"], report["models"]["none"]
    assert scg["choices"] == ["scg_brightness [0a1b2c3d]", "control_v11p_sd15_canny [d14c016b]"]  # SCG first
    assert scg["value"] == "scg_brightness [0a1b2c3d]" and scg["note_beside_picker"] and none["note_beside_picker"]
    assert scg["note"] == scg["refresh"]["note"] == "1 SCG ControlNet(s) found (SCG metadata in the file), listed first."
    assert scg["refresh"]["value"] == "scg_brightness [0a1b2c3d]"  # a non-SCG choice gives way to the SCG one
    assert none["choices"] == none["refresh"]["choices"] == ["control_v11p_sd15_canny [d14c016b]",
                                                             "scg_brightness [0a1b2c3d]"]  # the host's order
    assert none["value"] == "control_v11p_sd15_canny [d14c016b]"
    assert "No SCG ControlNet found" in none["note"] and "control_v11p_sd15_canny [d14c016b]" in none["note"]
    assert "none of these 2 models carries SCG metadata" in none["note"] and "train_controlnet" in none["note"]
    assert none["refresh"]["value"] == "scg_brightness [0a1b2c3d]"  # still listed, none is SCG: the user's choice stays
    assert "No SCG ControlNet found" in none["refresh"]["note"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout=60, message="timed out"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(message)


@pytest.fixture
def served(request, tmp_path):
    """The tab served by one gradio version on loopback; yields its URL."""
    version = request.param
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, str(APP), "serve", str(port)], env=child_env(version, tmp_path), cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def up():
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(up, 120, "gradio did not start")
        yield version, url
    finally:
        proc.terminate()
        proc.wait(20)


def image_src(driver, css):
    found = driver.find_elements("css selector", css)
    return found[0].get_attribute("src") if found else ""


@pytest.mark.parametrize("served", VERSIONS, indirect=True)
def test_in_a_browser_upload_pick_a_group_see_the_hint_change_and_send_it(served, tmp_path):
    if problem := browser.missing():
        if os.environ.get("SCG_REQUIRE_HOSTS") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    version, url = served
    photo = REPO / "photos" / "chelsea.jpg"
    driver = browser.headless_chromium(1400, 1600)
    try:
        driver.get(url)
        upload = wait_for(lambda: driver.find_elements("css selector", "#scg_source input[type=file]"), 60, "no upload input")
        upload[0].send_keys(str(photo))
        first = wait_for(lambda: image_src(driver, "#scg_hint img"), 60, "no hint after the upload")
        wait_for(lambda: image_src(driver, "#scg_sheet img"), 60, "no decomposition sheet")
        ticked = [e.text for e in driver.find_elements("css selector", "#scg_groups label") if
                  e.find_element("css selector", "input").is_selected()]
        assert ticked == ["brightness"]  # the group the scg_hypercolumn preprocessor starts on
        note = driver.find_element("css selector", "#scg_model_note")  # the served host has no SCG ControlNet
        assert note.is_displayed() and "No SCG ControlNet found" in note.text and "is selected" in note.text
        label = next(e for e in driver.find_elements("css selector", "#scg_groups label") if "colour" in e.text)
        label.click()  # brightness → colour + brightness
        second = wait_for(lambda: (s := image_src(driver, "#scg_hint img")) != first and s, 60, "hint did not change")
        assert second != first
        shots = Path(os.environ.get("SCG_SCREENSHOT_DIR", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / f"webui_scg_tab_gradio{version.split('.')[0]}.png"
        driver.save_screenshot(str(shot))
        with Image.open(shot) as full:  # README size
            full.convert("RGB").resize((1000, round(full.height * 1000 / full.width)), Image.Resampling.LANCZOS).save(
                shot, optimize=True)

        driver.find_element("css selector", "#scg_send_txt2img").click()
        unit = "#txt2img_controlnet_ControlNet-0_input_image img"
        sent = wait_for(lambda: image_src(driver, unit), 60, "the hint did not reach the ControlNet unit's image input")
        assert sent
        driver.find_element("css selector", "#scg_send_img2img").click()  # Forge-like canvas input (stand-in)
        count = "return document.querySelector('#forge_canvas_stand_in').files.length"
        wait_for(lambda: driver.execute_script(count) == 1, 30, "the hint did not reach the Forge canvas stand-in")
    finally:
        driver.quit()
