"""The decomposition sheet: the input, the hint of each group, and each module's reconstruction,
labelled, in one PNG (like the paper's Fig. 3d).

The work streams one module at a time at the input's full resolution and shrinks each result to its
tile at once, so memory stays at a few copies of the input image however many modules the
autoencoder has (see benchmarks/bench_decompose.py: well under 1.5 GB for a 12 MP photo).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..formats.images import tensor_to_pil
from ..model.checks import check_image
from ..model.groups import Group
from ..model.modular_ae import ModularAE

LABEL_HEIGHT = 18
LEGEND_LINE = 14
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
MIN_TILE, MAX_TILE = 64, 1024
LEGEND = ("Group tiles: the hint as the ControlNet sees it (at the group's display gain or contrast), not stretched further. "
          "Module tiles: one module's reconstruction, zero at mid-grey, stretched to its own peak; "
          "xN = how much stronger it looks than in its group's hint; % = its share of the image's energy.")

Progress = Callable[[int, int], None]  # (steps done, total steps)


def module_visual(raw: Tensor, peak: float | None = None) -> Tensor:
    """One module's raw reconstruction ``[3,H,W]`` (normalised units) → a viewable image in [0,1]:
    zero at mid-grey, stretched by ``peak`` (default: the largest ``|raw|``), since most modules
    carry small values around zero."""
    peak = max(float(raw.abs().amax()) if peak is None else peak, 1e-8)
    return (0.5 + 0.5 * raw / peak).clamp(0, 1)


def stretch(model: ModularAE, peak: float) -> float:
    """How many times larger a module's values look on its tile (``±peak`` → ±0.5) than in a hint
    (``raw·std``): the ``xN`` on module labels."""
    return 0.5 / (max(peak, 1e-8) * float(model.std.mean()))


def display_factor(model: ModularAE, group: Group, raw: Tensor) -> float:
    """The factor ``model.hint`` shows ``group`` at for an image whose group decode is ``raw``
    ``[1,3,H,W]`` (normalised units): its display gain, or with a display span the image's own."""
    if group.span is None:
        return group.gain
    return float(model.contrast_factors(group, raw)[0])


def module_label(index: int, group: str | None, share: float, factor: float) -> str:
    """``"module 3 · texture · 0% · x41"``: index, group name, energy share in [0,1], stretch factor.

    >>> module_label(3, "texture", 0.004, 41.3)
    'module 3 · texture · 0% · x41'
    >>> module_label(0, None, 0.52, 1.26)
    'module 0 · 52% · x1.3'
    """
    times = f"x{factor:.0f}" if factor >= 10 else f"x{factor:.1f}"
    return " · ".join([f"module {index}", *([group] if group else []), f"{100 * share:.0f}%", times])


