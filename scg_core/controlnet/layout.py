"""ControlNet state-dict layouts: diffusers ``ControlNetModel`` ↔ lllyasviel/ldm ("cldm").

Pure key renaming (tensors are passed through untouched) for the SD1.5 family: any number of
down levels, resnets per level, with or without attention per level, conv or linear ``proj_in``.
The structure is read from the keys, never assumed. SDXL ControlNets (``add_embedding``),
ControlNet-LoRAs and T2I-Adapters are not supported; unknown keys raise, they are never dropped.

ldm keys are written **with** the ``control_model.`` prefix, the layout of lllyasviel's own
ControlNet releases. Both targets read it: ComfyUI a28a9dc8 (``comfy/controlnet.py``) looks for
``control_model.zero_convs.0.0.weight`` first and loads such a file through a wrapper holding
``control_model``; sd-webui-controlnet strips ``control_model.`` from every key before building
its model. Both also accept unprefixed keys, so :func:`ldm_to_diffusers` reads either.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..formats.weights import WeightsError, save_file_atomic

LDM_PREFIX = "control_model."

# diffusers ResnetBlock2D name → ldm ResBlock name
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_RESNET_LDM = {v: k for k, v in _RESNET.items()}
# whole modules whose position does not depend on the structure
_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
          "conv_in": "input_blocks.0.0", "class_embedding.linear_1": "label_emb.0.0",
          "class_embedding.linear_2": "label_emb.0.2", "controlnet_mid_block": "middle_block_out.0"}
_FIXED_LDM = {v: k for k, v in _FIXED.items()}
# first name inside a transformer (diffusers Transformer2DModel = ldm SpatialTransformer, same names)
_ATTENTION_PARTS = ("norm", "proj_in", "proj_out", "transformer_blocks")

_P = r"(weight|bias)"
_D_FIXED = re.compile(rf"({'|'.join(map(re.escape, _FIXED))})\.{_P}")
_D_HINT = re.compile(rf"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.{_P}")
_D_DOWN = re.compile(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)")
_D_DOWNSAMPLE = re.compile(rf"down_blocks\.(\d+)\.downsamplers\.0\.conv\.{_P}")
_D_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")
_D_ZERO = re.compile(rf"controlnet_down_blocks\.(\d+)\.{_P}")
_L_FIXED = re.compile(rf"({'|'.join(map(re.escape, _FIXED_LDM))})\.{_P}")
_L_HINT = re.compile(rf"input_hint_block\.(\d+)\.{_P}")
_L_INPUT = re.compile(r"input_blocks\.([1-9]\d*)\.([01])\.(.+)")
_L_MID = re.compile(r"middle_block\.(\d+)\.(.+)")
_L_ZERO = re.compile(rf"zero_convs\.(\d+)\.0\.{_P}")


def _resnet_param(rest: str, names: Mapping[str, str]) -> str | None:
    """``norm1.weight`` → ``in_layers.0.weight`` (with ``names`` = ``_RESNET``), None if not a resnet tensor."""
    name, _, param = rest.rpartition(".")
    return f"{names[name]}.{param}" if name in names and param in ("weight", "bias") else None


def _is_attention(rest: str) -> bool:
    return rest.split(".", 1)[0] in _ATTENTION_PARTS


def _refuse_unknown(unknown: list[str], layout: str, other: str) -> None:
    if unknown:
        shown = ", ".join(sorted(unknown)[:6])
        raise WeightsError(
            f"{len(unknown)} key(s) are not part of an SD1.5-family ControlNet in the {layout} layout: {shown}"
            f"{' …' if len(unknown) > 6 else ''}. If these are {other} keys use the other converter; SDXL "
            f"ControlNets, ControlNet-LoRAs and T2I-Adapters are not supported.")


def _put(out: dict[str, Tensor], key: str, value: Tensor, source: str) -> None:
    if key in out:
        raise WeightsError(f"two keys map to {key!r} (the second is {source!r}); the state dict mixes layouts or prefixes")
    out[key] = value


def diffusers_to_ldm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers ``ControlNetModel.state_dict()`` → ldm keys with the ``control_model.`` prefix.

    Raises ``WeightsError`` naming the keys it does not know.
    """
    # Pass 1: the structure — resnets per level, which levels downsample, hint convs, mid attention.
    resnets: dict[int, int] = {}
    downsamples: set[int] = set()
    hint_blocks, mid_attention = -1, False
    for key in state:
        if m := _D_DOWN.fullmatch(key):
            level, i = int(m[1]), int(m[3])
            resnets[level] = max(resnets.get(level, 0), i + 1)
        elif m := _D_DOWNSAMPLE.fullmatch(key):
            downsamples.add(int(m[1]))
        elif (m := _D_HINT.fullmatch(key)) and m[2]:
            hint_blocks = max(hint_blocks, int(m[2]))
        elif (m := _D_MID.fullmatch(key)) and m[1] == "attentions":
            mid_attention = True
    levels = sorted(resnets)
    if levels != list(range(len(levels))) or not downsamples <= set(levels):
        raise WeightsError(f"down_blocks levels {levels} (downsampling: {sorted(downsamples)}) are not numbered 0..n-1")
    if set(levels[:-1]) - downsamples:
        raise WeightsError(f"down_blocks {sorted(set(levels[:-1]) - downsamples)} have no downsampler but are not the last "
                           "level; the ldm layout cannot express that")
    start, n = {}, 1  # ldm input_blocks index of each level's first resnet
    for level in levels:
        start[level] = n
        n += resnets[level] + (level in downsamples)

    # Pass 2: rename.
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        new = None
        if m := _D_FIXED.fullmatch(key):
            new = f"{_FIXED[m[1]]}.{m[2]}"
        elif m := _D_HINT.fullmatch(key):
            index = 0 if m[1] == "conv_in" else 2 * (hint_blocks + 2) if m[1] == "conv_out" else 2 * (int(m[2]) + 1)
            new = f"input_hint_block.{index}.{m[3]}"
        elif m := _D_DOWN.fullmatch(key):
            block = start[int(m[1])] + int(m[3])
            if m[2] == "attentions":
                new = f"input_blocks.{block}.1.{m[4]}" if _is_attention(m[4]) else None
            elif inner := _resnet_param(m[4], _RESNET):
                new = f"input_blocks.{block}.0.{inner}"
        elif m := _D_DOWNSAMPLE.fullmatch(key):
            level = int(m[1])
            new = f"input_blocks.{start[level] + resnets[level]}.0.op.{m[2]}"
        elif m := _D_MID.fullmatch(key):
            i = int(m[2])
            if m[1] == "attentions":
                new = f"middle_block.{2 * i + 1}.{m[3]}" if _is_attention(m[3]) else None
            elif inner := _resnet_param(m[3], _RESNET):
                new = f"middle_block.{2 * i if mid_attention else i}.{inner}"
        elif m := _D_ZERO.fullmatch(key):
            new = f"zero_convs.{m[1]}.0.{m[2]}"
        if new is None:
            unknown.append(key)
        else:
            _put(out, LDM_PREFIX + new, value, key)
    _refuse_unknown(unknown, "diffusers", "ldm (input_blocks.*, zero_convs.*)")
    return out


