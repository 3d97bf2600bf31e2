"""How a group's hint becomes a readable image: a contrast factor chosen per image.

A band-pass group (edges, texture) decodes to the mean colour plus small deviations; a colour group
to grey plus the picture's colours, as muted or as vivid as the picture is; a brightness group to a
blurred grey picture that may fill the grey range and overflow it. How faint or strong depends on the
picture far more than on the group: the default's edges of a hazy photo are ~17 times fainter than
those of a sketch of the same cat. One stored gain cannot suit both, so a group with a *display span*
(:attr:`scg_core.model.groups.Group.span`) is stretched per image about its *centre* — its hint of
a uniform mid-grey image (``ModularAE.grey_response``; the mean colour for a band-pass group, a
neutral grey for a colour group, so a grey photo keeps a grey colour hint): the deviations from the
centre are scaled so that their 1st–99th percentile spans ``span`` of the grey range, by at most the
group's stored gain (a blank page or a clear sky is not blown up into its noise), and never so far
that more than 1% of the values would leave [0, 1] (which turns a hint that would overflow down:
the factor may be below 1).

Groups shown together (the label ``edges`` keeps both edge scales) are each stretched so; their
sum is then turned down, never up, as far as keeps ≤ 1% of its values inside [0, 1]
(:func:`clip_headroom`).

The factor is one number per image, so the hint still moves with its image (a global scale leaves
the correlation of a shifted hint with the original unchanged), and the ControlNet trained on the
hint sees exactly what every host shows (``ModularAE.hint`` applies it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TAIL = 0.005  # share of the values allowed beyond each end of [0, 1]: ≤ 1% clipped in all
MAX_VALUES = 1 << 18  # values per image the quantiles read at most (≥ 1,300 in each 0.5% tail)


def contrast_factors(deviation: Tensor, centre: Tensor, span: float, max_gain: float, margin: int = 0,
                     scale: Tensor | None = None) -> Tensor:
    """Per-image factors ``s`` for a hint ``centre + s·deviation``.

    Args:
        deviation: ``[B,C,H,W]`` the group's decoded image minus its centre, in image units
            (``raw_hint · std``).
        centre: ``[C]`` (or broadcastable) the colour the hint is stretched about, in [0,1].
        span: the share of the grey range, in (0, 1), that the 1st–99th percentile of
            ``s·deviation`` (all channels of an image pooled) should span.
        max_gain: the largest factor.
        margin: pixels left out at each edge when measuring (where zero padding shows).
        scale: ``[C]``, when given ``deviation`` is in other units and ``deviation·scale`` is measured
            (the raw hint and ``std``: only the sampled values are multiplied).

    Returns:
        ``[B]`` factors in ``(0, max_gain]``, in ``deviation``'s dtype:
        ``min(span / (q99 − q1), headroom, max_gain)``, where ``headroom`` keeps the values beyond
        the 0.5th and 99.5th percentiles the only ones that can leave [0, 1].
    """
    lowest, low, high, highest = _quantiles(deviation, margin, scale)
    stretch = span / (high - low).clamp_min(torch.finfo(torch.float32).tiny)
    factors = torch.minimum(stretch, _headroom(lowest, highest, centre)).clamp(max=float(max_gain))
    return factors.to(deviation.dtype)


def clip_headroom(deviation: Tensor, centre: Tensor, margin: int = 0, scale: Tensor | None = None) -> Tensor:
    """``[B]`` the largest factors ``s`` (``inf`` where nothing can clip) for which at most 1% of
    the values of ``centre + s·deviation`` leave [0, 1]; arguments as for :func:`contrast_factors`.
    Several stretched groups shown together use it to keep their sum within that limit."""
    lowest, _, _, highest = _quantiles(deviation, margin, scale)
    return _headroom(lowest, highest, centre).to(deviation.dtype)


def _quantiles(deviation: Tensor, margin: int, scale: Tensor | None) -> Tensor:
    """``[4,B]`` float64: the 0.5th, 1st, 99th and 99.5th percentiles of each image's values."""
    H, W = deviation.shape[-2:]
    if H > 2 * margin and W > 2 * margin:
        deviation = deviation[..., margin:H - margin, margin:W - margin]
    C, h, w = deviation.shape[-3:]
    # every step-th value in memory order, the step prime to the row length so that the samples of
    # successive rows fall on other columns (a grid of pixels would alias with the fine stripes of a
    # band-pass group and bias the percentiles)
    step = max(1, math.ceil(C * h * w / MAX_VALUES))
    while math.gcd(step, w) != 1:
        step += 1
    flat = deviation.detach().flatten(1)[:, ::step]
    if scale is not None:
        channel = torch.arange(0, C * h * w, step, device=flat.device) // (h * w)
        flat = flat * scale.detach().to(flat)[channel]
    levels = torch.tensor([TAIL, 0.01, 0.99, 1 - TAIL], dtype=torch.float32, device=flat.device)
    return torch.quantile(flat.float(), levels, dim=1).double()


def _headroom(lowest: Tensor, highest: Tensor, centre: Tensor) -> Tensor:
    """The factor up to which only values beyond ``lowest``/``highest`` leave [0, 1] around ``centre``."""
    centre = centre.detach().double().flatten().to(lowest.device)
    tiny = torch.finfo(torch.float32).tiny
    room_above, room_below = 1 - centre.max(), centre.min()  # a side with no room clips whatever the factor
    above = room_above / highest.clamp_min(tiny) if room_above > 0 else torch.full_like(highest, torch.inf)
    below = room_below / (-lowest).clamp_min(tiny) if room_below > 0 else torch.full_like(lowest, torch.inf)
    return torch.minimum(above, below)
