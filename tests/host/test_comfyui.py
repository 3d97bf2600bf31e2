"""The node pack in a real ComfyUI server: definitions, workflows, generation, errors — and what
ComfyUI refuses before running anything (VALIDATE_INPUTS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from devtools.comfy_server import REPO, error_message
from devtools.workflow_format import definition_of, to_api, validate
from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from scg_core import load_default, save
from scg_core.formats.images import pil_to_tensor

WORKFLOWS = REPO / "workflows"


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def test_object_info_lists_our_nodes_as_declared(comfy):
    info = comfy.get("/object_info")
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} missing from /object_info"
        live, ours = info[name], definition_of(cls)
        assert live["category"] == cls.CATEGORY and live["output"] == ours["output"]
        assert live["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[name] and live["description"] == cls.DESCRIPTION
        for section in ("required", "optional"):
            assert list(live["input"].get(section, {})) == list(ours["input"].get(section, {}))
            for inp, spec in ours["input"].get(section, {}).items():
                if inp != "ae_name":
                    assert live["input"][section][inp] == spec
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"
    choices = info["SCGLoadModularAE"]["input"]["required"]["ae_name"][0]
    assert choices[0] == "default (bundled)" and "my_ae.safetensors" in choices
    assert info["SCGModularAEEncode"]["display_name"] == "Modular AE Encode (hypercolumn)"
    assert info["SCGControlNetApply"]["display_name"] == "SCG ControlNet Apply"
    # beside the core ControlNet nodes and comfyui_controlnet_aux's preprocessors
    assert info["SCGControlNetApply"]["category"] == "conditioning/controlnet"
    assert info["SCGModularAEEncode"]["category"] == "ControlNet Preprocessors/SCG"
    assert info["SCGLoadModularAE"]["category"] == info["ControlNetLoader"]["category"] == "loaders"


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_workflows_agree_with_the_live_node_definitions(comfy, name):
    assert validate(load_workflow(name), comfy.get("/object_info")) == []


def expected_hint(model, image_path: Path, groups):
    """What ComfyUI's LoadImage + our node + SaveImage should write: the scg_core hint, ×255 truncated."""
    x = pil_to_tensor(Image.open(image_path))
    with torch.inference_mode():
        hint = model.hint(x, groups)[0].permute(1, 2, 0).numpy()
    return np.clip(255.0 * hint, 0, 255).astype(np.uint8)


def test_hint_gallery_workflow_outputs_are_the_scg_core_hints(comfy):
    defs = comfy.get("/object_info")
    prompt = to_api(load_workflow("scg_hint_gallery.json"), defs)
    entry = comfy.run(prompt)
    assert error_message(entry) is None, error_message(entry)
    model = load_default()
    checked = 0
    for node_id, node in prompt.items():
        if node["class_type"] != "SaveImage":
            continue
        src_id = node["inputs"]["images"][0]
        ref = entry["outputs"][node_id]["images"][0]
        got = comfy.image(ref)
        if prompt[src_id]["class_type"] == "SCGDecompositionSheet":
            assert got.shape[1] == 6 * 256 and got.std() > 10  # six tiles per row, not blank
            continue
        groups = prompt[src_id]["inputs"]["groups"]
        want = expected_hint(model, comfy.input / "chelsea.jpg", None if groups == "all" else [groups])
        assert got.shape == want.shape
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999, f"{groups}: max diff {diff.max()}"
        checked += 1
    assert checked == 4


def generation_prompt(comfy, strength: float, groups: str = "brightness") -> dict:
    """The sketch → photo workflow at 128×128 with 2 steps, on the random-weight SD1.5."""
    prompt = to_api(load_workflow("scg_sketch_to_photo.json"), comfy.get("/object_info"))
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            node["class_type"], node["inputs"] = "DiffusersLoader", {"model_path": "sd15"}
        elif kind == "EmptyLatentImage":
            inputs.update(width=128, height=128)
        elif kind == "KSampler":
            inputs.update(steps=2, sampler_name="euler", seed=1)
        elif kind == "SCGControlNetApply":
            inputs.update(strength=strength, groups=groups)
    return prompt


def outputs_of(prompt: dict, entry: dict, kind: str) -> list:
    return [entry["outputs"][i] for i, n in prompt.items() if n["class_type"] == kind and i in entry["outputs"]]


