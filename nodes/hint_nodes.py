"""Load Modular AE, Modular AE Encode (hypercolumn), SCG Decomposition Sheet (all hints), and the checks
ComfyUI runs on their groups and gains before a prompt runs."""

from __future__ import annotations

import torch

from . import models
from .comfy_glue import compute_device, for_each_image, image_to_rgb, to_comfy_image
from .deps import scg_core

# Where ControlNet users look: core puts its loaders under "loaders" and "Apply ControlNet" under
# "conditioning/controlnet"; comfyui_controlnet_aux puts hint makers under "ControlNet Preprocessors/…".
PREPROCESSOR_CATEGORY = "ControlNet Preprocessors/SCG"
LOADER_CATEGORY = "loaders"
APPLY_CATEGORY = "conditioning/controlnet"
AE_TYPE = "SCG_MODULAR_AE"

GROUPS_TOOLTIP = (
    "Groups to keep, by name or label, separated by commas (e.g. 'brightness' or 'HC2, HC3'); "
    "'all' keeps every module. The bundled default has: colour, brightness, edges, texture; "
    "the official SCG autoencoder: HC0 (colour), HC1 (brightness), HC2, HC3 (edges), HC4, HC5 (higher frequency)."
)
GAINS_TOOLTIP = ("Optional per-group factors, e.g. 'colour=0.5, brightness=1.5' (a gained group is kept); "
                 "each factor > 0 and at most 10. They multiply how the weight file shows a group (the bundled default "
                 "stretches every group to a visible contrast per image; other files may give a group a fixed display gain).")
AE_TOOLTIP = ("From Load Modular AE; the bundled default when not connected (then the groups are checked "
              "before the run).")
INFO_TOOLTIP = "What was computed (groups → modules, autoencoder, image size); the node also shows it after a run."
IMAGE_TOOLTIP = "Any batch size and size (at least 21×21); gray and RGBA are made RGB (alpha over white)."


def ae_or_default(modular_ae):
    return modular_ae if modular_ae is not None else models.load(models.DEFAULT_NAME)


class _NotConnected:
    """Default of ``modular_ae`` in ``VALIDATE_INPUTS``: ComfyUI passes a linked input as ``None``
    (its value is not known before the run) and leaves an unconnected one out."""

    def __repr__(self) -> str:
        return "<not connected>"


NOT_CONNECTED = _NotConnected()


def check_selection(groups, gains, modular_ae=NOT_CONNECTED):
    """``VALIDATE_INPUTS`` of the nodes that take groups and gains: ``True``, or the problem in one line.

    ComfyUI calls it before anything in the prompt runs, with the widget values (``None`` for a value
    that comes through a link). The text is parsed as the node will parse it; when no autoencoder is
    connected the names are also resolved against the bundled default, which is what the node uses.
    A connected autoencoder is only known at run time, so then only the syntax is checked.
    """
    try:
        core = scg_core()
        keep = core.hosts.selection.parse_groups(str(groups)) if groups is not None else None
        gain = core.hosts.selection.parse_gains(str(gains)) if gains is not None else {}
        if modular_ae is NOT_CONNECTED and (groups is not None or gain):
            try:
                models.load(models.DEFAULT_NAME).module_gains(keep, gains=gain)
            except ValueError as e:
                return f"{e} (or 'all'); checked against the bundled default autoencoder, used because modular_ae is not connected"
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        return str(e)
    return True


