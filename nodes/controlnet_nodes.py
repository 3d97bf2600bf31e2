"""SCG ControlNet Apply: the hint of a source image, applied exactly as ComfyUI's own
"Apply ControlNet (Advanced)" does, with checks that the ControlNet fits."""

from __future__ import annotations

import copy
import logging
import weakref

import torch

from .deps import scg_core
from .hint_nodes import (
    AE_TOOLTIP,
    AE_TYPE,
    APPLY_CATEGORY,
    GAINS_TOOLTIP,
    GROUPS_TOOLTIP,
    IMAGE_TOOLTIP,
    INFO_TOOLTIP,
    NOT_CONNECTED,
    ae_or_default,
    check_selection,
    compute_hint,
)

log = logging.getLogger("scg")

SD15_CONTEXT_DIM, SD15_MODEL_CHANNELS = 768, 320
HINT_WEIGHT_KEYS = ("input_hint_block.0.weight", "control_model.input_hint_block.0.weight", "controlnet_cond_embedding.conv_in.weight")
_info_by_model: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_header_cache: dict[tuple, tuple] = {}

WHAT_SCG_NEEDS = ("SCG needs an SD1.5 ControlNet trained on SCG hints: train one with "
                  "`python -m training.train_controlnet`, or convert an official SCG ControlNet with "
                  "`python -m scg_core.convert official-controlnet`, then load that file with 'Load ControlNet Model'")
HINT_TOOLTIP = ("The hint the ControlNet receives. With a latent connected: the source scaled to cover the latent's "
                "size × 8 and centre-cropped to it (no distortion: what lies outside the latent's aspect ratio is cut "
                "off). Without: at the source's own size.")
NO_METADATA_WARNING = ("WARNING: no SCG metadata found for this ControlNet, so the groups were not checked against "
                       "those it was trained on. SCG ControlNets exported by training.train_controlnet or converted "
                       "by scg_core.convert carry it in their .safetensors file in models/controlnet.")


def sd15_problem(control_net) -> str | None:
    """Why ``control_net`` is not an SD1.5 ControlNet for 3-channel hints, or ``None``."""
    kind = type(control_net).__name__
    if kind == "T2IAdapter":
        return f"this is a T2I-Adapter, which cannot take the SCG hint. {WHAT_SCG_NEEDS}"
    model = getattr(control_net, "control_model", None)
    if model is None:
        return None if kind == "ControlLora" else f"this {kind} has no ControlNet model to check"
    context = next((m.in_features for n, m in model.named_modules() if n.endswith("attn2.to_k") and hasattr(m, "in_features")), None)
    family = {1024: "SD2.x", 2048: "SDXL"}.get(context, "not SD1.5")
    if context is not None and context != SD15_CONTEXT_DIM:
        return f"this ControlNet expects {context}-wide text conditioning ({family}); SCG ControlNets are for SD1.5 (768)"
    if getattr(model, "model_channels", SD15_MODEL_CHANNELS) != SD15_MODEL_CHANNELS:
        return f"this ControlNet has {model.model_channels} base channels; an SD1.5 ControlNet has 320"
    hint = _hint_weight(model)
    if hint is not None and hint.shape[1] != 3:
        return f"this ControlNet takes {hint.shape[1]}-channel hints; SCG hints are RGB (3 channels)"
    return None


def _hint_weight(control_model):
    block = getattr(control_model, "input_hint_block", None)
    try:
        first = block[0]
        return getattr(first, "conv", first).weight  # through a ConstantPadConv
    except (TypeError, IndexError, AttributeError):
        return None


def with_official_hint(control_net, official):
    """A copy of ``control_net`` (a converted official SCG ControlNet) whose first hint convolution is
    fed as the official one was (:class:`scg_core.controlnet.official_hint.OfficialHintConv`: the hint cropped to
    the official autoencoder's size and padded with the mean colour), so it computes exactly what the
    official ControlNet computes.

    The copy shares every weight with the original: only the hint block's first layer is wrapped, in
    a shallow copy of the model, so the ControlNet ComfyUI's loader cached is left as it is. Raises
    ``ValueError`` when the model has no such convolution.
    """
    model = getattr(control_net, "control_model", None)
    block = getattr(model, "input_hint_block", None)
    try:
        first = block[0]
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"this {type(control_net).__name__} has no hint block to feed the official way") from None
    wrapped = scg_core().controlnet.official_hint.OfficialHintConv(first, official)
    new_block = copy.copy(block)
    new_block._modules = dict(block._modules)
    new_block._modules[next(iter(block._modules))] = wrapped
    new_model = copy.copy(model)
    new_model._modules = dict(model._modules)
    new_model._modules["input_hint_block"] = new_block
    new = control_net.copy()
    new.control_model = new_model
    return new


def _controlnet_files():
    try:
        import folder_paths
    except ImportError:
        return []
    return [p for p in (folder_paths.get_full_path("controlnet", n) for n in folder_paths.get_filename_list("controlnet"))
            if p and p.endswith(".safetensors")]


def _scg_header(path: str):
    """(ControlNetInfo or None, name of the hint weight) for a file, cached by modification time."""
    from safetensors import safe_open

    try:
        key = scg_core().hosts.loading.file_key(path)
    except OSError as e:  # e.g. a dangling symlink in models/controlnet: not a candidate
        log.warning("SCG: %s: %s", path, e)
        return None, None
    if key not in _header_cache:
        try:
            with safe_open(path, framework="pt") as f:
                info = scg_core().controlnet.metadata.parse_controlnet_metadata(f.metadata())
                keys = set(f.keys())
            name = next((k for k in HINT_WEIGHT_KEYS if k in keys), None)
        except (ValueError, OSError) as e:  # damaged SCG metadata or an unreadable file: skip it
            log.warning("SCG: %s: %s", path, e)
            info, name = None, None
        _header_cache[key] = (info, name)
    return _header_cache[key]