def test_sd15_graph_with_scg_controlnet_apply_generates_and_the_controlnet_acts(comfy):
    images = {}
    for strength in (1.0, 0.0):
        prompt = generation_prompt(comfy, strength)
        entry = comfy.run(prompt)
        assert error_message(entry) is None, error_message(entry)
        images[strength] = comfy.image(outputs_of(prompt, entry, "SaveImage")[0]["images"][0]).astype(float)
        hint = comfy.image(outputs_of(prompt, entry, "PreviewImage")[0]["images"][0])
        assert hint.shape == (128, 128, 3)  # computed at the generation resolution
        if strength == 1.0:
            text = outputs_of(prompt, entry, "SCGControlNetApply")[0]["text"][0]
            assert "groups match the ControlNet's training (brightness)" in text
    assert images[1.0].shape == (128, 128, 3)
    assert np.abs(images[1.0] - images[0.0]).mean() > 1.0  # mean pixel difference, in 0–255 levels


def test_chains_with_another_controlnet_apply(comfy):
    prompt = generation_prompt(comfy, 1.0)
    first = next(i for i, n in prompt.items() if n["class_type"] == "SCGControlNetApply")
    second = dict(prompt[first], inputs=dict(prompt[first]["inputs"], positive=[first, 0], negative=[first, 1], groups="colour"))
    prompt["100"] = second
    core = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["100", 0], "negative": ["100", 1], "control_net": prompt[first]["inputs"]["control_net"],
        "image": [first, 2], "strength": 0.5, "start_percent": 0.0, "end_percent": 1.0}}
    prompt["101"] = core
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler")
    sampler["inputs"].update(positive=["101", 0], negative=["101", 1])
    entry = comfy.run(prompt)
    assert error_message(entry) is None, error_message(entry)
    assert comfy.image(outputs_of(prompt, entry, "SaveImage")[0]["images"][0]).shape == (128, 128, 3)


def test_group_mismatch_with_the_controlnet_metadata_is_reported(comfy):
    prompt = generation_prompt(comfy, 1.0, groups="colour")
    entry = comfy.run(prompt)
    assert error_message(entry) is None, error_message(entry)
    text = outputs_of(prompt, entry, "SCGControlNetApply")[0]["text"][0]
    assert "WARNING: this ControlNet was trained on the groups [brightness], but the hint keeps [colour]" in text
    assert "trained on the groups [brightness]" in comfy.log_tail(20000)


def encode_prompt(groups="brightness", ae_name=None, gains=""):
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "scg_lowres.png"}},
              "2": {"class_type": "SCGModularAEEncode", "inputs": {"image": ["1", 0], "groups": groups, "gains": gains}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    if ae_name is not None:
        prompt["4"] = {"class_type": "SCGLoadModularAE", "inputs": {"ae_name": ae_name}}
        prompt["2"]["inputs"]["modular_ae"] = ["4", 0]
    return prompt


def perturbed_default():
    """The bundled default with every weight moved by a fifth of its tensor's spread: same groups,
    clearly different hints."""
    model = load_default()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * p.std() * torch.randn_like(p))
    return model


def test_the_connected_autoencoder_is_the_one_that_makes_the_hint(comfy):
    # my_ae.safetensors is a byte copy of the default: a node ignoring modular_ae would pass with it.
    # This file is another autoencoder, so the hint must be its hint and not the default's.
    model = perturbed_default()
    save(model, comfy.models / "scg" / "perturbed_ae.safetensors")
    prompt = encode_prompt("colour", ae_name="perturbed_ae.safetensors")
    entry = comfy.run(prompt)
    assert error_message(entry) is None, error_message(entry)
    got = comfy.image(outputs_of(prompt, entry, "PreviewImage")[0]["images"][0])
    want = expected_hint(model, comfy.input / "scg_lowres.png", ["colour"])
    default = expected_hint(load_default(), comfy.input / "scg_lowres.png", ["colour"])
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999, f"max diff {diff.max()} from the connected autoencoder's hint"
    assert np.abs(got.astype(int) - default.astype(int)).mean() > 2  # far from the bundled default's hint


@pytest.mark.parametrize("prompt, expected", [
    (encode_prompt(ae_name="broken.safetensors"), "broken.safetensors is not a readable safetensors file"),
    # with an autoencoder connected its groups are known only at run time
    (encode_prompt(groups="edgez", ae_name="my_ae.safetensors"), "unknown group 'edgez'; this autoencoder's groups are: colour"),
], ids=["corrupt-weights", "unknown-group-of-a-connected-autoencoder"])
def test_bad_input_is_a_comfyui_error_naming_the_problem(comfy, prompt, expected):
    entry = comfy.run(prompt)
    message = error_message(entry)
    assert message is not None and expected in message, message


