"""The frozen Stable Diffusion 1.5 base and the ControlNet trained on it (diffusers models).

Nothing here touches the network: a base is a local diffusers folder, or a single-file checkpoint
read with the component configs of a local diffusers folder (``--base-config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


class BaseModelError(ValueError):
    """A base model or ControlNet that cannot be used, with the reason and the fix."""


@dataclass
class StableDiffusionParts:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object
    family: str  # "sd15", or "custom" for SD1-like shapes of another size (tests)


def load_base(base: str | Path, base_config: str | Path | None = None) -> StableDiffusionParts:
    """Load the frozen parts of an SD1.5 model: a diffusers folder, or a ``.safetensors``/``.ckpt``
    single file (its configs and tokenizer from ``base_config``, a diffusers SD1.5 folder)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    base = Path(base)
    if base.is_dir():
        if not (base / "model_index.json").is_file():
            raise BaseModelError(f"--base {base} is a folder without model_index.json; expected a diffusers SD1.5 pipeline folder")
        pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True, safety_checker=None,
                                                       feature_extractor=None, requires_safety_checker=False)
    elif base.is_file():
        if base.suffix not in (".safetensors", ".ckpt"):
            raise BaseModelError(f"--base {base}: a single-file checkpoint must be .safetensors or .ckpt")
        if base_config is None or not Path(base_config).is_dir():
            raise BaseModelError(
                f"--base {base} is a single file: pass --base-config DIR, a local diffusers SD1.5 folder whose configs and "
                "tokenizer describe it (the weights there are not used); nothing is downloaded")
        pipe = StableDiffusionPipeline.from_single_file(str(base), config=str(base_config), local_files_only=True,
                                                        safety_checker=None, feature_extractor=None,
                                                        requires_safety_checker=False)
    else:
        raise BaseModelError(f"--base {base} not found (a diffusers SD1.5 folder or a single-file checkpoint)")
    family = check_family(pipe.unet.config, pipe.text_encoder.config.hidden_size, str(base))
    noise = DDPMScheduler.from_config(pipe.scheduler.config)
    parts = StableDiffusionParts(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, noise, family)
    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.requires_grad_(False).eval()
    return parts


def check_family(unet_config, text_width: int, name: str) -> str:
    """``"sd15"`` for SD1.5 shapes, ``"custom"`` for SD1-like ones of another size; raises for
    SD2.x, SDXL and inconsistent models."""
    cross = unet_config.cross_attention_dim
    if getattr(unet_config, "addition_embed_type", None) or unet_config.in_channels != 4:
        raise BaseModelError(f"--base {name} is not an SD1.5 model (SDXL, inpainting or another family: "
                             f"addition_embed_type={getattr(unet_config, 'addition_embed_type', None)}, "
                             f"in_channels={unet_config.in_channels}); SCG ControlNets are trained on SD1.5")
    if cross == 1024:
        raise BaseModelError(f"--base {name} is an SD2.x model (1024-wide text conditioning); SCG ControlNets are trained on SD1.5")
    if cross != text_width:
        raise BaseModelError(f"--base {name}: its UNet expects {cross}-wide text features but its text encoder gives "
                             f"{text_width}; the folder mixes components of different models")
    if cross == 768 and tuple(unet_config.block_out_channels) == (320, 640, 1280, 1280):
        return "sd15"
    return "custom"


def make_controlnet(unet, init: str | Path | None = None):
    """A ControlNet for ``unet``: a copy of its encoder, or loaded from ``init`` (a diffusers
    ControlNet folder or a single-file ControlNet in the ldm layout) after checking it fits."""
    from diffusers import ControlNetModel

    if init is None:
        return ControlNetModel.from_unet(unet)
    init = Path(init)
    if init.is_dir():
        controlnet = ControlNetModel.from_pretrained(init, local_files_only=True)
        if controlnet.config.cross_attention_dim != unet.config.cross_attention_dim:
            raise BaseModelError(f"--controlnet {init} conditions on {controlnet.config.cross_attention_dim}-wide text, the "
                                 f"base on {unet.config.cross_attention_dim}; it was made for another base model")
        return controlnet
    if not init.is_file():
        raise BaseModelError(f"--controlnet {init} not found (a diffusers ControlNet folder or a .safetensors file)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from scg_core.controlnet.layout import ldm_to_diffusers

    try:
        state = ldm_to_diffusers(load_file(str(init)))
    except (SafetensorError, OSError, ValueError) as e:
        raise BaseModelError(f"--controlnet {init} is not a readable ControlNet safetensors file ({e})") from e
    controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    expected = controlnet.state_dict()
    wrong = [k for k, v in expected.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise BaseModelError(f"--controlnet {init} does not fit the base UNet ({len(wrong)} tensors missing or of "
                             f"another shape, e.g. {wrong[:3]}); it was made for another base model")
    controlnet.load_state_dict({k: state[k].float() for k in expected})
    return controlnet
