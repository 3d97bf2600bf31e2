"""Patch pairs ``(I, I' = L_δ(I))`` for the equivariance constraint (docs/scg_notes.md §3, §8).

A patch of the receptive-field size centred on a point, and the same neighbourhood after a
rotation by θ about that point and a shift by (tx, ty) pixels. The encoder's feature vector at a
patch's centre is the composed kernel's dot product with it, so comparing the two vectors compares
the features at the same physical point, exactly and cheaply, with no feature-map interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def pair_margin(patch: int, max_shift: float, context_patch: int | None = None) -> int:
    """Half-size of the window a rotated and shifted ``patch`` needs around its centre: the
    patch's half-diagonal plus the longest shift (``max_shift`` on both axes: ``√2·max_shift``, which
    the rotation can turn onto one axis), plus one pixel for the bilinear interpolation; at least
    half the ``context_patch`` (the side of the untransformed patch, when larger)."""
    reach = ((patch - 1) / 2 + max_shift) * math.sqrt(2)  # max |Aᵀ(q − t)| over the patch's q and the shifts t
    return max(math.ceil(reach) + 1, ((context_patch or patch) - 1) // 2)


def warp_margin(patch: int) -> int:
    """Half-size of a window that holds every sample a rotated ``patch`` reads when the window is
    centred on the nearest pixel to the samples' centre (:func:`warp_grid`'s ``offset``): the half-
    diagonal plus half a pixel of rounding. The farthest sample then lies at most ``2·margin`` from
    the window's first pixel, where the bilinear weight of the pixel beyond is zero."""
    return math.ceil((patch - 1) / 2 * math.sqrt(2) + 0.5)


