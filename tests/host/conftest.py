"""Fixtures for tests against a real ComfyUI server (see devtools/comfy_server.py).

These need the host packages (``pip install -e ".[host]"`` after ``torch==2.14.1 torchvision==0.29.1``).
Without them the host tests are skipped with the reason — except when ``SCG_REQUIRE_HOSTS=1``
(CI sets it), where a missing package is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from devtools.comfy_server import REPO, ComfyServer, comfyui_source

from .build_models import build, cache_dir, scg_controlnet

HOST_PACKAGES = ["torchvision", "torchsde", "aiohttp", "yaml", "scipy", "psutil", "transformers", "diffusers"]


def _require_host_packages():
    missing = [p for p in HOST_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        message = f"host tests need {', '.join(missing)} (pip install -e '.[host]')"
        if os.environ.get("SCG_REQUIRE_HOSTS") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def comfyui_src():
    _require_host_packages()
    return comfyui_source(cache_dir().parent)


@pytest.fixture(scope="session")
def sd15_models(comfyui_src):
    return build(comfyui_src)


def controlnet_without_scg_metadata(scg_file: Path) -> Path:
    """The SCG test ControlNet as a plain SD1.5 ControlNet file: no SCG metadata, and a hint encoder
    that differs (so it is not matched to the SCG file by content). Built once next to it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = scg_file.with_name(scg_file.name.replace("scg_controlnet", "plain_controlnet"))
    if not out.is_file():
        with safe_open(scg_file, framework="pt") as f:
            names = f.keys()
            tensors = {k: f.get_tensor(k) for k in names}
        key = next(k for k in tensors if k.endswith("input_hint_block.0.weight"))
        tensors[key] = tensors[key] * 1.5
        partial = out.with_name(out.name + ".partial")
        save_file(tensors, str(partial), metadata={"format": "pt"})
        partial.rename(out)
    return out


@pytest.fixture(scope="session")
def comfy(comfyui_src, sd15_models, tmp_path_factory):
    """A running ComfyUI with this repository in custom_nodes and the test models installed:
    ``models/diffusers/sd15``, ``models/controlnet/{scg_controlnet_sd15,controlnet_sd21,controlnet_sd15_no_metadata}.safetensors``,
    ``models/scg/{my_ae,broken}.safetensors`` and the workflow images in ``input/``."""
    server = ComfyServer(comfyui_src, tmp_path_factory.mktemp("comfyui"))
    (server.models / "diffusers").mkdir(exist_ok=True)
    (server.models / "diffusers" / "sd15").symlink_to(sd15_models / "sd15", target_is_directory=True)
    (server.models / "controlnet" / "scg_controlnet_sd15.safetensors").symlink_to(scg_controlnet(sd15_models))
    (server.models / "controlnet" / "controlnet_sd21.safetensors").symlink_to(sd15_models / "controlnet_sd21.safetensors")
    (server.models / "controlnet" / "controlnet_sd15_no_metadata.safetensors").symlink_to(
        controlnet_without_scg_metadata(scg_controlnet(sd15_models)))
    scg = server.models / "scg"
    scg.mkdir(exist_ok=True)
    default = REPO / "scg_core" / "weights" / "default.safetensors"
    shutil.copy(default, scg / "my_ae.safetensors")
    (scg / "broken.safetensors").write_bytes(default.read_bytes()[:5000])  # truncated download
    for image in (REPO / "workflows" / "images").iterdir():
        shutil.copy(image, server.input / image.name)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["a1111", "forge"])
def webui(request, sd15_models, tmp_path_factory):
    """A running AUTOMATIC1111 1.10.1 + sd-webui-controlnet 1.1.455, then a running Forge f2.0.1, with
    this extension and the test models (tests/host/webui_server.py); built on first use."""
    from .build_models import sd15_single_file
    from .webui_server import WebuiServer, hosts_cache, hosts_source

    if hosts_source() is None and not (hosts_cache() / request.param / ".scg-built").is_file():
        message = "the A1111/Forge source archives are not here (SCG_HOSTS_SRC: the folder holding setup_a1111.sh)"
        if os.environ.get("SCG_REQUIRE_HOSTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    scg = scg_controlnet(sd15_models)
    server = WebuiServer(request.param, sd15_single_file(sd15_models), scg, controlnet_without_scg_metadata(scg),
                         tmp_path_factory.mktemp(f"webui-{request.param}"))
    server.start()
    yield server
    server.stop()
