"""ComfyUI's template browser (Workflow → Browse Templates) lists and opens this pack's workflows.

Current ComfyUI (``app/custom_node_manager.py``, ``CustomNodeManager.add_routes``) does two things:

* ``GET /workflow_templates`` lists, for every pack in ``custom_nodes``, the ``*.json`` files in each
  of the folders ``example_workflows``, ``example``, ``examples``, ``workflow``, ``workflows``;
* for each loaded pack it mounts *every* one of those folders that exists as an aiohttp static route
  at the same prefix ``/api/workflow_templates/<pack folder>``; the first one mounted answers every
  request under that prefix, so a pack with ``examples/`` and ``workflows/`` lists the workflows and
  serves them from ``examples/`` — a 404 (the bug our photos in ``examples/`` caused).

The frontend shows ``<name>.jpg`` from the same route as the card's thumbnail.

The ComfyUI the host tests run (a28a9dc8, March 2024) predates this route, so it cannot be tested
against a running ComfyUI here. These tests mirror the rule line for line and serve the folder through
aiohttp's real router (a ComfyUI dependency), so the shadowing behaviour is aiohttp's own.
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# In ComfyUI's order (custom_node_manager.py: example_workflow_folder_names).
FOLDER_NAMES = ["example_workflows", "example", "examples", "workflow", "workflows"]


def listed_templates(custom_nodes: Path) -> dict[str, list[str]]:
    """What ``GET /workflow_templates`` answers: pack folder → workflow names."""
    files = []
    for folder_name in FOLDER_NAMES:
        files.extend(glob.glob(os.path.join(custom_nodes, f"*/{folder_name}/*.json")))
    listed: dict[str, list[str]] = {}
    for file in files:
        pack = os.path.basename(os.path.dirname(os.path.dirname(file)))
        listed.setdefault(pack, []).append(os.path.splitext(os.path.basename(file))[0])
    return listed


def mounted_folders(module_dir: Path) -> list[str]:
    """The folders mounted at ``/api/workflow_templates/<pack>``, in mounting order (the first answers)."""
    return [name for name in FOLDER_NAMES if os.path.exists(os.path.join(module_dir, name))]


def test_this_pack_serves_its_templates_from_workflows():
    assert mounted_folders(ROOT) == ["workflows"]


def test_the_rule_as_mirrored_shadows_workflows_with_examples(tmp_path):
    pack = tmp_path / "pack"
    (pack / "examples").mkdir(parents=True)
    (pack / "workflows").mkdir()
    assert mounted_folders(pack) == ["examples", "workflows"]


def _require_aiohttp():
    if importlib.util.find_spec("aiohttp") is None:
        message = "serving the templates needs aiohttp, a ComfyUI dependency (pip install -e '.[host]')"
        if os.environ.get("SCG_REQUIRE_HOSTS") == "1":
            pytest.fail(message)
        pytest.skip(message)


def serve(custom_nodes: Path, paths: list[str]) -> dict[str, tuple[int, bytes]]:
    """Mount every pack in ``custom_nodes`` as ComfyUI does and GET ``paths``: path → (status, body)."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    app = web.Application()
    for module_dir in sorted(custom_nodes.iterdir()):
        module_name = module_dir.name
        for folder_name in FOLDER_NAMES:
            workflows_dir = os.path.join(module_dir, folder_name)
            if os.path.exists(workflows_dir):
                app.add_routes([web.static("/api/workflow_templates/" + module_name, workflows_dir)])

    async def fetch():
        async with TestClient(TestServer(app)) as client:
            out = {}
            for path in paths:
                response = await client.get(path)
                out[path] = (response.status, await response.read())
            return out

    return asyncio.run(fetch())


def test_every_listed_template_and_its_thumbnail_opens(tmp_path):
    _require_aiohttp()
    custom_nodes = tmp_path / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / "scg-nodes").symlink_to(ROOT, target_is_directory=True)  # a clone in custom_nodes
    listed = listed_templates(custom_nodes)
    names = sorted(listed["scg-nodes"])
    assert names == sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    assert {"scg_hint_gallery", "scg_sketch_to_photo", "scg_painting_to_photo", "scg_super_resolution",
            "scg_dehazing"} <= set(names)
    paths = [f"/api/workflow_templates/scg-nodes/{n}.{ext}" for n in names for ext in ("json", "jpg")]
    answers = serve(custom_nodes, paths)
    for path, (status, body) in answers.items():
        assert status == 200, path
        assert body == (ROOT / "workflows" / path.rsplit("/", 1)[1]).read_bytes(), path


def test_a_shadowed_template_is_a_404(tmp_path):
    """The check above can fail: with an ``examples/`` folder the listed workflow does not open."""
    _require_aiohttp()
    pack = tmp_path / "custom_nodes" / "pack"
    (pack / "examples").mkdir(parents=True)
    (pack / "examples" / "photo.jpg").write_bytes(b"\xff\xd8")
    (pack / "workflows").mkdir()
    (pack / "workflows" / "flow.json").write_text("{}")
    assert listed_templates(tmp_path / "custom_nodes") == {"pack": ["flow"]}
    answers = serve(tmp_path / "custom_nodes", ["/api/workflow_templates/pack/flow.json"])
    assert answers["/api/workflow_templates/pack/flow.json"][0] == 404
