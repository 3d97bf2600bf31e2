"""The official autoencoder checkpoint (``.pth``) → scg_core's safetensors.

The command is ``python -m scg_core.convert official-ae SRC DST`` (:mod:`scg_core.convert`).

Official files are PyTorch pickles. They are read with ``torch.load(weights_only=True)`` and an
allow-list that adds only ``argparse.Namespace`` (the autoencoder checkpoint's ``arg``) and
Lightning's ``AttributeDict`` (read as a plain dict): anything else in the pickle is refused before
it can run.

The official autoencoder (``Column_trans_rot_lgn`` in the official ``train_V1_sep_new.py``) keeps a
list of hypercolumn *sets*, ``lgn_ende.0``, ``lgn_ende.1``, …, one per entry of the list-valued
``arg.n_vector``, ``arg.vector_length`` and ``arg.rot_num``. Set ``i`` is a bipolar layer
(``Bipolar`` in ``V1_sep.py``) with ``n_vector[i] / rot_num[i]`` LGN channels, each feeding
``vector_length[i] · rot_num[i]`` kernels — those are its modules. The released model has one set,
``n_vector=[16], vector_length=[4], rot_num=[1]``: 16 modules × 4 channels.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..model.config import RELEASED_MEAN, RELEASED_STD, ModularAEConfig
from ..model.groups import OFFICIAL_GROUPS
from ..model.modular_ae import ModularAE
from .weights import WeightsError, save

# Lightning stores ``hyper_parameters`` as its AttributeDict (a dict subclass) when the module called
# save_hyperparameters(); it is read as an OrderedDict, so no Lightning code is imported or run.
# Names: PL 1.x, then lightning_fabric / lightning 2.x.
LIGHTNING_GLOBALS = [(OrderedDict, f"{module}.AttributeDict") for module in (
    "pytorch_lightning.utilities.parsing", "lightning_fabric.utilities.data", "lightning.fabric.utilities.data")]
ALLOWED_GLOBALS = [argparse.Namespace, *LIGHTNING_GLOBALS]
ALLOWED_TEXT = "tensors, plain containers, argparse.Namespace, Lightning's AttributeDict"

# official tensor name inside ``lgn_ende[.i].conv.`` → our parameter name (docs/scg_notes.md §2)
OFFICIAL_AE_KEYS = {
    "c1_1.weight": "pathway_a",
    "c1_2_1.weight": "pathway_b",
    "c1_2_2.weight": "surround",
    "c2.weight": "module_kernels",
}
OFFICIAL_EYE = "eye"  # Gonlin.eye: a frozen identity the official layer composes its kernel with
_LGN_KEY = re.compile(r"(?P<prefix>(?:.*\.)?)lgn_ende\.(?:(?P<index>\d+)\.)?conv\.(?P<name>.+)")
_OTHER_LAYERS = {"c1.weight": "Vanilla", "c0_1.weight": "Bipolar_1x1", "c0_2.weight": "Bipolar_1x1"}
PER_SET_FIELDS = ("n_vector", "vector_length", "rot_num")


def load_official_pickle(path: str | Path, *, mmap: bool = False) -> Any:
    """``torch.load`` restricted to tensors, plain containers, ``argparse.Namespace`` and Lightning's
    ``AttributeDict``. ``mmap``: map the tensors of a zip-format checkpoint instead of reading them
    (those never used are never read).

    A pickle that asks for anything else raises :class:`WeightsError` with one line naming what it
    asked for; the unpickler stops at that point, so nothing in the file is run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        refused = _refused_names(str(e))
        if refused:
            raise WeightsError(
                f"refused to load {path}: its pickle asks for {', '.join(refused)}, which is outside the allow-list "
                f"({ALLOWED_TEXT}); loading stopped there and nothing in the file was run. Official SCG checkpoints "
                f"hold only those types, so this file is not one or it has been altered") from None
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({_unpickler_detail(str(e))})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({_first_line(str(e))})") from None


