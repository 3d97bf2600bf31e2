"""Band-pass levels of a photo — a difference-of-Gaussians pyramid — as training images.

A later variant of the authors' training code (docs/scg_notes.md §9) trains the autoencoder on the
band-pass levels ``G_i − up(G_{i+1})`` of a Gaussian pyramid (5×5 Gaussian of σ = 1.414, bilinear
halving and doubling), where a photo's coarse band no longer holds most of the energy. Here each
level is written as an 8-bit image, ``0.5 + gain · band``, so that the trainer reads it like any
photo (``python -m training.gather_photos DIR --band-pass 4``); docs/training_modular_ae.md records
what training on them did. Borders are reflected (the authors' code pads with zeros).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SIGMA = 1.414
TAPS = 5


def _kernel(channels: int) -> Tensor:
    x = torch.arange(TAPS, dtype=torch.float32) - (TAPS - 1) / 2
    g = torch.exp(-(x[:, None] ** 2 + x[None] ** 2) / (2 * SIGMA**2))
    return (g / g.sum()).expand(channels, 1, TAPS, TAPS)


def blur(x: Tensor) -> Tensor:
    """``[B,C,H,W]`` float → the same, smoothed by the 5×5 Gaussian (borders reflected)."""
    p = TAPS // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), _kernel(x.shape[1]).to(x), groups=x.shape[1])


def down(x: Tensor) -> Tensor:
    """The next, coarser pyramid level: blur, then bilinear halving. ``[B,C,H,W]`` → ``[B,C,H/2,W/2]``."""
    return F.interpolate(blur(x), scale_factor=0.5, mode="bilinear", align_corners=False)


def up(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear enlargement to ``size`` ``(H, W)``, then blur."""
    return blur(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


def band_pass_levels(image: Tensor, levels: int, min_side: int) -> tuple[list[Tensor], Tensor]:
    """The first ``levels`` band-pass levels of ``image`` ``[3,H,W]`` float in [0,1], finest first,
    each ``[3,H_i,W_i]`` (H_i ≈ H/2^i) float of mean ≈ 0, stopping early at a level whose shorter
    side would fall under ``min_side``; and the coarser Gaussian level left over, so that
    ``levels[i] + up(next level)`` rebuilds each Gaussian level exactly."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"band_pass_levels needs one [3,H,W] image, got shape {tuple(image.shape)}")
    bands, g = [], image[None].float()
    for _ in range(levels):
        if min(g.shape[-2:]) < min_side:
            break
        coarser = down(g)
        bands.append((g - up(coarser, g.shape[-2:]))[0])
        g = coarser
    return bands, g[0]


def to_uint8(band: Tensor, std: float | None) -> tuple[Tensor, float, float]:
    """A band ``[3,h,w]`` as an 8-bit image ``0.5 + gain·band``: ``gain`` makes its standard deviation
    ``std`` (``None``: gain 1). Returns the ``[3,h,w]`` uint8 image, the gain and the share of values
    clipped to [0, 1]."""
    gain = 1.0 if std is None else std / max(float(band.std()), 1e-8)
    shown = 0.5 + gain * band
    clipped = float(((shown < 0) | (shown > 1)).float().mean())
    return (shown.clamp(0, 1) * 255).round().to(torch.uint8), gain, clipped
