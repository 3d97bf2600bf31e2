"""scg_core — the SCG modular autoencoder, its losses, groups, hint and weight formats.

Pure PyTorch; knows nothing of any UI. Layers, each importing only from those above it:

* :mod:`scg_core.model` — the maths: config, the ``ModularAE`` module, groups, losses, patch pairs;
* :mod:`scg_core.formats` — files: our safetensors weights, images, the official ``.pth`` converter;
* :mod:`scg_core.controlnet` — the ControlNet side: ldm/diffusers layouts, metadata, the official
  hint border, the official ``.ckpt`` converter;
* :mod:`scg_core.tools` — the decomposition sheet and the characterisation;
* :mod:`scg_core.hosts` — what every host (ComfyUI, A1111/Forge, the CLI) shares: the cached loader,
  resize, selection syntax and the hint of a source image; and the CLI itself.

``python -m scg_core``, ``python -m scg_core.convert`` and ``python -m scg_core.characterize`` are
the commands.

>>> import torch, scg_core
>>> ae = scg_core.ModularAE()  # the released architecture: 16 modules × 4, bipolar, stride 4
>>> ae.hint(torch.rand(1, 3, 64, 64), modules=[0, 1]).shape
torch.Size([1, 3, 64, 64])
"""

from .formats.weights import (
                              DEFAULT_WEIGHTS,
                              NoDefaultWeightsError,
                              WeightsError,
                              load,
                              load_default,
                              read_metadata,
                              save,
)
from .model.config import ModularAEConfig
from .model.functional import HINT_CONTRACT_VERSION
from .model.groups import OFFICIAL_GROUPS, Group
from .model.modular_ae import ModularAE

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_WEIGHTS",
    "Group",
    "HINT_CONTRACT_VERSION",
    "ModularAE",
    "ModularAEConfig",
    "NoDefaultWeightsError",
    "OFFICIAL_GROUPS",
    "WeightsError",
    "load",
    "load_default",
    "read_metadata",
    "save",
]
