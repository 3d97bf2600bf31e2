"""Pure functions for the modular autoencoder's linear maps.

Shape letters: ``B`` batch, ``C`` input channels, ``k`` modules, ``l`` channels per module,
``m`` kept modules, ``K`` factor-kernel size, ``R`` receptive field (composed kernel size),
``S`` total stride, ``P = (R-1)//2`` padding.

Two ways to compute the same thing:

* **composed** — one ``[k·l, C, R, R]`` kernel (21×21 for the released model) used as
  ``conv2d(stride=S, padding=P)`` to encode and as its transpose to decode. This is the official
  computation.
* **factorised** (the fast path) — the small factor convolutions, restricted to the kept modules.
  The input is zero-padded once by ``P`` and every factor runs *without* padding, so the result
  equals the composed computation everywhere, borders included (a chain of padded convs would
  differ near borders because it pads intermediate maps). Decoding is the exact adjoint.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ModularAEConfig

HINT_CONTRACT_VERSION = 1
"""What a hint is (docs/scg_notes.md §5): ``clamp(raw·std + mean, 0, 1)``, a plain RGB image in [0,1].
ControlNets record the version they were trained on; a change to the hint's maths bumps it."""

Weights = Mapping[str, Tensor]


def feature_size(size: int, config: ModularAEConfig) -> int:
    """Feature-map side for an input side ``size``: ``floor((size + 2P - R) / S) + 1``."""
    return (size + 2 * config.padding - config.receptive_field) // config.stride + 1


def compose_kernel(weights: Weights, config: ModularAEConfig) -> Tensor:
    """The effective kernel ``[k·l, C, R, R]`` of the whole encoder.

    For ``bipolar``: LGN kernel ``L_i = pad(A_i) + surround_i ⊛₂ B_i`` (13×13), then module
    kernel ``K_j = W2_j ⊛₂ L_{j//l}`` (21×21), where ``⊛₂`` places the outer kernel's taps
    2 pixels apart (a stride-2 transposed convolution of one kernel by the other).
    """
    if config.parameterization == "single":
        return weights["kernels"]
    k, l, C, K = config.num_modules, config.module_channels, config.in_channels, config.kernel_size
    path_a, path_b = weights["pathway_a"], weights["pathway_b"]
    surround, module_kernels = weights["surround"], weights["module_kernels"]
    # (1, k, K, K) ⊛₂ (k, C, K, K) with groups=k → (1, k·C, L, L), L = 3K - 2
    lgn = F.conv_transpose2d(surround.reshape(1, k, K, K), path_b, stride=2, groups=k)
    L = lgn.shape[-1]
    lgn = lgn.reshape(k, C, L, L) + F.pad(path_a, [K - 1] * 4)
    # (1, k·l, K, K) ⊛₂ (k·l, C, L, L) with groups=k·l → (1, k·l·C, R, R)
    per_channel_lgn = lgn.repeat_interleave(l, dim=0)
    R = config.receptive_field
    composed = F.conv_transpose2d(module_kernels.reshape(1, k * l, K, K), per_channel_lgn, stride=2, groups=k * l)
    return composed.reshape(k * l, C, R, R)


