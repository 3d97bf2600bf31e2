"""Screenshots of the node pack in a real ComfyUI, for the README (docs/images/comfyui_*.png).

Needs the host test environment (``pip install -e ".[host]"``), ``pip install selenium`` and
Debian's ``chromium`` + ``chromium-driver`` (no browser is downloaded). Run from the repository root:

    python docs/screenshot_comfyui.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.browser import headless_chromium  # noqa: E402
from devtools.cache import models_cache as cache_dir  # noqa: E402
from devtools.comfy_server import ComfyServer, comfyui_source  # noqa: E402

OUT = ROOT / "docs" / "images"


def browser():
    return headless_chromium(1700, 1200)


def show(driver, server, workflow: str, run: bool, out: Path, scale: float) -> None:
    driver.get(server.url)
    for _ in range(200):  # the page, with this pack's web extension (the info box on the nodes)
        if driver.execute_script("return !!(window.app && window.app.graph && app.extensions.some(e => e.name === 'scg.nodes.info'))"):
            break
        time.sleep(0.1)
    wf = json.loads((ROOT / "workflows" / workflow).read_text())
    driver.execute_script("window.app.loadGraphData(arguments[0]);", wf)
    if run:
        before = len(server.get("/history"))
        driver.execute_script("window.app.queuePrompt(0, 1);")
        while len(server.get("/history")) == before or server.get("/queue")["queue_running"]:
            time.sleep(0.5)
        time.sleep(2)  # let the previews load
    driver.execute_script("window.app.canvas.ds.scale = arguments[0]; window.app.canvas.ds.offset = [20, 20]; window.app.graph.setDirtyCanvas(true, true);", scale)
    time.sleep(1)
    driver.save_screenshot(str(out))
    print("wrote", out)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(comfyui_source(cache_dir().parent), Path(tmp))
        for image in (ROOT / "workflows" / "images").iterdir():
            (server.input / image.name).write_bytes(image.read_bytes())
        server.start()
        driver = browser()
        try:
            show(driver, server, "scg_hint_gallery.json", True, OUT / "comfyui_hint_gallery.png", 0.8)
            show(driver, server, "scg_sketch_to_photo.json", False, OUT / "comfyui_sketch_to_photo.png", 0.72)
        finally:
            driver.quit()
            server.stop()


if __name__ == "__main__":
    main()
