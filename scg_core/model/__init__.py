"""The maths of the modular autoencoder: config, functional core, ``ModularAE``, groups, losses and
patch pairs. Pure PyTorch; no files, no hosts."""

from .config import ModularAEConfig
from .groups import OFFICIAL_GROUPS, Group
from .modular_ae import ModularAE

__all__ = ["Group", "ModularAE", "ModularAEConfig", "OFFICIAL_GROUPS"]
