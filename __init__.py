"""ComfyUI entry point: this repository is a custom-node folder (clone it into ``ComfyUI/custom_nodes/``).

Kept light on purpose: nothing heavy is imported here, and a broken or missing dependency never
stops ComfyUI from starting — the nodes still register and say what to install when they run.
"""

import importlib.util
import logging
import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
if importlib.util.find_spec("scg_core") is None:
    # scg_core lives next to this file; appended (not prepended) so ComfyUI's own modules win.
    sys.path.append(_ROOT)

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except Exception as e:  # noqa: BLE001 — never break ComfyUI's start-up
    logging.getLogger("scg").error("SCG nodes could not be loaded: %s", e)
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

# ComfyUI's frontend loads every .js file in this folder: it shows the nodes' info text on the node.
# (javascript/ is the A1111 extension's, which A1111 loads; ComfyUI never looks there.)
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
