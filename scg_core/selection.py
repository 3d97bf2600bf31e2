"""Parse the group selections users type into host UIs (ComfyUI, A1111) and the CLI.

A selection is a comma-separated list of group names or labels (``"brightness, HC2"``); gains are
``name=factor`` pairs (``"colour=0.5, edges=2"``). Names are resolved later against the loaded
autoencoder, which owns the group definitions (see :func:`scg_core.groups.find_groups`).
"""

from __future__ import annotations

import math
import re

ALL = ("", "all", "*")


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

    >>> parse_gains("colour=0.5, edges = 2")
    {'colour': 0.5, 'edges': 2.0}
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
            factor = math.nan
        if not sep or not name or not math.isfinite(factor):
            raise ValueError(f"gains: cannot read {item!r}; write group=factor pairs separated by commas, e.g. 'colour=0.5, edges=2'")
        gains[name] = factor
    return gains
