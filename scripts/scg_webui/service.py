"""The hint side of the A1111/Forge extension: which autoencoder, on which device, and the images.

Host-neutral: settings come in as a :class:`Settings` value (the extension reads them from the
host's options), images go in and out as the hosts pass them — ``[H,W,C]`` numpy arrays in, uint8
``[H,W,3]`` out. Loading, resizing and the hint come from :mod:`scg_core.hosts`, as in every host.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import scg_core
from scg_core.formats.images import array_to_tensor, tensor_to_pil
from scg_core.hosts.hint import source_hint
from scg_core.hosts.loading import DEFAULT_NAME, ModelCache, is_default
from scg_core.hosts.selection import parse_gains, parse_groups
from scg_core.model.groups import find_groups
from scg_core.tools.sheet import decomposition_sheet

ALL_GROUPS = "all"
# The group the tab and the scg_hypercolumn preprocessor start on (as the ComfyUI nodes do): the
# bundled default's "brightness" (93 % of a photo's detail energy), the official autoencoder's
# HC1 (label "brightness"). An autoencoder without one starts on its first group.
DEFAULT_GROUP = "brightness"


@dataclass(frozen=True)
class Settings:
    """``autoencoder``: :data:`DEFAULT_NAME` or a file name in ``models_dir``; ``device``: ``auto``,
    ``cpu``, ``cuda``, ``cuda:1`` …; ``keep_on_cpu``: move the model back to the CPU after each use."""

    autoencoder: str = DEFAULT_NAME
    device: str = "auto"
    keep_on_cpu: bool = True
    models_dir: str = ""


def list_autoencoders(models_dir: str | os.PathLike) -> list[str]:
    """The bundled default, then ``*.safetensors`` in ``models_dir`` (the host's ``models/SCG``)."""
    folder = Path(models_dir) if models_dir else None
    files = sorted(p.name for p in folder.glob("*.safetensors")) if folder and folder.is_dir() else []
    return [DEFAULT_NAME, *files]


def group_choice(group: scg_core.Group) -> str:
    """What a group looks like in a picker: ``"HC3 (edges)"``, or the name alone."""
    return group.title


def default_group_number(groups: Sequence[scg_core.Group]) -> int:
    """The 1-based number of the group the tab and the preprocessor start on: the first group named or
    labelled :data:`DEFAULT_GROUP`, else the first group; 0 (all modules) when there are none."""
    if not groups:
        return 0
    try:
        first = find_groups(groups, DEFAULT_GROUP)[0]
    except ValueError:
        return 1
    return list(groups).index(first) + 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[1,3,H,W]`` in [0,1] → ``[H,W,3]`` uint8 (what A1111/Forge ControlNet units take)."""
    return np.asarray(tensor_to_pil(x.float().cpu()))


class HintService:
    """Loads the autoencoder the settings name (once per file and modification time) and computes
    hints, module decompositions and group choices."""

    def __init__(self) -> None:
        self._models = ModelCache()

    def resolve(self, settings: Settings) -> Path | None:
        """The settings' autoencoder file; ``None`` for the bundled default."""
        if is_default(settings.autoencoder):
            return None
        path = Path(settings.models_dir) / settings.autoencoder
        if not path.is_file():
            raise FileNotFoundError(f"SCG autoencoder {settings.autoencoder!r} not found in {settings.models_dir}; "
                                    f"put it there or choose '{DEFAULT_NAME}' in Settings → SCG")
        return path

    def model(self, settings: Settings) -> scg_core.ModularAE:
        return self._models.load(self.resolve(settings))

    def device(self, settings: Settings) -> torch.device:
        if settings.device in ("", "auto"):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(settings.device)
        except RuntimeError as e:
            raise ValueError(f"SCG device {settings.device!r} is not a torch device (auto, cpu, cuda, cuda:1 …)") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"SCG device {settings.device!r}: CUDA is not available here; choose 'auto' or 'cpu' in Settings → SCG")
        return device

    def default_choice(self, settings: Settings) -> list[str]:
        """The tab's initial group selection: the picker value of :func:`default_group_number`."""
        groups = self.model(settings).groups
        n = default_group_number(groups)
        return [group_choice(groups[n - 1])] if n else []

    def choices(self, settings: Settings) -> list[str]:
        """Group choices for a picker, labelled with what each carries."""
        return [group_choice(g) for g in self.model(settings).groups]

    def group_names(self, settings: Settings, picked: list[str] | str | None) -> list[str] | None:
        """Picker values (``"HC3 (edges)"``) or typed text (``"brightness, HC2"``) → group names;
        ``None`` = every module."""
        model = self.model(settings)
        if isinstance(picked, str):
            return parse_groups(picked)
        by_choice = {group_choice(g): g.name for g in model.groups}
        names = [by_choice.get(p, p) for p in (picked or [])]
        return names or None

    def hint(self, settings: Settings, image: np.ndarray, groups: list[str] | str | None, gains: str = "", *,
             short_side: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """Image ``[H,W,C]`` (uint8, or float in [0,1]) → the SCG hint of the chosen groups, ``[H,W,3]``
        uint8: at the image's size, or resized first so its shorter side is ``short_side``, or scaled
        to cover ``size = (H', W')`` and centre-cropped (:func:`scg_core.hosts.hint.source_hint`)."""
        model = self.model(settings)
        names, gain_map = self.group_names(settings, groups), parse_gains(gains)
        x = array_to_tensor(image)  # float from here on: quantised only once, the hint
        with self._on_device(model, settings) as m:
            return to_uint8(source_hint(m, x, names, gain_map, short_side=short_side, size=size))

    @torch.inference_mode()
    def sheet(self, settings: Settings, image: np.ndarray, tile: int = 192) -> np.ndarray:
        """The decomposition sheet (input, each group's hint, each module) as ``[H,W,3]`` uint8."""
        model = self.model(settings)
        x = array_to_tensor(image)
        with self._on_device(model, settings) as m:
            return np.asarray(decomposition_sheet(m, x.to(m.mean.device), tile=tile))

    @contextmanager
    def _on_device(self, model: scg_core.ModularAE, settings: Settings):
        """The model on the settings' device for one computation; back on the CPU after it when
        ``keep_on_cpu`` (frees GPU memory for generation)."""
        # Not ``yield model.to(...)``: while A1111 builds an SD model it replaces ``torch.nn.Module.to``
        # with a no-op returning None (sd_disable_initialization.InitializeOnMeta), for every thread.
        # The callers compute on whatever device the model is really on (``model.mean.device``).
        model.to(self.device(settings))
        try:
            yield model
        finally:
            if settings.keep_on_cpu:
                model.to("cpu")
