"""Regenerate the README's pictures from the bundled default autoencoder.

    python docs/make_figures.py
"""

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

import scg_core
from scg_core.formats.images import load_image, tensor_to_pil
from scg_core.model.groups import with_gains
from scg_core.tools.hint_range import CONTRAST_HEADROOM
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


def contrast_figure(ae: scg_core.ModularAE, paths: list[Path], tile: int = 220) -> Image.Image:
    """Per picture (a column): the input, its edges hint at one fixed gain per edge group (the
    median factor of the calibration photos: the stored largest factor / the calibration's
    headroom), and at each picture's own contrast (what ``hint`` gives)."""
    headroom = CONTRAST_HEADROOM
    edges = [g for g in ae.groups if g.label == "edges" and g.span]
    fixed = scg_core.ModularAE(ae.config, groups=with_gains(
        ae.groups, {g.name: g.gain / headroom for g in edges}, spans={g.name: None for g in edges}),
        phase_average=ae.phase_average)
    fixed.load_state_dict(ae.state_dict())
    gains = ", ".join(f"x{g.gain / headroom:.2g}" for g in edges)
    rows = [("input", lambda x: x), (f"edges, fixed gain {gains}", lambda x: fixed.hint(x, ["edges"])),
            ("edges, contrast per image", lambda x: ae.hint(x, ["edges"]))]
    images = [load_image(p) for p in paths]
    h = max(round(tile * x.shape[-2] / x.shape[-1]) for x in images)
    sheet = Image.new("RGB", (tile * len(images), len(rows) * (h + 18)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    with torch.inference_mode():
        for r, (label, show) in enumerate(rows):
            for c, x in enumerate(images):
                picture = tensor_to_pil(show(x)[0]).resize((tile, round(tile * x.shape[-2] / x.shape[-1])), Image.Resampling.LANCZOS)
                sheet.paste(picture, (c * tile, r * (h + 18) + 18))
                draw.text((c * tile + 4, r * (h + 18) + 3), f"{label}: {paths[c].stem}" if r == 0 else label,
                          fill=(235, 235, 235), font=ImageFont.load_default())
    return sheet


def phase_figure(ae: scg_core.ModularAE, image: torch.Tensor, group: str, box: tuple[int, int, int], zoom: int = 2) -> Image.Image:
    """A crop (``box`` = top, left, side) of ``group``'s hint decoded from one code grid and
    phase-averaged, each for the image, for the image moved one pixel (moved back here) and their
    difference: what differs is what does not move with the image."""
    top, left, side = box
    one_grid = scg_core.ModularAE(ae.config, groups=ae.groups)
    one_grid.load_state_dict(ae.state_dict())
    averaged = scg_core.ModularAE(ae.config, groups=ae.groups, phase_average=True)
    averaged.load_state_dict(ae.state_dict())
    crop = lambda x, dx=0: x[0, :, top:top + side, left + dx:left + dx + side]
    moved = image[..., :, 1:]  # the picture one pixel to the left; its pixel x is the original's x + 1
    tiles = [("input", crop(image, 1))]
    with torch.inference_mode():
        for name, model in (("one grid", one_grid), ("phase-averaged", averaged)):
            still, shifted = crop(model.hint(image, [group]), 1), crop(model.hint(moved, [group]))
            tiles += [(f"{group}, {name}", still), ("image moved 1 px", shifted),
                      ("difference x4", (4 * (still - shifted).abs()).clamp(0, 1))]
    size = side * zoom
    sheet = Image.new("RGB", (size * len(tiles), size + 18), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for n, (label, x) in enumerate(tiles):
        sheet.paste(tensor_to_pil(x).resize((size, size), Image.Resampling.NEAREST), (n * size, 18))
        draw.text((n * size + 4, 3), label, fill=(235, 235, 235), font=ImageFont.load_default())
    return sheet


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ae = scg_core.load_default()
    chelsea = load_image(ROOT / "photos" / "chelsea.jpg")
    decomposition_sheet(ae, chelsea, tile=192).save(OUT / "chelsea_sheet.png")
    group_gallery(ae, load_image(ROOT / "photos" / "astronaut.jpg")).save(OUT / "astronaut_groups.png")
    inputs = ROOT / "workflows" / "images"
    contrast_figure(ae, [ROOT / "photos" / "chelsea.jpg", inputs / "scg_hazy.png", inputs / "scg_sketch.png"]).save(
        OUT / "edges_contrast.jpg", quality=90, optimize=True)
    phase_figure(ae, chelsea, "edges_fine", (60, 200, 72)).save(OUT / "phase_average.png")
    for name in ("chelsea_sheet.png", "astronaut_groups.png", "edges_contrast.jpg", "phase_average.png"):
        print(OUT / name)


if __name__ == "__main__":
    main()
