"""The two gradio versions the hosts pin, each installed once into a folder of its own.

A1111 1.10 pins gradio 3.41.2 (with fastapi 0.94 / pydantic 1, as its requirements do); Forge pins
gradio 4.40.0. They cannot share one environment, so each is ``pip install --target``-ed into a
cached folder and put first on ``PYTHONPATH`` of a child process that uses this interpreter's
torch and scg_core. Nothing else of the hosts is installed (they are not on PyPI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.cache import cache_root

REPO = Path(__file__).resolve().parents[2]
PINS = {
    # A1111 1.10's requirements_versions.txt: gradio 3.41.2, fastapi 0.94.0, httpx 0.24.1; the rest
    # pinned to versions that resolve together (unpinned, pip backtracks for many minutes).
    "3.41.2": ["gradio==3.41.2", "gradio-client==0.5.0", "fastapi==0.94.0", "httpx==0.24.1", "pydantic==1.10.17",
               "numpy==1.26.4", "huggingface-hub==0.23.5", "websockets==11.0.3", "pandas==2.2.2", "matplotlib==3.8.4",
               "pillow==10.4.0", "altair==5.3.0", "uvicorn==0.30.6"],
    # Forge: gradio 4.40.0; huggingface-hub below 1.0 (gradio 4.40 imports HfFolder, removed later) and
    # pydantic 2.8 (newer ones write JSON schemas gradio_client 1.2 cannot read: launch fails)
    "4.40.0": ["gradio==4.40.0", "huggingface-hub==0.24.7", "pydantic==2.8.2", "fastapi==0.112.2"],
}


def gradio_dir(version: str) -> Path:
    """The folder holding that gradio and its dependencies (installed on first use, ~1 minute)."""
    target = cache_root() / f"gradio-{version}"
    if (target / ".done").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--target", str(partial), *PINS[version]], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"installing gradio {version} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    (partial / ".done").write_text(" ".join(PINS[version]))
    subprocess.run(["rm", "-rf", str(target)], check=True)
    partial.rename(target)
    return target


def child_env(version: str, tmp: Path | None = None) -> dict[str, str]:
    """Environment for a child process that sees this gradio first, then the repository; with ``tmp``
    its temporary files (the stand-in host's ControlNet folder, gradio's uploads) go there, so they
    are removed with the test's own folder rather than left in the system's temporary directory."""
    paths = [str(gradio_dir(version)), str(REPO / "scripts"), str(REPO)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    if tmp is not None:
        env.update(TMPDIR=str(tmp), GRADIO_TEMP_DIR=str(tmp / "gradio"))
    return env
