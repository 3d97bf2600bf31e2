"""The official-form fixtures (tests/official_checkpoints.py) against ComfyUI's ports of the ldm modules.

ComfyUI loads official SD1.5 checkpoints and lllyasviel ControlNets as they are, so its
``UNetModel``, ``cldm.ControlNet`` and ``AutoencoderKL`` have the official state-dict names and
shapes. Here ComfyUI (in a subprocess: its import sets global state) detects the architecture from
our full-size enumeration the way it does for a real file, builds those modules on the meta device,
and reports their state dicts; the enumeration must equal them exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys

from devtools.comfy_server import REPO

SCRIPT = r"""
import json, sys
comfy_dir, repo, out = sys.argv[1:4]
sys.path[:0] = [repo, comfy_dir]  # ComfyUI has a tests package of its own
import torch
from comfy.cli_args import args
args.cpu = True
import comfy.cldm.cldm, comfy.model_detection, comfy.ops
from comfy.ldm.models.autoencoder import AutoencoderKL
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from tests.official_checkpoints import SD15, controlnet_shapes, plain_controlnet_name, unet_shapes, vae_shapes

def meta(shapes, prefix):
    return {k: torch.empty(s, device="meta") for k, s in shapes.items() if k.startswith(prefix)}

def described(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}

result = {}
unet = meta(unet_shapes(SD15), "model.diffusion_model.")
config = comfy.model_detection.model_config_from_unet(unet, "model.diffusion_model.")
result["unet_model"] = type(config).__name__
result["unet"] = described(UNetModel(**config.unet_config, device="meta", operations=comfy.ops.disable_weight_init))

# the ControlNet as ComfyUI's load_controlnet builds it for an lllyasviel-layout file of the official weights
plain = {"control_model." + plain_controlnet_name(k): v for k, v in meta(controlnet_shapes(SD15), "control_model.").items()
         if plain_controlnet_name(k)}
cn_config = comfy.model_detection.model_config_from_unet(plain, "control_model.", True).unet_config
cn_config.pop("out_channels")
cn_config["hint_channels"] = plain["control_model.input_hint_block.0.weight"].shape[1]
result["controlnet"] = described(comfy.cldm.cldm.ControlNet(**cn_config, device="meta"))

ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
            "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}  # cldm_v15.yaml
with torch.device("meta"):
    result["vae"] = described(AutoencoderKL(ddconfig=ddconfig, embed_dim=4))
json.dump(result, open(out, "w"))
"""


def test_the_official_form_names_and_shapes_are_those_of_comfyuis_ldm_modules(comfyui_src, tmp_path):
    from tests.official_checkpoints import (
        SD15,
        clip_state,
        controlnet_shapes,
        plain_controlnet_name,
        unet_shapes,
        vae_shapes,
    )

    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(comfyui_src), str(REPO), str(out)],
                          check=False, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())

    def ours(shapes, prefix):
        return {k.removeprefix(prefix): list(v) for k, v in shapes.items() if k.startswith(prefix)}

    assert r["unet_model"] == "SD15"
    assert ours(unet_shapes(SD15), "model.diffusion_model.") == r["unet"]
    plain = {plain_controlnet_name(k): list(v) for k, v in controlnet_shapes(SD15).items() if plain_controlnet_name(k)}
    assert plain == r["controlnet"]
    assert ours(vae_shapes(SD15), "first_stage_model.") == r["vae"]
    # and the whole checkpoint has the size the issue describes
    total = len(unet_shapes(SD15)) + len(controlnet_shapes(SD15)) + len(vae_shapes(SD15)) + len(clip_state(SD15)) + 12
    assert 1400 < total < 1600, total
