"""Export a trained ControlNet: one safetensors file in the lllyasviel/ComfyUI layout (what ComfyUI's
core ``ControlNetLoader`` and sd-webui-controlnet load) and a diffusers folder, both carrying the
SCG metadata (``scg_core.controlnet.metadata``: groups, autoencoder fingerprint, hint contract, base).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from scg_core.controlnet.layout import diffusers_to_ldm, save_controlnet

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def export_controlnet(controlnet, path: str | Path, metadata: dict[str, str], dtype: str = "fp16",
                      diffusers_dir: str | Path | None = None) -> Path:
    """Write ``path`` (single file, ``dtype``) and, when given, ``diffusers_dir`` (fp32 diffusers
    folder + ``scg_metadata.json``). Returns ``path``."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in controlnet.state_dict().items()}
    save_controlnet(path, diffusers_to_ldm(state), metadata, dtype=DTYPES[dtype])
    if diffusers_dir is not None:
        diffusers_dir = Path(diffusers_dir)
        controlnet.save_pretrained(diffusers_dir, safe_serialization=True)
        (diffusers_dir / "scg_metadata.json").write_text(json.dumps(metadata, indent=1))
    return path
