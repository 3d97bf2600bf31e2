"""The Python packages the nodes need beyond what ComfyUI brings, checked without importing them."""

from __future__ import annotations

import importlib
import importlib.util
import logging

log = logging.getLogger("scg")

# import name → pip name
REQUIRED = {"safetensors": "safetensors", "numpy": "numpy", "PIL": "pillow"}


def missing_packages() -> list[str]:
    return [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]


def report_missing_packages() -> None:
    """Log one clear line at start-up when something is missing (the nodes still register)."""
    missing = missing_packages()
    if missing:
        log.error("SCG nodes: missing Python package(s) %s — install into ComfyUI's Python: pip install %s",
                  ", ".join(missing), " ".join(missing))


def scg_core():
    """Import :mod:`scg_core` on first use, with an error that names what to install."""
    missing = missing_packages()
    if missing:
        raise RuntimeError(f"SCG nodes need the Python package(s) {', '.join(missing)}: "
                           f"run `pip install {' '.join(missing)}` in ComfyUI's Python, then restart ComfyUI")
    core = importlib.import_module("scg_core")
    for sub in ("formats.images", "hosts.selection", "hosts.loading", "hosts.hint", "tools.sheet", "controlnet.metadata", "controlnet.official_hint"):
        importlib.import_module(f"scg_core.{sub}")
    return core
