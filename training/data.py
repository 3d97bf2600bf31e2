"""Image folders and the per-step batches of the modular-autoencoder trainer.

Every batch is a pure function of ``(seed, rank, step)``: resuming at step n draws exactly the
batches an uninterrupted run would have drawn, with no sampler state to save, and any number of
dataloader workers gives the same data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from scg_core.formats.images import load_image
from scg_core.model.pairs import pair_margin, sample_patch_pairs

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
log = logging.getLogger(__name__)


class ImageFolder:
    """All readable images under ``root`` (recursive), big enough for ``min_size`` crops.

    Files that cannot be read or are too small are skipped and counted in ``skipped``
    (``{path: reason}``), never fatal. Decoded images are kept in memory when ``cache`` is set.
    """

    def __init__(self, root: str | Path, min_size: int, cache: bool = True) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root} is not a folder")
        self.min_size = min_size
        self.cache: dict[int, Tensor] | None = {} if cache else None
        self.paths: list[Path] = []
        self.sizes: list[tuple[int, int]] = []  # (width, height) of each path, from its header
        self.skipped: dict[str, str] = {}
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            try:
                with Image.open(path) as img:
                    size = img.size
            except Exception as e:  # any decoder error means "not usable", whatever its type
                self.skipped[str(path)] = f"unreadable ({type(e).__name__})"
                continue
            if min(size) < min_size:
                self.skipped[str(path)] = f"too small ({size[0]}×{size[1]} < {min_size})"
                continue
            self.paths.append(path)
            self.sizes.append(size)
        if not self.paths:
            raise ValueError(f"no usable images under {root} (jpg/png/webp/bmp, at least {min_size} px); skipped: {len(self.skipped)}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def decoded_bytes(self) -> int:
        """What every image takes decoded as 8-bit RGB."""
        return sum(3 * w * h for w, h in self.sizes)

    def decode_all(self, progress: bool = False) -> Iterator[Tensor]:
        """Every usable image, in order, as ``[3,H,W]`` in [0,1]; files that fail to decode now are
        skipped (counted in ``skipped``)."""
        from tqdm.auto import tqdm

        for path in tqdm(self.paths, desc="decoding images", disable=not progress, unit="img"):
            try:
                yield load_image(path)[0]
            except Exception as e:
                self.skipped[str(path)] = f"failed to decode ({type(e).__name__})"
                log.warning("skipping %s: %s", path, e)

    def get(self, index: int) -> Tensor:
        """Image ``index`` as ``[3,H,W]`` in [0,1]; a file that fails to decode now is skipped
        (counted) and the next usable one is returned."""
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            if self.cache is not None and i in self.cache:
                return self.cache[i]
            path = self.paths[i]
            if str(path) in self.skipped:
                continue
            try:
                image = load_image(path)[0]
            except Exception as e:
                self.skipped[str(path)] = f"failed to decode ({type(e).__name__})"
                log.warning("skipping %s: %s", path, e)
                continue
            if self.cache is not None:
                self.cache[i] = image
            return image
        raise ValueError("every image in the folder failed to decode")


class PairBatches(torch.utils.data.Dataset):
    """``batches[step]`` → one training step's data for this rank.

    ``colour_augment`` (a probability; ``True`` = 1) permutes an image's RGB channels at random.
    ``chroma_gain`` > 1 scales each image's colour-opponent part (pixel minus its grey value) by a
    factor drawn uniformly from [1, chroma_gain]; values may leave [0,1] (the model is linear).

    Returns a dict: ``crops`` ``[B,3,c,c]`` (reconstruction), ``patches``, ``transformed``
    ``[N,3,p,p]`` and ``delta`` ``[N,3]`` (equivariance pairs), all in [0,1]; ``patches`` are
    ``[N,3,S,S]`` with ``S = context_patch`` when given (:func:`scg_core.model.pairs.context_side`).
    """

    def __init__(self, folder: ImageFolder, *, seed: int, rank: int, crop: int, batch: int,
                 pairs: int, patch: int, max_shift: float, images_per_step: int = 8, colour_augment: float = 0.0,
                 chroma_gain: float = 1.0, context_patch: int | None = None) -> None:
        self.folder, self.seed, self.rank, self.colour_augment = folder, seed, rank, colour_augment
        self.context_patch = context_patch
        self.crop, self.batch, self.pairs, self.patch, self.max_shift = crop, batch, pairs, patch, max_shift
        self.images_per_step, self.chroma_gain = images_per_step, chroma_gain

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 7_919 + step)
        picks = torch.randint(len(self.folder), (self.images_per_step,), generator=g).tolist()
        images = [self.folder.get(i) for i in picks]
        if self.colour_augment:
            # A random RGB channel order per image makes the colour statistics symmetric under
            # permutations: their principal axes become luminance and an isotropic chroma plane.
            # Below 1, only a share of the images is permuted: the chroma plane keeps the natural
            # images' preferred axes (no extra random draw at 1, so those runs stay as they were).
            p = float(self.colour_augment)
            images = [img[torch.randperm(3, generator=g)] if p >= 1 or float(torch.rand(1, generator=g)) < p else img
                      for img in images]
        if self.chroma_gain > 1:
            gains = 1 + (self.chroma_gain - 1) * torch.rand(len(images), generator=g)
            greys = [img.mean(0, keepdim=True) for img in images]
            images = [grey + gain * (img - grey) for img, grey, gain in zip(images, greys, gains.tolist(), strict=True)]
        crops = []
        for n in range(self.batch):
            img = images[n % len(images)]
            H, W = img.shape[-2:]
            y = int(torch.randint(H - self.crop + 1, (1,), generator=g))
            x = int(torch.randint(W - self.crop + 1, (1,), generator=g))
            crops.append(img[:, y : y + self.crop, x : x + self.crop])
        patches, transformed, delta = sample_patch_pairs(images, self.pairs, g, self.patch, self.max_shift, context_patch=self.context_patch)
        return {"crops": torch.stack(crops), "patches": patches, "transformed": transformed, "delta": delta}


def min_image_size(crop: int, patch: int, max_shift: float, context_patch: int | None = None) -> int:
    return max(crop, 2 * pair_margin(patch, max_shift, context_patch) + 1)
