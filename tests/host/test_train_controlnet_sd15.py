"""train_controlnet on full SD1.5 shapes, from a single-file checkpoint that ComfyUI itself wrote.

ComfyUI's core CheckpointSave turns the test's diffusers SD1.5 folder into the one-file ldm
layout people download; the trainer must read it (with the folder's configs and tokenizer as
``--base-config``), take a real optimiser step and export a ControlNet that ComfyUI loads.
"""

import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from devtools.comfy_server import error_message
from scg_core.controlnet.metadata import read_controlnet_info

from .test_comfyui import generation_prompt, outputs_of


def test_single_file_sd15_base_trains_and_the_export_runs_in_comfyui(comfy, sd15_models, tmp_path):
    entry = comfy.run({
        "1": {"class_type": "DiffusersLoader", "inputs": {"model_path": "sd15"}},
        "2": {"class_type": "CheckpointSave", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                         "filename_prefix": "checkpoints/sd15_single"}},
    })
    assert error_message(entry) is None, error_message(entry)
    single = next((comfy.dir / "output" / "checkpoints").glob("sd15_single*.safetensors"))
    link = comfy.models / "controlnet" / "trained_sd15.safetensors"
    try:
        photos = tmp_path / "photos"
        photos.mkdir()
        rng = np.random.default_rng(0)
        for n in range(2):
            Image.fromarray(rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)).save(photos / f"p{n}.png")
            (photos / f"p{n}.txt").write_text("a photo")
        out = tmp_path / "run"
        cmd = [sys.executable, "-m", "training.train_controlnet", "--base", str(single), "--base-config",
               str(sd15_models / "sd15"), "--data", str(photos), "--output-dir", str(out), "--resolution", "64",
               "--batch", "1", "--steps", "1", "--device", "cpu", "--workers", "0", "--report-to", "none",
               "--groups", "brightness", "--name", "trained_sd15"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "base sd15" in proc.stdout + proc.stderr
        exported = out / "trained_sd15.safetensors"
        assert read_controlnet_info(exported).base_model == "sd15"

        link.symlink_to(exported)
        prompt = generation_prompt(comfy, 1.0)  # the sketch workflow, with the ControlNet just trained
        loader = next(n for n in prompt.values() if n["class_type"] == "ControlNetLoader")
        loader["inputs"]["control_net_name"] = "trained_sd15.safetensors"
        entry = comfy.run(prompt)
        assert error_message(entry) is None, error_message(entry)
        text = outputs_of(prompt, entry, "SCGControlNetApply")[0]["text"][0]
        assert "groups match the ControlNet's training (brightness)" in text
        assert comfy.image(outputs_of(prompt, entry, "SaveImage")[0]["images"][0]).shape == (128, 128, 3)
    finally:  # ~8 GB of checkpoints and exports: not kept until the session ends
        link.unlink(missing_ok=True)
        single.unlink(missing_ok=True)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