def _refused_names(message: str) -> list[str]:
    """The globals, functions or classes torch's weights-only unpickler refused, from its message."""
    names = (re.findall(r"GLOBAL ([\w.]+)", message) + re.findall(r"unrecognized function ([\w.<> ]+?)[\s.]*$", message, re.M)
             + re.findall(r"but got <class '([\w.]+)'>", message))
    return list(dict.fromkeys(names))


def _unpickler_detail(message: str) -> str:
    """The informative line of torch's long weights-only error, else its first line."""
    tail = message.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in message else ""
    return _first_line(tail) if tail.strip() else _first_line(message)


def _first_line(message: str) -> str:
    return next((line.strip() for line in message.splitlines() if line.strip()), message)[:300]


# ------------------------------------------------------------------------------------ the autoencoder


class OfficialSet(NamedTuple):
    """One hypercolumn set of an official autoencoder checkpoint."""

    prefix: str  # up to ``lgn_ende``: "" in the official file, "model." under Lightning, ...
    index: int | None  # None: ``lgn_ende.conv.*`` (the layer as the official ControlNet holds it)
    tensors: dict[str, Tensor]  # name after ``conv.`` → tensor

    @property
    def where(self) -> str:
        return f"{self.prefix}lgn_ende{'' if self.index is None else f'.{self.index}'}.conv"


def split_checkpoint(obj: Any, source: str = "") -> tuple[Mapping[str, Tensor], dict[str, Any]]:
    """A loaded checkpoint in any of the forms users have → (state dict, ``arg`` as a dict or {}).

    Forms: the official ``{'arg': Namespace, 'state_dict': {...}}`` (extra top-level entries are
    ignored), a Lightning checkpoint (``state_dict`` beside ``epoch``, ``optimizer_states``, …), a
    ``{'model': state_dict}`` wrapper, or the bare state dict.
    """
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a checkpoint dictionary, found a {type(obj).__name__}")
    state = obj
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
            state = inner
            break
    arg = obj.get("arg", obj.get("args"))
    if isinstance(arg, argparse.Namespace):
        arg = vars(arg)
    elif not isinstance(arg, Mapping):
        arg = {}
    return state, dict(arg)


def find_official_sets(state: Mapping[str, Any], source: str = "") -> list[OfficialSet]:
    """The ``lgn_ende`` hypercolumn sets in a state dict (any key prefix; DataParallel's too)."""
    sets: dict[tuple[str, int | None], dict[str, Tensor]] = {}
    for key, value in state.items():
        m = _LGN_KEY.fullmatch(str(key))
        if m and isinstance(value, Tensor):
            index = None if m["index"] is None else int(m["index"])
            sets.setdefault((m["prefix"], index), {})[m["name"]] = value
    if not sets:
        keys = sorted(str(k) for k in state)
        raise WeightsError(f"{source}: no official autoencoder in it: expected tensors named lgn_ende.0.conv.c1_1.weight "
                           f"and so on; found {len(keys)} keys, e.g. {keys[:8]}")
    prefixes = sorted({prefix for prefix, _ in sets})
    if any(p.startswith("control_model.") for p in prefixes):
        raise WeightsError(f"{source}: this is an official SCG ControlNet, not an autoencoder checkpoint; convert it with "
                           "`python -m scg_core.convert official-controlnet`, which also writes its autoencoder")
    if len(prefixes) > 1:
        raise WeightsError(f"{source}: autoencoder tensors under several prefixes {prefixes}; which one to convert is unclear")
    return [OfficialSet(p, i, t) for (p, i), t in sorted(sets.items(), key=lambda kv: (kv[0][1] or 0))]


