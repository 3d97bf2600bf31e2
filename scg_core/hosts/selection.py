"""Parse the group selections users type into host UIs (ComfyUI, A1111) and the CLI.

A selection is a comma-separated list of group names or labels (``"brightness, HC2"``, or ``all``);
gains are ``name=factor`` pairs (``"colour=0.5, edges=2"``) with ``0 < factor ≤ MAX_GAIN``. Names are
resolved later against the loaded autoencoder, which owns the group definitions (see
:func:`scg_core.model.groups.find_groups`). Every host (CLI, ComfyUI, A1111, the ControlNet trainer) parses
with these two functions, so they all accept the same text.
"""

from __future__ import annotations

import math
import re

ALL = ("", "all", "*")
MAX_GAIN = 10.0  # beyond this the kept group saturates the clamped hint almost everywhere
GAIN_RANGE = f"factors must be > 0 and ≤ {MAX_GAIN:g}"


def parse_groups(text: str) -> list[str] | None:
    """``"brightness, HC2"`` → ``["brightness", "HC2"]``; ``""``/``"all"``/``"*"`` → ``None`` (all modules).

    >>> parse_groups("brightness, HC2")
    ['brightness', 'HC2']
    >>> parse_groups(" all ") is None
    True
    """
    text = (text or "").strip()
    if text.lower() in ALL:
        return None
    names = [n.strip() for n in re.split(r"[,;\n]", text)]
    if any(not n for n in names):
        raise ValueError(f"groups {text!r}: empty name between commas; write names separated by commas, e.g. 'brightness, colour'")
    return list(dict.fromkeys(names))


def parse_gains(text: str) -> dict[str, float]:
    """``"colour=0.5, edges=2"`` → ``{"colour": 0.5, "edges": 2.0}``; empty text → ``{}``.

    A factor must be finite with ``0 < factor ≤ MAX_GAIN`` (10): 0 would silently drop the group (leave
    it out of the groups instead) and a negative factor would invert it.

    >>> parse_gains("colour=0.5, edges = 2")
    {'colour': 0.5, 'edges': 2.0}
    >>> parse_gains("brightness=0")
    Traceback (most recent call last):
    ValueError: gains: 'brightness=0' would drop the group; leave it out of the groups instead (factors must be > 0 and ≤ 10)
    """
    gains: dict[str, float] = {}
    for item in re.split(r"[,;\n]", text or ""):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        try:
            factor = float(value)
        except ValueError:
            factor = None
        if not sep or not name or factor is None:
            raise ValueError(f"gains: cannot read {item!r}; write group=factor pairs separated by commas, e.g. 'colour=0.5, edges=2'")
        if not math.isfinite(factor):
            raise ValueError(f"gains: {item!r} is not a finite number; {GAIN_RANGE}")
        if factor == 0:
            raise ValueError(f"gains: {item!r} would drop the group; leave it out of the groups instead ({GAIN_RANGE})")
        if not 0 < factor <= MAX_GAIN:
            raise ValueError(f"gains: {item!r} would {'invert' if factor < 0 else 'saturate'} the group; {GAIN_RANGE}")
        gains[name] = factor
    return gains


def display_gain_note(model, keep: list[str] | None) -> str:
    """``"edges_fine contrast 60%, colour ×1.2"``: how the groups ``keep`` selects are shown, for the
    hosts' info lines — the per-image contrast of a group with a display span, the stored display
    gain (other than 1) of the others; ``""`` when there is nothing to say (or ``keep`` is ``None``:
    every module, gain 1).

    ``model``: a :class:`scg_core.ModularAE`; its groups resolve the names and labels in ``keep``.
    """
    shown = {g.name: (f"contrast {100 * g.span:g}%" if g.span is not None else f"×{g.gain:g}")
             for key in keep or [] for g in model.find_groups(key) if g.span is not None or g.gain != 1.0}
    return ", ".join(f"{name} {how}" for name, how in shown.items())