def crop_margin(crop: int, max_shift: float) -> int:
    """Half-size of the window a whole ``crop`` needs around its pixel ``crop // 2`` to be rotated
    and shifted (by at most ``max_shift`` per axis) without reading outside the window: its
    half-diagonal plus the longest shift, plus one pixel for the bilinear interpolation."""
    return math.ceil((crop // 2 + max_shift) * math.sqrt(2)) + 1


def context_side(patch: int, stride: int, context: int) -> int:
    """Side of the untransformed patch whose ``context × context`` code cells (``stride`` apart)
    surround its centre: ``patch + stride·(context − 1)``."""
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be an odd number of code cells ≥ 1; got {context}")
    return patch + stride * (context - 1)


def neighbour_deltas(delta: Tensor, stride: int, context: int) -> Tensor:
    """The transformation from each code cell around a pair's point to its transformed patch.

    ``I' = L_δ(I)`` about the point ``c``; the code cell ``n = (nx, ny)`` (in cells, from the
    centre) reads the patch at ``c + stride·n``, and ``I'``'s centre patch is that patch under
    ``(t + stride·A n, θ)`` (the rotation ``A`` of :func:`warp_grid`). So a feature of ``I'`` can be
    predicted from the ``context²`` features around the point, each through the codebook at its own
    transformation (the official release's ``pred_ks`` neighbourhood), not only from the centre one.

    Args:
        delta: ``[N,3]`` = ``(tx, ty, θ)``.

    Returns:
        ``[N, context², 3]``, cells in row-major order (``ny`` outer), like a ``conv2d`` output flattened.
    """
    h = (context - 1) // 2
    cells = torch.arange(-h, h + 1, device=delta.device, dtype=delta.dtype) * stride
    ny, nx = torch.meshgrid(cells, cells, indexing="ij")
    nx, ny = nx.reshape(1, -1), ny.reshape(1, -1)
    cos, sin = torch.cos(delta[:, 2:3]), torch.sin(delta[:, 2:3])
    tx = delta[:, 0:1] + cos * nx + sin * ny
    ty = delta[:, 1:2] - sin * nx + cos * ny
    return torch.stack([tx, ty, delta[:, 2:3].expand_as(tx)], dim=-1)


def warp_grid(delta: Tensor, patch: int, radius: float, offset: Tensor | None = None) -> Tensor:
    """Where ``I' = L_δ(I)`` samples ``I``, for :func:`torch.nn.functional.grid_sample`.

    Args:
        delta: ``[N,3]`` = ``(tx, ty, θ)``: rotate by θ radians about the pair's point
            (counter-clockwise as displayed), then shift by ``(tx, ty)`` pixels.
        patch: side of the patch to sample: odd, centred on the pair's point; or even, the point
            at pixel ``patch // 2`` (a whole crop; :func:`crop_margin`).
        radius: ``R``; the windows are ``[N,C,2R+1,2R+1]``, centred on the pair's point (a half-integer ``R``:
            an even side).
        offset: ``[N,2]`` (x, y) pixels from each pair's point to its window's centre, when the
            windows are not centred on the points (e.g. on :func:`sample_centres`, rounded).

    Returns:
        ``[N,patch,patch,2]`` (x, y) in [-1,1] for ``grid_sample(windows, grid, align_corners=True)``.
        Output pixel ``q`` (from the centre) reads ``I`` at ``Aᵀ(q − t)`` with ``A`` the rotation
        ``[[cos θ, sin θ], [−sin θ, cos θ]]`` (OpenCV's ``getRotationMatrix2D``, as kornia's
        ``warp_affine`` applies it).
    """
    offsets = torch.arange(-(patch // 2), patch - patch // 2, device=delta.device, dtype=delta.dtype)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    points = torch.stack([dx.reshape(-1), dy.reshape(-1), torch.ones_like(dx).reshape(-1)])  # (3, p²): (qx, qy, 1)
    cos, sin = torch.cos(delta[:, 2]), torch.sin(delta[:, 2])
    cx, cy = sample_centres(delta).unbind(1)
    if offset is not None:
        cx, cy = cx - offset[:, 0], cy - offset[:, 1]
    # rows x and y of Aᵀ(q − t) as affine maps of (qx, qy, 1); one (2N,3)@(3,p²) product beats broadcasting ~10×
    affine = torch.stack([cos, -sin, cx, sin, cos, cy], dim=1) / radius
    return (affine.view(-1, 3) @ points).view(-1, 2, patch, patch).permute(0, 2, 3, 1)


def sample_centres(delta: Tensor) -> Tensor:
    """``[N,2]`` (x, y): the centre of the samples a transformed patch reads, from the pair's point:
    ``−Aᵀt`` (``delta`` ``[N,3]`` as in :func:`warp_grid`)."""
    tx, ty = delta[:, 0], delta[:, 1]
    cos, sin = torch.cos(delta[:, 2]), torch.sin(delta[:, 2])
    return torch.stack([sin * ty - cos * tx, -sin * tx - cos * ty], dim=1)


def sample_patch_pairs(
    images: Sequence[Tensor],
    count: int,
    generator: torch.Generator,
    patch: int = 21,
    max_shift: float = 2.0,
    delta: Tensor | None = None,
    context_patch: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``count`` patch pairs from ``images``.

    Args:
        images: ``[3,H,W]`` tensors in [0,1], each at least ``2·pair_margin + 1`` on a side.
        count: number of pairs ``N``.
        generator: the source of randomness (seed it for repeatable draws).
        patch: patch side (the receptive field: 21 for the released model).
        max_shift: translations are uniform in ``[-max_shift, max_shift)`` pixels per axis.
        delta: ``[N,3]`` transformations to use instead of random ones (``|t| ≤ max_shift``).
        context_patch: side of ``P`` (odd, ≥ ``patch``; :func:`context_side`); default ``patch``.

    Returns:
        ``(P, P', δ)``: ``P`` ``[N,3,S,S]`` (``S = context_patch``), ``P'`` ``[N,3,patch,patch]`` in [0,1], both
        centred on the pair's point; ``δ`` ``[N,3]`` = ``(tx, ty, θ)``, θ uniform in ``[0, 2π)``
        (counter-clockwise as displayed).
    """
    side = context_patch or patch
    R = pair_margin(patch, max_shift, side)
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
    delta = delta.to(windows.dtype)
    warped = F.grid_sample(windows, warp_grid(delta, patch, R), mode="bilinear", padding_mode="zeros", align_corners=True)
    lo = R - (side - 1) // 2
    return windows[..., lo : lo + side, lo : lo + side].contiguous(), warped, delta


def cell_correspondences(delta: Tensor, size: int, stride: int, padding: int, context: int = 1
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """Which code cells of a crop ``I`` predict each code cell of the whole warped crop
    ``I' = L_δ(I)``, and through which transformation (the official training code's comparison of
    two feature maps, docs/scg_notes.md §9).

    ``I'(x) = I(c + Aᵀ(x − c − t))`` about the crop's pixel ``c = size // 2`` (:func:`warp_grid`).
    Code cell ``(i, j)`` reads the patch centred on pixel ``(x, y) = (stride·j, stride·i)``. The
    patch of ``I'`` at ``P'`` is the patch of ``I`` at ``Q = c + Aᵀ(P' − c − t)`` turned by θ; seen
    from the code cell ``n`` nearest to ``Q`` it is that cell's patch under ``δ_n = (−A(Q − stride·n), θ)``,
    a shift of at most ``stride/√2`` per axis, whatever ``t``. With ``context`` > 1 the
    ``context²`` cells around ``n`` predict it together (:func:`neighbour_deltas`).

    Args:
        delta: ``[B,3]`` = ``(tx, ty, θ)``, one per crop.
        size: the crops' side in pixels (square crops).
        stride, padding: the encoder's (a cell's patch reaches ``padding`` pixels each way).

    Returns:
        ``source`` ``[B, h·w, context²]`` long: the flat index (``i·w + j``) of each predicting cell;
        ``deltas`` ``[B, h·w, context², 3]``; ``valid`` ``[B, h·w]`` bool: the cell's patch and every
        predicting cell's patch lie inside the crop (no zero padding in either feature).
    """
    B, n = delta.shape[0], (size - 1) // stride + 1  # the feature map's side (a kernel of 2·padding + 1)
    cells = torch.arange(n, device=delta.device, dtype=delta.dtype)
    cy, cx = torch.meshgrid(cells, cells, indexing="ij")
    centre = float(size // 2)
    px, py = stride * cx.reshape(1, -1) - centre, stride * cy.reshape(1, -1) - centre  # P' − c, (1, h·w)
    tx, ty, theta = delta[:, 0:1], delta[:, 1:2], delta[:, 2:3]
    cos, sin = torch.cos(theta), torch.sin(theta)
    ux, uy = px - tx, py - ty
    qx, qy = centre + cos * ux - sin * uy, centre + sin * ux + cos * uy  # Q = c + Aᵀ(P' − c − t)
    nx, ny = torch.round(qx / stride), torch.round(qy / stride)
    rx, ry = qx - stride * nx, qy - stride * ny  # Q − stride·n
    residual = torch.stack([-(cos * rx + sin * ry), -(-sin * rx + cos * ry), theta.expand_as(rx)], dim=-1)
    deltas = neighbour_deltas(residual.reshape(-1, 3), stride, context).view(B, n * n, context * context, 3)
    h = (context - 1) // 2
    offsets = torch.arange(-h, h + 1, device=delta.device)
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    sx = nx.long()[..., None] + ox.reshape(1, 1, -1)  # (B, h·w, K²)
    sy = ny.long()[..., None] + oy.reshape(1, 1, -1)
    lo, hi = -(-padding // stride), (size - 1 - padding) // stride  # cells whose patch lies inside the crop
    inside = lambda a: (a >= lo) & (a <= hi)
    target = inside(cx.reshape(1, -1).long()) & inside(cy.reshape(1, -1).long())
    valid = target & (inside(sx) & inside(sy)).all(dim=-1)
    source = sy.clamp(0, n - 1) * n + sx.clamp(0, n - 1)
    return source, deltas, valid
