"""The SCG ControlNet objective (docs/scg_notes.md §6): ``E ||ε − ε_θ(z_t, t, c_text, hint)||²``.

The hint is computed on the training device by the frozen modular autoencoder, with the very
function the nodes call (``ModularAE.hint``: the project hint contract, ``[B,3,H,W]`` in [0,1]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import scg_core

from .speed import Levers


class HintMaker:
    """pixels ``[B,3,H,W]`` in [0,1] (+ a group number per sample) → hints ``[B,3,H,W]`` in [0,1].

    Args:
        ae: the frozen autoencoder (on the training device, fp32).
        groups: group names or labels kept in every hint; ``None`` = all modules.
        random_groups: instead, each sample keeps one of ``groups`` (all the autoencoder's groups
            when ``groups`` is empty), chosen by its group number.
    """

    def __init__(self, ae: scg_core.ModularAE, groups: Sequence[str] | None, gains: dict[str, float] | None = None,
                 random_groups: bool = False) -> None:
        self.ae, self.gains, self.random_groups = ae.requires_grad_(False).eval(), gains or None, random_groups
        if random_groups:
            names = list(groups) if groups else [g.name for g in ae.groups]
            if not names:
                raise ValueError("--random-groups needs groups: this autoencoder has none in its metadata; pass --groups")
            self.choices = [[n] for n in names]
        else:
            self.choices = [list(groups)] if groups else [None]
        for choice in self.choices:  # fail now, with the known names, not at step 1
            ae.module_gains(choice, None, self.gains)

    @torch.no_grad()
    def __call__(self, pixels: Tensor, group: Tensor | None = None) -> Tensor:
        pixels = pixels.float()
        if not self.random_groups:
            return self.ae.hint(pixels, groups=self.choices[0], gains=self.gains)
        out = torch.empty_like(pixels)
        group = group.to(pixels.device)
        for g in group.unique().tolist():
            rows = (group == g).nonzero().flatten()
            out[rows] = self.ae.hint(pixels[rows], groups=self.choices[g], gains=self.gains)
        return out


class ControlNetObjective:
    """Noise-prediction loss of a ControlNet on a frozen SD1.5 UNet.

    ``frozen_dtype`` is the dtype the frozen UNet/VAE/text encoder run in; the ControlNet keeps
    fp32 master weights and runs under the accelerator's autocast. ``levers``
    (:class:`training.speed.Levers`) set the memory format, attention kernel and hint dtype;
    ``unet`` is the frozen UNet to call (a compiled wrapper of ``parts.unet``, say).
    """

    def __init__(self, parts, controlnet: torch.nn.Module, hints: HintMaker, device: torch.device,
                 frozen_dtype: torch.dtype = torch.float32, levers: Levers | None = None) -> None:
        self.parts, self.controlnet, self.hints = parts, controlnet, hints
        self.device, self.frozen_dtype = device, frozen_dtype
        self.levers = levers or Levers()
        self.unet = parts.unet
        self.scaling = parts.vae.config.scaling_factor

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> Tensor:
        """captions → ``[B,77,D]`` text features (frozen text encoder)."""
        tok = self.parts.tokenizer
        # a tokenizer saved without its config claims an unbounded length: the text encoder's is the limit
        length = min(tok.model_max_length, self.parts.text_encoder.config.max_position_embeddings)
        ids = tok(list(captions), max_length=length, padding="max_length", truncation=True,
                  return_tensors="pt").input_ids.to(self.device)
        return self.parts.text_encoder(ids)[0]

    @torch.no_grad()
    def latent_distribution(self, pixels: Tensor) -> Tensor:
        """pixels ``[B,3,H,W]`` in [0,1] → VAE posterior ``[B,8,H/8,W/8]`` (mean and log-variance)."""
        return self.parts.vae.encode((pixels * 2 - 1).to(self.frozen_dtype)).latent_dist.parameters

    def sample_latents(self, distribution: Tensor, g: torch.Generator) -> Tensor:
        mean, logvar = distribution.float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        return (mean + std * torch.randn(mean.shape, generator=g, device=mean.device)) * self.scaling

    def __call__(self, batch: dict, g: torch.Generator) -> Tensor:
        """Loss of one micro-batch. ``batch``: ``pixels`` ``[B,3,R,R]`` in [0,1] and either
        ``captions`` (raw) or ``text`` ``[B,77,D]`` + ``latent_dist`` ``[B,8,R/8,R/8]`` (cached)."""
        pixels = batch["pixels"].to(self.device, non_blocking=True)
        dist = batch.get("latent_dist")
        dist = self.latent_distribution(pixels) if dist is None else dist.to(self.device, non_blocking=True)
        text = batch.get("text")
        text = self.encode_text(batch["captions"]) if text is None else text.to(self.device, non_blocking=True)
        latents = self.sample_latents(dist, g)
        noise = torch.randn(latents.shape, generator=g, device=latents.device)
        sched = self.parts.noise_scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=g, device=latents.device)
        noisy = sched.add_noise(latents, noise, t)
        fmt = self.levers.memory_format
        hint = self.hints(pixels, batch.get("group")).to(self.levers.hint_cast(self.frozen_dtype)).contiguous(memory_format=fmt)
        text, noisy = text.to(self.frozen_dtype), noisy.contiguous(memory_format=fmt)
        with self.levers.attention():
            down, mid = self.controlnet(noisy, t, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)
            pred = self.unet(noisy.to(self.frozen_dtype), t, encoder_hidden_states=text,
                             down_block_additional_residuals=[r.to(self.frozen_dtype) for r in down],
                             mid_block_additional_residual=mid.to(self.frozen_dtype), return_dict=False)[0]
        target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(latents, noise, t)
        return F.mse_loss(pred.float(), target.float())


def step_generator(device: torch.device, seed: int, rank: int, micro_step: int) -> torch.Generator:
    """The noise/timestep generator of one micro-step: a pure function of (seed, rank, step), so a
    resumed run draws what an uninterrupted one would have."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + rank) * 100_003 + micro_step)
