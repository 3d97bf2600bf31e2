"""Official SCG ControlNet (a PyTorch-Lightning checkpoint) → a standard SD1.5 ControlNet file.

    python -m scg_core.convert official-controlnet scg_hc3.ckpt scg_hc3.safetensors --groups HC3

Read (docs/scg_notes.md §5; ``cldm/cldm.py`` of the official release): ``control_model.input_hint_block_new.0.
lgn_ende.conv.*`` is the frozen modular autoencoder (the official ``ControlNet`` also registers it as
``control_model.hypercolumn.*``; that copy is checked and dropped), ``control_model.input_hint_block_new.
{1..}`` the standard hint block shifted by one, every other ``control_model.*`` tensor a standard ldm
ControlNet. The SD weights, diffusion buffers, optimizer state and callbacks are dropped (with
``mmap`` they are never even read).

Written: the ControlNet in the standard ldm layout (:mod:`scg_core.controlnet.layout`), hint block
renumbered to ``input_hint_block.{0..}`` and the autoencoder's input normalisation folded into its
first conv, so it takes the project's hint in [0,1] (``ModularAE.hint``) where the official one took
the raw hint — with SCG metadata, including ``scg_official_hint`` (how the official block saw its
hint: the decoder's size, 509 of 512, and a zero border in normalised units; ComfyUI's SCG ControlNet
Apply feeds it that way and is exact, :mod:`scg_core.controlnet.official_hint`); and the autoencoder in scg_core's
format. Assumed as in the official defaults, since the weights cannot show them: hint-block strides
2, 2, 2. The official block resized every hint to a 512-pixel shorter side, so the official model ran
at that size only; hosts pass the hint at the generation size, so the converted one runs at any size
(the same computation at 512).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..formats.official_ae import (
    OFFICIAL_AE_KEYS,
    OFFICIAL_EYE,
    load_official_pickle,
    official_ae_from_state,
)
from ..formats.weights import WeightsError, save
from ..model.groups import OFFICIAL_GROUPS, Group
from ..model.modular_ae import ModularAE
from .layout import (
    LDM_PREFIX,
    fold_hint_normalization,
    ldm_to_diffusers,
    save_controlnet,
)
from .metadata import controlnet_metadata
from .official_hint import OfficialHint

HINT_NEW = LDM_PREFIX + "input_hint_block_new."
AE_COPY = LDM_PREFIX + "hypercolumn."
AE_PREFIXES = ("lgn_ende.conv.", "lgn_ende.0.conv.")  # + OFFICIAL_AE_KEYS or OFFICIAL_EYE
REQUIRED = ("time_embed.0.weight", "input_blocks.0.0.weight", "input_hint_block.0.weight", "zero_convs.0.0.weight",
            "middle_block.0.in_layers.0.weight", "middle_block_out.0.weight")
NO_GROUPS = ("the official SCG release trains one ControlNet per hypercolumn ({names}), and which one a checkpoint "
             "learned is not stored in it: say which with --groups (e.g. --groups HC3, several: --groups HC2,HC3), "
             "or --random-groups for one trained on a random hypercolumn per sample")


class OfficialControlNet(NamedTuple):
    state: dict[str, Tensor]  # ldm layout, ``control_model.`` keys, takes hints in [0,1]
    ae: ModularAE  # the embedded autoencoder, OFFICIAL_GROUPS attached
    dropped: list[str]  # top-level names of the tensors left out (SD weights, diffusion buffers)


def split_official_controlnet(obj: Any, source: str = "") -> OfficialControlNet:
    """A loaded official checkpoint (``{'state_dict': ..., Lightning fields}`` or the bare state
    dict) → its ControlNet in the standard ldm layout and its autoencoder."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(k.startswith(HINT_NEW) for k in state):
        raise WeightsError(f"{source}: not an SCG ControlNet: it has no {HINT_NEW}* tensors (the SCG autoencoder "
                           f"inside the hint block); {_what_it_is(state if isinstance(state, dict) else obj)}")
    control = {k: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    dropped = sorted({k.split(".", 1)[0] for k in state if not k.startswith(LDM_PREFIX)})

    ae = _embedded_ae(control, source)
    out = {}
    for key, value in control.items():
        if key.startswith((AE_COPY, HINT_NEW + "0.")):
            continue
        if key.startswith(HINT_NEW):
            index, _, rest = key[len(HINT_NEW):].partition(".")
            if index.isdigit():  # anything else stays as it is and is refused below as unknown
                key = f"{LDM_PREFIX}input_hint_block.{int(index) - 1}.{rest}"
        elif key.startswith(LDM_PREFIX + "input_hint_block."):
            raise WeightsError(f"{source}: holds both input_hint_block_new and input_hint_block ({key}); which one the "
                               "ControlNet used is unknown, so it is not converted")
        out[key] = value
    missing = [LDM_PREFIX + k for k in REQUIRED if LDM_PREFIX + k not in out]
    if missing:
        raise WeightsError(f"{source}: missing ControlNet tensors {missing}; is the checkpoint truncated?")
    first = LDM_PREFIX + "input_hint_block.0."
    if out[first + "weight"].shape[1] != ae.config.in_channels:
        raise WeightsError(f"{source}: the first hint conv reads {out[first + 'weight'].shape[1]} channels, but the "
                           f"autoencoder decodes {ae.config.in_channels}")
    out[first + "weight"], out[first + "bias"] = fold_hint_normalization(
        out[first + "weight"], out.get(first + "bias"), ae.config.mean, ae.config.std)
    ldm_to_diffusers(out)  # refuses anything that is not part of a standard ControlNet
    return OfficialControlNet(out, ae, dropped)


def official_hint(ae: ModularAE) -> OfficialHint:
    """How the official hint block saw the hint of ``ae``: its decoder's size, zero padding in
    normalised units (= the mean colour in image units)."""
    c = ae.config
    return OfficialHint(tuple(c.mean), c.stride, c.padding, c.receptive_field)


def _what_it_is(state: Any) -> str:
    if not isinstance(state, dict):
        return f"found a {type(state).__name__}"
    if any(k.removeprefix(LDM_PREFIX) == "input_hint_block.0.weight" for k in state):
        return "it is a plain ControlNet (lllyasviel layout), which hosts load as it is"
    if "controlnet_cond_embedding.conv_in.weight" in state:
        return "it is a plain ControlNet (diffusers layout), which hosts load as it is"
    return f"keys found: {sorted(state)[:8]}"


def _embedded_ae(control: dict[str, Tensor], source: str) -> ModularAE:
    block = {k[len(HINT_NEW + "0."):]: v for k, v in control.items() if k.startswith(HINT_NEW + "0.")}
    prefix = next((p for p in AE_PREFIXES if p + "c1_1.weight" in block), None)
    if prefix is None:
        raise WeightsError(f"{source}: {HINT_NEW}0 is not the SCG autoencoder: no lgn_ende.conv.c1_1.weight "
                           f"(found {sorted(block)[:8]})")
    expected = {prefix + suffix for suffix in OFFICIAL_AE_KEYS}
    missing = sorted(expected - set(block))
    unknown = sorted(set(block) - expected - {prefix + OFFICIAL_EYE})
    if missing or unknown:
        raise WeightsError(f"{source}: the autoencoder in {HINT_NEW}0 lacks {missing} and has unexpected {unknown}")
    for key, value in control.items():  # the same module registered a second time
        if key.startswith(AE_COPY):
            twin = block.get(key[len(AE_COPY):])
            if twin is None or not torch.equal(twin, value):
                raise WeightsError(f"{source}: {key} is not a copy of the autoencoder in {HINT_NEW}0")
    ae = official_ae_from_state({"state_dict": block}, source)
    ae.provenance = {"source": "official-controlnet", "original_file": Path(source).name}
    return ae


def group_names(available: Sequence[Group], groups: Sequence[str] | None, random_groups: bool) -> list[str]:
    """``--groups`` resolved against ``available`` (exact names, any case; all of them when ``random_groups``)."""
    names = {g.name.lower(): g.name for g in available}
    if random_groups:
        return list(names.values())
    if not groups:
        raise ValueError(NO_GROUPS.format(names=", ".join(g.title for g in available or OFFICIAL_GROUPS)))
    unknown = [g for g in groups if g.lower() not in names]
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}; the official hypercolumns are {', '.join(names.values()) or 'none'}")
    return [names[g.lower()] for g in groups]


