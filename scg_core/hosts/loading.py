"""Loading autoencoders for the hosts: one cache, one name for the bundled default.

ComfyUI's loader, the A1111/Forge extension and the CLI all load through :class:`ModelCache`, so a
weight file is read once per version — its ``(path, mtime, size)`` — and reread when it is replaced.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..formats import weights
from ..model.modular_ae import ModularAE

# What every host's autoencoder picker shows for scg_core/weights/default.safetensors (saved in
# workflows and settings: do not change it).
DEFAULT_NAME = "default (bundled)"


def is_default(choice: str | None) -> bool:
    """Whether a picker value means the bundled default (its name, or nothing chosen)."""
    return choice in (None, "", DEFAULT_NAME)


def file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(path, mtime_ns, size)``: what identifies one version of a file (``OSError`` if it is gone)."""
    st = os.stat(path)
    return str(path), st.st_mtime_ns, st.st_size


class ModelCache:
    """Autoencoders loaded once per file version, on the CPU, ready for inference.

    A file that changes on disk is loaded again and its old version dropped. Thread-safe.

    >>> cache = ModelCache()
    >>> cache.load() is cache.load()  # the bundled default, loaded once
    True
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, int, int], ModularAE] = {}
        self._lock = threading.Lock()

    def load(self, path: str | os.PathLike | None = None) -> ModularAE:
        """The autoencoder in ``path`` (``None``: the bundled default). Errors name the file and
        what to do: ``NoDefaultWeightsError``, ``FileNotFoundError``, ``WeightsError``."""
        if path is None:
            if not weights.DEFAULT_WEIGHTS.is_file():
                weights.load_default()  # raises NoDefaultWeightsError, which says how to restore it
            path = weights.DEFAULT_WEIGHTS
        path = Path(path)
        if not path.is_file():
            weights.load(path)  # raises the loader's own error: not found, or a folder
        key = file_key(path)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = weights.load(path)
                model.requires_grad_(False)
                for old in [k for k in self._models if k[0] == key[0]]:
                    del self._models[old]
                self._models[key] = model
        return model

    def __contains__(self, model: object) -> bool:
        """Whether ``model`` is a current version (hosts drop their device copies of the others)."""
        return any(m is model for m in self._models.values())
