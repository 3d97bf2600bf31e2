"""Install the light packages SCG needs that the host lacks — never torch, never gradio.

A1111 and Forge run this file when the extension is installed or the web UI starts (ComfyUI-Manager
does the same for custom nodes). It only installs what is missing, so it never changes the
versions a host pinned.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

# import name → pip requirement (the same list as requirements.txt)
NEEDED = {"safetensors": "safetensors>=0.4", "numpy": "numpy>=1.24", "PIL": "pillow>=10"}


def missing() -> list[str]:
    return [req for module, req in NEEDED.items() if importlib.util.find_spec(module) is None]


def install(requirements: list[str]) -> None:
    try:
        import launch  # A1111 / Forge: their pip wrapper logs and respects their settings

        for req in requirements:
            launch.run_pip(f'install "{req}"', f"{req} for SCG")
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", *requirements])


if __name__ == "__main__" and (todo := missing()):
    install(todo)
