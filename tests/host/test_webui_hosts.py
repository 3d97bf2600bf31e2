"""The extension in real AUTOMATIC1111 1.10.1 + sd-webui-controlnet 1.1.455 and real Forge f2.0.1,
through their HTTP API (``--api``): the tab and settings exist, the ``scg_hypercolumn`` preprocessor
gives exactly ``python -m scg_core hint``, txt2img acts through it and through the SCG ControlNet, the
"SCG" Control Type lists SCG ControlNets by their metadata, and the host log shows no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import scg_core
from devtools.comfy_server import REPO
from scg_core.formats.images import fit_to_size, load_image

from .webui_server import (
    PLAIN_CONTROLNET,
    SCG_CONTROLNET,
    from_b64,
    host_env,
    to_b64_png,
)

PHOTO = REPO / "photos" / "chelsea.jpg"  # 451×300


def photo_uint8() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def controlnet_args(server, unit: dict) -> dict:
    """``alwayson_scripts`` for one ControlNet unit (the script's title differs in case)."""
    return {"ControlNet" if server.name == "forge" else "controlnet": {"args": [unit]}}


def txt2img(server, unit: dict) -> np.ndarray:
    status, reply = server.post("/sdapi/v1/txt2img", {
        "prompt": "a cat", "negative_prompt": "", "seed": 7, "steps": 2, "width": 64, "height": 64, "cfg_scale": 7,
        "sampler_name": "Euler a", "batch_size": 1, "alwayson_scripts": controlnet_args(server, unit)})
    assert status == 200, reply
    return from_b64(reply["images"][0]).astype(np.int16)


def test_the_tab_settings_and_preprocessor_are_there(webui):
    config = webui.get("/config")  # the page's gradio components
    elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"tab_scg", "scg_source", "scg_groups", "scg_hint", "scg_sheet", "scg_model", "scg_generate",
            "scg_send_txt2img", "scg_send_img2img"} <= elem_ids
    assert {"settings_scg", "setting_scg_autoencoder", "setting_scg_device", "setting_scg_keep_on_cpu"} <= elem_ids
    assert "scg_hypercolumn" in webui.get("/controlnet/module_list")["module_list"]
    assert "SCG: added the scg_hypercolumn preprocessor to" in webui.log()


@pytest.mark.parametrize("group", range(5))  # 0 = all modules, then the bundled autoencoder's four groups
def test_detect_equals_the_command_line_hint(webui, group, tmp_path):
    status, reply = webui.post("/controlnet/detect", {
        "controlnet_module": "scg_hypercolumn", "controlnet_input_images": [to_b64_png(photo_uint8())],
        "controlnet_processor_res": 300, "controlnet_threshold_a": group})  # 300: the photo's shorter side
    assert status == 200, reply
    detected = from_b64(reply["images"][0])
    names = ["all"] + [g.name for g in scg_core.load_default().groups]
    out = tmp_path / "hint.png"
    subprocess.run([sys.executable, "-m", "scg_core", "hint", str(PHOTO), "-o", str(out), "--groups", names[group]],
                   check=True, capture_output=True, env=host_env())  # the hosts' CPU kernels, so float rounding agrees
    expected = np.asarray(Image.open(out).convert("RGB"))
    assert detected.shape == expected.shape == (300, 451, 3)
    assert np.array_equal(detected, expected), np.abs(detected.astype(int) - expected).max()


def test_the_api_default_threshold_means_the_default_group(webui):
    """Forge's /controlnet/detect sends threshold_a 64 when the caller sets none: brightness, with a warning."""
    body = {"controlnet_module": "scg_hypercolumn", "controlnet_input_images": [to_b64_png(photo_uint8())],
            "controlnet_processor_res": 300}
    status, default = webui.post("/controlnet/detect", body)
    assert status == 200, default
    status, brightness = webui.post("/controlnet/detect", {**body, "controlnet_threshold_a": 2})
    assert np.array_equal(from_b64(default["images"][0]), from_b64(brightness["images"][0]))


def test_txt2img_through_the_preprocessor_and_through_our_hint_changes_the_image(webui):
    model = webui.model_name(SCG_CONTROLNET)
    photo = to_b64_png(photo_uint8())
    unit = {"enabled": True, "module": "scg_hypercolumn", "model": model, "image": photo, "processor_res": 64,
            "threshold_a": 2, "threshold_b": 0.5, "resize_mode": "Just Resize", "control_mode": "Balanced"}
    acting, idle = txt2img(webui, {**unit, "weight": 1.0}), txt2img(webui, {**unit, "weight": 0.0})
    assert np.abs(acting - idle).mean() > 1, "the ControlNet did not change the image through scg_hypercolumn"

    ae = scg_core.load_default()
    hint = ae.hint(fit_to_size(load_image(PHOTO), (64, 64)), groups=["brightness"])
    hint = (hint[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    none = "None" if webui.name == "forge" else "none"
    ours = {**unit, "module": none, "image": to_b64_png(hint)}
    acting, idle = txt2img(webui, {**ours, "weight": 1.0}), txt2img(webui, {**ours, "weight": 0.0})
    assert np.abs(acting - idle).mean() > 1, "the ControlNet did not change the image with the SCG hint"


def test_the_scg_control_type_lists_scg_controlnets_by_their_metadata(webui):
    types = webui.get("/controlnet/control_types")["control_types"]
    scg = types["SCG"]
    assert "scg_hypercolumn" in scg["module_list"] and scg["default_option"] == "scg_hypercolumn"
    assert webui.model_name(SCG_CONTROLNET) in scg["model_list"]  # its name does not contain "scg"
    assert webui.model_name(PLAIN_CONTROLNET) not in scg["model_list"]
    assert scg["default_model"] == webui.model_name(SCG_CONTROLNET)


def test_no_traceback_in_the_host_log(webui):
    log = webui.log()
    assert "Traceback" not in log and "Error running" not in log, log[-6000:]
