"""Input validation at the public entry points: one call per tensor, messages that say the fix."""

from __future__ import annotations

import torch
from torch import Tensor


def check_image(x: Tensor, channels: int, min_size: int = 1, name: str = "image") -> None:
    """Raise a clear error unless ``x`` is a finite float ``[B, channels, H, W]`` image in ~[0,1].

    Values slightly outside [0,1] (resampling overshoot) are accepted; values that look like
    0–255 or [-1,1] data are refused, because they would silently give a wrong hint.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B,{channels},H,W], got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (a single image? add a batch dimension: x[None])" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape [B,{channels},H,W]; got {tuple(x.shape)}{hint}")
    if x.shape[1] != channels:
        hint = ""
        if x.shape[-1] == channels:
            hint = " — it looks channels-last [B,H,W,C] (a ComfyUI IMAGE?): use x.movedim(-1, 1)"
        elif x.shape[1] in (1, 2, 4):
            hint = " — convert grayscale/RGBA to RGB first (scg_core.formats.images.to_rgb)"
        raise ValueError(f"{name} must have {channels} channels at dim 1; got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0,1]; got {x.dtype} (for uint8 use x.float() / 255)")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(
            f"{name} is {x.shape[-1]}×{x.shape[-2]} pixels; the Modular AE needs at least "
            f"{min_size}×{min_size} (its receptive field). Upscale or pad the image first."
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not (lo == lo and hi == hi) or abs(lo) == float("inf") or abs(hi) == float("inf"):
        raise ValueError(f"{name} contains NaN or infinite values; the hint would be meaningless")
    if hi > 1.5:
        raise ValueError(f"{name} has values up to {hi:g}; expected [0,1] (0–255 data? divide by 255)")
    if lo < -0.5:
        raise ValueError(f"{name} has values down to {lo:g}; expected [0,1] ([-1,1] data? use (x + 1) / 2)")


def check_same_device(x: Tensor, module: torch.nn.Module, name: str = "image") -> None:
    p = next(module.parameters())
    if p.device != x.device:
        raise ValueError(
            f"{name} is on {x.device} but the Modular AE is on {p.device}; move one of them "
            f"(model.to({str(x.device)!r}) or x.to({str(p.device)!r}))"
        )
