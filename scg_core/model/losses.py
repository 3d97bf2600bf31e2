"""The SCG training objective ``L_recon + λ1·L_equ + λ2·L_sym`` (paper eqs. 2–7, docs/scg_notes.md §3).

Shape letters: ``N`` samples (feature vectors compared), ``k`` modules, ``l`` channels per module,
``G`` codebook grid points. A transformation ``δ = (tx, ty, θ)``: translation in pixels, rotation
in radians (any real number; periodic).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pairs import warp_grid


def reconstruction_loss(reconstruction: Tensor, target: Tensor, border: int = 0) -> Tensor:
    """Mean squared error over ``[B,C,H,W]`` images, leaving out ``border`` pixels on each side.

    The paper's ``L_recon`` is this for ``I`` plus this for ``I' = L_δ(I)``.

    >>> reconstruction_loss(torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), border=2)
    tensor(1.)
    """
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ in shape")
    if border:
        if 2 * border >= min(target.shape[-2:]):
            raise ValueError(f"border {border} leaves nothing of a {tuple(target.shape[-2:])} image")
        reconstruction = reconstruction[..., border:-border, border:-border]
        target = target[..., border:-border, border:-border]
    return (reconstruction - target).pow(2).mean()


class EquivarianceCodebook(nn.Module):
    """The learnable ``M^(i)(δ)``: for each module an ``l×l`` matrix on a ``(tx, ty, θ)`` grid,
    read by trilinear interpolation (clamped in translation, periodic in θ).

    Args:
        num_modules, module_channels: ``k`` and ``l``.
        grid: points along ``(tx, ty, θ)``; translations span ``translation_range`` inclusive,
            rotations ``2π·j/n_θ`` for ``j < n_θ``.
        translation_range: ``(low, high)`` in pixels: ``±stride/2`` (docs/scg_notes.md §3).
        tent: ``None``: start at the identity everywhere ("nothing changes"), which is what an
            untrained encoder's features do under small transformations. A cell size in pixels:
            start at the identity times ``max(0, 1 − |tx|/tent)·max(0, 1 − |ty|/tent)``, so that
            summed over the code cells around a point (:func:`scg_core.model.pairs.neighbour_deltas`)
            the prediction starts as the bilinear interpolation of their features.
    """

    def __init__(self, num_modules: int, module_channels: int, grid: tuple[int, int, int] = (5, 5, 8),
                 translation_range: tuple[float, float] = (-2.0, 2.0), tent: float | None = None) -> None:
        super().__init__()
        if len(grid) != 3 or min(grid) < 1:
            raise ValueError(f"grid must be three positive sizes (tx, ty, θ); got {grid}")
        if translation_range[1] < translation_range[0]:
            raise ValueError(f"translation_range must be (low, high); got {translation_range}")
        self.grid = tuple(int(n) for n in grid)
        self.translation_range = (float(translation_range[0]), float(translation_range[1]))
        eye = torch.eye(module_channels).expand(num_modules, *self.grid, module_channels, module_channels)
        self.matrices = nn.Parameter(eye.clone())  # (k, n_tx, n_ty, n_θ, l, l)
        if tent is not None:
            tx, ty, _ = self.grid_points()
            hat = lambda t: (1 - t.abs() / tent).clamp_min(0)
            with torch.no_grad():
                self.matrices.mul_((hat(tx)[:, None] * hat(ty)[None, :]).view(1, *self.grid[:2], 1, 1, 1))

    def grid_points(self) -> tuple[Tensor, Tensor, Tensor]:
        """The grid's ``tx [n_tx]``, ``ty [n_ty]`` (pixels) and ``θ [n_θ]`` (radians)."""
        lo, hi = self.translation_range
        nx, ny, nt = self.grid
        device = self.matrices.device
        return (torch.linspace(lo, hi, nx, device=device), torch.linspace(lo, hi, ny, device=device),
                torch.arange(nt, device=device) * (2 * math.pi / nt))

    def forward(self, delta: Tensor) -> Tensor:
        """``delta [N,3]`` → every module's matrix ``[N, k, l, l]``.

        The trilinear weights of the grid points form one ``[N, G]`` matrix (8 non-zeros a row)
        that multiplies the codebook: a matmul forwards and backwards, where gathering the 8
        corners would scatter-add in the backward pass (serial on the CPU, atomics on the GPU).
        """
        k, nx, ny, nt, l, _ = self.matrices.shape
        wx, wy, wt = self.axis_weights(delta)  # (N, n_tx), (N, n_ty), (N, n_θ)
        weights = (wx[:, :, None, None] * wy[:, None, :, None] * wt[:, None, None, :]).flatten(1)  # (N, G)
        table = self.matrices.permute(1, 2, 3, 0, 4, 5).reshape(nx * ny * nt, k * l * l)  # (G, k·l·l)
        return (weights @ table).view(-1, k, l, l)

    def read(self, delta: Tensor) -> Tensor:
        """Every module's matrix at many transformations: ``delta [M,3]`` → ``[M, k, l, l]``.

        The same trilinear interpolation as :meth:`forward` (clamped in translation, periodic in θ),
        as one weighted ``embedding_bag`` over the codebook's grid points: it touches the 8 corners
        of a row where :meth:`forward`'s dense weights touch all ``G``, so it suits many rows on a
        fine grid (the neighbourhood prediction reads ``context²`` matrices per pair). Its backward
        adds rows of the gradient into the table: ~12× faster on the CPU than the 3-D ``grid_sample``
        that did this before (``benchmarks/bench_codebook_read.py``).
        """
        k, nx, ny, nt, l, _ = self.matrices.shape
        table = self.matrices.permute(1, 2, 3, 0, 4, 5).reshape(nx * ny * nt, k * l * l)  # (G, k·l·l)
        (x, y, t) = self._corners(delta)
        index = torch.stack([(ix * ny + iy) * nt + it for ix, _ in x for iy, _ in y for it, _ in t], dim=1)
        weight = torch.stack([wx * wy * wt for _, wx in x for _, wy in y for _, wt in t], dim=1)  # (M, 8)
        out = F.embedding_bag(index, table, per_sample_weights=weight.to(table.dtype), mode="sum")
        return out.view(-1, k, l, l)

    def axis_weights(self, delta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Linear-interpolation weights along each grid axis: ``delta [N,3]`` → ``[N, n_tx]``,
        ``[N, n_ty]``, ``[N, n_θ]`` (two non-zeros each; the same clamping and wrapping as :meth:`sample`)."""
        out = []
        for axis, ((i0, w0), (i1, w1)) in enumerate(self._corners(delta)):
            w = torch.zeros(*delta.shape[:-1], self.grid[axis], dtype=delta.dtype, device=delta.device)
            out.append(w.scatter_add(-1, i0[..., None], w0[..., None]).scatter_add(-1, i1[..., None], w1[..., None]))
        return tuple(out)

    def _corners(self, delta: Tensor) -> list[tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]]:
        """Per axis, the two neighbouring grid indices of ``delta [...,3]`` and their weights."""
        lo, hi = self.translation_range
        corners = []
        for axis, n in enumerate(self.grid[:2]):
            pos = (delta[..., axis] - lo) / (hi - lo) * (n - 1) if n > 1 and hi > lo else torch.zeros_like(delta[..., axis])
            pos = pos.clamp(0, n - 1)
            i0 = pos.floor().clamp(max=max(n - 2, 0)).long()
            frac = pos - i0
            corners.append(((i0, 1 - frac), ((i0 + 1).clamp(max=n - 1), frac)))
        nt = self.grid[2]
        pos = torch.remainder(delta[..., 2], 2 * math.pi) * (nt / (2 * math.pi))
        i0 = pos.floor().long().remainder(nt)  # remainder also maps a rounding-up to 2π onto 0
        frac = (pos - pos.floor()).clamp(0, 1)
        corners.append(((i0, 1 - frac), ((i0 + 1) % nt, frac)))
        return corners

    def sample(self, delta: Tensor, module: Tensor) -> Tensor:
        """Interpolated matrices for per-element modules: ``delta [...,3]``, ``module [...]``
        (broadcast against ``delta[..., 0]``) → ``[..., l, l]``."""
        module = torch.broadcast_to(module, delta.shape[:-1])
        corners = self._corners(delta)
        out = 0
        for ix, wx in corners[0]:
            for iy, wy in corners[1]:
                for it, wt in corners[2]:
                    out = out + (wx * wy * wt)[..., None, None] * self.matrices[module, ix, iy, it]
        return out


def equivariance_loss(features: Tensor, transformed_features: Tensor, matrices: Tensor, relative: bool = False) -> Tensor:
    """``L_equ = Σ_i ||f'^(i) − M^(i)(δ) f^(i)||²``, averaged over samples.

    Args:
        features: ``f`` at N points of ``I``: ``[N, k, l]`` (or ``[N, k·l]``, split by ``matrices``);
            or ``[N, q, k·l]``: the ``q`` code cells around each point, predicting
            ``Σ_q M^(i)(δ_q) f_q^(i)`` (:func:`scg_core.model.pairs.neighbour_deltas`).
        transformed_features: ``f'`` at the *same physical points* of ``I' = L_δ(I)``: ``[N, k·l]``.
        matrices: ``M^(i)(δ)`` per sample, ``[N, k, l, l]`` (``EquivarianceCodebook(δ)``), or
            ``[N, q, k, l, l]`` with neighbourhood features.
        relative: divide by the detached mean ``||f||²`` (over points and code cells): an error
            relative to feature energy, whose scale does not depend on the kernels' norm. Per-module normalisation is
            deliberately not offered: it collapsed modules to zero norm (docs/scg_notes.md §8).
    """
    N, k, l = matrices.shape[0], matrices.shape[-3], matrices.shape[-1]
    f_prime = transformed_features.reshape(N, k, l)
    if matrices.ndim == 4:
        f = features.reshape(N, k, l)
        predicted = torch.einsum("nkij,nkj->nki", matrices, f)
    else:
        f = features.reshape(N, -1, k, l)
        predicted = torch.einsum("nqkij,nqkj->nki", matrices, f)
    loss = (f_prime - predicted).pow(2).sum(dim=(1, 2)).mean()
    if relative:
        loss = loss / f.detach().pow(2).sum(dim=(-2, -1)).mean().clamp_min(1e-12)
    return loss


def soft_best_transforms(codebook: EquivarianceCodebook, temperature: float = 0.1, sign: float = 1.0) -> Tensor:
    """``δ*_mn`` for every module and channel pair: ``[k, l, l, 3]``.

    ``δ*_mn = Σ_δ softmax_δ(sign·M_mn(δ)/T)·δ`` over the grid. Translations are averaged
    linearly; θ is averaged on the circle (the angle of ``Σ w·(cos θ, sin θ)``), since a plain
    average of angles is wrong across 0/2π. ``sign=+1`` is the stated intent (the δ that
    maximises ``M_mn``, "the best transformation from n to m"); ``sign=-1`` is the printed formula.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if sign not in (1.0, -1.0, 1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    M = codebook.matrices  # (k, n_tx, n_ty, n_θ, l, l)
    k, nx, ny, nt, l, _ = M.shape
    weights = torch.softmax(sign * M.reshape(k, -1, l, l) / temperature, dim=1)  # (k, G, l, l)
    tx, ty, theta = codebook.grid_points()
    grid = torch.stack(torch.meshgrid(tx, ty, theta, indexing="ij"), dim=-1).reshape(-1, 3)  # (G, 3)
    mean = lambda values: torch.einsum("kgmn,g->kmn", weights, values)
    angle = torch.remainder(torch.atan2(mean(torch.sin(grid[:, 2])), mean(torch.cos(grid[:, 2]))), 2 * math.pi)
    return torch.stack([mean(grid[:, 0]), mean(grid[:, 1]), angle], dim=-1)


def symmetry_loss(codebook: EquivarianceCodebook, temperature: float = 0.1, sign: float = 1.0, reduction: str = "sum") -> Tensor:
    """``L_sym = Σ_i Σ_m Σ_n ||e_m − M^(i)(δ*_mn) e_n||²``: within a module, some transformation
    maps each channel onto each other one, so a module holds transformed copies of one feature.

    See :func:`soft_best_transforms` for ``temperature`` and ``sign``. ``reduction="mean"``
    divides by the ``k·l²`` terms, so the loss does not grow with the model's size.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    delta = soft_best_transforms(codebook, temperature, sign)  # (k, l, l, 3)
    k, l = delta.shape[:2]
    module = torch.arange(k, device=delta.device).view(k, 1, 1)
    M = codebook.sample(delta, module)  # (k, m, n, p, q): M^(i)(δ*_mn)[p, q]
    columns = torch.diagonal(M, dim1=2, dim2=4)  # (k, m, p, n): column n of M^(i)(δ*_mn)
    target = torch.eye(l, dtype=M.dtype, device=M.device).view(1, l, l, 1)  # e_m[p]
    loss = (target - columns).pow(2).sum()
    return loss / (k * l * l) if reduction == "mean" else loss


def transformed_kernels(kernel: Tensor, delta: Tensor) -> Tensor:
    """Each kernel as it must look for a transformation to map it onto another channel.

    If channel ``m`` of ``I' = L_δ(I)``'s feature equals channel ``n`` of ``I``'s for every image
    (``⟨K_m, L_δ I⟩ = ⟨K_n, I⟩``), then ``K_n(u) = K_m(A u + t)``: this samples ``K_m`` there
    (bilinear, zero outside; ``A``, ``t`` as in :func:`scg_core.model.pairs.warp_grid`).

    Args:
        kernel: ``[J,C,R,R]`` (``R`` odd): the composed kernels, ``J = k·l``.
        delta: ``[J,J',3]``: for kernel ``j``, ``J'`` transformations ``(tx, ty, θ)``.

    Returns:
        ``[J,J',C,R,R]``.
    """
    J, C, R, _ = kernel.shape
    count = delta.shape[1]
    cos, sin = torch.cos(delta[..., 2]), torch.sin(delta[..., 2])
    tx, ty = delta[..., 0], delta[..., 1]
    # u ↦ A u + t is warp_grid's map for the inverse transformation (−Aᵀt, −θ)
    inverse = torch.stack([-(cos * tx - sin * ty), -(sin * tx + cos * ty), -delta[..., 2]], dim=-1)
    grid = warp_grid(inverse.reshape(-1, 3), R, (R - 1) // 2)  # (J·J', R, R, 2)
    sources = kernel[:, None].expand(J, count, C, R, R).reshape(-1, C, R, R)
    out = F.grid_sample(sources, grid.to(kernel.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(J, count, C, R, R)


def kernel_copy_loss(kernel: Tensor, best: Tensor, module_channels: int) -> Tensor:
    """Within a module, each kernel is a transformed copy of every other one: the mean over
    modules and channel pairs ``(m, n)`` of ``||K_n − K_m(A u + t)||²`` at ``δ*_mn``, relative to the
    mean kernel energy (detached).

    The paper's ``L_sym`` asks the codebook for a transformation between every two channels, and
    can be met by the codebook alone; this asks the *kernels* to be related by it (the official
    release's training code has a term to this effect, on image responses rather than kernels).

    Args:
        kernel: ``[k·l,C,R,R]`` composed kernels.
        best: ``[k,l,l,3]``: ``δ*_mn`` (:func:`soft_best_transforms`; pass it detached to leave the
            codebook to ``L_equ`` and ``L_sym``).
    """
    J, C, R, _ = kernel.shape
    k, l = J // module_channels, module_channels
    moved = transformed_kernels(kernel, best.reshape(J, l, 3))  # (k·l [module, m], l [n], C, R, R)
    target = kernel.view(k, 1, l, C, R, R).expand(k, l, l, C, R, R).reshape(J, l, C, R, R)  # K_n
    energy = kernel.detach().pow(2).sum(dim=(1, 2, 3)).mean().clamp_min(1e-12)
    return (target - moved).pow(2).sum(dim=(2, 3, 4)).mean() / energy
