"""The metrics of the paper's Table 1, from torchmetrics (docs/evaluation.md).

Every function takes images ``[B,3,H,W] float in [0,1]``, generated and original at the same size.

* PSNR and SSIM on colour images and on grey ones (ITU-R BT.601 luma), per image, data range 1
  (SSIM: Gaussian window 11, σ 1.5 — torchmetrics' and the SSIM paper's defaults).
* CLIP: the cosine of the CLIP image embeddings of generated and original (the paper's CLIP column,
  0.8–0.96), and the usual CLIP score of generated image and caption (``100·cos``, 0–100).
* FID between the generated and the original images' Inception features.

The feature networks never download: CLIP comes from a local folder (``CLIPModel.from_pretrained``
layout) and Inception from a local weights file (torch-fidelity's ``pt_inception-2015-12-05``), or
any ``nn.Module`` a caller passes (the tests use small stand-ins).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE


class MissingMetricWeights(FileNotFoundError):
    """A feature network's weights are not on this machine; the message says what to download."""


def to_grey(images: Tensor) -> Tensor:
    """``[B,3,H,W]`` → ``[B,1,H,W]`` luma in [0,1]."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def psnr_ssim(generated: Tensor, original: Tensor) -> dict[str, Tensor]:
    """Per image ``[B]``: ``psnr_gray``, ``psnr_color`` (dB) and ``ssim_gray``, ``ssim_color``."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if generated.shape != original.shape or generated.ndim != 4 or generated.shape[1] != 3:
        raise ValueError(f"generated {tuple(generated.shape)} and original {tuple(original.shape)} must both be [B,3,H,W]")
    out = {}
    for name, (a, b) in {"gray": (to_grey(generated), to_grey(original)), "color": (generated, original)}.items():
        a, b = a.double(), b.double()
        out[f"psnr_{name}"] = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3)).float()
        out[f"ssim_{name}"] = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none").float()
    return out


CLIP_DEFAULT = "openai/clip-vit-large-patch14"


def cached_clip() -> Path | None:
    """The Hugging Face cache's copy of :data:`CLIP_DEFAULT`, if one was downloaded before."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(CLIP_DEFAULT, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def cached_inception() -> Path | None:
    """torch-fidelity's Inception in torch's hub cache, where torch-fidelity keeps it, if present."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return path if path.is_file() else None


def load_clip(path: str | Path | None) -> Callable[[], tuple[nn.Module, object]]:
    """A loader for :class:`torchmetrics.multimodal.CLIPScore` from a local CLIP folder (``None``:
    the Hugging Face cache's copy of :data:`CLIP_DEFAULT`, if any)."""
    path = path if path is not None else cached_clip()
    if path is None or not (Path(path) / "config.json").is_file():
        raise MissingMetricWeights(
            f"CLIP weights not found{f' in {path}' if path else ''}: pass --clip DIR, a folder holding a CLIP model "
            "as transformers saves it (config.json, model.safetensors, the tokenizer and preprocessor files), e.g. "
            "openai/clip-vit-large-patch14 downloaded on a machine with internet "
            "(`huggingface-cli download openai/clip-vit-large-patch14 --local-dir clip-vit-large-patch14`)")

    def load() -> tuple[nn.Module, object]:
        from transformers import CLIPModel, CLIPProcessor

        return CLIPModel.from_pretrained(path, local_files_only=True).eval(), CLIPProcessor.from_pretrained(path, local_files_only=True)

    return load


def fid_metric(inception: str | Path | nn.Module | None, device: torch.device | str = "cpu"):
    """torchmetrics' FID over torch-fidelity's Inception (2048 features) read from a local weights
    file (``None``: torch-fidelity's copy in torch's hub cache, if any), or over any module mapping uint8 ``[B,3,H,W]`` to ``[B,F]`` features (tests)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    # the originals are the same images for every group: their features are computed once and
    # kept across reset(), which clears only the generated images' features
    if isinstance(inception, nn.Module):
        return FrechetInceptionDistance(feature=inception, reset_real_features=False).to(device)
    inception = inception if inception is not None else cached_inception()
    if inception is None or not Path(inception).is_file():
        raise MissingMetricWeights(
            f"Inception weights for FID not found{f' at {inception}' if inception else ''}: pass --inception FILE, "
            f"the file {INCEPTION_FILE} (torch-fidelity's FID Inception, {INCEPTION_URL}) downloaded on a machine "
            "with internet")
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        raise MissingMetricWeights("FID with the standard Inception needs torch-fidelity: pip install -e '.[fid]' (it "
                                   "needs torchvision: install the torch and torchvision builds that match first)")
    return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(inception),
                                    reset_real_features=False).to(device)


def clip_metric(loader: Callable[[], tuple[nn.Module, object]], device: torch.device | str = "cpu"):
    """torchmetrics' CLIPScore over the CLIP model ``loader`` gives (:func:`load_clip`)."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    return CLIPScore(model_name_or_path=loader).to(device)


class Scores:
    """Accumulates one group's metrics over batches.

    Args:
        clip: torchmetrics' CLIPScore (:func:`clip_metric`), shared by every group, or None.
        fid: torchmetrics' FID (:func:`fid_metric`), shared by every group, or None. It is reset
            here for this group's generated images.
        score_real: add the originals' features to ``fid`` (once, for the first group).
    """

    def __init__(self, clip, fid, score_real: bool = True) -> None:
        self.per_image: dict[str, list[Tensor]] = {}
        self.clip, self.fid, self.score_real = clip, fid, score_real
        self.clip_text_sum, self.count = 0.0, 0
        if fid is not None:
            fid.reset()

    def update(self, generated: Tensor, original: Tensor, captions: Sequence[str]) -> dict[str, Tensor]:
        """Add a batch; returns its per-image PSNR/SSIM (and ``clip_image``, ``[B]``, when CLIP is on)."""
        per = psnr_ssim(generated, original)
        generated8, original8 = _uint8(generated), _uint8(original)
        if self.clip is not None:
            per["clip_image"] = torch.stack([self.clip(g[None], o[None]).detach() / 100
                                             for g, o in zip(generated8, original8, strict=True)]).cpu()
            self.clip_text_sum += float(self.clip(list(generated8), list(captions)).detach()) * len(captions)
        if self.fid is not None:
            if self.score_real:
                self.fid.update(original8, real=True)
            self.fid.update(generated8, real=False)
        for k, v in per.items():
            self.per_image.setdefault(k, []).append(v.cpu())
        self.count += generated.shape[0]
        return per

    def compute(self) -> dict[str, float]:
        """Means over every image added; ``clip_text`` (0–100) and ``fid`` when enabled."""
        out = {k: float(torch.cat(v).mean()) for k, v in self.per_image.items()}
        if self.clip is not None:
            out["clip_text"] = self.clip_text_sum / max(self.count, 1)
        if self.fid is not None:
            out["fid"] = float(self.fid.compute()) if self.count >= 2 else float("nan")
        out["images"] = self.count
        return out


def _uint8(images: Tensor) -> Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)

