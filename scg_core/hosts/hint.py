"""The hint of a source image, as every host computes it: resize once, then the autoencoder's hint."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from ..formats.images import fit_to_size, resize_short_side
from ..model.modular_ae import ModularAE


def source_hint(model: ModularAE, image: Tensor, groups: Iterable[str] | None = None,
                gains: Mapping[str, float] | None = None, *, modules: Iterable[int] | None = None,
                short_side: int | None = None, size: tuple[int, int] | None = None) -> Tensor:
    """The SCG hint of a source image, on the model's device.

    Args:
        model: the autoencoder; the image is moved to its device.
        image: ``[B,3,H,W]`` float in [0,1].
        groups, gains, modules: the selection, as :meth:`ModularAE.hint` takes it (``None``: all).
        short_side: first resize so the shorter side is this many pixels
            (:func:`~scg_core.formats.images.resize_short_side`).
        size: instead, first scale to cover ``(H', W')`` and centre-crop
            (:func:`~scg_core.formats.images.fit_to_size`).

    Returns:
        ``[B,3,H',W']`` float in [0,1].

    >>> import scg_core
    >>> source_hint(scg_core.ModularAE(), torch.rand(1, 3, 96, 120), short_side=48).shape
    torch.Size([1, 3, 48, 60])
    """
    if short_side is not None and size is not None:
        raise ValueError("source_hint: give short_side or size, not both")
    # Contiguous float32 on the model's device whatever the host handed over (ComfyUI's channels-last
    # view, a uint8-derived array): the same pixels then give bit-identical hints in every host.
    x = image.to(device=model.mean.device, dtype=torch.float32).contiguous()
    if short_side is not None:
        x = resize_short_side(x, short_side)
    elif size is not None:
        x = fit_to_size(x, size)
    with torch.inference_mode():
        return model.hint(x, groups=groups, modules=modules, gains=gains or None)