def refusal(reply: dict) -> str:
    """The validation messages of a refused prompt, one per line, as ComfyUI lists them."""
    lines = [f"{reply['error']['message']}: {reply['error']['details']}"] if "error" in reply else []
    for node_id, node in reply.get("node_errors", {}).items():
        lines += [f"{node_id} {node['class_type']}: {e['message']}: {e['details']}" for e in node["errors"]]
    return "\n".join(lines)


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("groups, gains, expected", [
    ("brightness, edgez", "", "unknown group 'edgez'; this autoencoder's groups are: colour, brightness"),
    ("brightness", "colour=abc", "gains: cannot read 'colour=abc'"),
], ids=["unknown-group", "bad-gains"])
def test_mistyped_groups_or_gains_are_refused_before_anything_runs(comfy, groups, gains, expected):
    """POST /prompt answers 400 with the message; no node runs, no Save Image writes."""
    prompt = generation_prompt(comfy, 1.0, groups=groups)
    apply_id = next(i for i, n in prompt.items() if n["class_type"] == "SCGControlNetApply")
    prompt[apply_id]["inputs"]["gains"] = gains
    del prompt[apply_id]["inputs"]["modular_ae"]  # the bundled default: its groups are known
    before_history, before_files = comfy.get("/history"), files_under(comfy.output)
    status, reply = comfy.queue(prompt)
    text = refusal(reply)
    assert status == 400, reply
    assert f"{apply_id} SCGControlNetApply: Custom validation failed for node: groups - {expected}" in text, text
    if "unknown group" in expected:
        assert "checked against the bundled default autoencoder, used because modular_ae is not connected" in text
    assert comfy.get("/history") == before_history and files_under(comfy.output) == before_files


def test_one_mistyped_group_stops_only_the_outputs_that_need_it(comfy):
    """ComfyUI runs the outputs that validate and names the node that does not: in the hint gallery
    the encode node with a mistyped group never runs, and its Save Image writes nothing."""
    prompt = to_api(load_workflow("scg_hint_gallery.json"), comfy.get("/object_info"))
    encoders = [i for i, n in prompt.items() if n["class_type"] == "SCGModularAEEncode"]
    bad = encoders[1]
    prompt[bad]["inputs"]["groups"] = "colourz"
    del prompt[bad]["inputs"]["modular_ae"]
    status, reply = comfy.queue(prompt)
    assert status == 200 and set(reply["node_errors"]) == {bad}, reply
    assert "unknown group 'colourz'" in refusal(reply)
    entry = comfy.wait(reply["prompt_id"])
    assert error_message(entry) is None, error_message(entry)
    saves = {i: n for i, n in prompt.items() if n["class_type"] == "SaveImage"}
    ran = {i for i in saves if i in entry["outputs"]}
    bad_save = next(i for i, n in saves.items() if n["inputs"]["images"][0] == bad)
    assert bad_save not in ran and ran == set(saves) - {bad_save}
    assert bad not in entry["outputs"]  # the encoder's info (ui) would be there had it run


def test_a_controlnet_without_scg_metadata_is_a_visible_warning(comfy):
    prompt = generation_prompt(comfy, 1.0)
    for node in prompt.values():
        if node["class_type"] == "ControlNetLoader":
            node["inputs"]["control_net_name"] = "controlnet_sd15_no_metadata.safetensors"
    entry = comfy.run(prompt)
    assert error_message(entry) is None, error_message(entry)
    text = outputs_of(prompt, entry, "SCGControlNetApply")[0]["text"][0]
    assert "WARNING: no SCG metadata found for this ControlNet, so the groups were not checked" in text
    assert "SCG ControlNet Apply: no SCG metadata found for this ControlNet" in comfy.log_tail(20000)  # the console


def test_missing_weight_file_is_an_error_naming_it(comfy):
    # This ComfyUI validates only required inputs before running, so a loader joined through our
    # optional input reaches execution; either way the user must see the file name.
    status, reply = comfy.queue(encode_prompt(ae_name="gone.safetensors"))
    if status == 400:
        assert "gone.safetensors" in json.dumps(reply) and "not in list" in json.dumps(reply)
        return
    entry = comfy.wait(reply["prompt_id"])
    message = error_message(entry)
    assert message is not None and "modular autoencoder 'gone.safetensors' not found in" in message, message
    assert "models/scg" in message


def test_non_sd15_controlnet_is_an_error(comfy):
    prompt = generation_prompt(comfy, 1.0)
    for node in prompt.values():
        if node["class_type"] == "ControlNetLoader":
            node["inputs"]["control_net_name"] = "controlnet_sd21.safetensors"
    entry = comfy.run(prompt)
    message = error_message(entry)
    assert message is not None and "1024-wide text conditioning (SD2.x)" in message and "SD1.5" in message, message