def compute_hint(model, images, groups: str, gains: str, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, str]:
    """ComfyUI IMAGE batch ``[B,H,W,C]`` in [0,1] → (hint IMAGE ``[B,H,W,3]`` in [0,1], a line describing it).

    ``size``: compute the hint at this (H, W) (the source is scaled to cover it and centre-cropped,
    by :func:`scg_core.hosts.hint.source_hint`, as every host does).
    """
    core = scg_core()
    keep, gain = core.hosts.selection.parse_groups(groups), core.hosts.selection.parse_gains(gains)
    modules = model.module_gains(keep, gains=gain)  # resolves names: unknown ones raise here, before any work
    device_model = models.on_device(model, compute_device())
    hint = for_each_image(image_to_rgb(images), lambda x: core.hosts.hint.source_hint(device_model, x, keep, gain, size=size))
    kept = [i for i, g in enumerate(modules) if g]
    chosen = ", ".join(keep) if keep else "all"
    shown = core.hosts.selection.display_gain_note(model, keep)
    info = (f"SCG hint: groups [{chosen}] = modules {kept} of {getattr(model, 'source_name', 'the autoencoder')}"
            f"{f' (display: {shown})' if shown else ''}; {hint.shape[0]} image(s) {hint.shape[-1]}×{hint.shape[-2]}")
    return to_comfy_image(hint), info


class SCGLoadModularAE:
    """Load a modular autoencoder from ``models/scg`` (or the bundled default)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ae_name": (models.list_autoencoders(), {
            "tooltip": "A .safetensors file in models/scg (scg_core format), or the bundled default."})}}

    RETURN_TYPES = (AE_TYPE,)
    RETURN_NAMES = ("modular_ae",)
    FUNCTION = "load"
    CATEGORY = LOADER_CATEGORY
    DESCRIPTION = ("Loads the SCG modular autoencoder that Modular AE Encode (hypercolumn) and SCG ControlNet Apply "
                   "make hints with (kept in memory: loading it again is free).")
    OUTPUT_TOOLTIPS = ("The autoencoder, for the modular_ae input of the SCG nodes.",)
    SEARCH_ALIASES = ("SCG", "load modular autoencoder", "SCG autoencoder", "hint model", "preprocessor model")

    def load(self, ae_name):
        return (models.load(ae_name),)


class SCGModularAEEncode:
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
    CATEGORY = PREPROCESSOR_CATEGORY
    DESCRIPTION = ("Outputs an image hint for SCG ControlNets, as a ControlNet preprocessor does: the chosen groups "
                   "of the modular autoencoder decoded back to a plain RGB image in [0,1], the size of the input. "
                   "Any Apply ControlNet, preview or image node takes it.")
    OUTPUT_TOOLTIPS = ("The SCG hint: an RGB image the size of the input.", INFO_TOOLTIP)
    SEARCH_ALIASES = ("SCG", "SCG hint", "hint", "preprocessor", "SCG preprocessor", "controlnet preprocessor",
                      "hypercolumn", "modular autoencoder")

    @classmethod
    def VALIDATE_INPUTS(cls, groups, gains="", modular_ae=NOT_CONNECTED):
        return check_selection(groups, gains, modular_ae)

    def encode(self, image, groups, modular_ae=None, gains=""):
        hint, info = compute_hint(ae_or_default(modular_ae), image, groups, gains)
        return {"ui": {"text": [info]}, "result": (hint, info)}


class SCGDecompositionSheet:
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
    CATEGORY = PREPROCESSOR_CATEGORY
    DESCRIPTION = ("Outputs one labelled image of every hint the autoencoder can make for this image: each group's "
                   "hint and each module's reconstruction (like the SCG paper's Fig. 3d), to choose groups by eye.")
    OUTPUT_TOOLTIPS = ("The sheet: one row per image, one labelled tile per group and per module.",)
    SEARCH_ALIASES = ("SCG", "hint", "SCG hints", "all hints", "preprocessor", "decomposition", "groups", "modules")

    def sheet(self, image, tile, modular_ae=None):
        core = scg_core()
        model = ae_or_default(modular_ae)

        def one(x):
            pil = core.tools.sheet.decomposition_sheet(model, x, tile=tile)
            return core.formats.images.pil_to_tensor(pil)

        return (to_comfy_image(for_each_image(image_to_rgb(image), one)),)
