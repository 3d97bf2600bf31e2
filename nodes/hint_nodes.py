"""Load Modular AE, Modular AE Encode (hypercolumn), SCG Decomposition Sheet."""

from __future__ import annotations

import torch

from . import models
from .comfy_glue import compute_device, for_each_image, image_to_rgb, to_comfy_image
from .deps import scg_core

CATEGORY = "SCG"
AE_TYPE = "SCG_MODULAR_AE"

GROUPS_TOOLTIP = (
    "Groups to keep, by name or label, separated by commas (e.g. 'brightness' or 'HC2, HC3'); "
    "'all' keeps every module. The bundled default has: colour, brightness, edges, texture; "
    "the official SCG autoencoder: HC0 (colour), HC1 (brightness), HC2, HC3 (edges), HC4, HC5 (higher frequency)."
)
GAINS_TOOLTIP = "Optional per-group factors, e.g. 'colour=0.5, brightness=1.5' (a gained group is kept)."
AE_TOOLTIP = "From Load Modular AE; the bundled default when not connected."
IMAGE_TOOLTIP = "Any batch size and size (at least 21×21); gray and RGBA are made RGB (alpha over white)."


def ae_or_default(modular_ae):
    return modular_ae if modular_ae is not None else models.load(models.DEFAULT_NAME)


def compute_hint(model, images, groups: str, gains: str, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, str]:
    """ComfyUI IMAGE batch → (hint IMAGE ``[B,H,W,3]`` in [0,1], a line describing it).

    ``size``: compute the hint at this (H, W) (the source is scaled to cover it and centre-cropped).
    """
    core = scg_core()
    keep, gain = core.selection.parse_groups(groups), core.selection.parse_gains(gains)
    modules = model.module_gains(keep, gains=gain)  # resolves names: unknown ones raise here, before any work
    rgb = image_to_rgb(images)
    if size is not None:
        rgb = core.images.fit_to_size(rgb, size)
    device_model = models.on_device(model, compute_device())

    def one(x):
        with torch.inference_mode():
            return device_model.hint(x.to(device_model.mean.device), keep, gains=gain)

    hint = for_each_image(rgb, one)
    kept = [i for i, g in enumerate(modules) if g]
    chosen = ", ".join(keep) if keep else "all"
    info = (f"SCG hint: groups [{chosen}] = modules {kept} of {getattr(model, 'source_name', 'the autoencoder')}; "
            f"{hint.shape[0]} image(s) {hint.shape[-1]}×{hint.shape[-2]}")
    return to_comfy_image(hint), info


class LoadModularAE:
    """Load a modular autoencoder from ``models/scg`` (or the bundled default)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ae_name": (models.list_autoencoders(), {
            "tooltip": "A .safetensors file in models/scg (scg_core format), or the bundled default."})}}

    RETURN_TYPES = (AE_TYPE,)
    RETURN_NAMES = ("modular_ae",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads an SCG modular autoencoder (kept in memory: loading it again is free)."

    def load(self, ae_name):
        return (models.load(ae_name),)


class ModularAEEncode:
    """The SCG hint: keep some groups of the modular autoencoder and decode them to an image."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP}),
                "groups": ("STRING", {"default": "brightness", "multiline": False, "tooltip": GROUPS_TOOLTIP}),
            },
            "optional": {
                "modular_ae": (AE_TYPE, {"tooltip": AE_TOOLTIP}),
                "gains": ("STRING", {"default": "", "multiline": False, "tooltip": GAINS_TOOLTIP}),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("hint", "info")
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Computes the SCG hint of each image: a plain RGB image in [0,1] that any ControlNet, "
                   "preview or image node takes.")

    def encode(self, image, groups, modular_ae=None, gains=""):
        hint, info = compute_hint(ae_or_default(modular_ae), image, groups, gains)
        return {"ui": {"text": [info]}, "result": (hint, info)}


class DecompositionSheet:
    """Every group's hint and every module's reconstruction of an image, labelled, in one picture."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP}),
                "tile": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 32, "tooltip": "Longest side of each tile, pixels."}),
            },
            "optional": {"modular_ae": (AE_TYPE, {"tooltip": AE_TOOLTIP})},
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("sheet",)
    FUNCTION = "sheet"
    CATEGORY = CATEGORY
    DESCRIPTION = "Shows what each group and module of the autoencoder carries for this image (like the SCG paper's Fig. 3d)."

    def sheet(self, image, tile, modular_ae=None):
        core = scg_core()
        model = ae_or_default(modular_ae)

        def one(x):
            pil = core.sheet.decomposition_sheet(model, x, tile=tile)
            return core.images.pil_to_tensor(pil)

        return (to_comfy_image(for_each_image(image_to_rgb(image), one)),)
