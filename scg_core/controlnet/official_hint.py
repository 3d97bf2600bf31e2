"""How an official SCG ControlNet saw its hint, and a first hint convolution that sees it that way.

The official ControlNet computes its hint inside the hint block (``HyperColumnLGN``): the
autoencoder's decoder returns ``(ceil(n/S) − 1)·S − 2P + R`` pixels for an ``n``-pixel side (509 for
512: no output padding) and the first hint convolution zero-pads that *normalised* raw hint. A
converted official ControlNet takes the project's hint image in [0,1] at the full size instead (the
normalisation folded into its first convolution, :func:`scg_core.controlnet.layout.fold_hint_normalization`).
Hosts pad that image with 0 — black, not the official border (the mean colour) — and show the
ControlNet 3 more rows and columns than the official one saw; through GroupNorm and attention both
change every residual. :class:`OfficialHintConv` crops the hint to the official size and pads it with
the mean colour, so a host that holds the model (ComfyUI's SCG ControlNet Apply) computes exactly
what the official ControlNet computes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class OfficialHint:
    """The official hint geometry (metadata ``scg_official_hint``).

    Args:
        pad_value: what the first hint convolution read outside the hint, in image units (the
            normalisation mean: the official block zero-padded the normalised hint).
        stride, padding, receptive_field: of the autoencoder whose decoder made the hint.
    """

    pad_value: tuple[float, ...]
    stride: int = 4
    padding: int = 10
    receptive_field: int = 21

    def size(self, n: int) -> int:
        """Side of the official raw hint of an ``n``-pixel side: ``(ceil(n/S) − 1)·S − 2P + R`` (≤ n).

        >>> OfficialHint((0.5,)).size(512), OfficialHint((0.5,)).size(768)
        (509, 765)
        """
        return (-(-n // self.stride) - 1) * self.stride - 2 * self.padding + self.receptive_field

    def to_json(self) -> str:
        return json.dumps({"pad_value": list(self.pad_value), "stride": self.stride, "padding": self.padding,
                           "receptive_field": self.receptive_field})

    @classmethod
    def from_json(cls, text: str) -> "OfficialHint":
        data = json.loads(text)
        if not isinstance(data, Mapping) or not isinstance(data.get("pad_value"), list):
            raise ValueError(f"scg_official_hint must be a JSON object with a pad_value list; got {text[:80]!r}")
        return cls(tuple(float(v) for v in data["pad_value"]), int(data.get("stride", 4)), int(data.get("padding", 10)),
                   int(data.get("receptive_field", 21)))


class ConstantPadConv(nn.Module):
    """``conv`` (stride 1, zero padding ``p``) as if its input were padded with ``value`` instead of 0.

    The input is padded with ``value`` (one value per channel) by ``p`` and ``conv`` runs on it
    unchanged; the ``p``-pixel rim of its output, which read ``conv``'s own zero padding, is cut
    off. ``conv`` is shared, not copied or modified, so this also works for host convolution
    classes that cast or offload their weights.

    >>> conv = nn.Conv2d(3, 4, 3, padding=1)
    >>> x = torch.rand(1, 3, 8, 8)
    >>> value = torch.tensor([0.5, 0.25, 0.75]).view(1, 3, 1, 1)
    >>> padded = nn.functional.pad(x - value, (1, 1, 1, 1)) + value  # the border reads `value`
    >>> ref = nn.functional.conv2d(padded, conv.weight, conv.bias)
    >>> torch.allclose(ConstantPadConv(conv, [0.5, 0.25, 0.75])(x), ref, atol=1e-6)
    True
    """

    def __init__(self, conv: nn.Module, value: Sequence[float]):
        super().__init__()
        stride, dilation, padding = (getattr(conv, a, None) for a in ("stride", "dilation", "padding"))
        if tuple(stride or ()) != (1, 1) or tuple(dilation or ()) != (1, 1) or not isinstance(padding, tuple):
            raise ValueError(f"the first hint convolution must be a 2-D convolution with stride 1, dilation 1 and numeric "
                             f"padding to get the official border; got stride {stride}, dilation {dilation}, padding {padding!r}")
        if getattr(conv, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"the first hint convolution pads with {conv.padding_mode!r}, not zeros")
        channels = getattr(conv, "in_channels", len(value))
        if len(value) != channels:
            raise ValueError(f"one border value per input channel ({channels}) is needed; got {len(value)}")
        self.conv = conv
        self.padding: tuple[int, int] = (int(padding[0]), int(padding[1]))
        self.register_buffer("value", torch.tensor([float(v) for v in value]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self.padding
        B, C, H, W = x.shape
        padded = self.value.to(x.device, x.dtype).expand(B, C, H + 2 * ph, W + 2 * pw).clone()
        padded[..., ph : ph + H, pw : pw + W] = x  # the interior stays bit-identical
        return self.conv(padded)[..., ph : ph + H, pw : pw + W]

    def extra_repr(self) -> str:
        return f"border={[round(v, 6) for v in self.value.flatten().tolist()]}"


class OfficialHintConv(ConstantPadConv):
    """The first hint convolution of a converted official ControlNet, fed as the official one was:
    the hint ``[B,3,H,W]`` in [0,1] cropped to the official raw hint's size (top-left; 509×509 of
    512×512) and padded with the mean colour. On a hint of the official autoencoder this equals the
    official hint block (tested); the ControlNet's output keeps the latent's size for any ``H``, ``W``
    that are multiples of 8.
    """

    def __init__(self, conv: nn.Module, official: OfficialHint):
        super().__init__(conv, official.pad_value)
        self.official = official

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.official.size(x.shape[-2]), self.official.size(x.shape[-1])
        return super().forward(x[..., :h, :w])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, crop=official autoencoder size (509 of 512)"
