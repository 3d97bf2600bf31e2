"""The pack in ComfyUI's web UI, as a user meets it: the real frontend of the ComfyUI the host tests
run (its LiteGraph UI, with this pack's web/ extension loaded from WEB_DIRECTORY), in headless
Debian Chromium.

* after a run, Modular AE Encode (hypercolumn) and SCG ControlNet Apply show their info text on the
  node, and a ControlNet without SCG metadata is a visible warning there;
* that text box is never sent with the prompt nor saved in the workflow;
* the shipped workflows, laid out by the frontend itself, have no overlapping nodes.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from PIL import Image

from devtools.browser import headless_chromium, missing
from devtools.comfy_server import REPO
from devtools.workflow_format import to_api, validate

WORKFLOWS = REPO / "workflows"


@pytest.fixture(scope="module")
def page(comfy):
    why = missing()
    if why:
        if os.environ.get("SCG_REQUIRE_HOSTS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    driver = headless_chromium(1700, 1100)
    driver.set_script_timeout(120)
    try:
        driver.get(comfy.url)
        deadline = time.monotonic() + 60
        while not driver.execute_script(
                "return !!(window.app && app.graph && window.LiteGraph && LiteGraph.registered_node_types.SCGModularAEEncode"
                " && app.extensions.some(e => e.name === 'scg.nodes.info'))"):
            assert time.monotonic() < deadline, "the ComfyUI page did not load with the SCG extension"
            time.sleep(0.2)
        yield driver
    finally:
        driver.quit()


def run_in_page(driver, body: str, *args):
    """Run an async JS function body in the page; returns its value (errors are raised here)."""
    result = driver.execute_async_script(f"""
        const done = arguments[arguments.length - 1];
        (async (...args) => {{ {body} }})(...Array.from(arguments).slice(0, -1))
            .then(value => done({{ value }}), error => done({{ error: String(error && (error.stack || JSON.stringify(error.response) || error)) }}));
    """, *args)
    if "error" in result:
        raise AssertionError(result["error"])
    return result.get("value")


def load(driver, workflow: dict) -> None:
    run_in_page(driver, """
        await app.loadGraphData(args[0]);
        app.canvas.ds.scale = 0.6; app.canvas.ds.offset = [10, 40];
        app.graph.setDirtyCanvas(true, true); app.canvas.draw(true, true);
    """, workflow)


def queue(driver, comfy, prompt: dict | None = None) -> dict:
    """Queue the graph on the page (or ``prompt``, an API prompt for the same node ids) as the page's
    client, so that ComfyUI sends this page the nodes' results; wait for it to finish."""
    pid = run_in_page(driver, """
        const { api } = await import("/scripts/api.js");
        const p = await app.graphToPrompt();
        const reply = await api.queuePrompt(0, { output: args[0] ?? p.output, workflow: p.workflow });
        return reply.prompt_id;
    """, prompt)
    entry = comfy.wait(pid)
    assert entry["status"].get("status_str") != "error", entry["status"]
    return entry


INFO_BOXES = """
    return app.graph._nodes.filter(n => n.type === args[0]).map(n => {
        const w = (n.widgets || []).find(w => w.name === "scg_info");
        const el = w && w.inputEl;
        const r = el && el.getBoundingClientRect();
        return { id: n.id, groups: n.widgets[0].value, value: w ? w.value : null, text: el ? el.value : null,
                 shown: !!el && el.isConnected && getComputedStyle(el).display !== "none" && !el.hidden && r.height > 20,
                 warning: el ? el.dataset.scgWarning : null, readOnly: el ? el.readOnly : null };
    });
"""


def info_boxes(driver, kind: str, timeout: float = 20) -> list[dict]:
    """The info box of each ``kind`` node once every one holds text (the result arrives over the websocket)."""
    deadline = time.monotonic() + timeout
    while True:
        boxes = run_in_page(driver, INFO_BOXES, kind)
        if boxes and all(b["text"] for b in boxes) or time.monotonic() > deadline:
            return boxes
        time.sleep(0.2)


