"""What the ComfyUI Registry and ComfyUI-Manager read: ``[tool.comfy]`` in pyproject.toml and
requirements.txt.

ComfyUI-Manager installs a pack by running ``pip install`` on each line of its requirements.txt (then
its install.py), so that file must hold exactly what the nodes need beyond ComfyUI, and never torch.
The registry's publishing client is comfy-cli (PyPI): ``comfy node validate`` parses pyproject.toml
with ``comfy_cli.registry.config_parser.extract_node_configuration`` and runs ruff's S102/S307/E702
checks. It is not a dependency of this project: the last two tests run it on this repository, offline,
from ``SCG_COMFY_CLI``, PATH, or a venv of its own that they install once into the test cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from PIL import Image

from devtools.cache import cache_root
from nodes.deps import REQUIRED

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMFY = PYPROJECT["tool"]["comfy"]
ICON_FILE = ROOT / "docs" / "images" / "comfyui_icon.png"


def requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower())
    return names


def test_requirements_txt_is_what_the_nodes_check_for():
    names = requirement_names(ROOT / "requirements.txt")
    assert sorted(names) == sorted(REQUIRED.values())
    assert "torch" not in names and not any(n.startswith(("torch", "nvidia")) for n in names)


def test_install_py_installs_the_same_requirements():
    """ComfyUI-Manager also runs install.py (the A1111 entry point): it must ask for the same lines."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("scg_install", ROOT / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(install.NEEDED.values()) == sorted(line for line in lines if line)
    assert set(install.NEEDED) == set(REQUIRED)


def test_the_nodes_import_nothing_else_at_run_time():
    """Run every node path that works without ComfyUI in a fresh Python, loading the pack as ComfyUI
    does: beyond torch (ComfyUI's) and the standard library it may only import what requirements.txt lists."""
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        import torch
        before = set(sys.modules)
        spec = importlib.util.spec_from_file_location("scg_pack", {str(ROOT / '__init__.py')!r})
        pack = importlib.util.module_from_spec(spec); sys.modules["scg_pack"] = pack
        spec.loader.exec_module(pack)
        nodes = pack.NODE_CLASS_MAPPINGS
        image = torch.rand(2, 48, 40, 3)
        ae = nodes["SCGLoadModularAE"]().load("default (bundled)")[0]
        nodes["SCGModularAEEncode"]().encode(image, "brightness, colour", modular_ae=ae, gains="colour=2")
        nodes["SCGDecompositionSheet"]().sheet(image, 64)
        assert nodes["SCGModularAEEncode"].VALIDATE_INPUTS(groups="edgez", gains="") is not True
        assert nodes["SCGControlNetApply"].VALIDATE_INPUTS(groups="brightness", gains="") is True
        new = {{m.split(".")[0] for m in set(sys.modules) - before}}
        print(json.dumps(sorted(new - set(sys.stdlib_module_names) - {{"scg_pack", "scg_core", "nodes"}})))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=False)
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    allowed = set(REQUIRED)  # import names: safetensors, numpy, PIL
    assert imported <= allowed, f"the nodes import {sorted(imported - allowed)}, which requirements.txt does not list"
    assert {"safetensors", "PIL"} <= imported  # the weights and the sheet really need them


def test_tool_comfy_has_what_the_registry_reads():
    assert set(COMFY) >= {"PublisherId", "DisplayName", "Icon", "includes"}
    # registry ids: lower-case letters, digits and hyphens
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,99}", COMFY["PublisherId"])
    assert COMFY["DisplayName"].strip()
    # [project] name, as the registry spec words it: < 100 characters, letters, digits, -, _, .,
    # no consecutive special characters, starting with a letter, without "ComfyUI"
    name = PYPROJECT["project"]["name"]
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", name) and len(name) < 100
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", PYPROJECT["project"]["version"])


def test_includes_and_no_second_web_folder():
    assert isinstance(COMFY["includes"], list)
    assert all((ROOT / folder).is_dir() for folder in COMFY["includes"])
    # current ComfyUI serves [tool.comfy] web under the project name besides WEB_DIRECTORY (module name):
    # both would load web/scg_info.js, which then registers its extension twice
    assert "web" not in COMFY


def test_icon_is_a_url_or_left_for_the_public_address_and_the_file_fits_the_spec():
    icon = COMFY["Icon"]
    assert icon == "" or re.fullmatch(r"https://\S+/docs/images/comfyui_icon\.png", icon), icon
    with Image.open(ICON_FILE) as im:
        assert im.format == "PNG" and im.width == im.height <= 400


COMFY_CLI = "comfy-cli==1.23.0"


def comfy_cli() -> Path:
    """comfy-cli's ``comfy``: ``SCG_COMFY_CLI``, one on PATH, or installed once from PyPI into a venv
    of its own in the test cache (~1 minute; it is not a dependency of this project)."""
    found = os.environ.get("SCG_COMFY_CLI") or shutil.which("comfy")
    if found:
        return Path(found)
    cache = cache_root()
    venv = cache / COMFY_CLI.replace("==", "-")
    comfy = venv / "bin" / "comfy"
    if not (venv / ".done").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", COMFY_CLI]]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, check=False)
            if proc.returncode:
                message = f"installing {COMFY_CLI} (the registry's client) failed: {proc.stderr[-1500:]}"
                if os.environ.get("SCG_REQUIRE_HOSTS") == "1":
                    pytest.fail(message)
                pytest.skip(message)
        (venv / ".done").write_text(COMFY_CLI)
    return comfy


def comfy_cli_env(tmp_path: Path) -> dict:
    # offline and without touching the user's comfy-cli settings
    return {**os.environ, "HOME": str(tmp_path), "DO_NOT_TRACK": "1", "COMFY_NO_TELEMETRY": "1"}


def test_comfy_cli_reads_our_tool_comfy(tmp_path):
    comfy = comfy_cli()
    python = comfy.parent / ("python.exe" if os.name == "nt" else "python")
    code = textwrap.dedent(f"""
        import dataclasses, json
        from comfy_cli.registry.config_parser import extract_node_configuration
        config = extract_node_configuration({str(ROOT / 'pyproject.toml')!r})

        def plain(o):  # dataclasses holding tomlkit values
            if dataclasses.is_dataclass(o):
                return {{f.name: plain(getattr(o, f.name)) for f in dataclasses.fields(o)}}
            if hasattr(o, "unwrap"):
                return o.unwrap()
            return [plain(x) for x in o] if isinstance(o, (list, tuple)) else o

        print(json.dumps(plain(config)))
    """)
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env=comfy_cli_env(tmp_path), check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Warning" not in result.stdout, result.stdout  # e.g. a license or version it could not read
    tool = config["tool_comfy"]
    assert (tool["publisher_id"], tool["display_name"], tool["icon"], tool["includes"]) == (
        COMFY["PublisherId"], COMFY["DisplayName"], COMFY["Icon"], COMFY["includes"])
    assert config["project"]["name"] == PYPROJECT["project"]["name"]
    assert config["project"]["version"] == PYPROJECT["project"]["version"]
    assert config["project"]["license"]["text"] == PYPROJECT["project"]["license"]["text"]


def test_comfy_node_validate_passes(tmp_path):
    comfy = comfy_cli()
    result = subprocess.run([str(comfy), "--skip-prompt", "node", "validate"], capture_output=True, text=True,
                            cwd=ROOT, env=comfy_cli_env(tmp_path), check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr  # comfy-cli prints its verdict through rich, to stderr
    assert "All validation checks passed" in output and "Security warnings" not in output, output