def decomposition_tiles(model: ModularAE, image: Tensor, tile: int = 256,
                        progress: Progress | None = None) -> list[tuple[str, Image.Image]]:
    """The sheet's labelled tiles for ``image`` ``[1,3,H,W]`` in [0,1]: the input, each group's hint,
    each module. Each tile's longer side is ``tile`` pixels (64 to 1024).

    Each module is encoded and decoded alone at full resolution, added to its group's sum, measured
    and shrunk to its tile before the next; a group's hint is ``clamp(gain·sum·std + mean, 0, 1)``
    (``gain``: the group's display gain), or with a display span the sum stretched about the group's
    ``grey_response`` by the image's contrast factor, which
    equals ``model.hint(image, groups=[group])`` because the maps are linear (for a phase-averaged
    model the group's sum is decoded again, averaged over the code grid's positions, as ``hint`` does;
    the module tiles and energy shares stay one grid's, as ``characterize`` measures them).
    ``progress(done, total)`` is called after each module.
    """
    check_image(image, model.config.in_channels, model.config.receptive_field)
    if image.shape[0] != 1:
        raise ValueError(f"the decomposition sheet takes one image [1,3,H,W]; got a batch of {image.shape[0]}")
    if isinstance(tile, bool) or not isinstance(tile, int) or not MIN_TILE <= tile <= MAX_TILE:
        raise ValueError(f"tile must be a whole number of pixels from {MIN_TILE} to {MAX_TILE}; got {tile!r}")
    H, W = image.shape[-2:]
    scale = tile / max(H, W)
    size = (max(1, round(H * scale)), max(1, round(W * scale)))
    k = model.config.num_modules
    ungrouped = [i for i in range(k) if not any(i in g.modules for g in model.groups)]
    passes = [(g, g.modules) for g in model.groups] + [(None, ungrouped)]
    total, done = sum(len(members) for _, members in passes), 0
    tiles = [("input", tensor_to_pil(shrink(image, size).clamp_(0, 1)))]
    modules: dict[int, tuple[float, float, Tensor]] = {}  # index → (energy, peak |value|, shrunk raw)
    shown_gain: dict[str, float] = {}  # group name → the factor its tile shows it at
    with torch.inference_mode():
        for group, members in passes:
            total_raw = torch.zeros_like(image)
            for i in members:
                raw = model.decode(model.encode(image, [i]), (H, W), [i])  # (1, 3, H, W): module i alone
                total_raw += raw
                if i not in modules:
                    energy = float((raw - raw.mean((2, 3), keepdim=True)).square_().sum())  # as in characterize
                    lo, hi = torch.aminmax(raw)
                    modules[i] = (energy, max(-float(lo), float(hi)), shrink(raw, size))
                del raw
                done += 1
                if progress:
                    progress(done, total)
            if group is not None:
                if model.phase_average:  # the hint averages the decodes over the code grid's positions
                    total_raw = model.raw_hint(image, modules=sorted(members))
                shown_gain[group.name] = factor = display_factor(model, group, total_raw)
                centre = model.grey_response(group.modules, total_raw.dtype) if group.span is not None else 0.0
                shown = model.denormalize(total_raw.sub_(centre).mul_(factor).add_(centre)).clamp_(0, 1)
                tiles.append((group.title, tensor_to_pil(shrink(shown, size).clamp_(0, 1))))
            del total_raw
    membership = {m: g.name for g in model.groups for m in g.modules}
    gain = {m: shown_gain[g.name] for g in model.groups for m in g.modules}
    whole = max(sum(energy for energy, _, _ in modules.values()), 1e-12)
    for i in range(k):
        energy, peak, small = modules[i]
        tiles.append((module_label(i, membership.get(i), energy / whole, stretch(model, peak) / gain.get(i, 1.0)),
                      tensor_to_pil(module_visual(small, peak))))
    return tiles


def decomposition_sheet(model: ModularAE, image: Tensor, tile: int = 256, columns: int = 6,
                        progress: Progress | None = None) -> Image.Image:
    """Render the sheet for ``image`` ``[1,3,H,W]`` in [0,1]: a legend saying what each kind of tile
    shows, then the labelled tiles of :func:`decomposition_tiles`, ``columns`` per row."""
    tiles = decomposition_tiles(model, image, tile, progress)
    tw, th = tiles[0][1].size
    font = ImageFont.load_default()
    top = legend_height(columns * tw)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * tw, top + rows * (th + LABEL_HEIGHT)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for n, line in enumerate(legend_lines(columns * tw)):
        draw.text((4, 3 + n * LEGEND_LINE), line, fill=TEXT, font=font)
    for n, (label, picture) in enumerate(tiles):
        r, c = divmod(n, columns)
        left, y = c * tw, top + r * (th + LABEL_HEIGHT)
        strip = Image.new("RGB", (tw, LABEL_HEIGHT), BACKGROUND)  # clips a long label to its own tile
        ImageDraw.Draw(strip).text((4, 3), label, fill=TEXT, font=font)
        sheet.paste(strip, (left, y))
        sheet.paste(picture, (left, y + LABEL_HEIGHT))
    return sheet


def legend_lines(width: int) -> list[str]:
    """``LEGEND`` wrapped for a sheet ``width`` pixels wide."""
    return wrap(LEGEND, ImageFont.load_default(), width - 8)


def legend_height(width: int) -> int:
    """Height in pixels of the legend on a sheet ``width`` pixels wide."""
    return len(legend_lines(width)) * LEGEND_LINE + 6


def shrink(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``[3,H,W]`` or ``[1,3,H,W]`` → ``[3,h,w]`` at ``size = (h, w)``, antialiased (values unclamped)."""
    x = x if x.ndim == 4 else x[None]
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)[0]


def wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` pixels wide in ``font`` (a longer word
    gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines
