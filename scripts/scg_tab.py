"""AUTOMATIC1111 / Forge entry point of the SCG extension (the host loads every .py file here).

The work is in ``scripts/scg_webui`` (host-specific code in ``hosts.py``). The host puts the
extension folder on ``sys.path`` only while it loads this file, so ``scg_core`` (the repository
root) and ``scg_webui`` are imported now; later imports of their submodules go through the
packages themselves.
"""

import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
for _path in (_here.parent, _here):
    if str(_path) not in sys.path:
        sys.path.append(str(_path))

from modules import paths, script_callbacks, shared  # noqa: E402  (the host's modules)
from scg_webui.webui_entry import register  # noqa: E402

register(script_callbacks, shared, paths)
