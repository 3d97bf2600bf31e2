"""Named groups of modules ("hypercolumns") and the per-module gains a selection turns into.

Group definitions are data stored with the weights, because which module carries what depends on
the trained autoencoder. ``OFFICIAL_GROUPS`` is the grouping of the released SCG autoencoder
(docs/scg_notes.md §4); converters attach it to official weights.

A group may carry a *display gain*: a faint band-pass group (edges, texture) decodes to a mid-grey
image with low-contrast lines; its stored gain scales its modules whenever a hint keeps that group,
so every host shows, and every ControlNet trained on it sees, the same readable image. With a
*display span* the factor is chosen per image instead (``scg_core.model.display``): the group's
hint is stretched to span that share of the grey range, by at most the stored gain. The
reconstruction (no selection) and module indices chosen one by one stay at gain 1; official
weights have gain 1 and no span everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Group:
    """A named set of modules.

    Args:
        name: the identifier users type (``"HC3"``); unique within one autoencoder.
        modules: module indices in ``[0, num_modules)``.
        label: what the group carries, for people (``"edges"``); several groups may share one.
        gain: display gain, > 0: the factor on this group's modules in every hint that keeps the group
            by name or label (a user's gain for the group multiplies it); 1 = as decoded. With
            ``span``: the largest factor the per-image stretch may use.
        span: display span in (0, 1), or ``None``: stretch each image's hint of this group so that its
            1st–99th percentile spans this share of the grey range (``scg_core.model.display``).
    """

    name: str
    modules: tuple[int, ...]
    label: str = ""
    gain: float = 1.0
    span: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", tuple(int(m) for m in self.modules))
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a group needs a non-empty name, got {self.name!r}")
        if not self.modules:
            raise ValueError(f"group {self.name!r} has no modules")
        if len(set(self.modules)) != len(self.modules):
            raise ValueError(f"group {self.name!r} lists a module twice: {self.modules}")
        gain = self.gain
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain <= 0:
            raise ValueError(f"group {self.name!r} has display gain {gain!r}; it must be a finite number > 0")
        object.__setattr__(self, "gain", float(gain))
        span = self.span
        if span is not None:
            if isinstance(span, bool) or not isinstance(span, (int, float)) or not 0 < span < 1:
                raise ValueError(f"group {self.name!r} has display span {span!r}; it must be a number between 0 and 1 (or absent)")
            object.__setattr__(self, "span", float(span))

    @property
    def title(self) -> str:
        """``"HC3 (edges)"``, or just the name when there is no label or it says the same."""
        return f"{self.name} ({self.label})" if self.label and self.label != self.name else self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``gain`` only when it is not 1 and ``span`` only when set, so files without
        display settings stay as they were."""
        out = {"name": self.name, "modules": list(self.modules), "label": self.label}
        if self.gain != 1.0:
            out["gain"] = self.gain
        if self.span is not None:
            out["span"] = self.span
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Group":
        unknown = sorted(set(data) - {"name", "modules", "label", "gain", "span"})
        if unknown or "name" not in data or "modules" not in data:
            raise ValueError(f"a group entry needs 'name' and 'modules' (and may have 'label', 'gain' and 'span'); got {dict(data)}")
        return cls(name=data["name"], modules=tuple(data["modules"]), label=data.get("label", ""),
                   gain=data.get("gain", 1.0), span=data.get("span"))


# The released autoencoder's hypercolumns, as in the official code (docs/scg_notes.md §4).
OFFICIAL_GROUPS: tuple[Group, ...] = (
    Group("HC0", (0, 1, 4, 8, 9, 15), "colour"),
    Group("HC1", (2, 3), "brightness"),
    Group("HC2", (5, 12), "edges"),
    Group("HC3", (10,), "edges"),
    Group("HC4", (6, 7), "higher frequency"),
    Group("HC5", (11, 13, 14), "higher frequency"),
)


def validate_groups(groups: Sequence[Group], num_modules: int) -> tuple[Group, ...]:
    """Check names are unique and indices in range; return the groups as a tuple."""
    seen: set[str] = set()
    for group in groups:
        if group.name in seen:
            raise ValueError(f"two groups are named {group.name!r}; group names must be unique")
        seen.add(group.name)
        bad = [m for m in group.modules if not 0 <= m < num_modules]
        if bad:
            raise ValueError(
                f"group {group.name!r} refers to modules {bad}, but this autoencoder has "
                f"modules 0..{num_modules - 1}"
            )
    return tuple(groups)


def find_groups(groups: Sequence[Group], key: str) -> list[Group]:
    """Groups matching ``key`` by name (exact, then case-insensitive) or, failing that, by label.

    A label selects every group carrying it (``"edges"`` → HC2 and HC3 of the released model).
    Raises ``ValueError`` naming the available names and labels when nothing matches.
    """
    for match in (
        lambda g: g.name == key,
        lambda g: g.name.lower() == key.lower(),
        lambda g: g.label.lower() == key.lower(),
    ):
        found = [g for g in groups if match(g)]
        if found:
            return found
    names = ", ".join(g.title for g in groups) or "none (these weights define no groups)"
    raise ValueError(f"unknown group {key!r}; this autoencoder's groups are: {names}")


def module_gains(
    num_modules: int,
    groups: Sequence[Group] = (),
    keep: Iterable[str] | None = None,
    modules: Iterable[int] | None = None,
    gains: Mapping[str, float] | None = None,
) -> list[float]:
    """Turn a selection into one gain per module (0 = dropped).

    Args:
        num_modules: ``k``.
        groups: the autoencoder's group definitions.
        keep: group names or labels to keep, each at its display gain (:attr:`Group.gain`).
            ``None`` together with ``modules=None`` keeps all modules at gain 1 (the reconstruction).
        modules: module indices to keep at gain 1, in addition to ``keep``.
        gains: group name/label → factor on that group's display gain (the paper's saturation and
            contrast edits); a gained group is kept even if not listed in ``keep``.

    Returns:
        ``num_modules`` floats. A group with a display span contributes only the user's factor
        (1 when not in ``gains``): its display factor is chosen per image (:func:`module_display`).

    >>> module_gains(4, [Group("A", (0, 1)), Group("B", (3,), "edges")], keep=["edges"])
    [0.0, 0.0, 0.0, 1.0]
    >>> module_gains(4, [Group("A", (0, 1))], gains={"A": 2.0})
    [2.0, 2.0, 1.0, 1.0]
    >>> module_gains(4, [Group("A", (0, 1)), Group("B", (3,), "edges", gain=3.0)], keep=["edges"], gains={"B": 0.5})
    [0.0, 0.0, 0.0, 1.5]
    """
    return module_display(num_modules, groups, keep, modules, gains)[0]


def module_display(
    num_modules: int,
    groups: Sequence[Group] = (),
    keep: Iterable[str] | None = None,
    modules: Iterable[int] | None = None,
    gains: Mapping[str, float] | None = None,
) -> tuple[list[float], list[Group | None]]:
    """A selection as one factor per module (see :func:`module_gains`) and, per module, the group
    with a display span whose per-image stretch it takes (``None``: the factor is all).

    >>> factors, stretched = module_display(3, [Group("E", (1, 2), gain=8.0, span=0.6)], keep=["E"], gains={"E": 0.5})
    >>> factors, [g and g.name for g in stretched]
    ([0.0, 0.5, 0.5], [None, 'E', 'E'])
    """
    keep = list(keep) if keep is not None else None
    modules = list(modules) if modules is not None else None
    gains = dict(gains or {})
    select_all = keep is None and modules is None
    out = [1.0 if select_all else 0.0] * num_modules
    stretched: list[Group | None] = [None] * num_modules
    for m in modules or []:
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < num_modules:
            raise ValueError(f"module index {m!r} is out of range 0..{num_modules - 1}")
        out[m] = 1.0
    for key in keep or []:
        for group in find_groups(groups, key):
            for m in group.modules:
                out[m], stretched[m] = (1.0, group) if group.span is not None else (group.gain, None)
    for key, gain in gains.items():
        gain = float(gain)
        if gain != gain or gain in (float("inf"), float("-inf")):
            raise ValueError(f"gain for {key!r} must be a finite number, got {gain}")
        for group in find_groups(groups, key):
            for m in group.modules:
                out[m], stretched[m] = (gain, group) if group.span is not None else (group.gain * gain, None)
    return out, stretched


def with_gains(groups: Sequence[Group], gains: Mapping[str, float], spans: Mapping[str, float | None] | None = None) -> tuple[Group, ...]:
    """``groups`` with the display gains of those named in ``gains`` (group name → gain) replaced,
    and the display spans of those named in ``spans`` (``None`` removes one)."""
    spans = dict(spans or {})
    unknown = sorted((set(gains) | set(spans)) - {g.name for g in groups})
    if unknown:
        raise ValueError(f"no group named {', '.join(map(repr, unknown))}; the groups are {', '.join(g.name for g in groups)}")
    return tuple(replace(g, gain=float(gains.get(g.name, g.gain)), span=spans.get(g.name, g.span)) for g in groups)
