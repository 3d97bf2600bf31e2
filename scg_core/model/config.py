"""The serialisable description of a modular autoencoder.

The constructor's arguments are the config: every field is typed, has the released model's value
as its default, and is saved beside the weights. ``from_dict`` refuses unknown or missing keys so
a file written by a newer version fails loudly instead of loading half-understood.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Parameterization = Literal["bipolar", "single"]

# Input normalisation of the released model (docs/scg_notes.md §2).
RELEASED_MEAN = (0.50705882, 0.48666667, 0.44078431)
RELEASED_STD = (0.26745098, 0.25568627, 0.27607843)


@dataclass(frozen=True)
class ModularAEConfig:
    """Hyperparameters of :class:`scg_core.ModularAE`.

    Args:
        in_channels: channels of the input image (3 for RGB).
        num_modules: ``k``, the number of modules.
        module_channels: ``l``, the channels (kernels) per module; features have ``k·l`` channels.
        parameterization: ``"bipolar"`` — the released two-pathway LGN layout (two 5×5 stride-2
            convs, one followed by a depthwise centre–surround conv, summed into one private
            channel per module, then a grouped conv that gives each module its ``l`` kernels);
            ``"single"`` — one plain ``receptive_field``-sized kernel per feature channel.
        kernel_size: bipolar: the size of each of the three factor kernels (odd);
            single: the size of the whole kernel (odd).
        stride: total stride of the encoder. Bipolar: the LGN stage has stride 2, so this must be
            even (the module stage gets ``stride // 2``).
        mean, std: per-channel input normalisation applied to ``[0,1]`` images before encoding.
    """

    in_channels: int = 3
    num_modules: int = 16
    module_channels: int = 4
    parameterization: Parameterization = "bipolar"
    kernel_size: int = 5
    stride: int = 4
    mean: tuple[float, ...] = field(default=RELEASED_MEAN)
    std: tuple[float, ...] = field(default=RELEASED_STD)

    def __post_init__(self) -> None:
        # Lists from JSON become tuples so configs compare and hash consistently.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        for name in ("in_channels", "num_modules", "module_channels", "kernel_size", "stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModularAEConfig.{name} must be a positive integer, got {value!r}")
        if self.parameterization not in ("bipolar", "single"):
            raise ValueError(
                f"ModularAEConfig.parameterization must be 'bipolar' or 'single', "
                f"got {self.parameterization!r}"
            )
        if self.kernel_size % 2 == 0:
            raise ValueError(f"ModularAEConfig.kernel_size must be odd, got {self.kernel_size}")
        if self.parameterization == "bipolar" and self.stride % 2:
            raise ValueError(
                f"a bipolar ModularAE has a stride-2 LGN stage, so stride must be even; "
                f"got stride={self.stride}"
            )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"mean and std need one value per input channel (in_channels={self.in_channels}); "
                f"got {len(self.mean)} means and {len(self.std)} stds"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ModularAEConfig.std must be positive, got {self.std}")

    @property
    def feature_channels(self) -> int:
        """``k·l``, the channel count of the features."""
        return self.num_modules * self.module_channels

    @property
    def receptive_field(self) -> int:
        """Side of the effective (composed) kernel: 21 for the released model."""
        if self.parameterization == "single":
            return self.kernel_size
        # pathway B: K at stride 1, then K (depthwise) and K (module stage) at LGN stride 2.
        return self.kernel_size + 2 * (self.kernel_size - 1) * 2

    @property
    def padding(self) -> int:
        """Zero padding of the composed convolution: ``(receptive_field - 1) // 2``."""
        return (self.receptive_field - 1) // 2

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModularAEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(known - set(data))
        if unknown or missing:
            raise ValueError(
                f"ModularAEConfig: unknown keys {unknown}, missing keys {missing} "
                f"(expected exactly {sorted(known)})"
            )
        return cls(**data)
