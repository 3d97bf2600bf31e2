"""Validation images of ``training.train_controlnet``: for each validation image (and group) a row
source | hint | generated, saved to ``OUTPUT_DIR/validation/step-N.png`` and logged to tensorboard."""

from __future__ import annotations

from pathlib import Path

import torch

from .controlnet_step import HintMaker


class Validation:
    """Every ``--validate-every`` steps: for each validation image (and group), a row
    source | hint | generated, saved to ``OUTPUT_DIR/validation/step-N.png`` and logged."""

    def __init__(self, args, parts, hints: HintMaker, device, frozen_dtype) -> None:
        from scg_core.formats.images import fit_to_size, load_image

        self.args, self.parts, self.hints, self.device, self.dtype = args, parts, hints, device, frozen_dtype
        R = args.resolution
        self.sources = []
        for path in args.validation_image:
            try:
                self.sources.append(fit_to_size(load_image(path), (R, R)))
            except Exception as e:
                raise SystemExit(f"error: --validation-image {path} cannot be read ({e})") from e
        prompts = args.validation_prompt or [""]
        self.prompts = prompts * len(self.sources) if len(prompts) == 1 else prompts

    @torch.no_grad()
    def run(self, controlnet, step: int, accelerator) -> Path:
        from diffusers import StableDiffusionControlNetPipeline, UniPCMultistepScheduler

        from scg_core.formats.images import tensor_to_pil

        p = self.parts
        parked = p.vae.device != self.device  # offloaded by --cache-latents
        p.vae.to(self.device)
        p.text_encoder.to(self.device)
        pipe = StableDiffusionControlNetPipeline(
            vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, unet=p.unet, controlnet=controlnet,
            scheduler=UniPCMultistepScheduler.from_config(p.noise_scheduler.config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        rows = []
        was_training = controlnet.training
        controlnet.eval()
        for source, prompt in zip(self.sources, self.prompts):
            for group in range(len(self.hints.choices)):
                hint = self.hints(source.to(self.device), torch.tensor([group]))
                # 8-bit, as A1111 passes it; ComfyUI passes the float [0,1] hint, which this rounding only approximates
                hint_image = tensor_to_pil(hint[0].cpu())
                g = torch.Generator(self.device).manual_seed(self.args.seed)
                with accelerator.autocast():
                    out = pipe(prompt, image=hint_image, height=source.shape[-2], width=source.shape[-1],
                               num_inference_steps=self.args.validation_steps, generator=g, output_type="pt").images
                rows.append(torch.cat([source[0].cpu(), hint[0].cpu(), out[0].float().cpu()], dim=-1))
        controlnet.train(was_training)
        if parked:
            p.vae.to("cpu")
            p.text_encoder.to("cpu")
        grid = torch.cat(rows, dim=-2).clamp(0, 1)
        path = self.args.output_dir / "validation" / f"step-{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tensor_to_pil(grid).save(path)
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_image("validation", grid, step)
        return path
