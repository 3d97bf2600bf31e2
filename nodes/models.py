"""Where SCG autoencoders live in ComfyUI (``models/scg/``), and loading them once.

The bundled default (``scg_core/weights/default.safetensors``) is always offered first.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path

from .deps import scg_core

log = logging.getLogger("scg")

FOLDER = "scg"

_device_copies: dict[tuple[int, str], tuple[object, object]] = {}
_lock = threading.Lock()


def __getattr__(name: str):
    # DEFAULT_NAME is defined once, in scg_core.hosts.loading; read on use so that importing the
    # pack at ComfyUI's start-up does not import scg_core (and a missing package is named at run time).
    if name == "DEFAULT_NAME":
        return scg_core().hosts.loading.DEFAULT_NAME
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _cache():
    return scg_core().hosts.loading.ModelCache()


def _folder_paths():
    try:
        import folder_paths  # ComfyUI's; absent outside ComfyUI (offline tests)
    except ImportError:
        return None
    return folder_paths


def register_model_folder() -> None:
    """Add ``models/scg`` (safetensors only) to ComfyUI's model folders, keeping any extra paths
    a user configured in ``extra_model_paths.yaml``."""
    fp = _folder_paths()
    if fp is None:
        return
    path = os.path.join(fp.models_dir, FOLDER)
    paths, _ = fp.folder_names_and_paths.get(FOLDER, ([], None))
    if path not in paths:
        paths = [path, *paths]
    fp.folder_names_and_paths[FOLDER] = (paths, {".safetensors"})
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:  # a read-only install still works with the bundled default
        log.warning("SCG nodes: cannot create %s (%s)", path, e)


def list_autoencoders() -> list[str]:
    """The choices of the loader: the bundled default, then ``models/scg/*.safetensors``."""
    fp = _folder_paths()
    files = [] if fp is None else sorted(fp.get_filename_list(FOLDER))
    return [scg_core().hosts.loading.DEFAULT_NAME, *files]


def resolve(name: str) -> Path | None:
    """A loader choice → its file (``None``: the bundled default); ``FileNotFoundError`` naming the
    folder when it is gone."""
    if scg_core().hosts.loading.is_default(name):
        return None
    fp = _folder_paths()
    full = fp.get_full_path(FOLDER, name) if fp is not None else None
    if not full or not os.path.isfile(full):
        where = fp.get_folder_paths(FOLDER) if fp is not None else ["models/scg"]
        raise FileNotFoundError(f"modular autoencoder {name!r} not found in {', '.join(where)}; "
                                f"put .safetensors files there (official .pth: python -m scg_core.convert official-ae)")
    return Path(full)


def load(name: str):
    """The autoencoder for a loader choice, on the CPU, loaded once per file version."""
    model = _cache().load(resolve(name))
    model.source_name = name
    return model


def on_device(model, device):
    """``model`` on ``device`` (a cached copy; the CPU original is never moved)."""
    import copy

    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return model
    key = (id(model), str(device))
    with _lock:
        if key not in _device_copies:
            cache = _cache()
            for stale in [k for k, (original, _) in _device_copies.items() if original not in cache]:
                del _device_copies[stale]  # a replaced file: free its GPU copy
            # the original is kept beside its copy so that its id is not reused while the entry lives
            _device_copies[key] = (model, copy.deepcopy(model).to(device))
        return _device_copies[key][1]
