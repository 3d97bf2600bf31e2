"""The SCG tab under a real gradio, run in a child process whose PYTHONPATH starts with one gradio
version (see gradio_envs.py).

    python tests/webui/gradio_app.py check OUT.json   # build the Blocks, fire its events, report
    python tests/webui/gradio_app.py serve PORT       # serve the tab on 127.0.0.1:PORT

The host's ControlNet is a recording stand-in (the hosts themselves are not installable here).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "scripts"), str(Path(__file__).resolve().parents[2])]

import gradio as gr  # noqa: E402
from scg_webui.hosts import ControlNetHost, scg_first  # noqa: E402
from scg_webui.service import HintService, Settings  # noqa: E402
from scg_webui.ui import TabCallbacks, build_tab  # noqa: E402

import scg_core  # noqa: E402
from tests.webui import fake_webui as fake  # noqa: E402


class RecordingHost(ControlNetHost):
    """Its ControlNet folder holds a canny ControlNet and ``scg_brightness``, written as files that carry
    SCG metadata or not (``scg``); their order comes from the extension's own metadata check."""

    name = "test stand-in"

    def __init__(self, scg: bool = True) -> None:
        import tempfile

        self.requests = []
        folder = Path(tempfile.mkdtemp(prefix="scg-cn-"))
        self.files = fake.controlnet_files(folder, {"control_v11p_sd15_canny [d14c016b]": False,
                                                   "scg_brightness [0a1b2c3d]": scg})

    def models(self):
        return scg_first(list(self.files), self.files.get)

    def generate(self, req):
        self.requests.append(req)
        return [255 - req.unit.hint]  # an "image" that depends on the hint it was given

    def register_preprocessor(self, run, group_label, groups):
        return False


def make_tab(scg: bool = True):
    host = RecordingHost(scg)
    callbacks = TabCallbacks(HintService(), host, lambda: Settings())
    return build_tab(callbacks), callbacks, host


def components(blocks) -> dict[str, object]:
    return {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}


def handler(blocks, component, event: str):
    """The Python function wired to ``component.event``."""
    if hasattr(blocks, "dependencies"):  # gradio 3: parallel lists, targets are ids
        pairs = [(fn, dep["targets"], dep["trigger"]) for dep, fn in zip(blocks.dependencies, blocks.fns)]
        found = [fn for fn, targets, trigger in pairs if component._id in targets and trigger == event]
    else:  # gradio 4: BlockFunction.targets = [(id, event)]
        found = [fn for fn in blocks.fns.values() if (component._id, event) in [tuple(t) for t in fn.targets]]
    if not found:
        raise LookupError(f"no {event} handler on {component.elem_id}")
    return found[0].fn, found[0]


def check(out: Path) -> None:
    tab, callbacks, host = make_tab()
    ids = components(tab)
    model = scg_core.load_default()
    image = fake.test_image(96, 128)
    report = {"gradio": gr.__version__, "blocks": type(tab).__name__, "elem_ids": sorted(ids)}

    preview, _ = handler(tab, ids["scg_source"], "change")
    hint, sheet, info = preview(image, ["brightness"], "")
    report["preview_equals_scg_core"] = bool(np.array_equal(hint, callbacks.service.hint(Settings(), image, ["brightness"])))
    want = scg_core.formats.images.tensor_to_pil(model.hint(scg_core.formats.images.pil_to_tensor(
        __import__("PIL.Image").Image.fromarray(image)), groups=["brightness"]))
    report["preview_equals_model_hint"] = bool(np.array_equal(hint, np.asarray(want)))
    report["sheet_shape"] = list(sheet.shape)
    reselect, _ = handler(tab, ids["scg_groups"], "change")
    hint2, _ = reselect(image, ["colour"], "")
    report["reselect_equals_colour_hint"] = bool(np.array_equal(hint2, callbacks.service.hint(Settings(), image, ["colour"])))
    report["group_choices"] = list(ids["scg_groups"].choices) if not isinstance(ids["scg_groups"].choices[0], (tuple, list)) \
        else [c[0] for c in ids["scg_groups"].choices]
    generate, _ = handler(tab, ids["scg_generate"], "click")
    gallery, text = generate(image, ["brightness"], "", "scg_brightness [0a1b2c3d]", "a cat", "", 7, 10, 64, 48, 7.0,
                             1.0, 0.0, 1.0)
    req = host.requests[-1]
    report["generate"] = {"info": text, "hint_shape": list(req.unit.hint.shape), "model": req.unit.model,
                          "gallery": len(gallery), "size": [req.width, req.height]}
    handler(tab, ids["scg_send_txt2img"], "click")  # wired (JavaScript only)
    report["groups_start"] = list(ids["scg_groups"].value)
    report["models"] = {"scg": picker_report(tab, ids), "none": picker_report(*make_tab(scg=False)[:1])}

    record = fake.Recorder()
    shared = fake.webui_core(record, "/tmp/models")["modules.shared"]
    from scg_webui.webui_entry import add_settings

    add_settings(shared, "/tmp/models/SCG")
    report["settings"] = {key: {"component": info.component.__name__, "section": list(info.section)}
                          for key, info in shared.opts.labels.items()}
    report["settings_choices"] = shared.opts.labels["scg_autoencoder"].component_args()["choices"]
    report["entry"] = load_entry_like_a1111()
    out.write_text(json.dumps(report, indent=1))