def scg_info(control_net):
    """The SCG metadata of the file ``control_net`` was loaded from, found by content.

    The core loader keeps no file name, so the SCG ControlNets in ``models/controlnet`` are matched
    by their hint-encoder's first convolution (a few hundred numbers, read lazily).
    """
    from safetensors import safe_open

    model = getattr(control_net, "control_model", None)
    weight = _hint_weight(model) if model is not None else None
    if weight is None:
        return None
    if model in _info_by_model:
        return _info_by_model[model]
    found = None
    ours = weight.detach().float().cpu()
    for path in _controlnet_files():
        info, name = _scg_header(path)
        if info is None or name is None:
            continue
        with safe_open(path, framework="pt") as f:
            theirs = f.get_tensor(name).float()
        if theirs.shape == ours.shape and torch.allclose(theirs, ours, rtol=1e-2, atol=1e-3):
            found = info
            break
    _info_by_model[model] = found
    return found


class SCGControlNetApply:
    """Compute the SCG hint of a source image and apply a ControlNet with it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "Positive conditioning (e.g. from CLIP Text Encode, or another ControlNet apply)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative conditioning."}),
                "control_net": ("CONTROL_NET", {"tooltip": "An SD1.5 ControlNet trained on SCG hints, from 'Load ControlNet Model' "
                                                           "(train one with python -m training.train_controlnet, or convert an "
                                                           "official one with python -m scg_core.convert official-controlnet)."}),
                "image": ("IMAGE", {"tooltip": "The source image: " + IMAGE_TOOLTIP}),
                "groups": ("STRING", {"default": "brightness", "multiline": False, "tooltip": GROUPS_TOOLTIP}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "How strongly the ControlNet steers; 0 leaves the conditioning unchanged."}),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                            "tooltip": "Fraction of the sampling steps after which the ControlNet starts."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                          "tooltip": "Fraction of the sampling steps after which it stops."}),
            },
            "optional": {
                "modular_ae": (AE_TYPE, {"tooltip": AE_TOOLTIP}),
                "gains": ("STRING", {"default": "", "multiline": False, "tooltip": GAINS_TOOLTIP}),
                "latent": ("LATENT", {"tooltip": "The latent you sample: the hint is computed at its size × 8 — the source is "
                                                 "scaled to cover that size and centre-cropped (no distortion; what lies outside "
                                                 "the latent's aspect ratio is cut off). Not connected: at the source image's "
                                                 "size (ComfyUI then rescales it)."}),
            },
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "IMAGE", "STRING")
    RETURN_NAMES = ("positive", "negative", "hint", "info")
    FUNCTION = "apply"
    CATEGORY = APPLY_CATEGORY
    DESCRIPTION = ("Makes the SCG hint of the source image at the generation resolution and applies an SCG ControlNet "
                   "with it, exactly like 'Apply ControlNet (Advanced)' (chains with other ControlNets). Outputs the "
                   "conditioning, the image hint it applied and what it checked.")
    OUTPUT_TOOLTIPS = ("Positive conditioning with the ControlNet applied.", "Negative conditioning with the ControlNet applied.",
                       HINT_TOOLTIP, INFO_TOOLTIP + " It also says whether the groups match the ControlNet's SCG metadata.")
    SEARCH_ALIASES = ("SCG", "apply controlnet", "controlnet", "SCG controlnet", "hint", "preprocessor", "hypercolumn")

    @classmethod
    def VALIDATE_INPUTS(cls, groups, gains="", modular_ae=NOT_CONNECTED):
        return check_selection(groups, gains, modular_ae)

    def apply(self, positive, negative, control_net, image, groups, strength, start_percent, end_percent,
              modular_ae=None, gains="", latent=None):
        problem = sd15_problem(control_net)
        if problem:
            raise ValueError(f"SCG ControlNet Apply: {problem}")
        model = ae_or_default(modular_ae)
        size = None
        if latent is not None:
            h, w = latent["samples"].shape[-2:]
            size = (h * 8, w * 8)
        hint, info = compute_hint(model, image, groups, gains, size)
        lines = [info]
        meta = scg_info(control_net)
        if meta is not None:
            core = scg_core()
            problems = core.controlnet.metadata.selection_mismatch(meta, model, core.hosts.selection.parse_groups(groups),
                                                                core.hosts.selection.parse_gains(gains))
            for p in problems:
                log.warning("SCG ControlNet Apply: %s", p)
            lines += [f"WARNING: {p}" for p in problems] or [f"groups match the ControlNet's training ({', '.join(g.name for g in meta.groups)})"]
            if meta.official_hint is not None:
                try:
                    control_net = with_official_hint(control_net, meta.official_hint)
                    lines.append("official SCG ControlNet: its hint block sees the hint as the official one did "
                                 "(official size and border)")
                except ValueError as e:
                    log.warning("SCG ControlNet Apply: %s; results differ from the official ControlNet near the border", e)
                    lines.append(f"WARNING: {e}; results differ from the official ControlNet near the border")
        else:
            log.warning("SCG ControlNet Apply: %s", NO_METADATA_WARNING.removeprefix("WARNING: "))
            lines.append(NO_METADATA_WARNING)
        import nodes as comfy_nodes  # ComfyUI's own nodes.py

        positive, negative = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(
            positive=positive, negative=negative, control_net=control_net, image=hint,
            strength=strength, start_percent=start_percent, end_percent=end_percent)
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (positive, negative, hint, text)}
