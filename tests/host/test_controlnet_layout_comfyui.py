"""``diffusers_to_ldm`` against ComfyUI's own ControlNetLoader, on a full-size SD1.5 ControlNet.

ComfyUI runs in a subprocess (its import sets up global state that other tests must not see). There,
``comfy.controlnet.load_controlnet`` is given (1) the diffusers state dict, which it converts with its
own diffusers→ldm map, and (2) our ``diffusers_to_ldm`` output; the keys its conversion hands to
``cldm.ControlNet.load_state_dict`` are recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys

from devtools.comfy_server import REPO

SCRIPT = r"""
import json, logging, sys
comfy_dir, repo, out = sys.argv[1:4]
sys.path[:0] = [comfy_dir, repo]
import torch
from diffusers import ControlNetModel
from scg_core.controlnet.layout import diffusers_to_ldm

torch.manual_seed(0)
state = ControlNetModel(cross_attention_dim=768, attention_head_dim=8).half().state_dict()  # SD1.5 shapes
ours = diffusers_to_ldm(state)

from comfy.cli_args import args
args.cpu = True  # as the host tests start ComfyUI (main.py --cpu)
import comfy.cldm.cldm
import comfy.controlnet
import comfy.utils

records = []
logging.getLogger().addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})(logging.WARNING))
handed = {}
load_state_dict = comfy.cldm.cldm.ControlNet.load_state_dict
def recording(self, sd, *args, **kwargs):
    handed.update({k: list(v.shape) for k, v in sd.items()})
    return load_state_dict(self, sd, *args, **kwargs)
comfy.cldm.cldm.ControlNet.load_state_dict = recording
files = {"diffusers": state, "ours": ours}
comfy.utils.load_torch_file = lambda name, *args, **kwargs: dict(files[name])  # it pops from what it is given

theirs = comfy.controlnet.load_controlnet("diffusers").control_model.state_dict()
warnings_diffusers, records[:] = list(records), []
loaded = comfy.controlnet.load_controlnet("ours").control_model.state_dict()
json.dump({
    "comfy": handed,
    "ours": {k: list(v.shape) for k, v in ours.items()},
    "warnings_diffusers": warnings_diffusers,
    "warnings_ours": list(records),
    "model_keys": sorted(loaded),
    "same_tensors": loaded.keys() == theirs.keys() and all(torch.equal(loaded[k], theirs[k]) for k in loaded),
}, open(out, "w"))
"""


def test_our_ldm_keys_are_comfyuis_for_a_full_sd15_controlnet(comfyui_src, tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(comfyui_src), str(REPO), str(out)],
                          check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    ours = {k.removeprefix("control_model."): shape for k, shape in r["ours"].items()}
    assert all(k.startswith("control_model.") for k in r["ours"])
    assert len(r["comfy"]) == len(ours) > 300
    assert set(ours) == set(r["comfy"]), (sorted(set(ours) - set(r["comfy"]))[:5], sorted(set(r["comfy"]) - set(ours))[:5])
    assert ours == r["comfy"]  # shapes too
    # Our file loads in ComfyUI (the control_model. branch) with no missing or left-over keys, every key of
    # its cldm.ControlNet is filled, and the weights are those of its own diffusers conversion.
    assert not [w for w in r["warnings_diffusers"] + r["warnings_ours"] if "keys" in w], r["warnings_ours"]
    assert set(r["model_keys"]) == set(ours)
    assert r["same_tensors"]
