"""Full-size SD1.5-architecture models with random weights, for host tests (no downloads).

Real SD1.5 shapes, because ComfyUI only recognises models whose shapes match a known
architecture; the images they make are noise, the plumbing is real.
Built once (about a minute on 2 CPU cores) and cached under ``cache_dir()``.

* ``sd15/`` — a diffusers pipeline folder (``DiffusersLoader``)
* ``scg_controlnet_sd15_ldm-<fingerprint>-<settings>.safetensors`` (:func:`scg_controlnet`) — an SD1.5
  ControlNet whose zero-convolutions are given random values (so that it acts), exported by
  ``train_controlnet``'s exporter (lllyasviel layout, fp16) with SCG metadata: trained on the
  bundled default's ``brightness``. Keyed by the default's fingerprint, since its metadata names
  that autoencoder.
* ``controlnet_sd21.safetensors`` — an SD2.1-shaped ControlNet (the "not SD1.5" case)
* ``official-<fingerprint>/`` (:func:`official_scg_controlnet`) — an official SCG ControlNet checkpoint
  at full size, as the official training writes it, converted by ``official-controlnet``; the
  5.7 GB pickle itself is deleted once converted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from devtools.cache import MODELS_VERSION, models_cache

COMFY_SD1_TOKENIZER = ("comfy", "sd1_tokenizer")


def cache_dir() -> Path:
    return models_cache()


def build(comfyui_dir: Path) -> Path:
    """Build (or reuse) the cached models; returns the folder holding them."""
    out = cache_dir()
    if (out / "done").is_file():
        return out
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    for old in out.parent.glob("models-v*"):  # earlier versions of this cache
        if old.name != out.name:
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"))
    tok_dir = comfyui_dir.joinpath(*COMFY_SD1_TOKENIZER)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(tmp / "sd15")

    del pipe, unet

    sd21 = ControlNetModel(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in sd21.state_dict().items()},
              str(tmp / "controlnet_sd21.safetensors"), metadata={"format": "pt"})
    (tmp / "done").write_text(MODELS_VERSION)
    tmp.rename(out)
    return out


def scg_controlnet(models: Path) -> Path:
    """The SCG ControlNet for the current bundled default, written by the trainer's exporter
    (``training.controlnet_export``: lllyasviel layout, fp16, SCG metadata) — built in ~20 s when the
    default or its hint settings changed."""
    import hashlib
    import json

    import scg_core
    from scg_core.controlnet.metadata import controlnet_metadata, fingerprint

    default = scg_core.load_default()
    metadata = controlnet_metadata(default, ["brightness"])
    # the weights' fingerprint and every other hint setting the metadata records (gains, spans, phase averaging)
    key = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:8]
    path = models / f"scg_controlnet_sd15_ldm-{fingerprint(default)}-{key}.safetensors"
    if path.is_file():
        return path
    import torch
    from diffusers import ControlNetModel

    from training.controlnet_export import export_controlnet

    for stale in models.glob("scg_controlnet_sd15*.safetensors"):
        stale.unlink()
    torch.manual_seed(0)
    cn = ControlNetModel(cross_attention_dim=768, attention_head_dim=8)  # SD1.5 shapes (diffusers' defaults)
    with torch.no_grad():  # ControlNet's output convolutions start at 0: give them values so it acts
        for block in [*cn.controlnet_down_blocks, cn.controlnet_mid_block]:
            block.weight.normal_(0, 0.02)
    return export_controlnet(cn, path, metadata)


OFFICIAL_GROUP = "HC0"  # cldm_v15.yaml's hypercond: [0]


def official_scg_controlnet(models: Path) -> dict[str, Path]:
    """A full-size official SCG ControlNet (``ControlLDM`` of ``models/cldm_v15.yaml`` in a Lightning
    checkpoint, tests/official_checkpoints.py) with the bundled default's trained autoencoder weights
    in the official layout (random ones would make hints far outside [0,1]); the SD weights it carries
    are zeros (written all the same, never read by the converter), the ControlNet's are random with
    non-zero output convolutions and hint convolutions strong enough that the residuals depend on
    the hint. Converted with ``python -m scg_core.convert official-controlnet --groups HC0``.

    Returns ``converted`` (the ControlNet, fp16), ``ae`` (its autoencoder), ``official`` (the
    official ControlNet's own weights under lllyasviel's plain names, fp32) and ``ae_state`` (the
    official autoencoder tensors). About a minute and 9 GB of disk while it builds; ~2.3 GB kept.
    """
    import scg_core
    from scg_core.controlnet.metadata import fingerprint

    out = models / f"official-{fingerprint(scg_core.load_default())}"
    files = {"converted": out / "scg_official_hc0.safetensors", "ae": out / "scg_official_hc0_modular_ae.safetensors",
             "official": out / "official_controlnet_plain.safetensors", "ae_state": out / "official_ae.safetensors"}
    if (out / "done").is_file():
        return files
    import tempfile

    import torch
    from safetensors.torch import save_file

    from scg_core.convert import main as convert

    from ..official_checkpoints import (
        SD15,
        official_ae_state_of,
        official_control_weights,
        official_controlnet_checkpoint,
    )

    for stale in models.glob("official-*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    ae_state = official_ae_state_of(scg_core.load_default())
    ckpt = official_controlnet_checkpoint(ae_state, SD15, seed=0, frozen="zeros")
    save_file({k: v.contiguous() for k, v in official_control_weights(ckpt).items()}, str(partial / files["official"].name))
    save_file({k: v.contiguous() for k, v in ae_state.items()}, str(partial / files["ae_state"].name))
    with tempfile.TemporaryDirectory(dir=models) as tmp:
        src = Path(tmp) / "epoch=4-step=147860.ckpt"
        torch.save(ckpt, src)
        del ckpt
        if convert(["official-controlnet", str(src), str(partial / files["converted"].name), "--groups", OFFICIAL_GROUP]):
            raise RuntimeError("official-controlnet failed on the official-form checkpoint")
    (partial / "done").write_text("ok")
    partial.rename(out)
    return files


def sd15_single_file(models: Path) -> Path:
    """A full-size SD1.5 checkpoint in the original single-file layout (``model.diffusion_model.*``,
    ``first_stage_model.*``, ``cond_stage_model.transformer.*``: what A1111 and Forge load from
    ``models/Stable-diffusion``), random weights in fp16, names and shapes from
    tests/official_checkpoints.py (checked against ComfyUI's ldm modules)."""
    path = models / "sd15_random_single_file.safetensors"
    if path.is_file():
        return path
    import torch
    from safetensors.torch import save_file

    from ..official_checkpoints import SD15, _fill, clip_state, unet_shapes, vae_shapes

    g = torch.Generator().manual_seed(0)
    state = {name: _fill(shape, g, name).half() for shapes in (unet_shapes(SD15), vae_shapes(SD15)) for name, shape in shapes.items()}
    state.update({k: v.half() if v.is_floating_point() else v for k, v in clip_state(SD15).items()})
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    tmp.rename(path)
    return path