def centre_features(kernel: Tensor, patches: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """The encoder's features at the centres of receptive-field patches.

    Args:
        kernel: ``[J,C,R,R]`` (:func:`compose_kernel`, ``J = k·l``).
        patches: ``[N,C,R,R]`` in [0,1] (raw pixels; normalised here).
        mean, std: the encoder's input normalisation, ``C`` values each (any shape).

    Returns:
        ``[N,J]`` = ``⟨kernel, (patch − mean)/std⟩``. The normalisation is folded into the kernel
        (``⟨K/std, patch⟩ − ⟨K/std, mean⟩``), one pass over the patches instead of three.
    """
    scaled, bias = _fold_normalisation(kernel, mean, std)
    return patches.flatten(1) @ scaled.flatten(1).T - bias


def _fold_normalisation(kernel: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
    """``(K/std, ⟨K/std, mean⟩)``: ``⟨K, (x − mean)/std⟩ = ⟨K/std, x⟩ − ⟨K/std, mean⟩``."""
    scaled = kernel / std.reshape(1, -1, 1, 1)
    return scaled, (scaled * mean.reshape(1, -1, 1, 1)).sum(dim=(1, 2, 3))


def context_features(kernel: Tensor, patches: Tensor, mean: Tensor, std: Tensor, stride: int) -> Tensor:
    """The encoder's features at the code cells of context patches (:func:`centre_features` for
    every cell ``stride`` apart that fits).

    Args:
        kernel: ``[J,C,R,R]``; ``patches``: ``[N,C,S,S]`` in [0,1] with ``S = R + stride·(K − 1)``.

    Returns:
        ``[N,K²,J]``, cells in row-major order; the centre cell equals :func:`centre_features` of
        the patch's centre ``R×R``.
    """
    scaled, bias = _fold_normalisation(kernel, mean, std)
    f = F.conv2d(patches, scaled, stride=stride) - bias.view(1, -1, 1, 1)
    return f.flatten(2).transpose(1, 2)


def encode_composed(x: Tensor, kernel: Tensor, config: ModularAEConfig) -> Tensor:
    """Official encoding. ``x``: ``[B,C,H,W]`` normalised → ``[B,k·l,h,w]``."""
    return F.conv2d(x, kernel, stride=config.stride, padding=config.padding)


def decode_composed(f: Tensor, kernel: Tensor, config: ModularAEConfig, size: tuple[int, int] | None = None) -> Tensor:
    """Official decoding (transposed conv with the same kernel).

    ``size=None`` reproduces the official output (no output padding: 509×509 for a 512×512
    input); a ``(H, W)`` adds the output padding that makes it exactly that size.
    """
    S, P, R = config.stride, config.padding, config.receptive_field
    padding = (0, 0)
    if size is not None:
        padding = tuple(n - ((h - 1) * S - 2 * P + R) for n, h in zip(size, f.shape[-2:]))
        if not all(0 <= p < S for p in padding):
            raise ValueError(f"features of size {tuple(f.shape[-2:])} cannot decode to {size}")
    return F.conv_transpose2d(f, kernel, stride=S, padding=P, output_padding=padding)


def _select(weights: Weights, config: ModularAEConfig, modules: Sequence[int] | None) -> dict[str, Tensor]:
    """Restrict the factor weights to the kept modules (no copy when all are kept)."""
    if modules is None or len(modules) == config.num_modules and list(modules) == list(range(config.num_modules)):
        return dict(weights)
    index = torch.as_tensor(list(modules), dtype=torch.long, device=next(iter(weights.values())).device)
    l = config.module_channels
    channels = (index[:, None] * l + torch.arange(l, device=index.device)).reshape(-1)
    if config.parameterization == "single":
        return {"kernels": weights["kernels"].index_select(0, channels)}
    return {
        "pathway_a": weights["pathway_a"].index_select(0, index),
        "pathway_b": weights["pathway_b"].index_select(0, index),
        "surround": weights["surround"].index_select(0, index),
        "module_kernels": weights["module_kernels"].index_select(0, channels),
    }


def encode_factorised(
    x: Tensor,
    weights: Weights,
    config: ModularAEConfig,
    modules: Sequence[int] | None = None,
    *,
    mean: Tensor | None = None,
    std: Tensor | None = None,
) -> Tensor:
    """Fast encoding of the kept modules only.

    Args:
        x: ``[B,C,H,W]`` image; normalised, or in [0,1] when ``mean``/``std`` (``[C]``) are given,
            in which case ``(x - mean) / std`` is applied on the way in (the division is folded
            into the first-stage weights, saving a pass over the image).
        weights: the factor weights (see :class:`scg_core.ModularAE`).
        modules: indices of the modules to compute, ascending; ``None`` = all.

    Returns:
        ``[B, m·l, h, w]`` — the channels of the kept modules, in the order given (channels-last
        memory layout, which the CPU and GPU convolution kernels prefer).
    """
    w = _select(weights, config, modules)
    first = ("kernels",) if config.parameterization == "single" else ("pathway_a", "pathway_b")
    if mean is not None and not x.requires_grad:  # one pass that also yields channels-last
        x = torch.sub(x, mean.view(1, -1, 1, 1), out=torch.empty_like(x, memory_format=torch.channels_last))
    elif mean is not None:
        x = (x - mean.view(1, -1, 1, 1)).contiguous(memory_format=torch.channels_last)
    else:
        x = x.contiguous(memory_format=torch.channels_last)
    if std is not None:
        w.update({name: w[name] / std.view(1, -1, 1, 1) for name in first})
    P = config.padding
    if config.parameterization == "single":
        return F.conv2d(x, w["kernels"], stride=config.stride, padding=P)
    m, r = w["pathway_a"].shape[0], (config.kernel_size - 1) // 2
    # Pathway B covers the full receptive field, so it gets all of the padding P; pathway A's
    # footprint is r LGN cells (2r pixels) narrower on each side, so padding P - 2r lands it on
    # exactly the same LGN grid. (Merging the two into one conv + a 2-input grouped conv was
    # measured slower: oneDNN has no fast kernel for 2 channels per group.)
    lgn = F.conv2d(F.conv2d(x, w["pathway_b"], stride=2, padding=P), w["surround"], groups=m)
    lgn = lgn.add_(F.conv2d(x, w["pathway_a"], stride=2, padding=P - 2 * r))  # (B, m, nd, nd')
    return F.conv2d(lgn, w["module_kernels"], stride=config.stride // 2, groups=m)


def _subpixel_weight(weight: Tensor, stride: int, groups: int) -> tuple[Tensor, int]:
    """Rewrite a transposed-conv kernel ``[Cin, Cout/g, K, K]`` as ``stride²`` phase kernels.

    Returns ``(w, J)``: ``w`` is a conv2d kernel ``[stride²·Cout, Cin/g, J, J]``, ``J = ceil((K-1)/stride) + 1``.
    Output channels are ordered ``(group, phase y, phase x, out channel in group)``.
    """
    c_in, c_out_g, K, _ = weight.shape
    J = -(-(K - 1) // stride) + 1  # enough phases to also cover the output padding (< stride)
    w = F.pad(weight, [0, J * stride - K, 0, J * stride - K])
    # tap u = phase + stride·j; the correlation runs over j backwards, hence the flip.
    w = w.reshape(groups, c_in // groups, c_out_g, J, stride, J, stride).flip(3, 5)
    w = w.permute(0, 4, 6, 2, 1, 3, 5)  # (g, phase y, phase x, Cout/g, Cin/g, J, J)
    return w.reshape(groups * stride * stride * c_out_g, c_in // groups, J, J), J


def _phase_maps(f: Tensor, weight: Tensor, stride: int, groups: int = 1, shift: int = 0, bias: Tensor | None = None) -> Tensor:
    """The ``stride²`` phase images of ``conv_transpose2d(pad(f, shift), weight, stride) + bias``,
    stacked as channels; ``shift`` zero cells are (virtually) added on every side of ``f``."""
    w, J = _subpixel_weight(weight, stride, groups)
    if bias is not None:
        bias = bias.repeat(stride * stride)  # one per (phase y, phase x, channel)
    return F.conv2d(f, w, bias, padding=J - 1 + shift, groups=groups)


def _pixel_shuffle(y: Tensor, stride: int, groups: int) -> Tensor:
    """Interleave phase channels ordered ``(group, phase y, phase x, channel)`` into space.

    Written as one channels-last copy: ``F.pixel_shuffle`` would return a channels-first map
    that the next convolution has to reorder again.
    """
    if stride == 1:
        return y
    B, _, h, w = y.shape
    y = y.permute(0, 2, 3, 1).reshape(B, h, w, groups, stride, stride, -1)  # (B, h, w, g, sy, sx, c)
    y = y.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, h * stride, w * stride, -1)
    return y.permute(0, 3, 1, 2)


def conv_transpose2d_subpixel(
    f: Tensor, weight: Tensor, stride: int = 1, groups: int = 1, size: tuple[int, int] | None = None
) -> Tensor:
    """``F.conv_transpose2d(f, weight, stride=stride, groups=groups)`` (no padding), cut to ``size``.

    Computed as one ordinary convolution per output phase followed by a pixel shuffle: the same
    numbers, but on the fast regular-convolution kernels (PyTorch's CPU transposed grouped and
    depthwise convolutions take a slow path).
    """
    y = _pixel_shuffle(_phase_maps(f, weight, stride, groups), stride, groups)
    if size is None:
        size = tuple((n - 1) * stride + weight.shape[-1] for n in f.shape[-2:])
    return y[..., : size[0], : size[1]]


def _to_image(y: Tensor, stride: int, size: tuple[int, int], crop: int, clamp: bool) -> Tensor:
    """Final-stage phase maps ``[B, stride²·C, h, w]`` (groups = 1) → contiguous ``[B,C,H,W]``:
    rows/columns ``crop … crop+size`` of the shuffled image, optionally clamped to [0,1].

    Cropping happens on the phase grid first and clamping before the shuffle, so the image is
    written once.
    """
    q, r = divmod(crop, stride)
    y = y[..., q : -(-(crop + size[0]) // stride), q : -(-(crop + size[1]) // stride)]
    if clamp:
        y = y.clamp(0.0, 1.0)
    B, _, h, w = y.shape
    y = y.permute(0, 2, 3, 1).reshape(B, h, w, stride, stride, -1)  # (B, h, w, sy, sx, C)
    y = y.permute(0, 5, 1, 3, 2, 4).reshape(B, -1, h * stride, w * stride)
    return y[..., r : r + size[0], r : r + size[1]].contiguous()


def decode_factorised(
    f: Tensor,
    weights: Weights,
    config: ModularAEConfig,
    size: tuple[int, int],
    modules: Sequence[int] | None = None,
    *,
    scale: Tensor | None = None,
    shift: Tensor | None = None,
    clamp: bool = False,
) -> Tensor:
    """Fast decoding: the exact adjoint of :func:`encode_factorised`.

    Args:
        f: ``[B, m·l, h, w]`` features of the kept modules (as returned by the encoder).
        size: ``(H, W)`` of the output; ``h, w`` must be the feature size of that image size.
        modules: the kept modules, as given to the encoder.
        scale, shift: optional ``[C]``: return ``decoded·scale + shift`` (folded into the last
            convolution's weights and bias, so it costs nothing).
        clamp: clamp the result to [0,1].

    Returns:
        ``[B, C, H, W]``, contiguous; normalised pixel units unless ``scale``/``shift`` are given.
    """
    w = _select(weights, config, modules)
    P, S, K = config.padding, config.stride, config.kernel_size
    last = ("kernels",) if config.parameterization == "single" else ("pathway_a", "pathway_b")
    if scale is not None:
        w.update({name: w[name] * scale.view(1, -1, 1, 1) for name in last})
    if config.parameterization == "single":
        return _to_image(_phase_maps(f, w["kernels"], S, bias=shift), S, size, P, clamp)
    m, r = w["pathway_a"].shape[0], (K - 1) // 2
    nd = [(n + 2 * P - K) // 2 + 1 - (K - 1) for n in size]  # LGN map size
    g = conv_transpose2d_subpixel(f, w["module_kernels"], S // 2, groups=m, size=nd)  # (B, m, nd, nd')
    g_b = _phase_maps(g, w["surround"], 1, groups=m)  # (B, m, nd+K-1, ...)
    # Both pathways' phase maps land on one grid (pathway A shifted by r LGN cells), so they
    # are summed before the image is written.
    y = _phase_maps(g_b, w["pathway_b"], 2, bias=shift).add_(_phase_maps(g, w["pathway_a"], 2, shift=r))
    return _to_image(y, 2, size, P, clamp)


def phase_averaged_decodes(
    x: Tensor,
    weights: Weights,
    config: ModularAEConfig,
    modules: Sequence[int],
    parts: Sequence[tuple[Sequence[int], Sequence[float]]],
    *,
    mean: Tensor,
    std: Tensor,
) -> list[Tensor]:
    """``decode(encode(x))`` of parts of the kept modules, each averaged over the ``S²`` positions of
    the code grid relative to the image: the undecimated autoencoder ``Eᵀ E / S²``.

    The stride-``S`` code samples detail above its Nyquist frequency, so a decimated decode changes
    when the image moves by a pixel; the average over the grid positions is a fixed filter of the
    image and moves with it. That filter is one ``C×C`` kernel of ``2R − 1`` pixels a side,
    ``A[c, c'] = Σ_j factor_j · K_j[c] ⋆ K_j[c']`` (the composed kernels' cross-correlations), applied
    here through the FFT — a few transforms of the image instead of ``S²`` encodes and decodes.

    Args:
        x: ``[B,C,H,W]`` image in [0,1]; ``mean``, ``std``: ``[C]`` its normalisation.
        modules: the kept modules, ascending.
        parts: ``(positions in modules, factor per position)``: which kept modules each decode keeps.

    Returns:
        One ``[B,C,H,W]`` per part, in normalised units, in ``x``'s dtype (computed in float32).
        Every code whose receptive field reaches the image counts (the image zero-padded once
        normalised, as the encoder pads it).
    """
    C, H, W = x.shape[-3:]
    S, R, l = config.stride, config.receptive_field, config.module_channels
    kept = [m * l + c for m in modules for c in range(l)]
    kernel = compose_kernel({k: v.float() for k, v in weights.items()}, config)[kept]  # (m·l, C, R, R)
    xn = (x.float() - mean.float().view(1, -1, 1, 1)) / std.float().view(1, -1, 1, 1)
    size = (_fft_size(H + R - 1), _fft_size(W + R - 1))  # the filter reaches R − 1 pixels: no wrap-around onto the image
    image = torch.fft.rfft2(xn, s=size)  # (B, C, ·, ·)
    M = 2 * R - 1  # every lag of two R-pixel kernels, each at its own index: no aliasing
    spectra = torch.fft.rfft2(kernel, s=(M, M))  # (m·l, C, M, M//2+1)
    out = []
    for positions, factors in parts:
        channels = [p * l + c for p in positions for c in range(l)]
        weight = torch.tensor(factors, dtype=torch.float32, device=x.device).repeat_interleave(l)
        k = spectra[channels]
        lags = torch.fft.irfft2(torch.einsum("j,jcuv,jduv->cduv", weight.to(k.dtype), k, k.conj()), s=(M, M))
        lags = torch.roll(lags, (R - 1, R - 1), (-2, -1))  # lag d at index d + R − 1: the output comes R − 1 late
        # the filter's spectrum at the image's size: its M rows first, then the columns (zero rows skipped)
        spectrum = torch.fft.fft(torch.fft.rfft(lags, n=size[1], dim=-1), n=size[0], dim=-2)
        mixed = sum(spectrum[:, d] * image[:, d:d + 1] for d in range(C))  # (B, C, ·, ·): no permuted copies
        response = torch.fft.irfft2(mixed, s=size)
        out.append((response[..., R - 1:R - 1 + H, R - 1:R - 1 + W] / S**2).to(x.dtype).contiguous())
    return out


def _fft_size(n: int) -> int:
    """The smallest ``m ≥ n`` whose prime factors are 2, 3, 5 and 7 (a fast FFT length)."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1
