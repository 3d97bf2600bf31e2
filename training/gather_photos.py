"""Gather the natural photographs that installable packages carry, for the bundled default.

    python -m training.gather_photos data/photos

Writes PNGs to ``DIR/train`` (scikit-image's colour photos and scikit-learn's china.jpg and
flower.jpg) and ``DIR/heldout`` (skimage's ``chelsea``, kept for evaluation). Needs
``pip install scikit-image scikit-learn`` (the ``train`` extra); nothing is downloaded.
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


def gather(out: Path) -> list[Path]:
    import skimage.data
    from sklearn.datasets import load_sample_image

    written = []
    for split, name, array in (
        [("train", n, getattr(skimage.data, n)()) for n in SKIMAGE_TRAIN]
        + [("train", Path(n).stem, load_sample_image(n)) for n in SKLEARN_TRAIN]
        + [("heldout", HELDOUT, getattr(skimage.data, HELDOUT)())]
    ):
        path = out / split / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8)).save(path)
        written.append(path)
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.gather_photos", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    for path in gather(p.parse_args(argv).out):
        print(path)


if __name__ == "__main__":
    main()
