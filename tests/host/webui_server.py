"""Real AUTOMATIC1111 1.10.1 + sd-webui-controlnet 1.1.455 and real Forge (f2.0.1) for host tests.

Both are built offline on CPU from their source archives by the build scripts that come with them
(``setup_a1111.sh``, ``setup_forge.sh``, ~3 minutes and ~6 GB each, once), found in
``$SCG_HOSTS_SRC``, the ``shared/hosts`` folder beside this repository's parent, or
``/work/shared/hosts``. They are kept in ``$SCG_HOSTS_CACHE`` (default ``/var/tmp/scg-nodes-hosts``),
which must not lie under a hidden folder such as ``~/.cache``: gradio 3.41, which A1111 serves its
page with, refuses every file under a folder whose name starts with a dot, so the web UI's own
scripts (and this extension's) would not load.

A server gets this repository's files as ``extensions/scg-nodes`` (a copy, as *Install from URL*
leaves it, without git), the full-size random-weight SD1.5 checkpoint, and two SD1.5 ControlNets:
``brightness_cn`` (SCG metadata, a name without "scg") and ``plain_cn`` (none).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from devtools.comfy_server import REPO, free_port

from ..repository import copy_repository

HOSTS = {"a1111": "setup_a1111.sh", "forge": "setup_forge.sh"}
SCG_CONTROLNET = "brightness_cn"  # an SCG ControlNet whose name does not say so
PLAIN_CONTROLNET = "plain_cn"


def hosts_source() -> Path | None:
    """The folder with the hosts' source archives and build scripts, or None."""
    candidates = [os.environ.get("SCG_HOSTS_SRC"), REPO.parent / "shared" / "hosts", "/work/shared/hosts"]
    return next((Path(c) for c in candidates if c and (Path(c) / HOSTS["a1111"]).is_file()), None)


def host_env() -> dict[str, str]:
    """The environment the hosts run in: ours, with torch's vectorised CPU kernels off (scalar ones).

    On a CPU with AVX-512 FP16 and AMX (seen 2026-12-01: "Intel Xeon Processor", torch 2.14.1), A1111's
    txt2img of the random test checkpoint fails with "A tensor with NaNs was produced in Unet" and
    Forge returns black images — with no ControlNet unit at all, so not this extension's doing; the same
    UNet outside the hosts (ldm's UNetModel, the same weights) gives finite outputs. With
    ``ATEN_CPU_CAPABILITY=default`` both hosts give finite images (a ~64×64 test image costs no more).
    """
    return {**os.environ, "ATEN_CPU_CAPABILITY": os.environ.get("SCG_HOSTS_ATEN_CPU_CAPABILITY", "default")}


def hosts_cache() -> Path:
    path = Path(os.environ.get("SCG_HOSTS_CACHE", "/var/tmp/scg-nodes-hosts")).absolute()
    hidden = [part for part in path.parts if part.startswith(".")]
    if hidden:
        raise ValueError(f"SCG_HOSTS_CACHE={path} lies under a hidden folder ({hidden[0]}): gradio 3.41 would refuse to "
                         "serve the web UI's scripts from there; choose a folder without a leading dot in its path")
    return path


def built_host(name: str) -> Path:
    """The host's folder (``run.sh``, ``webui/``), built on first use."""
    dest = hosts_cache() / name
    marker = dest / ".scg-built"
    if marker.is_file():
        return dest
    source = hosts_source()
    if source is None:
        raise FileNotFoundError("the A1111/Forge source archives and build scripts are not here: set SCG_HOSTS_SRC to "
                                "the folder holding setup_a1111.sh and setup_forge.sh")
    log = dest.with_name(f"{name}-build.log")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.run(["bash", str(source / HOSTS[name]), str(dest)], stdout=out, stderr=subprocess.STDOUT,
                              timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"building {name} failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    marker.write_text("built")
    return dest


def install_extension(webui: Path) -> Path:
    """This repository's files (tracked and new, not ignored) as ``extensions/scg-nodes``."""
    target = webui / "extensions" / "scg-nodes"
    if target.is_symlink() or target.is_file():
        target.unlink()
    shutil.rmtree(target, ignore_errors=True)
    return copy_repository(target)


def link(target: Path, link_path: Path) -> None:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    if link_path.is_symlink() or link_path.exists():
        link_path.unlink()
    link_path.symlink_to(target)


class WebuiServer:
    """One A1111 or Forge server with this extension, the test models and ``--api``."""

    def __init__(self, name: str, sd15: Path, scg_controlnet: Path, plain_controlnet: Path, log_dir: Path):
        self.name = name
        self.root = built_host(name)
        self.webui = self.root / "webui"
        models = self.webui / "models"
        for stale in [*(models / "ControlNet").glob("*"), *(models / "Stable-diffusion").glob("*")]:
            if stale.is_symlink():
                stale.unlink()
        link(sd15, models / "Stable-diffusion" / "sd15.safetensors")
        link(scg_controlnet, models / "ControlNet" / f"{SCG_CONTROLNET}.safetensors")
        link(plain_controlnet, models / "ControlNet" / f"{PLAIN_CONTROLNET}.safetensors")
        for state in ("config.json", "ui-config.json"):  # start from the hosts' defaults
            (self.webui / state).unlink(missing_ok=True)
        install_extension(self.webui)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 — held by the server process until stop()
        self.proc = subprocess.Popen([str(self.root / "run.sh"), "--port", str(self.port),
                                      "--ckpt", "models/Stable-diffusion/sd15.safetensors"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=host_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/sdapi/v1/sd-models") and "Startup time" in self.log():  # the model loads on first use
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise TimeoutError(f"{self.name} did not come up within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 4000) -> str:
        return self.log()[-n:]

    # ------------------------------------------------------------------ HTTP API
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict, timeout: float = 600):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def model_name(self, stem: str) -> str:
        """A ControlNet's name as the host lists it ("brightness_cn [1a2b3c4d]")."""
        names = self.get("/controlnet/model_list")["model_list"]
        return next(n for n in names if n.split(" [")[0] == stem)


def to_b64_png(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def from_b64(data: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[-1]))).convert("RGB"))
