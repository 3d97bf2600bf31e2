"""How readable and how stable each group's hint is, and the display settings that make faint groups readable.

A band-pass group (edges, texture) decodes to mid-grey with faint lines: its hint may use a tenth of
the grey range. :func:`calibrate_gains` finds, per group, the display gain (stored with the group,
applied inside ``ModularAE.hint``) that stretches it to a visible contrast while clipping almost
nothing; :func:`calibrate_contrast` finds the largest factor for a group stretched per image
(a display span, ``scg_core.model.display``). :func:`hint_range` measures the result;
:func:`hint_stability` measures how much a group's hint changes when the input moves by one pixel or
turns by 90° (what the equivariance constraint is meant to keep small, and what aliasing of a
too-fine module breaks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..model.display import contrast_factors
from ..model.groups import Group, with_gains
from ..model.modular_ae import ModularAE

MAX_SAMPLES = 4_000_000  # values per quantile (torch.quantile's input limit is 16M)
CONTRAST_HEADROOM = 4.0  # a stretched group's largest factor: this many times the median calibration photo's


def _interior(model: ModularAE, image: Tensor) -> Tensor:
    """``image [B,C,H,W]`` without a receptive field's half at each edge (where the zero padding shows)."""
    m = model.config.receptive_field // 2
    return image[..., m:image.shape[-2] - m, m:image.shape[-1] - m]


def _deviation(model: ModularAE, image: Tensor, group: Group, about_grey: bool = False) -> tuple[Tensor, Tensor]:
    """The group's decoded image at gain 1 as ``(centre [C], deviation [B,C,H,W])`` in image units,
    ``hint = centre + gain·deviation``: about the mean colour, or with ``about_grey`` about the
    group's hint of mid-grey (where a stretched group is stretched from, ``ModularAE.grey_response``)."""
    with torch.inference_mode():
        raw = model.raw_hint(image, modules=list(group.modules))
        centre = model.grey_response(group.modules, raw.dtype) if about_grey else torch.zeros_like(model.mean, dtype=raw.dtype)
    return model.denormalize(centre).flatten(), (raw - centre) * model.std.to(raw.dtype)


