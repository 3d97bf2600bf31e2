"""Patch pairs ``(I, I' = L_δ(I))`` for the equivariance constraint (docs/scg_notes.md §3, §8).

A patch of the receptive-field size centred on a point, and the same neighbourhood after a
rotation by θ about that point and a shift by (tx, ty) pixels. The encoder's feature vector at a
patch's centre is the composed kernel's dot product with it, so comparing the two vectors compares
the features at the same physical point, exactly and cheaply, with no feature-map interpolation.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine
from torch import Tensor


def pair_margin(patch: int, max_shift: float) -> int:
    """Half-size of the window a rotated and shifted ``patch`` needs around its centre: the
    patch's half-diagonal plus the shift, plus one pixel for the bilinear interpolation."""
    return math.ceil((patch - 1) / 2 * math.sqrt(2) + max_shift) + 1


def sample_patch_pairs(
    images: Sequence[Tensor],
    count: int,
    generator: torch.Generator,
    patch: int = 21,
    max_shift: float = 2.0,
    delta: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``count`` patch pairs from ``images``.

    Args:
        images: ``[3,H,W]`` tensors in [0,1], each at least ``2·pair_margin + 1`` on a side.
        count: number of pairs ``N``.
        generator: the source of randomness (seed it for repeatable draws).
        patch: patch side (the receptive field: 21 for the released model).
        max_shift: translations are uniform in ``[-max_shift, max_shift)`` pixels per axis.
        delta: ``[N,3]`` transformations to use instead of random ones (``|t| ≤ max_shift``).

    Returns:
        ``(P, P', δ)``: ``P``, ``P'`` ``[N,3,patch,patch]`` in [0,1]; ``δ`` ``[N,3]`` =
        ``(tx, ty, θ)``, θ uniform in ``[0, 2π)`` (counter-clockwise as displayed).
    """
    R = pair_margin(patch, max_shift)
    window = 2 * R + 1
    sizes = [img.shape[-2:] for img in images]
    if any(min(s) < window for s in sizes):
        raise ValueError(f"every image needs at least {window}×{window} pixels for {patch}-pixel pairs")
    which = torch.randint(len(images), (count,), generator=generator)
    u = torch.rand(count, 5, generator=generator)
    windows = []
    for n, i in enumerate(which.tolist()):
        H, W = sizes[i]
        cy, cx = R + int(u[n, 0] * (H - 2 * R)), R + int(u[n, 1] * (W - 2 * R))
        windows.append(images[i][:, cy - R : cy + R + 1, cx - R : cx + R + 1])
    windows = torch.stack(windows)  # (N, 3, window, window)
    if delta is None:
        delta = torch.stack([(2 * u[:, 2] - 1) * max_shift, (2 * u[:, 3] - 1) * max_shift, u[:, 4] * 2 * math.pi], dim=1)
    elif delta.shape != (count, 3) or delta[:, :2].abs().max() > max_shift:
        raise ValueError(f"delta must be [{count},3] with |tx|, |ty| ≤ {max_shift}; got {tuple(delta.shape)}")
    centre = torch.full((count, 2), float(R))
    matrix = get_rotation_matrix2d(centre, torch.rad2deg(delta[:, 2]), torch.ones(count, 2))
    matrix[:, :, 2] += delta[:, :2]  # then shift by (tx, ty)
    warped = warp_affine(windows, matrix.to(windows.dtype), (window, window), align_corners=True)
    lo = R - (patch - 1) // 2
    crop = lambda t: t[..., lo : lo + patch, lo : lo + patch]
    return crop(windows).contiguous(), crop(warped).contiguous(), delta.to(windows.dtype)
