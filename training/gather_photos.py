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


def gather(out: Path, mate: Path | None = None) -> list[Path]:
    """Write the photos; returns their paths. ``mate``: the ``mate-backgrounds`` nature folder to add."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    written, sources = [], []
    for split, name, array, source in (
        [("train", n, getattr(skimage.data, n)(), "scikit-image `skimage.data`") for n in SKIMAGE_TRAIN]
        + [("train", Path(n).stem, load_sample_image(n), "scikit-learn `load_sample_image`") for n in SKLEARN_TRAIN]
        + [("heldout", HELDOUT, getattr(skimage.data, HELDOUT)(), "scikit-image `skimage.data`")]
        + _mate(mate)
    ):
        path = out / split / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8)).save(path)
        written.append(path)
        sources.append(f"| {split}/{name}.png | {source} |")
    (out / "SOURCES.md").write_text("| file | source and licence |\n|---|---|\n" + "\n".join(sources) + "\n"
                                    "\nscikit-image and scikit-learn sample data: see their packages' licence files "
                                    "(BSD-3-Clause; the individual photos' terms are listed there).\n")
    return written


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
    args = p.parse_args(argv)
    for path in gather(args.out, args.mate_backgrounds):
        print(path)


if __name__ == "__main__":
    main()
