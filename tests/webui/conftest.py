"""The A1111/Forge extension's package (scripts/scg_webui) is imported as the host imports it:
with ``scripts/`` on ``sys.path``."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

# Run as a child process under one gradio version, never imported by pytest (no gradio here).
collect_ignore = ["gradio_app.py"]