def picker_report(tab, ids=None) -> dict:
    """The ControlNet picker: its choices and value, the note beside it (the next thing in the
    picker's column, right under the row holding the picker), and what Refresh returns."""
    ids = ids or components(tab)
    picker, note = ids["scg_model"], ids["scg_model_note"]
    column, row = note.parent, picker.parent
    while row is not None and row.parent is not column:  # gradio 3 wraps the picker in a Form inside the row
        row = row.parent
    at = column.children.index(note)
    beside = at > 0 and column.children[at - 1] is row
    choices = [c[0] if isinstance(c, (tuple, list)) else c for c in picker.choices]
    refresh, _ = handler(tab, ids["scg_refresh"], "click")
    new_picker, new_note = refresh(choices[-1])
    return {"choices": choices, "value": picker.value, "note": note.value, "note_beside_picker": beside,
            "refresh": {"value": new_picker["value"], "choices": [c[0] if isinstance(c, (tuple, list)) else c
                                                                 for c in new_picker["choices"]],
                        "note": new_note["value"]}}


def load_entry_like_a1111() -> dict:
    """Load scripts/scg_tab.py the way A1111 loads an extension script (module named after the
    file, the extension folder on sys.path only meanwhile), with faked host modules, then run the
    callbacks it registered as the web UI would: settings, before-UI, tabs."""
    import importlib.util

    record = fake.Recorder()
    mods = {**fake.webui_core(record, "/tmp/models"), **fake.sd_webui_controlnet(record)}
    for name, m in mods.items():
        sys.modules[name] = m
    for name, m in mods.items():
        parent, _, child = name.rpartition(".")
        if parent in mods:
            setattr(mods[parent], child, m)
    path = Path(__file__).resolve().parents[2] / "scripts" / "scg_tab.py"
    saved = list(sys.path)
    sys.path.insert(0, str(path.parents[1]))
    try:
        spec = importlib.util.spec_from_file_location(path.name, path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        sys.path = saved  # A1111 restores the list it saved
    hooks = {name: args[0] for name, args, _ in record.calls if name.startswith("on_")}
    hooks["on_ui_settings"]()
    hooks["on_before_ui"]()
    [(blocks, title, elem_id)] = hooks["on_ui_tabs"]()
    registry = mods["scripts.supported_preprocessor"].Preprocessor.registry
    tab_groups = components(blocks)["scg_groups"].value
    slider = registry["scg_hypercolumn"].slider_1
    return {"hooks": sorted(hooks), "tab": [type(blocks).__name__, title, elem_id],
            "settings": sorted(mods["modules.shared"].opts.labels), "preprocessors": sorted(registry),
            "start": {"tab": list(tab_groups), "preprocessor": slider.value, "preprocessor_label": slider.label}}


def serve(port: int) -> None:
    """The tab, plus a stand-in for sd-webui-controlnet's first txt2img unit (an upload image with
    the element id that unit has), with javascript/scg.js loaded as the hosts load it."""
    tab, _, _ = make_tab(scg=False)  # no SCG ControlNet: the note beside the picker says so
    js = (Path(__file__).resolve().parents[2] / "javascript" / "scg.js").read_text()
    modern = int(gr.__version__.split(".")[0]) >= 4
    with gr.Blocks(analytics_enabled=False, **({"head": f"<script>{js}</script>"} if modern else {})) as page:
        tab.render()
        gr.Image(label="stand-in: ControlNet unit image (txt2img)", type="numpy",
                 elem_id="txt2img_controlnet_ControlNet-0_input_image")
        # stand-in for Forge's ControlNet canvas in img2img: random ids, an upload input of class forge-file-upload
        gr.HTML('<div id="tab_img2img"><div id="img2img_controlnet_block"><input type="file" '
                'class="forge-file-upload" id="forge_canvas_stand_in"></div></div>')
        if not modern:  # gradio 3 has no head=: define the function on load
            page.load(None, None, None, _js="() => {" + js + "\nwindow.scgSendHintToControlNet = scgSendHintToControlNet; }")
    page.queue()
    print(f"serving gradio {gr.__version__} on {port}", flush=True)
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=False, show_error=True, quiet=True)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(Path(sys.argv[2]))
    else:
        serve(int(sys.argv[2]))
