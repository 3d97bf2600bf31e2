"""Regenerate the README's pictures from the bundled default autoencoder.

    python docs/make_figures.py
"""

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

import scg_core
from scg_core.formats.images import load_image, tensor_to_pil
from scg_core.tools.sheet import decomposition_sheet

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"


def group_gallery(ae: scg_core.ModularAE, image: torch.Tensor, tile: int = 220) -> Image.Image:
    """The input, then one hint per group of the autoencoder, labelled."""
    tiles = [("input", image[0])]
    with torch.inference_mode():
        tiles += [(g.title, ae.hint(image, groups=[g.name])[0]) for g in ae.groups]
    h = round(tile * image.shape[-2] / image.shape[-1])
    sheet = Image.new("RGB", (tile * len(tiles), h + 18), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for n, (label, x) in enumerate(tiles):
        sheet.paste(tensor_to_pil(x).resize((tile, h), Image.Resampling.LANCZOS), (n * tile, 18))
        draw.text((n * tile + 4, 3), label, fill=(235, 235, 235), font=ImageFont.load_default())
    return sheet


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ae = scg_core.load_default()
    chelsea = load_image(ROOT / "photos" / "chelsea.jpg")
    decomposition_sheet(ae, chelsea, tile=192).save(OUT / "chelsea_sheet.png")
    group_gallery(ae, load_image(ROOT / "photos" / "astronaut.jpg")).save(OUT / "astronaut_groups.png")
    for name in ("chelsea_sheet.png", "astronaut_groups.png"):
        print(OUT / name)


if __name__ == "__main__":
    main()
