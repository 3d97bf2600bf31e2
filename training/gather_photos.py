"""Gather the natural photographs that installable packages carry, for the bundled default.

    python -m training.gather_photos data/photos
    sudo apt-get install mate-backgrounds && python -m training.gather_photos data/photos --mate-backgrounds

Writes PNGs to ``DIR/train`` (scikit-image's colour photos and scikit-learn's china.jpg and
flower.jpg) and ``DIR/heldout`` (skimage's ``chelsea``, kept for evaluation). Needs
``pip install scikit-image scikit-learn`` (the ``train`` extra); nothing is downloaded.

``--mate-backgrounds [DIR]`` adds the twelve nature photographs of Debian's ``mate-backgrounds``
package (GPL-2+, authors in its ``/usr/share/doc/mate-backgrounds/copyright``), scaled to 512 px on
the shorter side like the others; three of them (``MATE_HELDOUT``) go to ``heldout``. Every file
written is listed with its source and licence in ``DIR/SOURCES.md``.

``--scales 1 0.7071 0.5`` also writes each training photo scaled by each factor below 1 (Lanczos;
``NAME_x0.71.png``), a scale pyramid in which a crop holds more of a scene; the held-out photos are
never scaled. Copies whose shorter side would fall under ``MIN_SIDE`` pixels are skipped.

``--band-pass 4`` also writes the first four band-pass levels of each training photo
(``NAME_bp0.png`` …, :mod:`training.band_pass`), each stretched to a standard deviation of
``--band-pass-std`` around grey; levels whose shorter side would fall under ``BAND_MIN_SIDE`` are
skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

# Natural colour photographs that skimage ships in its wheel (no pooch download needed).
# Excluded: colorwheel and logo (synthetic), cat (the same photo as chelsea).
SKIMAGE_TRAIN = ["astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina"]
SKLEARN_TRAIN = ["china.jpg", "flower.jpg"]
HELDOUT = "chelsea"
MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
MATE_HELDOUT = ["LadyBird", "Storm", "Wood"]
SIDE = 512  # shorter side of the wallpapers once scaled: the scale of the scikit-image photos
MIN_SIDE = 160  # the smallest scaled copy kept: a 128-px crop plus the ±8 px pair windows' margin
BAND_MIN_SIDE = 128  # the smallest band-pass level kept: one 128-px crop (the pairs are drawn inside the crops)


def gather(out: Path, mate: Path | None = None, scales: tuple[float, ...] = (1.0,), band_pass: int = 0,
           band_pass_std: float | None = 0.12) -> list[Path]:
    """Write the photos; returns their paths. ``mate``: the ``mate-backgrounds`` nature folder to add;
    ``scales``: factors in (0, 1]; each training photo is also written scaled by those below 1;
    ``band_pass``: band-pass levels written per training photo, each at standard deviation
    ``band_pass_std`` (``None``: as they are)."""
    if any(not 0 < f <= 1 for f in scales):
        raise SystemExit(f"error: --scales must lie in (0, 1]; got {list(scales)}")
    if band_pass < 0 or (band_pass_std is not None and not 0 < band_pass_std < 0.5):
        raise SystemExit(f"error: --band-pass needs levels ≥ 0 and --band-pass-std in (0, 0.5); "
                         f"got {band_pass} and {band_pass_std}")
    import skimage.data
    from sklearn.datasets import load_sample_image

    written, sources = [], []
    for split, name, array, source in (
        [("train", n, getattr(skimage.data, n)(), "scikit-image `skimage.data`") for n in SKIMAGE_TRAIN]
        + [("train", Path(n).stem, load_sample_image(n), "scikit-learn `load_sample_image`") for n in SKLEARN_TRAIN]
        + [("heldout", HELDOUT, getattr(skimage.data, HELDOUT)(), "scikit-image `skimage.data`")]
        + _mate(mate)
    ):
        image = Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8))
        for factor in sorted({1.0, *scales}, reverse=True) if split == "train" else [1.0]:
            side = round(min(image.size) * factor)
            if factor < 1 and side < MIN_SIDE:
                continue
            stem = name if factor == 1 else f"{name}_x{factor:.2f}"
            path = out / split / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            scaled = image if factor == 1 else image.resize(
                (round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
            scaled.save(path)
            written.append(path)
            sources.append(f"| {split}/{stem}.png | {source}{'' if factor == 1 else f', scaled by {factor:g}'} |")
        if split == "train" and band_pass:
            for path, note in _band_pass(image, out / split, name, band_pass, band_pass_std):
                written.append(path)
                sources.append(f"| {split}/{path.name} | {source}, {note} |")
    (out / "SOURCES.md").write_text("| file | source and licence |\n|---|---|\n" + "\n".join(sources) + "\n"
                                    "\nscikit-image and scikit-learn sample data: see their packages' licence files "
                                    "(BSD-3-Clause; the individual photos' terms are listed there).\n")
    return written


def _band_pass(image: Image.Image, folder: Path, name: str, levels: int, std: float | None) -> list[tuple[Path, str]]:
    import torch

    from .band_pass import band_pass_levels, to_uint8

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    out = []
    for i, band in enumerate(band_pass_levels(pixels, levels, BAND_MIN_SIDE)[0]):
        shown, gain, clipped = to_uint8(band, std)
        path = folder / f"{name}_bp{i}.png"
        Image.fromarray(shown.permute(1, 2, 0).numpy()).save(path)
        out.append((path, f"band-pass level {i} (0.5 + {gain:.2f}·band, {100 * clipped:.2f}% clipped)"))
    return out


def _mate(folder: Path | None) -> list[tuple[str, str, np.ndarray, str]]:
    if folder is None:
        return []
    photos = sorted(folder.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"error: no .jpg photos in {folder}: install them with `sudo apt-get install mate-backgrounds`")
    out = []
    for path in photos:
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = SIDE / min(im.size)
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        split = "heldout" if path.stem in MATE_HELDOUT else "train"
        out.append((split, f"mate_{path.stem}", np.asarray(im), f"Debian `mate-backgrounds` {path.name}, GPL-2+"))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.gather_photos", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--mate-backgrounds", type=Path, nargs="?", const=MATE_NATURE, metavar="DIR",
                   help=f"also the nature photos of Debian's mate-backgrounds (default folder: {MATE_NATURE})")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="F",
                   help="also write each training photo scaled by these factors < 1 (a scale pyramid), e.g. 1 0.7071 0.5")
    p.add_argument("--band-pass", type=int, default=0, metavar="LEVELS",
                   help="also write this many band-pass (difference-of-Gaussians) levels of each training photo")
    p.add_argument("--band-pass-std", type=float, default=0.12, metavar="S",
                   help="standard deviation each band-pass level is stretched to around grey; 0: leave them as they are")
    args = p.parse_args(argv)
    std = args.band_pass_std or None
    for path in gather(args.out, args.mate_backgrounds, tuple(args.scales), args.band_pass, std):
        print(path)


if __name__ == "__main__":
    main()
