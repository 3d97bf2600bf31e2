"""A tiny SD1-shaped diffusers pipeline folder built from configs (seconds on CPU, no downloads).

The tokenizer is a real ``CLIPTokenizer`` over a byte-level vocabulary without merges (every
character one token), so captions still become token ids the way SD1.5's tokenizer makes them.
"""

from __future__ import annotations

import json
from pathlib import Path

CROSS = 32


def byte_vocabulary() -> dict[str, int]:
    """CLIP's byte→unicode alphabet, each character alone and word-final, plus the two specials."""
    codes = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(codes), 0
    for b in range(256):
        if b not in codes:
            chars.append(256 + n)
            n += 1
    symbols = [chr(c) for c in chars]
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def build_tiny_sd(folder: Path, cross_attention_dim: int = CROSS, seed: int = 0) -> Path:
    """Write a diffusers ``StableDiffusionPipeline`` folder with tiny UNet/VAE/CLIP; returns it."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    tok_dir = folder.with_name(folder.name + "_tok")
    tok_dir.mkdir(parents=True, exist_ok=True)
    vocab = byte_vocabulary()
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=2, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=cross_attention_dim, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                        hidden_act="quick_gelu"))
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                              clip_sample=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder
