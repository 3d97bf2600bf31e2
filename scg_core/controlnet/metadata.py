"""What an SCG ControlNet file says about the hints it was trained on, and checks against it.

``training.train_controlnet`` writes these keys into the safetensors metadata of the ControlNet it
exports; hosts read them to warn when a user feeds hints of other groups (or of another
autoencoder) than the ControlNet learned. A ControlNet file without them is simply not an SCG
ControlNet: nothing can be checked, nothing is wrong.

Keys (all strings, as safetensors requires):

* ``scg_format`` = ``"scg.controlnet"``, ``scg_format_version`` = ``"1"``
* ``scg_hint_contract``: :data:`scg_core.HINT_CONTRACT_VERSION` of the hints it was trained on
* ``scg_groups``: JSON list of ``{"name", "modules", "label"}`` (and ``"gain"``, the group's display gain,
  when it is not 1, and ``"span"``, its per-image contrast, when set) — the groups the hints kept
* ``scg_gains``: JSON object, group → factor (may be ``{}``)
* ``scg_modular_ae``: JSON object with the autoencoder's ``fingerprint`` (see :func:`fingerprint`)
* ``scg_group_mode``: ``"fixed"`` (every hint kept ``scg_groups``) or ``"random"`` (one of
  ``scg_groups`` drawn per sample, so any one of them is a valid hint); absent means fixed
* ``scg_base_model``: what it was trained against, e.g. ``"sd15"`` (informative)
* ``scg_hint_phase_average``: ``"1"`` when the hints were averaged over the code grid's positions
  (:attr:`scg_core.ModularAE.phase_average`); absent means they were not
* ``scg_official_hint``: only in converted official ControlNets — JSON ``{"pad_value": [...],
  "stride", "padding", "receptive_field"}`` (:class:`scg_core.controlnet.official_hint.OfficialHint`): the official
  hint block saw the autoencoder's raw hint at the decoder's size (509 of 512) and zero-padded it in
  normalised units (``pad_value``, the mean colour, in image units). A host that holds the model
  feeds its first hint convolution that way and is exact; others pad the full-size hint with black,
  which changes every residual (through GroupNorm and attention).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..model.functional import HINT_CONTRACT_VERSION
from ..model.groups import Group
from ..model.modular_ae import ModularAE
from .official_hint import OfficialHint

FORMAT = "scg.controlnet"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ControlNetInfo:
    """The SCG metadata of a ControlNet file."""

    groups: tuple[Group, ...]
    gains: Mapping[str, float] = field(default_factory=dict)
    ae_fingerprint: str = ""
    hint_contract: int = 1
    group_mode: str = "fixed"
    base_model: str = ""
    official_hint: OfficialHint | None = None  # converted official ControlNets only
    phase_average: bool = False

    @property
    def modules(self) -> tuple[int, ...]:
        return tuple(sorted({m for g in self.groups for m in g.modules}))


def fingerprint(model: ModularAE) -> str:
    """A short hash of the autoencoder's weights (float32 bytes), to tell autoencoders apart."""
    h = hashlib.sha256()
    for name, w in sorted(model.factor_weights().items()):
        h.update(name.encode())
        h.update(w.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def selected_groups(model: ModularAE, groups: Sequence[str] | None, gains: Mapping[str, float] | None = None) -> tuple[Group, ...]:
    """The autoencoder's groups a selection keeps (all of them when ``groups`` and ``gains`` are empty)."""
    if not groups and not gains:
        return tuple(model.groups)
    keys = list(groups or []) + list(gains or {})
    found: dict[str, Group] = {}
    for key in keys:
        for g in model.find_groups(key):
            found[g.name] = g
    return tuple(found.values())


def controlnet_metadata(model: ModularAE, groups: Sequence[str] | None, gains: Mapping[str, float] | None = None, *,
                        random_groups: bool = False, base_model: str = "sd15") -> dict[str, str]:
    """The metadata to store in a ControlNet trained on ``model.hint(x, groups, gains=gains)``
    (``random_groups``: on one of ``groups`` drawn per sample)."""
    meta = {
        "scg_format": FORMAT,
        "scg_format_version": str(FORMAT_VERSION),
        "scg_hint_contract": str(HINT_CONTRACT_VERSION),
        "scg_groups": json.dumps([g.to_dict() for g in selected_groups(model, groups, gains)]),
        "scg_gains": json.dumps(dict(gains or {})),
        "scg_modular_ae": json.dumps({"fingerprint": fingerprint(model)}),
        "scg_group_mode": "random" if random_groups else "fixed",
        "scg_base_model": base_model,
    }
    if model.phase_average:
        meta["scg_hint_phase_average"] = "1"
    return meta


def parse_controlnet_metadata(raw: Mapping[str, str] | None) -> ControlNetInfo | None:
    """Metadata dict → :class:`ControlNetInfo`, ``None`` when it is not an SCG ControlNet.

    Raises ``ValueError`` when it claims to be one but its SCG keys are unreadable or newer.
    """
    raw = raw or {}
    if raw.get("scg_format") != FORMAT:
        return None
    try:
        version = int(raw.get("scg_format_version", "0"))
        if version > FORMAT_VERSION:
            raise ValueError(f"SCG ControlNet format version {version} is newer than this scg_core reads ({FORMAT_VERSION}); update the SCG nodes")
        groups = tuple(Group.from_dict(d) for d in json.loads(raw["scg_groups"]))
        gains = {str(k): float(v) for k, v in json.loads(raw.get("scg_gains", "{}")).items()}
        ae = json.loads(raw.get("scg_modular_ae", "{}"))
        mode = raw.get("scg_group_mode", "fixed")
        if mode not in ("fixed", "random"):
            raise ValueError(f"unknown scg_group_mode {mode!r}")
        official = OfficialHint.from_json(raw["scg_official_hint"]) if "scg_official_hint" in raw else None
        averaged = raw.get("scg_hint_phase_average", "0")
        if averaged not in ("0", "1"):
            raise ValueError(f"scg_hint_phase_average must be '0' or '1', got {averaged!r}")
        return ControlNetInfo(groups, gains, str(ae.get("fingerprint", "")), int(raw.get("scg_hint_contract", "1")),
                              mode, raw.get("scg_base_model", ""), official, averaged == "1")
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise ValueError(f"the SCG metadata of this ControlNet is damaged ({type(e).__name__}: {e})") from e


def read_controlnet_info(path: str | os.PathLike) -> ControlNetInfo | None:
    """Read the SCG metadata of a ControlNet ``.safetensors`` file (the header only, fast)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata()
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
    try:
        return parse_controlnet_metadata(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def display_setting(group: Group) -> str:
    """``"display gain 4"`` or ``"contrast stretched to 60% (factor ≤ 18)"``: how a hint shows ``group``."""
    if group.span is None:
        return f"display gain {group.gain:g}"
    return f"contrast stretched to {100 * group.span:g}% (factor ≤ {group.gain:g})"


def selection_mismatch(info: ControlNetInfo, model: ModularAE, groups: Sequence[str] | None, gains: Mapping[str, float] | None = None) -> list[str]:
    """Why hints of this selection differ from what the ControlNet was trained on ([] = they match).

    With the same autoencoder the kept modules are compared; with another one only the group names
    can be (and that the autoencoder differs is itself reported).
    """
    chosen = selected_groups(model, groups, gains)
    trained_names = ", ".join(g.name for g in info.groups)
    chosen_names = ", ".join(g.name for g in chosen)
    problems = []
    ours = fingerprint(model)
    same_ae = info.ae_fingerprint and info.ae_fingerprint == ours
    if info.ae_fingerprint and not same_ae:
        problems.append(
            f"this ControlNet was trained on hints of another modular autoencoder (fingerprint {info.ae_fingerprint}, "
            f"yours is {ours}); its groups may not mean the same"
        )
    if info.phase_average != model.phase_average:
        how = {True: "averaged over the code grid's positions (phase_average)", False: "on one code grid (no phase_average)"}
        problems.append(f"this ControlNet was trained on hints computed {how[info.phase_average]}, but this autoencoder "
                        f"file computes them {how[model.phase_average]}")
    chosen_modules = tuple(sorted({m for g in chosen for m in g.modules}))
    if info.group_mode == "random":  # trained on one group at a time: any single one of them fits
        fits = len(chosen) == 1 and (
            chosen[0].modules in {g.modules for g in info.groups} if same_ae
            else chosen[0].name.lower() in {g.name.lower() for g in info.groups})
        if not fits:
            problems.append(f"this ControlNet was trained on one group at a time out of [{trained_names}], "
                            f"but the hint keeps [{chosen_names}]")
        return problems
    if same_ae:
        trained = {g.name: g for g in info.groups}
        for g in chosen:
            if g.name in trained and (trained[g.name].gain, trained[g.name].span) != (g.gain, g.span):
                problems.append(f"group {g.name} is shown at {display_setting(g)} by this autoencoder file, but this "
                                f"ControlNet was trained on it at {display_setting(trained[g.name])}")
    if (same_ae and chosen_modules != info.modules) or (
        not same_ae and {n.lower() for n in chosen_names.split(", ")} != {g.name.lower() for g in info.groups}
    ):
        problems.append(f"this ControlNet was trained on the groups [{trained_names}], but the hint keeps [{chosen_names}]")
    return problems