class Converted(NamedTuple):
    path: Path
    ae_path: Path
    ae: ModularAE
    metadata: dict[str, str]


def convert_official_controlnet(src: str | Path, dst: str | Path, *, groups: Sequence[str] | None = None,
                                random_groups: bool = False, ae_out: str | Path | None = None,
                                dtype: torch.dtype = torch.float16) -> Converted:
    """Convert an official SCG ControlNet checkpoint; see the module docstring.

    Args:
        groups: the hypercolumns (``OFFICIAL_GROUPS`` names) it was trained on; required unless
            ``random_groups`` (trained on one random hypercolumn per sample).
        ae_out: where the autoencoder goes; default ``dst`` stem + ``_modular_ae.safetensors``.
        dtype: of the ControlNet's floating tensors.
    """
    src, dst = Path(src), Path(dst)
    ae_path = Path(ae_out) if ae_out else dst.with_name(dst.stem + "_modular_ae.safetensors")
    if groups and random_groups:
        raise ValueError("give either --groups or --random-groups, not both")
    if ae_path.resolve() == dst.resolve():
        raise ValueError(f"the ControlNet and the autoencoder would both be written to {dst}; pick another --ae-out")
    group_names(OFFICIAL_GROUPS, groups, random_groups)  # fail before reading gigabytes
    obj = load_official_pickle(src, mmap=True)  # the SD weights and optimizer state stay on disk
    net = split_official_controlnet(obj, str(src))
    sha = _sha256(src)
    lightning = {k: obj[k] for k in ("epoch", "global_step", "pytorch-lightning_version") if isinstance(obj, dict) and k in obj}
    provenance = {"source": "official-controlnet", "original_file": src.name, "original_sha256": sha,
                  "dropped": net.dropped, "hint_normalization_folded": {"mean": list(net.ae.config.mean), "std": list(net.ae.config.std)},
                  "lightning": {k: v for k, v in lightning.items() if isinstance(v, (int, float, str))}}
    metadata = {**controlnet_metadata(net.ae, group_names(net.ae.groups, groups, random_groups), random_groups=random_groups,
                                      base_model="sd15"), "scg_provenance": json.dumps(provenance),
                "scg_official_hint": official_hint(net.ae).to_json()}
    save(net.ae, ae_path, provenance={"original_sha256": sha})
    save_controlnet(dst, net.state, metadata, dtype)
    return Converted(dst, ae_path, net.ae, metadata)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def add_parser(sub: Any) -> None:
    """Register the ``official-controlnet`` subcommand on ``convert``'s subparsers."""
    p = sub.add_parser("official-controlnet", help="official SCG ControlNet (Lightning checkpoint) → standard SD1.5 "
                       "ControlNet .safetensors taking hints in [0,1], plus its autoencoder")
    p.add_argument("src", help="official checkpoint (.ckpt / .pth)")
    p.add_argument("dst", help="output ControlNet .safetensors")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--groups", help="hypercolumns it was trained on, comma-separated (HC0 … HC5)")
    which.add_argument("--random-groups", action="store_true", help="it was trained on one random hypercolumn per sample")
    p.add_argument("--ae-out", help="output autoencoder .safetensors (default: OUT stem + _modular_ae.safetensors)")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="of the ControlNet tensors (default fp16)")


def run(args: argparse.Namespace) -> str:
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    done = convert_official_controlnet(args.src, args.dst, groups=groups, random_groups=args.random_groups,
                                       ae_out=args.ae_out, dtype={"fp16": torch.float16, "fp32": torch.float32}[args.dtype])
    kept = ", ".join(g["name"] for g in json.loads(done.metadata["scg_groups"]))
    mode = "one of" if args.random_groups else "hints of"
    return f"wrote {done.path} (trained on {mode} {kept}; hints in [0,1]) and {done.ae_path}: {done.ae.extra_repr()}"