def ldm_to_diffusers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """ldm ControlNet keys (with or without ``control_model.``) → diffusers ``ControlNetModel`` keys.

    The inverse of :func:`diffusers_to_ldm`. Raises ``WeightsError`` naming the keys it does not know.
    """
    plain = {key.removeprefix(LDM_PREFIX): key for key in state}
    if len(plain) != len(state):
        raise WeightsError("the state dict holds some keys both with and without the 'control_model.' prefix")
    # Pass 1: the structure — what each input_blocks / middle_block index holds, and the hint convs.
    kinds: dict[tuple[str, int], set[str]] = {}
    hint_last = 0
    for key in plain:
        if m := _L_INPUT.fullmatch(key):
            kind = "down" if m[2] == "0" and m[3].startswith("op.") else "res" if m[2] == "0" else "attn"
            kinds.setdefault(("input", int(m[1])), set()).add(kind)
        elif m := _L_MID.fullmatch(key):
            kinds.setdefault(("mid", int(m[1])), set()).add("attn" if _is_attention(m[2]) else "res")
        elif m := _L_HINT.fullmatch(key):
            hint_last = max(hint_last, int(m[1]))
    inputs = sorted(n for part, n in kinds if part == "input")
    if inputs != list(range(1, len(inputs) + 1)):
        raise WeightsError(f"input_blocks indices {inputs} are not numbered 1..n; is the file truncated?")
    position: dict[int, tuple[int, int | None]] = {}  # input_blocks index → (level, resnet index | None = downsampler)
    level = i = 0
    for n in inputs:
        if "down" in kinds["input", n]:
            if kinds["input", n] != {"down"}:
                raise WeightsError(f"input_blocks.{n} holds a downsampler and other layers")
            position[n] = (level, None)
            level, i = level + 1, 0
        else:
            position[n] = (level, i)
            i += 1
    mid_attention = any("attn" in kinds[part, n] for part, n in kinds if part == "mid")

    # Pass 2: rename.
    out: dict[str, Tensor] = {}
    unknown = []
    for key, original in plain.items():
        value, new = state[original], None
        if m := _L_FIXED.fullmatch(key):
            new = f"{_FIXED_LDM[m[1]]}.{m[2]}"
        elif m := _L_HINT.fullmatch(key):
            index = int(m[1])
            if index % 2 == 0 and hint_last > 0:  # odd indices are SiLUs, which have no tensors
                name = "conv_in" if index == 0 else "conv_out" if index == hint_last else f"blocks.{index // 2 - 1}"
                new = f"controlnet_cond_embedding.{name}.{m[2]}"
        elif m := _L_INPUT.fullmatch(key):
            level, i = position[int(m[1])]
            if i is None:
                new = f"down_blocks.{level}.downsamplers.0.conv.{m[3][len('op.'):]}" if m[3] in ("op.weight", "op.bias") else None
            elif m[2] == "1":
                new = f"down_blocks.{level}.attentions.{i}.{m[3]}" if _is_attention(m[3]) else None
            elif inner := _resnet_param(m[3], _RESNET_LDM):
                new = f"down_blocks.{level}.resnets.{i}.{inner}"
        elif m := _L_MID.fullmatch(key):
            n = int(m[1])
            if _is_attention(m[2]):
                new = f"mid_block.attentions.{n // 2}.{m[2]}" if n % 2 == 1 else None
            elif (inner := _resnet_param(m[2], _RESNET_LDM)) and (n % 2 == 0 or not mid_attention):
                new = f"mid_block.resnets.{n // 2 if mid_attention else n}.{inner}"
        elif m := _L_ZERO.fullmatch(key):
            new = f"controlnet_down_blocks.{m[1]}.{m[2]}"
        if new is None:
            unknown.append(original)
        else:
            _put(out, new, value, original)
    _refuse_unknown(unknown, "ldm", "diffusers (down_blocks.*, controlnet_cond_embedding.*)")
    return out


