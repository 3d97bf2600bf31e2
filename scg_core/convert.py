"""Converters from the official release's formats to scg_core's safetensors.

    python -m scg_core.convert official-ae equ_nv16_vl4_rn1_Bipolar_norm.pth scg_official.safetensors
    python -m scg_core.convert official-controlnet scg_hc3.ckpt scg_hc3.safetensors --groups HC3

Official files are PyTorch pickles. They are read with ``torch.load(weights_only=True)`` and an
allow-list that adds only ``argparse.Namespace`` (the autoencoder checkpoint's ``arg``; the
ControlNet converter, :mod:`scg_core.convert_controlnet`, adds Lightning's ``AttributeDict`` read
as a plain dict): anything else in the pickle is refused before it can run.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .config import RELEASED_MEAN, RELEASED_STD, ModularAEConfig
from .groups import OFFICIAL_GROUPS
from .model import ModularAE
from .weights_io import WeightsError, save

ALLOWED_GLOBALS = [argparse.Namespace]

# official key suffix → our parameter name (SCG_NOTES §2)
OFFICIAL_AE_KEYS = {
    "conv.c1_1.weight": "pathway_a",
    "conv.c1_2_1.weight": "pathway_b",
    "conv.c1_2_2.weight": "surround",
    "conv.c2.weight": "module_kernels",
}
OFFICIAL_AE_PREFIX = "lgn_ende.0."


def load_official_pickle(path: str | Path, extra_globals: Sequence[Any] = (), *, mmap: bool = False) -> Any:
    """``torch.load`` restricted to tensors, plain containers and ``argparse.Namespace``, plus
    ``extra_globals`` (entries as for ``torch.serialization.safe_globals``). ``mmap``: map the
    tensors of a zip-format checkpoint instead of reading them (those never used are never read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([*ALLOWED_GLOBALS, *extra_globals]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(str(e))
        if "Unsupported global" in detail:
            raise WeightsError(
                f"refused to load {path}: it contains objects outside the allow-list (tensors, plain "
                f"containers, argparse.Namespace{', Lightning AttributeDict' if extra_globals else ''}), so it is "
                f"not an official SCG checkpoint or it has been tampered with. {detail}"
            ) from e
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({detail})") from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({e})") from e


def _unpickler_detail(message: str) -> str:
    """The one informative part of torch's long weights-only error."""
    tail = message.split("WeightsUnpickler error:", 1)[-1].strip()
    return tail.split("\n\n", 1)[0].split(" was not an allowed global")[0].strip() or message.splitlines()[0]


def official_ae_from_state(obj: Any, source: str = "") -> ModularAE:
    """Build a ``ModularAE`` from a loaded official autoencoder checkpoint
    ``{'arg': Namespace, 'state_dict': {...}}`` (SCG_NOTES §2)."""
    if not isinstance(obj, dict) or "state_dict" not in obj:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{source}: expected an official autoencoder checkpoint {{'arg', 'state_dict'}}; found {found}")
    state = {k.removeprefix("module."): v for k, v in obj["state_dict"].items()}
    tensors = {}
    for suffix, name in OFFICIAL_AE_KEYS.items():
        key = OFFICIAL_AE_PREFIX + suffix
        if key not in state:
            raise WeightsError(f"{source}: missing {key!r}; keys present: {sorted(state)[:12]}")
        tensors[name] = state[key].float()
    a = tensors["pathway_a"]
    if a.ndim != 4 or a.shape[2] != a.shape[3]:
        raise WeightsError(f"{source}: {OFFICIAL_AE_PREFIX}conv.c1_1.weight has shape {tuple(a.shape)}; expected [k, C, K, K]")
    k, C, K = a.shape[0], a.shape[1], a.shape[2]
    kl = tensors["module_kernels"].shape[0]
    if kl % k:
        raise WeightsError(f"{source}: c2 has {kl} kernels, not a multiple of the {k} modules")
    config = ModularAEConfig(in_channels=C, num_modules=k, module_channels=kl // k, parameterization="bipolar",
                             kernel_size=K, stride=4, mean=RELEASED_MEAN[:C], std=RELEASED_STD[:C])
    arg = vars(obj["arg"]) if isinstance(obj.get("arg"), argparse.Namespace) else dict(obj.get("arg") or {})
    for field, value in (("n_vector", k), ("vector_length", kl // k), ("channel", C)):
        if field in arg and arg[field] != value:
            raise WeightsError(f"{source}: arg.{field} = {arg[field]!r} disagrees with the weights ({value})")
    groups = OFFICIAL_GROUPS if k == len({m for g in OFFICIAL_GROUPS for m in g.modules}) else ()
    provenance = {"source": "official-ae", "original_file": Path(source).name,
                  "official_arg": {key: v for key, v in arg.items() if isinstance(v, (int, float, str, bool, type(None)))}}
    model = ModularAE(config, groups=groups, provenance=provenance)
    expected = model.expected_shapes()
    for name, t in tensors.items():
        if tuple(t.shape) != expected[name]:
            raise WeightsError(f"{source}: {name} ({tuple(t.shape)}) does not fit the layout; expected {expected[name]}")
    model.load_state_dict(tensors)
    return model


def convert_official_ae(src: str | Path, dst: str | Path) -> ModularAE:
    """Convert an official ``.pth`` autoencoder to our safetensors format; returns the model."""
    model = official_ae_from_state(load_official_pickle(src), str(src))
    save(model, dst, provenance={"original_sha256": hashlib.sha256(Path(src).read_bytes()).hexdigest()})
    return model


def main(argv: list[str] | None = None) -> int:
    from . import convert_controlnet  # imports this module

    parser = argparse.ArgumentParser(prog="python -m scg_core.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("official-ae", help="official modular autoencoder .pth → scg_core safetensors")
    p.add_argument("src", help="official checkpoint, e.g. equ_nv16_vl4_rn1_Bipolar_norm.pth")
    p.add_argument("dst", help="output .safetensors")
    convert_controlnet.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "official-controlnet":
            message = convert_controlnet.run(args)
        else:
            message = f"wrote {args.dst}: {convert_official_ae(args.src, args.dst).extra_repr()}"
    except (ValueError, OSError) as e:  # WeightsError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
