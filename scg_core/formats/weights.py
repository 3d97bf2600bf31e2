"""Save and load Modular AE weights as safetensors, with config, groups and provenance as JSON
metadata. Loading checks everything and says what is wrong with a bad file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..model.config import ModularAEConfig
from ..model.groups import Group, validate_groups
from ..model.modular_ae import ModularAE

FORMAT = "scg.modular_ae"
FORMAT_VERSION = 2
"""Version 2 adds ``hint`` (``{"phase_average": true}``); a file without it is written as version 1,
so every reader of version 1 still loads it, and one that would compute other hints refuses the rest."""
DEFAULT_WEIGHTS = Path(__file__).parents[1] / "weights" / "default.safetensors"


class WeightsError(ValueError):
    """A weight file that cannot be used, with the reason and the fix in the message."""


class NoDefaultWeightsError(FileNotFoundError):
    """The bundled default autoencoder is not installed."""


def save(model: ModularAE, path: str | os.PathLike, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (safetensors). Written to a temporary file, then renamed, so an
    interrupted save never leaves a half-written file under the final name.

    ``provenance`` is merged into ``model.provenance`` in the metadata.
    """
    path = Path(path)
    meta = {
        "scg_format": FORMAT,
        "scg_format_version": "2" if model.phase_average else "1",
        "config": json.dumps(model.config.to_dict()),
        "groups": json.dumps([g.to_dict() for g in model.groups]),
        "provenance": json.dumps({**model.provenance, **(provenance or {})}),
    }
    if model.phase_average:
        meta["hint"] = json.dumps({"phase_average": True})
    tensors = {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters()}
    return save_file_atomic(tensors, path, meta)


def save_file_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """safetensors' ``save_file`` into a temporary file of the same folder, then renamed over ``path``:
    a reader never sees half a file. An unwritable folder is a ``PermissionError`` naming it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise PermissionError(f"cannot write {path}: the folder {path.parent} is not writable ({e.strerror or e}); "
                              f"choose another output path") from e
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a Modular AE file: ``config`` (``ModularAEConfig``), ``groups``
    (list of ``Group``), ``provenance`` (dict), ``phase_average`` (bool, see
    :class:`~scg_core.ModularAE`), ``format_version`` (int)."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except SafetensorError as e:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({e}). It may be truncated or another format; "
            f"official .pth checkpoints are converted with: python -m scg_core.convert official-ae IN.pth OUT.safetensors"
        ) from e
    return _parse_metadata(path, raw)


def load(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
         *, trainable: bool = False) -> ModularAE:
    """Load a Modular AE written by :func:`save`, checking tensor names, shapes and values.

    The model comes back ready for inference: ``eval()`` mode with ``requires_grad`` off, so hints
    carry no autograd graph. ``trainable=True`` returns it in ``train()`` mode with gradients on,
    to continue training it.
    """
    path = _existing(path)
    meta = read_metadata(path)
    model = ModularAE(meta["config"], groups=meta["groups"], provenance=meta["provenance"], phase_average=meta["phase_average"])
    expected = model.expected_shapes()
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
        if missing or unexpected:
            raise WeightsError(
                f"{path} does not match its own config ({model.config.parameterization}, "
                f"k={model.config.num_modules}): missing tensors {missing}, unexpected tensors {unexpected}"
            )
        try:
            tensors = {name: f.get_tensor(name) for name in expected}
        except SafetensorError as e:
            raise WeightsError(f"{path}: could not read tensor data ({e}); the file is damaged") from e
    for name, t in tensors.items():
        if tuple(t.shape) != expected[name]:
            raise WeightsError(f"{path}: tensor {name!r} has shape {tuple(t.shape)}, expected {expected[name]} for this config")
        if not t.is_floating_point():
            raise WeightsError(f"{path}: tensor {name!r} has dtype {t.dtype}; expected floating point")
        if not torch.isfinite(t).all():
            raise WeightsError(f"{path}: tensor {name!r} contains NaN or infinite values")
    model.load_state_dict(tensors)
    model.requires_grad_(trainable).train(trainable)
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def load_default(device: str | torch.device = "cpu", dtype: torch.dtype | None = None, *, trainable: bool = False) -> ModularAE:
    """The bundled default autoencoder, ready for inference (see :func:`load` for ``trainable``);
    ``NoDefaultWeightsError`` explains what to do if absent."""
    if not DEFAULT_WEIGHTS.is_file():
        raise NoDefaultWeightsError(
            f"the bundled default Modular AE is missing ({DEFAULT_WEIGHTS}): it ships with scg-nodes, so the "
            "installation is incomplete — reinstall the package or restore the file from the repository "
            "(`python -m training.build_default` rebuilds it); meanwhile choose another weight file (models/scg in "
            "ComfyUI, the tab's list in A1111/Forge, --weights on the command line; official weights: "
            "`python -m scg_core.convert official-ae IN.pth OUT.safetensors`)."
        )
    return load(DEFAULT_WEIGHTS, device=device, dtype=dtype, trainable=trainable)


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder, not a Modular AE weight file; give the .safetensors file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"Modular AE weight file not found: {path}")
    return path


def _parse_metadata(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    if raw.get("scg_format") != FORMAT:
        found = raw.get("scg_format") or "no SCG metadata"
        raise WeightsError(
            f"{path} is a safetensors file but not a Modular AE ({found}); "
            f"is it a ControlNet or a Stable Diffusion checkpoint?"
        )
    try:
        version = int(raw.get("scg_format_version", ""))
    except ValueError:
        raise WeightsError(f"{path}: bad scg_format_version {raw.get('scg_format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise WeightsError(f"{path} uses format version {version}; this scg_core reads up to {FORMAT_VERSION}. Upgrade scg_core.")
    try:
        config = ModularAEConfig.from_dict(json.loads(raw["config"]))
        groups = validate_groups([Group.from_dict(g) for g in json.loads(raw.get("groups", "[]"))], config.num_modules)
        provenance = json.loads(raw.get("provenance", "{}"))
        hint = json.loads(raw.get("hint", "{}"))
        if not isinstance(hint, dict) or set(hint) - {"phase_average"} or not isinstance(hint.get("phase_average", False), bool):
            raise ValueError(f"'hint' must be {{\"phase_average\": true or false}}; got {raw.get('hint')}")
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path}: invalid Modular AE metadata: {e}") from e
    return {"config": config, "groups": groups, "provenance": provenance, "phase_average": hint.get("phase_average", False),
            "format_version": version}