def official_set_sizes(arg: Mapping[str, Any], source: str = "") -> list[tuple[int, int, int]] | None:
    """``(n_vector, vector_length, rot_num)`` per hypercolumn set, from list-valued fields (as the
    official code writes them) or scalars (one set); ``None`` when ``arg`` does not say."""
    if not any(f in arg for f in PER_SET_FIELDS):
        return None
    values = {}
    for f in PER_SET_FIELDS:
        v = arg.get(f, 1 if f == "rot_num" else None)
        items = list(v) if isinstance(v, (list, tuple)) else [v]
        if not items or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in items):
            raise WeightsError(f"{source}: arg.{f} = {v!r}; the official code needs a list of positive integers, one per "
                               "hypercolumn set (e.g. [16])")
        values[f] = items
    lengths = {f: len(v) for f, v in values.items()}
    if len(set(lengths.values())) != 1:
        raise WeightsError(f"{source}: arg.n_vector, vector_length and rot_num must have one entry per hypercolumn set; "
                           f"they have {lengths}")
    return list(zip(*(values[f] for f in PER_SET_FIELDS)))


def official_ae_from_state(obj: Any, source: str = "") -> ModularAE:
    """Build a ``ModularAE`` from a loaded official autoencoder checkpoint (any form
    :func:`split_checkpoint` takes); the official hypercolumns are attached to the released shape."""
    state, arg = split_checkpoint(obj, source)
    found = find_official_sets(state, source)
    sizes = official_set_sizes(arg, source)
    if len(found) > 1 or (sizes and len(sizes) > 1):
        described = f"arg.n_vector = {arg.get('n_vector')!r}" if sizes and len(sizes) > 1 else \
            ", ".join(s.where for s in found)
        raise WeightsError(
            f"{source}: {max(len(found), len(sizes or ()))} hypercolumn sets ({described}); scg_core converts an autoencoder "
            "with one set, like the released SCG autoencoder (n_vector=[16]): the official ControlNet (HyperColumnLGN "
            "in cldm.py) only ever uses the first set, lgn_ende[0], and a hint keeps modules of one set")
    layer = found[0]
    tensors = _bipolar_tensors(layer, source)
    a = tensors["pathway_a"]
    k, C, K = a.shape[0], a.shape[1], a.shape[2]
    kl = tensors["module_kernels"].shape[0]
    if kl % k:
        raise WeightsError(f"{source}: {layer.where}.c2.weight has {kl} kernels, not a multiple of the {k} LGN channels")
    _check_arg(arg, sizes[0] if sizes else None, k, kl // k, C, source)
    _check_eye(layer, kl, source)
    config = ModularAEConfig(in_channels=C, num_modules=k, module_channels=kl // k, parameterization="bipolar",
                             kernel_size=K, stride=4, mean=RELEASED_MEAN[:C], std=RELEASED_STD[:C])
    released = (k, kl // k, C, K) == (16, 4, 3, 5)
    ignored = sorted(str(key) for key in state if not str(key).startswith(layer.where + ".")
                     or str(key)[len(layer.where) + 1:] not in OFFICIAL_AE_KEYS)
    provenance = {"source": "official-ae", "original_file": Path(source).name, "official_arg": _arg_summary(arg, sizes),
                  "ignored_tensors": ignored[:20] + ([f"... {len(ignored) - 20} more"] if len(ignored) > 20 else [])}
    model = ModularAE(config, groups=OFFICIAL_GROUPS if released else (), provenance=provenance)
    expected = model.expected_shapes()
    for name, t in tensors.items():
        if tuple(t.shape) != expected[name]:
            raise WeightsError(f"{source}: {name} ({tuple(t.shape)}) does not fit the bipolar layout; expected {expected[name]}")
    model.load_state_dict(tensors)
    return model


def _bipolar_tensors(layer: OfficialSet, source: str) -> dict[str, Tensor]:
    other = sorted({kind for name, kind in _OTHER_LAYERS.items() if name in layer.tensors})
    if other:
        raise WeightsError(f"{source}: {layer.where} is a '{other[0]}' layer; scg_core converts the released 'Bipolar' "
                           "layer (c1_1, c1_2_1, c1_2_2, c2 — all 5×5), whose composition it computes exactly")
    missing = [f"{layer.where}.{name}" for name in OFFICIAL_AE_KEYS if name not in layer.tensors]
    if missing:
        raise WeightsError(f"{source}: missing {', '.join(map(repr, missing))}; present: "
                           f"{sorted(f'{layer.where}.{n}' for n in layer.tensors)}")
    tensors = {ours: layer.tensors[theirs].detach().float() for theirs, ours in OFFICIAL_AE_KEYS.items()}
    a = tensors["pathway_a"]
    if a.ndim != 4 or a.shape[2] != a.shape[3] or a.shape[2] % 2 == 0:
        raise WeightsError(f"{source}: {layer.where}.c1_1.weight has shape {tuple(a.shape)}; expected [k, C, K, K], K odd")
    return tensors


def _check_arg(arg: Mapping[str, Any], size: tuple[int, int, int] | None, k: int, l: int, C: int, source: str) -> None:
    """``arg`` must describe the weights the way the official code would build them."""
    if size is not None:
        nv, vl, rn = size
        # Column_trans_rot_lgn builds the set with n_vector / rot_num LGN channels of vector_length · rot_num kernels.
        if nv % rn or (nv // rn, vl * rn) != (k, l):
            raise WeightsError(
                f"{source}: arg.n_vector = {arg.get('n_vector')!r}, vector_length = {arg.get('vector_length')!r}, "
                f"rot_num = {arg.get('rot_num', 1)!r} describe {nv}/{rn} LGN channels of {vl}·{rn} kernels, but the weights "
                f"have {k} of {l}")
    if "channel" in arg and arg["channel"] != C:
        raise WeightsError(f"{source}: arg.channel = {arg['channel']!r} disagrees with the weights ({C} input channels)")
    if arg.get("gonlin", "Bipolar") != "Bipolar":
        raise WeightsError(f"{source}: arg.gonlin = {arg['gonlin']!r}; scg_core converts the released 'Bipolar' layer")
    if arg.get("activate_fn") is not None:
        raise WeightsError(f"{source}: arg.activate_fn = {arg['activate_fn']!r}: the official encoder then applies a "
                           "nonlinearity; scg_core's modular autoencoder is linear, like the released one (activate_fn=None)")
    if arg.get("lgn_stride", 4) != 4:
        raise WeightsError(f"{source}: arg.lgn_stride = {arg['lgn_stride']!r}; the bipolar layer's kernel is composed for "
                           "stride 4 (two stride-2 stages), the only stride scg_core reproduces")


def _check_eye(layer: OfficialSet, kl: int, source: str) -> None:
    eye = layer.tensors.get(OFFICIAL_EYE)
    if eye is not None and not torch.equal(eye.detach().float().reshape(eye.shape[0], -1), torch.eye(kl)):
        raise WeightsError(f"{source}: {layer.where}.eye is not the {kl}×{kl} identity the official layer composes its "
                           "kernel with; the file has been altered")


def _arg_summary(arg: Mapping[str, Any], sizes: list[tuple[int, int, int]] | None) -> dict[str, Any]:
    """The official ``arg`` for the provenance: one set's sizes as plain numbers, other plain fields."""
    out = {key: v for key, v in arg.items() if key not in PER_SET_FIELDS and isinstance(v, (int, float, str, bool, type(None)))}
    if sizes:
        out.update(zip(PER_SET_FIELDS, sizes[0]))
    return dict(sorted(out.items()))


def convert_official_ae(src: str | Path, dst: str | Path) -> ModularAE:
    """Convert an official ``.pth`` autoencoder to our safetensors format; returns the model."""
    model = official_ae_from_state(load_official_pickle(src), str(src))
    save(model, dst, provenance={"original_sha256": hashlib.sha256(Path(src).read_bytes()).hexdigest()})
    return model
