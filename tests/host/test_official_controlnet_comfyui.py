"""A converted official SCG ControlNet in ComfyUI computes what the official ControlNet computes.

The official computation: the official ControlNet's own weights in ComfyUI's port of lllyasviel's
``cldm.ControlNet`` (which loads such files as they are), given the official raw hint of the photo —
``HyperColumnLGN``'s 509×509 decode (tests/official_checkpoints.py) — and zero padding. Ours: the
file ``official-controlnet`` wrote, loaded by ComfyUI's core loader and applied by *SCG ControlNet
Apply* to the photo at 512², run through ComfyUI's ``ControlNet.get_control``. Also measured: the
hint applied by ComfyUI's core *Apply ControlNet (Advanced)* node, which feeds the ControlNet as
A1111/Forge units do (zero padding, the whole image), and that with an 8-bit hint (what those hosts
pass). ComfyUI runs in a subprocess (its import sets global state).
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from devtools.comfy_server import REPO

from .build_models import OFFICIAL_GROUP, official_scg_controlnet

SCRIPT = r"""
import importlib.util, json, os, sys
comfy_dir, repo, files, work = sys.argv[1:5]
files = json.loads(files)
sys.path.insert(0, comfy_dir)
import torch
from comfy.cli_args import args
args.cpu = True
import folder_paths
folder_paths.models_dir = os.path.join(work, "models")  # keep the pristine ComfyUI copy untouched
folder_paths.folder_names_and_paths["controlnet"] = ([os.path.dirname(files["converted"])], {".safetensors"})
import comfy.controlnet, comfy.model_sampling
import nodes as comfy_nodes

spec = importlib.util.spec_from_file_location("scg_nodes_pack", os.path.join(repo, "__init__.py"),
                                              submodule_search_locations=[repo])  # as ComfyUI loads custom nodes
pack = importlib.util.module_from_spec(spec)
sys.modules["scg_nodes_pack"] = pack
spec.loader.exec_module(pack)
import scg_core

inputs = torch.load(os.path.join(work, "inputs.pt"))
photo, raw, context, x = inputs["photo"], inputs["raw"], inputs["context"], inputs["x"]
ae = scg_core.load(files["ae"])
positive = negative = [[context, {}]]

class Sampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    pass
sampling = Sampling()
sigma = sampling.sigma(torch.tensor([500.0]))

def residuals(conditioning):
    control = conditioning[0][1]["control"]
    control.model_sampling_current = sampling  # what pre_run sets from the model being sampled
    out = control.get_control(x, sigma, {"c_crossattn": context}, 1)
    return [t.float() for t in out["output"] + out["middle"]]

result = {}
with torch.no_grad():
    official = comfy.controlnet.load_controlnet(files["official"]).control_model
    outs = official(x=sampling.calculate_input(sigma, x), hint=raw, timesteps=sampling.timestep(sigma).float(), context=context)
    reference = [t.float() for t in outs]

    converted = comfy.controlnet.load_controlnet(files["converted"])
    apply = pack.NODE_CLASS_MAPPINGS["SCGControlNetApply"]()
    image = photo.movedim(1, -1)  # ComfyUI IMAGE [B,H,W,C]
    done = apply.apply(positive, negative, converted, image, group := inputs["group"], 1.0, 0.0, 1.0,
                       modular_ae=ae, latent={"samples": torch.zeros(1, 4, 64, 64)})
    result["info"] = done["result"][3]
    result["scg_apply"] = residuals(done["result"][0])
    hint = done["result"][2]
    result["hint_shape"] = list(hint.shape)
    # the cached ControlNet ComfyUI's loader returned is left as it was
    result["loader_model_untouched"] = type(converted.control_model.input_hint_block[0]).__name__

    core = comfy_nodes.ControlNetApplyAdvanced()
    result["core_apply"] = residuals(core.apply_controlnet(positive, negative, converted, hint, 1.0, 0.0, 1.0)[0])
    result["core_apply_8bit"] = residuals(core.apply_controlnet(positive, negative, converted, (hint * 255).round() / 255, 1.0, 0.0, 1.0)[0])
    result["scg_apply_flipped"] = residuals(apply.apply(positive, negative, converted, image.flip(2), group, 1.0, 0.0, 1.0,
                                                       modular_ae=ae, latent={"samples": torch.zeros(1, 4, 64, 64)})["result"][0])
    result = {k: [((a - b).norm() / b.norm()).item() for a, b in zip(v, reference)] if k not in ("info", "hint_shape", "loader_model_untouched") else v
              for k, v in result.items()}
    result["n"] = len(reference)
json.dump(result, open(os.path.join(work, "result.json"), "w"))
"""


def test_a_converted_official_controlnet_in_comfyui_computes_the_official_residuals(comfyui_src, sd15_models, tmp_path):
    from safetensors.torch import load_file

    from scg_core.formats.images import fit_to_size, load_image

    from ..official_checkpoints import official_hypercolumn_hint, released_factors

    files = official_scg_controlnet(sd15_models)
    photo = fit_to_size(load_image(REPO / "photos" / "chelsea.jpg"), (512, 512))
    group = int(OFFICIAL_GROUP[2:])
    raw = official_hypercolumn_hint(photo, released_factors(load_file(files["ae_state"])), [group])
    g = torch.Generator().manual_seed(0)
    torch.save({"photo": photo, "raw": raw, "group": OFFICIAL_GROUP, "x": torch.randn(1, 4, 64, 64, generator=g),
                "context": torch.randn(1, 77, 768, generator=g)}, tmp_path / "inputs.pt")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(comfyui_src), str(REPO), json.dumps({k: str(v) for k, v in files.items()}),
                           str(tmp_path)], check=False, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    print("\nrelative L2 of the 13 residuals vs the official ControlNet (SD1.5, 512², HC0): " + "; ".join(
        f"{k} {min(r[k]):.4f}–{max(r[k]):.4f}" for k in ("scg_apply", "core_apply", "core_apply_8bit", "scg_apply_flipped")))
    assert r["n"] == 13 and r["hint_shape"] == [1, 512, 512, 3]
    assert "official SCG ControlNet: its hint block sees the hint as the official one did" in r["info"]
    assert r["loader_model_untouched"] != "OfficialHintConv"
    assert max(r["scg_apply"]) <= 0.02, r["scg_apply"]
    # the border matters: the core node (zero padding, as A1111/Forge units) is much further off,
    # and so is a hint of another image
    assert min(r["core_apply"]) > 3 * max(r["scg_apply"])
    assert min(r["scg_apply_flipped"]) > 3 * max(r["scg_apply"])
