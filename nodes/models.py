"""Where SCG autoencoders live in ComfyUI (``models/scg/``), and loading them once.

The bundled default (``scg_core/weights/default.safetensors``) is always offered first.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .deps import scg_core

log = logging.getLogger("scg")

FOLDER = "scg"
DEFAULT_NAME = "default (bundled)"

_cache: dict[tuple, object] = {}
_device_copies: dict[tuple[int, str], object] = {}
_lock = threading.Lock()


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
    return [DEFAULT_NAME, *files]


def resolve(name: str) -> Path:
    """A loader choice → the file; ``FileNotFoundError`` naming the folder when it is gone."""
    if name == DEFAULT_NAME:
        bundled = scg_core().DEFAULT_WEIGHTS
        if not bundled.is_file():
            raise FileNotFoundError(f"the bundled default autoencoder is missing ({bundled}); reinstall the SCG nodes")
        return bundled
    fp = _folder_paths()
    full = fp.get_full_path(FOLDER, name) if fp is not None else None
    if not full or not os.path.isfile(full):
        where = fp.get_folder_paths(FOLDER) if fp is not None else ["models/scg"]
        raise FileNotFoundError(f"modular autoencoder {name!r} not found in {', '.join(where)}; "
                                f"put .safetensors files there (official .pth: python -m scg_core.convert official-ae)")
    return Path(full)


def load(name: str):
    """The autoencoder for a loader choice, on the CPU, loaded once per file version."""
    path = resolve(name)
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        model = _cache.get(key)
        if model is None:
            model = scg_core().load(path)
            model.requires_grad_(False)
            model.source_name = name
            for old in [k for k in _cache if k[0] == key[0]]:
                stale = _cache.pop(old)
                for d in [d for d in _device_copies if d[0] == id(stale)]:
                    del _device_copies[d]
            _cache[key] = model
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
            _device_copies[key] = copy.deepcopy(model).to(device)
        return _device_copies[key]
