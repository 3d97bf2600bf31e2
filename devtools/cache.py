"""Where the tests, the docs' screenshots and the benchmarks keep what they build once: a ComfyUI
copy, full-size model files, gradio environments (``SCG_TEST_CACHE``, default
``~/.cache/scg-nodes-tests``)."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_VERSION = "v3"  # bump when what tests/host/build_models.py builds changes


def cache_root() -> Path:
    return Path(os.environ.get("SCG_TEST_CACHE", Path.home() / ".cache" / "scg-nodes-tests"))


def models_cache() -> Path:
    """The folder of built model files (``models/`` of a ComfyUI install)."""
    return cache_root() / f"models-{MODELS_VERSION}"
