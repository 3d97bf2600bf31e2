"""Reading and writing image files as ``[1,3,H,W]`` float tensors in [0,1].

Grayscale, palette, CMYK, RGBA/LA and 16-bit images are accepted and converted to RGB. Images with
transparency are composited over white, so a transparent sketch becomes dark lines on white.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

# What save_image writes: the suffix picks the format (8-bit RGB; png is lossless).
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


class ImageError(ValueError):
    """An input that is not a usable image, with the reason in the message."""


def load_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as ``[1,3,H,W]`` float32 in [0,1]."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image; give one image file (png, jpg, webp …)")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_tensor(img)
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image PIL can read (png, jpg, webp, bmp, tiff …)") from None
    except (OSError, SyntaxError) as e:
        raise ImageError(f"{path} could not be decoded ({e}); the file may be truncated or damaged") from e


def pil_to_tensor(img: Image.Image) -> Tensor:
    """Any PIL image → ``[1,3,H,W]`` float32 in [0,1]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: scale by the type's range, not by 255.
        a = np.asarray(img).astype(np.float32)
        a = a / (65535.0 if img.mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(a.max()))
        return to_rgb(torch.from_numpy(np.clip(a, 0, 1))[None, None])
    if img.mode == "F":
        a = np.asarray(img).astype(np.float32)
        if not np.isfinite(a).all():
            raise ImageError("the image contains NaN or infinite values")
        return to_rgb(torch.from_numpy(np.clip(a, 0, 1))[None, None])
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float().div_(255.0)


def to_rgb(x: Tensor) -> Tensor:
    """``[B,C,H,W]`` with C = 1 (gray), 2 (gray+alpha), 3 or 4 (RGBA) → ``[B,3,H,W]``;
    alpha is composited over white."""
    c = x.shape[1]
    if c == 3:
        return x
    if c == 1:
        return x.expand(-1, 3, -1, -1)
    if c in (2, 4):
        color, alpha = x[:, :-1], x[:, -1:]
        color = color.expand(-1, 3, -1, -1) if c == 2 else color
        return color * alpha + (1 - alpha)
    raise ImageError(f"cannot make RGB from {c} channels; expected 1, 2, 3 or 4")


def tensor_to_pil(x: Tensor) -> Image.Image:
    """``[3,H,W]`` or ``[1,3,H,W]`` in [0,1] → 8-bit RGB PIL image (rounded, clamped)."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    a = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a, "RGB")


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` if :func:`save_image` can write it, else ``ImageError`` saying why: it is a folder, or
    its suffix is not one of ``SAVE_FORMATS``. A missing parent folder is allowed (it is created)."""
    path = Path(path)
    known = ", ".join(SAVE_FORMATS)
    if path.is_dir():
        raise ImageError(f"output {path} is a folder; give a file name such as {path / 'out.png'}")
    if not path.suffix:
        raise ImageError(f"output {path} has no file extension; end it with one of {known} (e.g. {path}.png)")
    if path.suffix.lower() not in SAVE_FORMATS:
        raise ImageError(f"output {path}: cannot write {path.suffix!r} images; use one of {known}")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise ImageError(f"output {path}: {parent} is a file, not a folder")
    return path


def save_image(x: Tensor | Image.Image, path: str | os.PathLike) -> Path:
    """Write ``[3,H,W]``/``[1,3,H,W]`` in [0,1] (or a PIL image) as an 8-bit image; the suffix picks
    the format (see ``SAVE_FORMATS``). Missing parent folders are created."""
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (x if isinstance(x, Image.Image) else tensor_to_pil(x)).save(path, format=SAVE_FORMATS[path.suffix.lower()])
    return path


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``[B,C,H,W]`` float in [0,1] → ``[B,C,H',W']`` float in [0,1], ``size = (H', W')``.

    The one resampling every host uses before a hint (the CLI's ``--short-side``, the A1111/Forge
    preprocessor's resolution, the generation size of both hosts' ControlNet paths): antialiased
    bicubic, torch's port of PIL's ``BICUBIC`` filter, so it runs on any device, on float input
    (no 8-bit round trip), and a smaller hint does not alias fine lines. Clamped because bicubic
    overshoots at edges. Returns ``x`` itself when it already has that size.

    >>> resize(torch.rand(1, 3, 40, 60), (20, 30)).shape
    torch.Size([1, 3, 20, 30])
    """
    H, W = (int(n) for n in size)
    if H < 1 or W < 1:
        raise ValueError(f"resize: size {(H, W)} must be at least 1×1 pixels")
    if tuple(x.shape[-2:]) == (H, W):
        return x
    return torch.nn.functional.interpolate(x, size=(H, W), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def short_side_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """``(H', W')`` of an ``h``×``w`` image whose shorter side is scaled to ``short_side``."""
    scale = short_side / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_short_side(x: Tensor, short_side: int) -> Tensor:
    """``[B,C,H,W]`` in [0,1] → the same aspect ratio with the shorter side ``short_side`` pixels
    (see :func:`resize`); ``x`` itself when it already is.

    >>> resize_short_side(torch.rand(1, 3, 96, 120), 48).shape
    torch.Size([1, 3, 48, 60])
    """
    if int(short_side) < 1:
        raise ValueError(f"short side {short_side}: must be at least 1 pixel")
    return resize(x, short_side_size(*x.shape[-2:], int(short_side)))


def fit_to_size(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Scale ``[B,C,H,W]`` in [0,1] to cover ``size = (H', W')`` and crop the centre (no distortion);
    the scaling is :func:`resize`. Returns ``x`` itself when it already has that size.
    """
    H, W = (int(n) for n in size)
    h, w = x.shape[-2:]
    if (h, w) == (H, W):
        return x
    scale = max(H / h, W / w)
    sh, sw = max(H, round(h * scale)), max(W, round(w * scale))
    y = resize(x, (sh, sw))
    top, left = (sh - H) // 2, (sw - W) // 2
    return y[..., top : top + H, left : left + W].contiguous()


def array_to_tensor(image: np.ndarray) -> Tensor:
    """An image array as hosts pass them (gradio, A1111/Forge) → ``[1,3,H,W]`` float32 in [0,1].

    ``image``: ``[H,W]`` or ``[H,W,C]`` (C = 1…4), uint8 (divided by 255, exactly as
    :func:`pil_to_tensor` does) or float in [0,1] (clipped, never quantised). Alpha is composited
    over white (:func:`to_rgb`).
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an image array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"expected an image [H,W] or [H,W,C] with C in 1…4, got shape {image.shape}")
    if image.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ImageError("the image contains NaN or infinite values")
        x = torch.from_numpy(np.clip(image, 0, 1).astype(np.float32))
    else:
        raise ValueError(f"expected uint8 or float pixels, got {image.dtype}")
    x = x[..., None] if x.ndim == 2 else x
    return to_rgb(x.permute(2, 0, 1)[None]).contiguous()