def fold_hint_normalization(weight: Tensor, bias: Tensor | None, mean: Sequence[float] | Tensor,
                            std: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """Fold ``x = (h - mean) / std`` into the first hint conv, so that it takes ``h`` directly.

    ``W' = W / std`` per input channel, ``b' = b - Σ W·mean/std``. Then ``conv(h; W', b')`` equals
    ``conv((h - mean)/std; W, b)`` wherever the kernel stays inside the image; at the zero-padding
    border (1 pixel for a 3×3, padding 1 conv) ``W'`` sees ``h = 0``, i.e. ``x = -mean/std``, not 0.

    Args:
        weight: ``(O, C, kh, kw)``; bias: ``(O,)`` or ``None`` (zero).
        mean, std: ``C`` values each, ``std > 0``.

    Returns:
        ``(W', b')`` in the dtypes of ``weight`` and ``bias`` (computed in float64).
    """
    if weight.ndim != 4:
        raise ValueError(f"weight must be a conv kernel (O, C, kh, kw); got shape {tuple(weight.shape)}")
    C = weight.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float64).flatten()
    s = torch.as_tensor(std, dtype=torch.float64).flatten()
    if m.numel() != C or s.numel() != C:
        raise ValueError(f"mean and std need one value per input channel of the conv ({C}); got {m.numel()} and {s.numel()}")
    if not bool((s > 0).all()):
        raise ValueError(f"std must be positive, got {s.tolist()}")
    w = weight.detach().double() / s.view(1, C, 1, 1)
    b = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.detach().double()
    b = b - (w * m.view(1, C, 1, 1)).sum(dim=(1, 2, 3))
    return w.to(weight.dtype), b.to(weight.dtype if bias is None else bias.dtype)


def save_controlnet(path: str | os.PathLike, state: Mapping[str, Tensor], metadata: Mapping[str, str],
                    dtype: torch.dtype = torch.float16) -> Path:
    """Write a single-file ControlNet ``.safetensors``, floating tensors cast to ``dtype``.

    ``metadata`` (strings) is merged over ``{"format": "pt"}``. The file is written to a temporary
    name in the same folder and renamed, so an interrupted save never leaves a partial file under
    ``path``. Raises ``PermissionError`` naming the folder when it is not writable.
    """
    path = Path(path)
    meta = {"format": "pt", **metadata}
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"safetensors metadata must map strings to strings; not so for {bad}")
    tensors, seen = {}, set()
    for key, t in state.items():
        t = t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype).contiguous()
        if t.numel() and t.data_ptr() in seen:  # safetensors refuses tensors sharing memory
            t = t.clone()
        seen.add(t.data_ptr())
        tensors[key] = t
    return save_file_atomic(tensors, path, meta)
