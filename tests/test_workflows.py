"""Offline checks of workflows/*.json against the node definitions (ours + a core snapshot)."""

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from devtools.workflow_format import to_api, validate, widget_slots

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


def node_rectangles(wf: dict, title_height: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(label, (left, top, right, bottom)) of each node as ComfyUI draws it: its title bar above ``pos``."""
    out = []
    for n in wf["nodes"]:
        (x, y), (w, h) = n["pos"], n["size"]
        out.append((f"{n['id']} {n.get('title', n['type'])}", (x, y - title_height, x + w, y + h)))
    return out


def overlaps(rects) -> list[str]:
    found = []
    for i, (a, (l1, t1, r1, b1)) in enumerate(rects):
        for b, (l2, t2, r2, b2) in rects[i + 1:]:
            if l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1:
                found.append(f"{a} / {b}")
    return found


def test_overlap_check_sees_a_title_bar_over_a_node():
    # The bug this guards: Load Image's title bar drawn over the bottom of the Note above it.
    above = {"id": 1, "type": "Note", "pos": [20, 20], "size": [340, 280]}
    below = {"id": 2, "type": "LoadImage", "pos": [20, 320], "size": [340, 360]}
    assert overlaps(node_rectangles({"nodes": [above, below]}, 30)) == ["1 Note / 2 LoadImage"]
    assert overlaps(node_rectangles({"nodes": [above, below]}, 10)) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_two_nodes_overlap(path):
    build = load_build_script()
    wf = json.loads(path.read_text())
    rects = node_rectangles(wf, build.TITLE_HEIGHT)
    assert overlaps(rects) == []
    assert all(top >= 0 and left >= 0 for _, (left, top, _, _) in rects)  # nothing above or left of the view


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_has_a_small_square_thumbnail(path):
    """ComfyUI's template browser shows ``<name>.jpg`` next to ``<name>.json`` as the card."""
    from PIL import Image

    build = load_build_script()
    jpg = path.with_suffix(".jpg")
    assert jpg.is_file(), f"{jpg.name} is missing: run python workflows/build.py"
    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size == (build.THUMBNAIL_SIZE, build.THUMBNAIL_SIZE)
    assert 5_000 < jpg.stat().st_size <= 128_000


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_thumbnail_shows_the_hint_the_workflow_computes(path):
    """The card is honest: its hint half is what the workflow's SCG node computes from its example
    input with the bundled autoencoder (computed here through the node's own code path)."""
    import numpy as np
    from PIL import Image

    from nodes import models
    from nodes.hint_nodes import compute_hint
    from scg_core.formats.images import fit_to_size, pil_to_tensor

    build = load_build_script()
    wf = json.loads(path.read_text())
    side = build.THUMBNAIL_SIZE
    card = np.asarray(Image.open(path.with_suffix(".jpg")).convert("RGB")).astype(float)
    source = Image.open(ROOT / "workflows" / "images" / next(n for n in wf["nodes"] if n["type"] == "LoadImage")["widgets_values"][0])
    image = pil_to_tensor(source).movedim(1, -1)  # as LoadImage gives it: [1,H,W,3]
    model = models.load(models.DEFAULT_NAME)
    apply = [n for n in wf["nodes"] if n["type"] == "SCGControlNetApply"]
    if apply:
        width, height = next(n for n in wf["nodes"] if n["type"] == "EmptyLatentImage")["widgets_values"][:2]
        hint, _ = compute_hint(model, image, apply[0]["widgets_values"][0], "", (height // 8 * 8, width // 8 * 8))
        want = fit_to_size(hint.movedim(-1, 1), (side, side))[0].movedim(0, -1).numpy() * 255
        region = (slice(0, side - 20), slice(side // 2 + 2, side))  # right half, above the label strip
    else:  # the gallery: the first hint sits top right
        groups = next(n for n in wf["nodes"] if n["type"] == "SCGModularAEEncode")["widgets_values"][0]
        tile = fit_to_size(image.movedim(-1, 1), (side // 2, side // 2)).movedim(1, -1)
        want = compute_hint(model, tile, groups, "")[0][0].numpy() * 255
        want = np.pad(want, ((0, 0), (side // 2, 0), (0, 0)))
        region = (slice(0, side // 2 - 20), slice(side // 2, side))
    diff = np.abs(card[region] - want[region]).mean()
    assert diff < 6, f"mean difference {diff:.1f} levels"
    other = np.abs(card[region] - np.roll(want, side // 8, axis=1)[region]).mean()
    assert other > diff + 10  # a shifted hint does not pass: the check can fail
