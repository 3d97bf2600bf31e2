"""ComfyUI IMAGE ↔ scg_core tensors, devices, progress and interruption, in one place.

ComfyUI images are ``[B,H,W,C]`` float in [0,1] (channels last); scg_core takes ``[B,3,H,W]``.
Outside ComfyUI (offline tests) the ComfyUI hooks fall back to the CPU and do nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .deps import scg_core


def _model_management():
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return mm


def compute_device() -> torch.device:
    mm = _model_management()
    return torch.device("cpu") if mm is None else mm.get_torch_device()


def output_device() -> torch.device:
    mm = _model_management()
    return torch.device("cpu") if mm is None else mm.intermediate_device()


def check_interrupted() -> None:
    mm = _model_management()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI's progress bar (shown on the node), or nothing outside ComfyUI."""

    def __init__(self, total: int):
        try:
            import comfy.utils

            self._bar = comfy.utils.ProgressBar(total)
        except ImportError:
            self._bar = None

    def step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)


def image_to_rgb(image: Tensor, name: str = "image") -> Tensor:
    """A ComfyUI IMAGE ``[B,H,W,C]`` (C = 1–4; float in [0,1] or uint8) → ``[B,3,H,W]`` float32."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{name}: expected a ComfyUI IMAGE (a torch tensor [B,H,W,C]), got {type(image).__name__}")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{name}: expected a ComfyUI IMAGE [B,H,W,C] with 1–4 channels, got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        image = image.float() / 255
    elif not image.is_floating_point():
        raise TypeError(f"{name}: expected float values in [0,1] (or uint8), got {image.dtype}")
    return scg_core().formats.images.to_rgb(image.float().movedim(-1, 1))


def for_each_image(images: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply ``fn`` to each ``[1,3,H,W]`` image of a batch with a progress bar and honouring
    ComfyUI's cancel button; results are concatenated on ComfyUI's intermediate device."""
    progress, out = Progress(images.shape[0]), []
    for i in range(images.shape[0]):
        check_interrupted()
        out.append(fn(images[i : i + 1]).to(output_device()))
        progress.step()
    return torch.cat(out)


def to_comfy_image(x: Tensor) -> Tensor:
    """``[B,3,H,W]`` → ComfyUI IMAGE ``[B,H,W,3]`` float32, contiguous."""
    return x.movedim(1, -1).float().contiguous()
