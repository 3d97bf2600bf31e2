"""scg_core — the SCG modular autoencoder, its losses, groups, hint and weight formats.

Pure PyTorch; knows nothing of any UI.

>>> import torch, scg_core
>>> ae = scg_core.ModularAE()  # the released architecture: 16 modules × 4, bipolar, stride 4
>>> ae.hint(torch.rand(1, 3, 64, 64), modules=[0, 1]).shape
torch.Size([1, 3, 64, 64])
"""

from .config import ModularAEConfig
from .groups import OFFICIAL_GROUPS, Group
from .model import ModularAE
from .weights_io import DEFAULT_WEIGHTS, NoDefaultWeightsError, WeightsError, load, load_default, read_metadata, save

__version__ = "0.1.0"
HINT_CONTRACT_VERSION = 1  # docs/scg_notes.md §5: clamp(raw·std + mean, 0, 1), a plain RGB image in [0,1]

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
