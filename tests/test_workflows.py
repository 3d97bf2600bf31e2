"""Offline checks of workflows/*.json against the node definitions (ours + a core snapshot)."""

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from nodes.workflow_format import to_api, validate, widget_slots

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))


def load_build_script():
    spec = importlib.util.spec_from_file_location("workflows_build", ROOT / "workflows" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


@pytest.fixture(scope="module")
def defs():
    """Ours + the core snapshot, as workflows/build.py assembles them."""
    return load_build_script().all_definitions()


def test_there_are_the_promised_workflows():
    names = {p.name for p in WORKFLOWS}
    assert {"scg_hint_gallery.json", "scg_sketch_to_photo.json", "scg_painting_to_photo.json",
            "scg_super_resolution.json", "scg_dehazing.json"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_and_explained(path, defs):
    wf = json.loads(path.read_text())
    assert wf["version"] == 0.4
    assert validate(wf, defs) == []
    notes = [n for n in wf["nodes"] if n["type"] == "Note"]
    assert notes and len(notes[0]["widgets_values"][0]) > 100
    used = {n["type"] for n in wf["nodes"]} - {"Note"}
    assert used <= set(defs), used - set(defs)
    images = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "LoadImage"]
    assert all((ROOT / "workflows" / "images" / i).is_file() for i in images)


def test_validator_catches_what_it_should(defs):
    wf = json.loads((ROOT / "workflows" / "scg_sketch_to_photo.json").read_text())
    broken = copy.deepcopy(wf)
    broken["nodes"][1]["type"] = "NoSuchNode"
    assert any("unknown node type" in p for p in validate(broken, defs))
    broken = copy.deepcopy(wf)
    apply = next(n for n in broken["nodes"] if n["type"] == "SCGControlNetApply")
    apply["widgets_values"].pop()
    assert any("widget values" in p for p in validate(broken, defs))
    broken = copy.deepcopy(wf)
    broken["links"][0][5] = "LATENT"
    assert any("link 1" in p for p in validate(broken, defs))
    broken = copy.deepcopy(wf)
    sampler = next(n for n in broken["nodes"] if n["type"] == "KSampler")
    sampler["inputs"][0]["link"] = None
    assert any("required input 'model'" in p for p in validate(broken, defs))


def test_api_conversion_maps_widgets_and_links(defs):
    wf = json.loads((ROOT / "workflows" / "scg_sketch_to_photo.json").read_text())
    api = to_api(wf, defs)
    sampler = next(n for n in api.values() if n["class_type"] == "KSampler")
    assert sampler["inputs"]["seed"] == 42 and sampler["inputs"]["steps"] == 20
    assert sampler["inputs"]["sampler_name"] == "euler_ancestral" and sampler["inputs"]["denoise"] == 1.0
    assert api[sampler["inputs"]["positive"][0]]["class_type"] == "SCGControlNetApply"
    assert "Note" not in {n["class_type"] for n in api.values()}
    assert [r for _, r in widget_slots(defs["KSampler"])].count("control_after_generate") == 1


def test_committed_workflows_are_what_build_py_writes(defs):
    build = load_build_script()
    for name, wf in build.workflows(defs).items():
        assert json.loads((ROOT / "workflows" / name).read_text()) == json.loads(json.dumps(wf)), f"{name}: run python workflows/build.py"
