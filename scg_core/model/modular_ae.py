"""``ModularAE``: the SCG modular autoencoder as a small ``nn.Module`` over :mod:`scg_core.model.functional`."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from . import functional as Fn
from .checks import check_image, check_same_device
from .config import ModularAEConfig
from .display import clip_headroom, contrast_factors
from .groups import Group, find_groups, module_display, module_gains, validate_groups


class ModularAE(nn.Module):
    """Linear tied-weight autoencoder whose ``k·l`` feature channels form ``k`` modules.

    Parameters (no biases):

    * ``bipolar``: ``pathway_a`` ``[k,C,K,K]``, ``pathway_b`` ``[k,C,K,K]``, ``surround``
      ``[k,1,K,K]`` (depthwise), ``module_kernels`` ``[k·l,1,K,K]`` (grouped: each module's
      ``l`` kernels read its own LGN channel);
    * ``single``: ``kernels`` ``[k·l,C,R,R]``.

    Args:
        config: the architecture; keyword arguments override its fields (``ModularAE(num_modules=4)``).
        groups: named module groups stored with the weights (``OFFICIAL_GROUPS`` for official weights).
        provenance: free-form JSON-able facts about where the weights came from; saved with them.
        phase_average: compute every hint as the mean over the ``stride²`` positions of the code grid
            relative to the image (cycle spinning), saved with the weights. The stride-4 code aliases
            detail above its Nyquist frequency, so a decimated hint changes when the image moves by one
            pixel; the averaged hint is a fixed filter of the image and moves with it, pixel by pixel
            (applied through the FFT: 1.7–3.3× a one-grid hint on a CPU). Official weights: off, as
            their ControlNets were trained.

    >>> ae = ModularAE(num_modules=4, module_channels=2)
    >>> x = torch.rand(1, 3, 30, 45)
    >>> ae.encode(x).shape
    torch.Size([1, 8, 8, 12])
    >>> ae.hint(x, modules=[1]).shape
    torch.Size([1, 3, 30, 45])
    """

    def __init__(
        self,
        config: ModularAEConfig | None = None,
        *,
        groups: Sequence[Group] = (),
        provenance: Mapping[str, Any] | None = None,
        phase_average: bool = False,
        **overrides: Any,
    ) -> None:
        super().__init__()
        config = config or ModularAEConfig()
        if overrides:
            config = ModularAEConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        self.groups: tuple[Group, ...] = validate_groups(tuple(groups), config.num_modules)
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.phase_average = bool(phase_average)
        k, l, C, K = config.num_modules, config.module_channels, config.in_channels, config.kernel_size
        if config.parameterization == "bipolar":
            shapes = {"pathway_a": (k, C, K, K), "pathway_b": (k, C, K, K), "surround": (k, 1, K, K), "module_kernels": (k * l, 1, K, K)}
        else:
            shapes = {"kernels": (k * l, C, K, K)}
        for name, shape in shapes.items():
            # 1/sqrt(fan-in) keeps each stage's output at the input's scale at initialisation.
            self.register_parameter(name, nn.Parameter(torch.randn(shape) / math.sqrt(math.prod(shape[1:]))))
        self.register_buffer("mean", torch.tensor(config.mean).view(1, C, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, C, 1, 1), persistent=False)

    # ----------------------------------------------------------------- parameters and groups
    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor name → shape that a weight file for this config must contain."""
        return {name: tuple(p.shape) for name, p in self.named_parameters()}

    def factor_weights(self, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
        """The parameters by name, cast to ``dtype`` (for inputs of another precision)."""
        return {name: p if dtype in (None, p.dtype) else p.to(dtype) for name, p in self.named_parameters()}

    def composed_kernel(self) -> Tensor:
        """The effective encoder kernel ``[k·l, C, R, R]`` (21×21 for the released model)."""
        return Fn.compose_kernel(self.factor_weights(), self.config)

    def grey_response(self, modules: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        """``[1,C,1,1]`` in normalised units: what ``modules`` decode a uniform mid-grey image (0.5 in
        every channel) to, away from the borders (averaged over the code grid's phases, which is
        what a phase-averaged hint shows everywhere). A stretched group's hint is stretched about it
        (:mod:`scg_core.model.display`), so that a grey photo keeps a grey colour hint.

        A uniform input ``v`` gives each code channel ``s_j·v`` (``s_j``: its kernel summed over
        pixels, ``[C]``), and the stride-``S`` decode spreads that over ``S²`` pixels: ``Σ_j s_j s_jᵀ v / S²``.
        """
        l = self.config.module_channels
        rows = [m * l + c for m in modules for c in range(l)]
        with torch.no_grad():
            sums = self.composed_kernel()[rows].sum(dim=(-2, -1)).double()  # (n, C)
        grey = ((0.5 - self.mean.double()) / self.std.double()).flatten()
        response = sums.T @ (sums @ grey) / self.config.stride ** 2
        return response.to(dtype or self.mean.dtype).view(1, -1, 1, 1)

    def find_groups(self, key: str) -> list[Group]:
        """Groups named ``key`` (or carrying label ``key``); ``ValueError`` listing all if none."""
        return find_groups(self.groups, key)

    def module_gains(
        self,
        groups: Iterable[str] | None = None,
        modules: Iterable[int] | None = None,
        gains: Mapping[str, float] | None = None,
    ) -> list[float]:
        """One gain per module for a selection; see :func:`scg_core.model.groups.module_gains`."""
        return module_gains(self.config.num_modules, self.groups, keep=groups, modules=modules, gains=gains)

    # ----------------------------------------------------------------- the linear maps
    def normalize(self, x: Tensor) -> Tensor:
        """``[B,C,H,W]`` in [0,1] → the encoder's normalised input ``(x - mean) / std``."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def denormalize(self, raw: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`: ``raw·std + mean`` (not clamped)."""
        return raw * self.std.to(raw.dtype) + self.mean.to(raw.dtype)

    def encode(self, x: Tensor, modules: Sequence[int] | None = None) -> Tensor:
        """Encode an image.

        Args:
            x: ``[B,C,H,W]`` float in [0,1], at least ``receptive_field`` pixels on each side.
            modules: ascending module indices to compute (others are never computed); ``None`` = all.

        Returns:
            ``[B, m·l, h, w]`` features, ``h = ceil(H / stride)`` for the released model, where
            ``m`` is the number of computed modules; channel ``j`` of module ``i`` is at ``i·l + j``
            when all modules are computed.
        """
        check_image(x, self.config.in_channels, self.config.receptive_field)
        check_same_device(x, self)
        mean, std = self.mean.to(x.dtype).flatten(), self.std.to(x.dtype).flatten()
        return Fn.encode_factorised(x, self.factor_weights(x.dtype), self.config, self._modules_arg(modules), mean=mean, std=std)

    def decode(self, f: Tensor, size: tuple[int, int], modules: Sequence[int] | None = None, *, as_image: bool = False) -> Tensor:
        """Decode features back to normalised pixel space, at exactly ``size``.

        Args:
            f: ``[B, m·l, h, w]`` as returned by :meth:`encode` for an image of ``size``.
            size: ``(H, W)`` of that image.
            modules: the modules ``f`` holds, as passed to :meth:`encode`.

            as_image: return ``clamp(decoded·std + mean, 0, 1)`` (the hint contract) instead,
                computed inside the last convolution.

        Returns:
            ``[B,C,H,W]`` in normalised units (``denormalize`` maps it to image values), or an
            image in [0,1] with ``as_image``.
        """
        modules = self._modules_arg(modules)
        m = self.config.num_modules if modules is None else len(modules)
        H, W = (int(n) for n in size)
        expected = (m * self.config.module_channels, Fn.feature_size(H, self.config), Fn.feature_size(W, self.config))
        if f.ndim != 4 or tuple(f.shape[1:]) != expected:
            raise ValueError(f"features for a {H}×{W} image and {m} modules must be [B,{expected[0]},{expected[1]},{expected[2]}]; got {tuple(f.shape)}")
        check_same_device(f, self, "features")
        affine = {"scale": self.std.to(f.dtype).flatten(), "shift": self.mean.to(f.dtype).flatten(), "clamp": True} if as_image else {}
        return Fn.decode_factorised(f, self.factor_weights(f.dtype), self.config, (H, W), modules, **affine)

    def raw_hint(
        self,
        x: Tensor,
        groups: Iterable[str] | None = None,
        modules: Iterable[int] | None = None,
        gains: Mapping[str, float] | None = None,
    ) -> Tensor:
        """SCG's raw hint: encode, keep (and scale) the selected modules, decode. A kept group with a
        display span is scaled per image to its contrast (:mod:`scg_core.model.display`).

        Only the kept modules are computed, so a one-group hint costs a fraction of the full
        decomposition. With no selection all modules are kept (the reconstruction).

        Args:
            x: ``[B,C,H,W]`` float in [0,1].
            groups: group names or labels to keep.
            modules: module indices to keep (added to ``groups``).
            gains: group name/label → factor (keeps that group, scaled).

        Returns:
            ``[B,C,H,W]`` in normalised units, unclamped.
        """
        return self._hint(x, groups, modules, gains, as_image=False)

    def hint(
        self,
        x: Tensor,
        groups: Iterable[str] | None = None,
        modules: Iterable[int] | None = None,
        gains: Mapping[str, float] | None = None,
    ) -> Tensor:
        """The project's canonical hint image: ``clamp(raw_hint·std + mean, 0, 1)``.

        This is what every host passes to a ControlNet and what ``training/`` trains on.

        Returns:
            ``[B,C,H,W]`` float in [0,1], contiguous, same dtype as ``x``.
        """
        return self._hint(x, groups, modules, gains, as_image=True)

    def _hint(self, x, groups, modules, gains, as_image: bool) -> Tensor:
        gain, stretched = module_display(self.config.num_modules, self.groups, groups, modules, gains)
        kept = [i for i, g in enumerate(gain) if g != 0.0]
        if not kept:
            check_image(x, self.config.in_channels, self.config.receptive_field)
            raw = torch.zeros_like(x)
            return self.denormalize(raw).clamp_(0.0, 1.0) if as_image else raw
        owners = [stretched[i] for i in kept]
        if not self.phase_average and not any(owners):  # one decode; as an image, the affine and clamp ride on it
            f = self.encode(x, kept)
            if any(gain[i] != 1.0 for i in kept):
                per_channel = torch.tensor([gain[i] for i in kept], dtype=f.dtype, device=f.device)
                f = f * per_channel.repeat_interleave(self.config.module_channels).view(1, -1, 1, 1)
            return self.decode(f, x.shape[-2:], kept, as_image=as_image)
        raw = self._combined_raw(x, kept, [gain[i] for i in kept], owners)
        return self.denormalize(raw).clamp_(0.0, 1.0) if as_image else raw

    def _decoded_parts(self, x: Tensor, kept: list[int], parts: list[tuple[list[int], list[float]]]) -> list[Tensor]:
        """Each part's decode, ``[B,C,H,W]`` in normalised units: a part is ``(positions in kept,
        factor per position)``, decoded from the code of the ``kept`` modules of ``x`` — with
        :attr:`phase_average`, averaged over the code grid's positions
        (:func:`~scg_core.model.functional.phase_averaged_decodes`)."""
        if self.phase_average:
            check_image(x, self.config.in_channels, self.config.receptive_field)
            check_same_device(x, self)
            return Fn.phase_averaged_decodes(x, self.factor_weights(x.dtype), self.config, kept, parts,
                                             mean=self.mean.to(x.dtype).flatten(), std=self.std.to(x.dtype).flatten())
        l = self.config.module_channels
        f = self.encode(x, kept)
        # the decoder's convolutions are fastest in the encoder's layout: keep it when picking channels
        layout = torch.channels_last if f.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = []
        for positions, factors in parts:
            part = f if len(positions) == len(kept) else f[:, [p * l + c for p in positions for c in range(l)]].contiguous(memory_format=layout)
            if any(v != 1.0 for v in factors):
                part = part * torch.tensor(factors, dtype=f.dtype, device=f.device).repeat_interleave(l).view(1, -1, 1, 1)
            out.append(self.decode(part, x.shape[-2:], [kept[p] for p in positions]))
        return out

    def contrast_factors(self, group: Group, raw: Tensor, centre: Tensor | None = None) -> Tensor:
        """``[B]`` per-image factors at which ``hint`` shows ``group`` (one with a display span), from
        its decode at factor 1, ``raw`` ``[B,C,H,W]`` in normalised units, stretched about ``centre``
        (default: :meth:`grey_response` of the group) (:mod:`scg_core.model.display`)."""
        centre = self.grey_response(group.modules, raw.dtype).to(raw.device) if centre is None else centre
        return contrast_factors(raw - centre, self.denormalize(centre).flatten(), group.span, group.gain,
                                self.config.receptive_field // 2, scale=self.std.flatten())

    def _combined_raw(self, x: Tensor, kept: list[int], gain: list[float], owners: list[Group | None]) -> Tensor:
        """The raw hint of the ``kept`` modules of ``x`` at factors ``gain`` when some take the
        per-image contrast of their group (``owners``; ``None``: a fixed factor) or the hint is
        phase-averaged. A stretched group is decoded on its own at factor 1 and stretched about its
        :meth:`grey_response` by its :func:`~scg_core.model.display.contrast_factors` times the user's
        factor (``gain``); the other modules are decoded together at their factors."""
        groups: dict[Group | None, list[int]] = {}  # owner → positions in ``kept``
        for position, owner in enumerate(owners):
            groups.setdefault(owner, []).append(position)
        parts = [(positions, [1.0 if group else gain[p] for p in positions]) for group, positions in groups.items()]
        raw, shown_parts = None, []
        for group, part in zip(groups, self._decoded_parts(x, kept, parts), strict=True):
            if group is not None:  # every module of a stretched group carries the group's user factor
                centre = self.grey_response(group.modules, part.dtype).to(part.device)
                factor = self.contrast_factors(group, part, centre).view(-1, 1, 1, 1)
                shown_parts.append((centre, part.sub_(centre).mul_(factor), gain[groups[group][0]]))
                continue
            raw = part
        limit = None
        if len(shown_parts) > 1:  # stretched groups shown together: their sum keeps ≤ 1% clipped
            centre = sum(c for c, _, _ in shown_parts)
            total = sum(part for _, part, _ in shown_parts)
            limit = clip_headroom(total, self.denormalize(centre).flatten(), self.config.receptive_field // 2,
                                  scale=self.std.flatten())
            limit = limit.clamp(max=1.0).view(-1, 1, 1, 1)
        for centre, part, user in shown_parts:
            if limit is not None or user != 1.0:
                part.mul_(user if limit is None else limit * user)
            part.add_(centre)
            raw = part if raw is None else raw + part
        return raw

    def module_reconstructions(self, x: Tensor) -> Tensor:
        """Each module's own reconstruction, ``[B, k, C, H, W]`` in normalised units.

        The modules sum to the full reconstruction (the maps are linear).
        """
        f = self.encode(x)  # (B, k·l, h, w), encoded once
        l = self.config.module_channels
        outs = [self.decode(f[:, i * l : (i + 1) * l], x.shape[-2:], [i]) for i in range(self.config.num_modules)]
        return torch.stack(outs, dim=1)

    def _modules_arg(self, modules: Sequence[int] | None) -> list[int] | None:
        if modules is None:
            return None
        modules = [int(m) for m in modules]
        k = self.config.num_modules
        if not modules or modules != sorted(set(modules)) or not all(0 <= m < k for m in modules):
            raise ValueError(f"modules must be distinct ascending indices in 0..{k - 1}; got {modules}")
        return modules

    def extra_repr(self) -> str:
        c = self.config
        groups = ", ".join(g.title for g in self.groups) or "no groups"
        hints = "; phase-averaged hints" if self.phase_average else ""
        return f"{c.parameterization}, k={c.num_modules}, l={c.module_channels}, stride={c.stride}, receptive field={c.receptive_field}; {groups}{hints}"