def _spread(values: Tensor) -> tuple[float, float]:
    """(1st–99th percentile span, share outside [0,1]) of hint values before clamping."""
    flat = values.flatten()
    if flat.numel() > MAX_SAMPLES:
        flat = flat[:: -(-flat.numel() // MAX_SAMPLES)]
    clipped = float(((flat < 0) | (flat > 1)).double().mean())
    lo, hi = torch.quantile(flat.clamp(0, 1).double(), torch.tensor([0.01, 0.99], dtype=torch.float64))
    return float(hi - lo), clipped


def hint_range(model: ModularAE, images: Sequence[Tensor], group: Group, gain: float | None = None) -> dict:
    """The span (1st–99th percentile, share of [0,1]) and clipped share of a group's hint, per image.

    Args:
        images: ``[1,3,H,W]`` or ``[3,H,W]`` float in [0,1].
        gain: the display gain to measure at (default: as ``model.hint`` shows the group: its stored
            gain, or with a display span each image's own factor).

    Returns:
        ``{"span": [...], "clipped": [...], "below": [...], "above": [...]}``, one entry per image, over
        the interior pixels: span and clipped share over all channels; the share of each channel's
        values below 0 and above 1 (``[r, g, b]``: where the clipping happens).
    """
    out = {"span": [], "clipped": [], "below": [], "above": []}
    for image in images:
        image = image if image.ndim == 4 else image[None]
        stretched = group.span is not None and gain is None  # shown as ``model.hint`` shows it: stretched per image
        centre, deviation = _deviation(model, image, group, about_grey=stretched)
        factor = (gain if gain is not None else group.gain if not stretched
                  else float(contrast_factors(deviation, centre, group.span, group.gain, model.config.receptive_field // 2)[0]))
        values = _interior(model, centre.view(1, -1, 1, 1) + factor * deviation)
        span, clipped = _spread(values)
        out["span"].append(span)
        out["clipped"].append(clipped)
        out["below"].append((values < 0).double().mean(dim=(0, 2, 3)).tolist())
        out["above"].append((values > 1).double().mean(dim=(0, 2, 3)).tolist())
    return out


def calibrate_gains(model: ModularAE, images: Sequence[Tensor], *, span: float = 0.6, clip: float = 0.005) -> dict[str, float]:
    """A display gain per group, the median over ``images`` of each image's gain: the smallest ≥ 1
    whose hint spans ``span`` of the grey range (1st–99th percentile), or, when that would clip
    more than ``clip`` of the image's values, the largest that clips at most that much (never below
    1: a group already visible keeps its contrast). The median keeps one odd picture (a starfield,
    a micrograph) from setting the gain for all.

    Returns:
        group name → gain, rounded to 2 significant digits (so files stay readable).
    """
    gains = {}
    for group in model.groups:
        per_image = [_image_gain(model, im if im.ndim == 4 else im[None], group, span, clip) for im in images]
        gains[group.name] = max(1.0, float(f"{float(torch.tensor(per_image).median()):.2g}"))
    return gains


def calibrate_display(model: ModularAE, images: Sequence[Tensor], stretched: Sequence[str], *,
                      span: float = 0.6) -> tuple[Group, ...]:
    """The model's groups with display settings calibrated on ``images``: the groups named in
    ``stretched`` stretched per image to ``span`` up to :func:`calibrate_contrast`'s factor (what
    ``characterize --calibrate`` does to every group); the others at a fixed :func:`calibrate_gains` gain."""
    stretched = [g.name for g in model.groups if g.name in set(stretched)]
    fixed = {name: gain for name, gain in calibrate_gains(model, images, span=span).items() if name not in stretched}
    return with_gains(model.groups, {**fixed, **calibrate_contrast(model, images, stretched, span=span)},
                      spans={name: span for name in stretched})


def calibrate_contrast(model: ModularAE, images: Sequence[Tensor], names: Sequence[str], *, span: float = 0.6,
                       headroom: float = CONTRAST_HEADROOM) -> dict[str, float]:
    """The largest factor for each of the groups ``names`` when it is stretched per image to ``span``:
    ``headroom`` × the median over ``images`` of the factor each image needs (unbounded but for the
    clipping limit), so that a flat picture — a blank page, a clear sky — is amplified at most
    ``headroom`` times more than a typical photo, and its noise is not shown at full contrast.

    Returns:
        group name → largest factor, rounded to 2 significant digits; store it with
        ``with_gains(groups, factors, spans={name: span})``.
    """
    out = {}
    for name in names:
        group = next((g for g in model.groups if g.name == name), None)
        if group is None:
            raise ValueError(f"no group named {name!r}; the groups are {', '.join(g.name for g in model.groups)}")
        needed = []
        for image in images:
            centre, deviation = _deviation(model, image if image.ndim == 4 else image[None], group, about_grey=True)
            needed.append(float(contrast_factors(deviation, centre, span, float("inf"), model.config.receptive_field // 2)[0]))
        out[name] = float(f"{headroom * float(torch.tensor(needed).median()):.2g}")
    return out


def _image_gain(model: ModularAE, image: Tensor, group: Group, span: float, clip: float) -> float:
    centre, deviation = _deviation(model, image, group)
    deviation, centre = _interior(model, deviation), centre.view(1, -1, 1, 1)
    measure = lambda g: _spread(centre + g * deviation)  # noqa: E731
    lo, hi = 1.0, 1.0
    while hi < 256 and (m := measure(hi))[0] < span and m[1] <= clip:
        lo, hi = hi, hi * 2
    for _ in range(16):  # bisection for the first gain that reaches the span or clips too much
        mid = (lo * hi) ** 0.5
        s, c = measure(mid)
        lo, hi = (mid, hi) if s < span and c <= clip else (lo, mid)
    return hi if measure(hi)[1] <= clip else lo


def _pearson(a: Tensor, b: Tensor) -> float:
    """r of two ``[B,C,H,W]`` images over pixels and channels, each channel centred on its own mean:
    otherwise the channels' different mean levels, equal in both, would count as agreement."""
    a, b = a.double(), b.double()
    a, b = a - a.mean((-2, -1), keepdim=True), b - b.mean((-2, -1), keepdim=True)
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))


def hint_stability(model: ModularAE, image: Tensor, groups: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """How a group's hint follows its input: Pearson r between the hint of the moved image and the
    hint of the image, moved the same way, over the interior pixels.

    ``shift_1px``: the worse of a one-pixel horizontal and vertical shift (a crop: no interpolation);
    ``rotate_90``: an exact quarter turn, turned back. 1 = the hint moves with the image.

    Args:
        image: ``[1,3,H,W]`` or ``[3,H,W]`` float in [0,1].
        groups: group names (default: all of the model's groups).
    """
    image = image if image.ndim == 4 else image[None]
    out = {}
    for name in groups or [g.name for g in model.groups]:
        with torch.inference_mode():
            hint = lambda x: model.hint(x, [name])  # noqa: E731
            base = hint(image)
            right = _pearson(_interior(model, hint(image[..., :, 1:])), _interior(model, base[..., :, 1:]))
            down = _pearson(_interior(model, hint(image[..., 1:, :])), _interior(model, base[..., 1:, :]))
            turned = torch.rot90(hint(torch.rot90(image, 1, (-2, -1))), -1, (-2, -1))
            rotate = _pearson(_interior(model, turned), _interior(model, base))
        out[name] = {"shift_1px": min(right, down), "rotate_90": rotate}
    return out
