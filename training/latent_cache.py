"""``--cache-latents``: VAE posteriors and text features computed once, stored, and reused.

One small safetensors file per image under the cache folder: ``latent_dist`` ``[8,R/8,R/8]``
(posterior mean and log-variance of the centre crop; a fresh latent is still sampled every step)
and ``text`` ``[n,77,D]`` (each caption of the image), fp16. ``cache.json`` records what the
features were computed from; a cache made for another base model or resolution is refused.
Building is shared out over the processes and resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file


class LatentCache:
    def __init__(self, folder: str | Path, signature: dict) -> None:
        self.folder, self.signature = Path(folder), signature

    def path(self, index: int) -> Path:
        return self.folder / f"{index:08d}.safetensors"

    def check_signature(self) -> None:
        marker = self.folder / "cache.json"
        if marker.is_file():
            found = json.loads(marker.read_text())
            if found != self.signature:
                raise ValueError(f"--cache-dir {self.folder} holds features of another setup ({found}); expected "
                                 f"{self.signature}. Delete the folder or pass another --cache-dir")

    @torch.no_grad()
    def build(self, data, samples, objective, rank: int, world: int, progress: bool, empty_text: torch.Tensor) -> int:
        """Compute the missing entries of this rank's share (items ``i ≡ rank mod world``)."""
        from tqdm.auto import tqdm

        self.folder.mkdir(parents=True, exist_ok=True)
        self.check_signature()
        if rank == 0:
            (self.folder / "cache.json").write_text(json.dumps(self.signature))
            save_file({"text": empty_text.half().cpu().contiguous()}, str(self.folder / "empty.safetensors"))
        todo = [i for i in range(rank, len(data), world) if not self.path(i).is_file()]
        g = torch.Generator()
        for i in tqdm(todo, desc="caching latents and text", disable=not progress, unit="img"):
            item = data.items[i]
            with Image.open(item.path) as img:
                pixels = samples.crop(img, g)[None]
            dist = objective.latent_distribution(pixels.to(objective.device))[0]
            text = objective.encode_text(list(item.captions) or [""])
            tmp = self.path(i).with_suffix(".tmp")
            save_file({"latent_dist": dist.half().cpu().contiguous(), "text": text.half().cpu().contiguous()}, str(tmp))
            os.replace(tmp, self.path(i))
        return len(todo)

    def load(self, index: int, caption_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent_dist ``[8,h,w]``, text ``[77,D]``) of an item; ``caption_index`` −1 = empty caption."""
        entry = load_file(str(self.path(index)))
        if caption_index < 0:
            return entry["latent_dist"], load_file(str(self.folder / "empty.safetensors"))["text"][0]
        return entry["latent_dist"], entry["text"][caption_index]