def test_encode_nodes_show_their_info_on_the_node_after_a_run(page, comfy):
    wf = json.loads((WORKFLOWS / "scg_hint_gallery.json").read_text())
    load(page, wf)
    before = info_boxes(page, "SCGModularAEEncode", timeout=0)
    assert len(before) == 4 and all(b["value"] == "" and b["readOnly"] for b in before)  # empty until a run
    # a source no other test runs the gallery on, so ComfyUI's cache cannot skip the encoders
    run_in_page(page, "app.graph._nodes.find(n => n.type === 'LoadImage').widgets[0].value = 'scg_hazy.png';")
    queue(page, comfy)
    boxes = info_boxes(page, "SCGModularAEEncode")
    assert len(boxes) == 4
    from scg_core import load_default
    from scg_core.hosts.selection import display_gain_note, parse_groups

    default = load_default()
    width, height = Image.open(comfy.input / "scg_hazy.png").size
    for box in boxes:
        assert box["shown"], box
        assert box["text"] == box["value"]
        assert box["text"].startswith(f"SCG hint: groups [{box['groups']}] = modules ["), box
        shown = display_gain_note(default, parse_groups(box["groups"]))  # e.g. "edges_fine ×4.1"
        gain = f" (display: {shown})" if shown else ""
        assert f"of default (bundled){gain}; 1 image(s) {width}×{height}" in box["text"], box
        assert box["warning"] == "0"


def test_the_info_box_is_neither_sent_nor_saved(page, comfy):
    """After a run (the boxes hold text) the prompt and the saved workflow carry only the node's own widgets."""
    if not any(b["text"] for b in run_in_page(page, INFO_BOXES, "SCGModularAEEncode")):
        load(page, json.loads((WORKFLOWS / "scg_hint_gallery.json").read_text()))
        queue(page, comfy)
        info_boxes(page, "SCGModularAEEncode")
    saved = run_in_page(page, "return app.graph.serialize();")
    prompt = run_in_page(page, "return (await app.graphToPrompt()).output;")
    defs = comfy.get("/object_info")
    assert validate(saved, defs) == []
    encoders = [n for n in saved["nodes"] if n["type"] == "SCGModularAEEncode"]
    assert encoders and all(len(n["widgets_values"]) == 2 for n in encoders)  # groups, gains
    for node in prompt.values():
        assert "scg_info" not in node["inputs"], node
    ours = {i: n for i, n in to_api(saved, defs).items() if n["class_type"].startswith("SCG")}
    assert ours and ours == {i: n for i, n in prompt.items() if n["class_type"].startswith("SCG")}


def test_apply_node_shows_a_visible_warning_for_a_controlnet_without_scg_metadata(page, comfy):
    wf = json.loads((WORKFLOWS / "scg_sketch_to_photo.json").read_text())
    load(page, wf)
    prompt = to_api(wf, comfy.get("/object_info"))
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":  # the random-weight SD1.5 of the host tests
            node["class_type"], node["inputs"] = "DiffusersLoader", {"model_path": "sd15"}
        elif kind == "ControlNetLoader":
            inputs["control_net_name"] = "controlnet_sd15_no_metadata.safetensors"
        elif kind == "EmptyLatentImage":
            inputs.update(width=128, height=128)
        elif kind == "SCGControlNetApply":
            inputs["strength"] = 0.93  # not a prompt another test ran: ComfyUI must run the node
        elif kind in ("KSampler", "VAEDecode", "SaveImage"):
            del prompt[node_id]  # the hint preview is output enough
    queue(page, comfy, prompt)
    [box] = info_boxes(page, "SCGControlNetApply")
    assert box["shown"], box
    assert "WARNING: no SCG metadata found for this ControlNet, so the groups were not checked" in box["text"]
    assert box["warning"] == "1"  # drawn in the warning colour
    assert box["text"].startswith("SCG hint: groups [edges] = modules [")


def bounding_boxes(driver) -> list[tuple[str, list[float]]]:
    """[left, top, width, height] of each node as the frontend lays it out (title bar included)."""
    return run_in_page(driver, """
        app.canvas.draw(true, true);
        await new Promise(r => setTimeout(r, 300));
        app.canvas.draw(true, true);
        return app.graph._nodes.map(n => [n.id + " " + (n.title || n.type), Array.from(n.getBounding())]);
    """)


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_shipped_workflows_have_no_overlapping_nodes_in_the_frontend(page, name):
    load(page, json.loads((WORKFLOWS / name).read_text()))
    boxes = bounding_boxes(page)
    assert len(boxes) == len(json.loads((WORKFLOWS / name).read_text())["nodes"])
    clashes = []
    for i, (a, (x1, y1, w1, h1)) in enumerate(boxes):
        for b, (x2, y2, w2, h2) in boxes[i + 1:]:
            if x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1:
                clashes.append(f"{a} {[x1, y1, w1, h1]} / {b} {[x2, y2, w2, h2]}")
    assert clashes == []
