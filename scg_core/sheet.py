"""The decomposition sheet: the input, the hint of each group, and each module's reconstruction,
labelled, in one PNG (like the paper's Fig. 3d)."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .images import tensor_to_pil
from .model import ModularAE

LABEL_HEIGHT = 18
BACKGROUND = (32, 32, 32)


def module_visual(raw: Tensor) -> Tensor:
    """One module's raw reconstruction ``[3,H,W]`` → a viewable image in [0,1]: zero at mid-grey,
    stretched by the module's own peak (most modules carry small values around zero)."""
    peak = raw.abs().amax().clamp_min(1e-8)
    return (0.5 + 0.5 * raw / peak).clamp(0, 1)


def decomposition_sheet(model: ModularAE, image: Tensor, tile: int = 256, columns: int = 6) -> Image.Image:
    """Render the sheet for ``image`` ``[1,3,H,W]`` in [0,1]."""
    with torch.inference_mode():
        tiles: list[tuple[str, Tensor]] = [("input", image[0])]
        for group in model.groups:
            tiles.append((f"{group.title}", model.hint(image, groups=[group.name])[0]))
        membership = {m: g.name for g in model.groups for m in g.modules}
        recon = model.module_reconstructions(image)[0]  # (k, 3, H, W)
        energy = (recon - recon.mean((2, 3), keepdim=True)).pow(2).flatten(1).sum(1)  # as in characterize
        share = energy / energy.sum().clamp_min(1e-12)
        for i in range(model.config.num_modules):
            label = f"module {i}" + (f" · {membership[i]}" if i in membership else "") + f" · {100 * share[i]:.0f}%"
            tiles.append((label, module_visual(recon[i])))
    H, W = image.shape[-2:]
    scale = tile / max(H, W)
    tw, th = max(1, round(W * scale)), max(1, round(H * scale))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * tw, rows * (th + LABEL_HEIGHT)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for n, (label, x) in enumerate(tiles):
        r, c = divmod(n, columns)
        left, top = c * tw, r * (th + LABEL_HEIGHT)
        sheet.paste(tensor_to_pil(x).resize((tw, th), Image.Resampling.LANCZOS), (left, top + LABEL_HEIGHT))
        draw.text((left + 4, top + 3), label, fill=(235, 235, 235), font=font)
    return sheet
