"""A small folder of training images for the trainers' tests: five 96×80 patterns (some in a
subfolder), an unreadable file and a too-small image."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(root: Path, nested=lambda n: n % 2 == 1, caption=lambda n: None) -> Path:
    """``nested(n)``: put image n in ``nested/``; ``caption(n)``: its ``.txt`` caption (None: none)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:96] / 80.0
    for n in range(5):
        a = np.stack([np.sin(6 * xx + n), np.cos(5 * yy - n), np.sin(4 * (xx + yy) * (n + 1))], -1)
        a = (a * 0.4 + 0.5 + rng.normal(0, 0.03, a.shape)).clip(0, 1)
        sub = root / ("nested" if nested(n) else "")
        sub.mkdir(exist_ok=True)
        Image.fromarray((a * 255).astype(np.uint8)).save(sub / f"img{n}.png")
        if (text := caption(n)) is not None:
            (sub / f"img{n}.txt").write_text(text)
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    Image.new("RGB", (20, 20)).save(root / "small.png")
    return root
