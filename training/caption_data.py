"""Captioned image collections for ControlNet training, and the per-step batches drawn from them.

Three layouts (captions are always optional):

* a folder of images with same-name ``.txt`` captions (``cat.jpg`` + ``cat.txt``), recursive;
* ``metadata.jsonl`` in the folder (the Hugging Face *imagefolder* convention): one JSON object per
  line with ``file_name`` and a caption column (``text`` by default);
* COCO captions: ``--captions captions_train2017.json`` + the image folder; an image with several
  captions gets one of them drawn per step.

Like ``training.data``, every micro-batch is a pure function of ``(seed, rank, micro-step)``, so
``--resume`` draws exactly the samples an uninterrupted run would have drawn, with any number of
dataloader workers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from scg_core.formats.images import pil_to_tensor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
log = logging.getLogger(__name__)


@dataclass
class Item:
    path: Path
    captions: tuple[str, ...]


class CaptionedImages:
    """The usable images of a collection with their captions.

    Unreadable or too-small files are skipped and counted in ``skipped`` (``{path: reason}``).

    Args:
        root: image folder.
        captions: a COCO-style captions JSON (``images`` + ``annotations``); default: the folder's
            ``metadata.jsonl`` if present, else same-name ``.txt`` files.
        caption_column: the caption field of ``metadata.jsonl``.
        min_size: smallest accepted image side in pixels.
        progress: show a progress bar while scanning.
    """

    def __init__(self, root: str | Path, captions: str | Path | None = None, *, caption_column: str = "text",
                 min_size: int = 64, progress: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"--data {self.root} is not a folder")
        if captions is not None:
            self.layout, candidates = "coco", _coco_items(self.root, Path(captions))
        elif (self.root / "metadata.jsonl").is_file():
            self.layout, candidates = "metadata.jsonl", _jsonl_items(self.root, caption_column)
        else:
            self.layout, candidates = "folder", _folder_items(self.root)
        self.items: list[Item] = []
        self.skipped: dict[str, str] = {}
        if progress:
            from tqdm.auto import tqdm

            candidates = tqdm(candidates, desc="scanning images", unit="img", leave=False)
        for item in candidates:
            reason = _unusable(item.path, min_size)
            if reason:
                self.skipped[str(item.path)] = reason
            else:
                self.items.append(item)
        if not self.items:
            raise ValueError(f"no usable images in {self.root} ({self.layout} layout; jpg/png/webp/bmp of at least "
                             f"{min_size} px); skipped: {len(self.skipped)}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def captioned(self) -> int:
        return sum(1 for item in self.items if item.captions)


def _unusable(path: Path, min_size: int) -> str:
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as img:
            size = img.size
    except Exception as e:  # any decoder error means "not usable", whatever its type
        return f"unreadable ({type(e).__name__})"
    if min(size) < min_size:
        return f"too small ({size[0]}×{size[1]} < {min_size})"
    return ""


def _folder_items(root: Path) -> list[Item]:
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        txt = path.with_suffix(".txt")
        caption = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else ""
        items.append(Item(path, (caption,) if caption else ()))
    return items


def _jsonl_items(root: Path, column: str) -> list[Item]:
    items = []
    for n, line in enumerate((root / "metadata.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = row["file_name"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{root / 'metadata.jsonl'} line {n}: expected a JSON object with 'file_name' ({e})") from e
        caption = row.get(column) or ""
        captions = tuple(c for c in caption if c) if isinstance(caption, list) else ((str(caption),) if caption else ())
        items.append(Item(root / name, captions))
    return items


def _coco_items(root: Path, captions: Path) -> list[Item]:
    if not captions.is_file():
        raise FileNotFoundError(f"--captions {captions} not found")
    try:
        data = json.loads(captions.read_text(encoding="utf-8"))
        names = {img["id"]: img["file_name"] for img in data["images"]}
        by_image: dict[int, list[str]] = {i: [] for i in names}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(str(ann["caption"]).strip())
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"--captions {captions} is not a COCO captions file (images + annotations): {e}") from e
    return [Item(root / names[i], tuple(c for c in by_image[i] if c)) for i in sorted(names)]


class TrainingSamples(torch.utils.data.Dataset):
    """``samples[micro_step]`` → this rank's micro-batch for that micro-step.

    Returns a dict: ``pixels`` ``[B,3,R,R]`` float in [0,1], ``captions`` (list of B strings, ``""``
    for an unconditional sample), ``group`` ``[B]`` (a group number drawn per sample, used with
    ``--random-groups``) and, with a ``cache``, ``latent_dist`` ``[B,8,R/8,R/8]`` and ``text``
    ``[B,77,D]`` (fp16).

    Args:
        data: the collection.
        resolution: training side R; images are resized (shorter side → R) and cropped.
        batch: samples per micro-batch and process; ``world``: number of processes.
        center_crop / random_flip: crop in the centre instead of at random; mirror half the samples.
        proportion_empty_prompts: share of samples trained with the empty caption.
        num_groups: how many groups ``group`` is drawn from.
    """

    def __init__(self, data: CaptionedImages, *, resolution: int, batch: int, seed: int, rank: int, world: int,
                 center_crop: bool = False, random_flip: bool = False, proportion_empty_prompts: float = 0.0,
                 num_groups: int = 1, cache=None) -> None:
        self.cache = cache  # a LatentCache: add stored latents and text features to each batch
        self.data, self.resolution, self.batch, self.seed = data, resolution, batch, seed
        self.rank, self.world, self.center_crop, self.random_flip = rank, world, center_crop, random_flip
        self.proportion_empty_prompts, self.num_groups = proportion_empty_prompts, num_groups

    def __len__(self) -> int:
        return 2**62

    def positions(self, micro_step: int) -> list[int]:
        """Global sample positions of this rank's micro-batch (epoch-major order over all ranks)."""
        first = (micro_step * self.world + self.rank) * self.batch
        return list(range(first, first + self.batch))

    def item_index(self, position: int) -> int:
        """Which item sits at a global position: a fresh permutation of the collection per epoch."""
        n = len(self.data)
        epoch, offset = divmod(position, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        return int(perm[offset])

    def sample(self, position: int) -> tuple[Tensor, str, int, int, int]:
        """(pixels ``[3,R,R]``, caption, caption number or −1 for empty, item number, group number)."""
        g = torch.Generator().manual_seed(self.seed * 7_368_787 + position)
        index = self.item_index(position)
        for attempt in range(len(self.data)):
            item = self.data.items[(index + attempt) % len(self.data)]
            try:
                with Image.open(item.path) as img:
                    pixels = self.crop(img, g)
                break
            except Exception as e:  # decoded fine at scan time, fails now: skip, never crash
                log.warning("skipping %s: %s", item.path, e)
        else:
            raise ValueError("every image of the collection failed to decode")
        which = int(torch.randint(len(item.captions), (1,), generator=g)) if item.captions else -1
        if float(torch.rand(1, generator=g)) < self.proportion_empty_prompts:
            which = -1
        group = int(torch.randint(self.num_groups, (1,), generator=g))
        caption = item.captions[which] if which >= 0 else ""
        return pixels, caption, which, (index + attempt) % len(self.data), group

    def crop(self, img: Image.Image, g: torch.Generator) -> Tensor:
        """Shorter side → R (antialiased), then an R×R crop; ``[3,R,R]`` float in [0,1]."""
        R = self.resolution
        img = img.convert("RGB")
        scale = R / min(img.size)
        w, h = max(R, round(img.width * scale)), max(R, round(img.height * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
        if self.center_crop:
            x, y = (w - R) // 2, (h - R) // 2
        else:
            x = int(torch.randint(w - R + 1, (1,), generator=g))
            y = int(torch.randint(h - R + 1, (1,), generator=g))
        pixels = pil_to_tensor(img.crop((x, y, x + R, y + R)))[0]
        if self.random_flip and float(torch.rand(1, generator=g)) < 0.5:
            pixels = pixels.flip(-1)
        return pixels

    def __getitem__(self, micro_step: int) -> dict:
        samples = [self.sample(p) for p in self.positions(micro_step)]
        batch = {
            "pixels": torch.stack([s[0] for s in samples]),
            "captions": [s[1] for s in samples],
            "group": torch.tensor([s[4] for s in samples]),
        }
        if self.cache is not None:
            stored = [self.cache.load(s[3], s[2]) for s in samples]
            batch["latent_dist"] = torch.stack([d for d, _ in stored])
            batch["text"] = torch.stack([t for _, t in stored])
        return batch


def describe(data: CaptionedImages) -> str:
    return (f"{len(data)} images ({data.layout} layout, {data.captioned} with captions), "
            f"{len(data.skipped)} skipped")
