"""Train the SCG pattern-completion ControlNet on a frozen Stable Diffusion 1.5 (docs/scg_notes.md §6).

No annotation: the condition is the modular autoencoder's hint of the training image itself.

    python -m training.train_controlnet --base models/sd15 --data photos/ --groups edges --output-dir runs/edges

Several GPUs or machines (same command under accelerate; the data is split by rank):

    accelerate launch --num_processes 8 -m training.train_controlnet --base models/sd15 --data coco/train2017 \\
        --captions coco/annotations/captions_train2017.json --random-groups --output-dir runs/coco

Continue after an interruption (Ctrl-C saves a checkpoint first): add ``--resume latest``.
Writes ``OUTPUT_DIR/NAME.safetensors`` (single file for ComfyUI / sd-webui-controlnet, fp16) and
``OUTPUT_DIR/NAME_diffusers/`` at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

import scg_core
from scg_core.controlnet.metadata import controlnet_metadata
from scg_core.hosts.selection import parse_gains, parse_groups

from .caption_data import CaptionedImages, TrainingSamples, describe
from .controlnet_export import DTYPES, export_controlnet
from .controlnet_step import ControlNetObjective, HintMaker, step_generator
from .latent_cache import LatentCache
from .sd_base import BaseModelError, load_base, make_controlnet

CHECKPOINT = re.compile(r"^step-(\d+)$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train_controlnet", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("models")
    m.add_argument("--base", required=True, help="SD1.5: a diffusers folder, or a .safetensors/.ckpt single file (+ --base-config)")
    m.add_argument("--base-config", help="for a single-file --base: a local diffusers SD1.5 folder with its configs and tokenizer")
    m.add_argument("--ae", help="modular autoencoder (.safetensors); default: the bundled one")
    m.add_argument("--groups", default="", help="groups kept in the hint, comma-separated names or labels (empty: all modules)")
    m.add_argument("--gains", default="", help="per-group factors, e.g. 'colour=0.5'")
    m.add_argument("--random-groups", action="store_true",
                   help="draw one group per sample (from --groups, or all of the autoencoder's) so one ControlNet serves each")
    m.add_argument("--controlnet", help="start from this ControlNet (.safetensors in the ldm layout, or a diffusers folder) "
                                        "instead of a copy of the UNet encoder")
    d = p.add_argument_group("data")
    d.add_argument("--data", type=Path, required=True, help="image folder (same-name .txt captions, or metadata.jsonl)")
    d.add_argument("--captions", type=Path, help="COCO captions JSON for the images in --data")
    d.add_argument("--caption-column", default="text", help="caption field of metadata.jsonl")
    d.add_argument("--resolution", type=int, default=512)
    d.add_argument("--center-crop", action="store_true", help="crop the centre instead of a random square")
    d.add_argument("--random-flip", action="store_true")
    d.add_argument("--proportion-empty-prompts", type=float, default=0.5, help="share of samples trained without caption (ControlNet paper: 0.5)")
    d.add_argument("--workers", type=int, default=2, help="dataloader worker processes")
    d.add_argument("--cache-latents", action="store_true",
                   help="compute VAE latents and text features once and store them (implies --center-crop, no flip)")
    d.add_argument("--cache-dir", type=Path, help="default: OUTPUT_DIR/cache")
    o = p.add_argument_group("optimisation (paper: batch 4, 5 epochs of COCO)")
    o.add_argument("--batch", type=int, default=4, help="samples per micro-batch and process")
    o.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimiser step")
    o.add_argument("--steps", type=int, help="optimiser steps (default: --epochs over the data)")
    o.add_argument("--epochs", type=float, default=5.0)
    o.add_argument("--lr", type=float, default=1e-5)
    o.add_argument("--lr-warmup-steps", type=int, default=0)
    o.add_argument("--weight-decay", type=float, default=1e-2)
    o.add_argument("--max-grad-norm", type=float, default=1.0)
    o.add_argument("--adam-8bit", action="store_true", help="bitsandbytes' 8-bit AdamW (less optimiser memory)")
    o.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="frozen models in this dtype, ControlNet fp32 master weights under autocast (auto: bf16 on CUDA when supported)")
    o.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward (less memory, slower)")
    v = p.add_argument_group("validation")
    v.add_argument("--validation-image", type=Path, nargs="*", default=[], help="source images; their hints are generated from")
    v.add_argument("--validation-prompt", nargs="*", default=[], help="one per image, or one for all")
    v.add_argument("--validate-every", type=int, default=500)
    v.add_argument("--validation-steps", type=int, default=20, help="sampling steps of each validation image")
    r = p.add_argument_group("output and run")
    r.add_argument("--output-dir", type=Path, required=True)
    r.add_argument("--name", default="scg_controlnet", help="file name of the export")
    r.add_argument("--export-dtype", choices=sorted(DTYPES), default="fp16")
    r.add_argument("--checkpoint-every", type=int, default=500)
    r.add_argument("--keep-last", type=int, default=3, help="checkpoints kept (older ones are deleted)")
    r.add_argument("--resume", help="'latest' or a checkpoint folder")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    r.add_argument("--threads", type=int, help="CPU threads per process")
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--save-every-rank", action="store_true", help="diagnostic: each rank also writes its final ControlNet")
    r.add_argument("--report-to", choices=["auto", "tensorboard", "none"], default="auto",
                   help="auto: tensorboard when installed")
    args = p.parse_args(argv)
    for name in ("batch", "grad_accum", "resolution", "checkpoint_every", "keep_last", "log_every", "validate_every", "validation_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.resolution % 8:
        p.error(f"--resolution {args.resolution} must be a multiple of 8 (the VAE's stride)")
    if not 0.0 <= args.proportion_empty_prompts <= 1.0:
        p.error("--proportion-empty-prompts must lie in [0, 1]")
    if args.validation_prompt and len(args.validation_prompt) not in (1, len(args.validation_image)):
        p.error(f"give one --validation-prompt or one per --validation-image ({len(args.validation_image)})")
    if args.cache_latents:
        args.center_crop, args.random_flip = True, False
    args.groups, args.gains = parse_groups(args.groups) or None, parse_gains(args.gains)
    args.cache_dir = args.cache_dir or args.output_dir / "cache"
    return args


def check_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"error: --output-dir {path} is not writable ({e.strerror or e}); choose another folder") from e


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in folder.glob("step-*") if (m := CHECKPOINT.match(p.name)) and p.is_dir())


def save_checkpoint(folder: Path, step: int, controlnet, optimizer, scheduler, accelerator, keep_last: int) -> Path:
    """``folder/step-NNNNNNN/``: fp32 ControlNet (safetensors) + optimiser, scheduler and scaler state;
    written under a temporary name and renamed, then older checkpoints beyond ``keep_last`` removed."""
    from safetensors.torch import save_file

    final = folder / f"step-{step:07d}"
    tmp = folder / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in controlnet.state_dict().items()}, str(tmp / "controlnet.safetensors"))
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if accelerator.scaler is not None:
        state["scaler"] = accelerator.scaler.state_dict()
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for _, old in checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, controlnet, optimizer, scheduler, accelerator) -> int:
    from safetensors.torch import load_file

    controlnet.load_state_dict(load_file(str(path / "controlnet.safetensors")))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if accelerator.scaler is not None and "scaler" in state:
        accelerator.scaler.load_state_dict(state["scaler"])
    return int(state["step"])


def make_optimizer(controlnet, args):
    params = [p for p in controlnet.parameters() if p.requires_grad]
    if args.adam_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise SystemExit("error: --adam-8bit needs bitsandbytes (pip install bitsandbytes); or leave the option out") from e
        return bnb.optim.AdamW8bit(params, lr=args.lr, weight_decay=args.weight_decay)
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, fused=fused or None)


def resolve_mixed_precision(choice: str, cpu: bool) -> str:
    if choice != "auto":
        return choice
    return "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"


def main(args: argparse.Namespace) -> dict:
    from accelerate import Accelerator
    from diffusers.models.attention_processor import AttnProcessor2_0
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    check_output_dir(args.output_dir)
    cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    mixed = resolve_mixed_precision(args.mixed_precision, cpu)
    report = args.report_to
    if report == "auto":
        import importlib.util

        report = "tensorboard" if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX") else "none"
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed, log_with=None if report == "none" else report,
                              project_dir=str(args.output_dir))
    device, main_process = accelerator.device, accelerator.is_main_process
    frozen_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed]

    ae = scg_core.load(args.ae) if args.ae else scg_core.load_default()
    hints = HintMaker(ae.to(device), args.groups, args.gains, args.random_groups)
    try:
        data = CaptionedImages(args.data, args.captions, caption_column=args.caption_column,
                               min_size=min(64, args.resolution), progress=main_process)
        parts = load_base(args.base, args.base_config)
        torch.manual_seed(args.seed)
        controlnet = make_controlnet(parts.unet, args.controlnet)
    except (BaseModelError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    for module in (parts.unet, controlnet):
        module.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (flash / memory-efficient kernels on GPU)
    if args.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        parts.unet.enable_gradient_checkpointing()
    parts.unet.to(device, frozen_dtype)
    parts.text_encoder.to(device, frozen_dtype)
    parts.vae.to(device, frozen_dtype)
    controlnet.to(device).train()

    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = args.batch * args.grad_accum * world
    total = args.steps or max(1, math.ceil(args.epochs * len(data) / per_step))
    optimizer = make_optimizer(controlnet, args)
    scheduler = get_scheduler("constant_with_warmup" if args.lr_warmup_steps else "constant", optimizer,
                              num_warmup_steps=args.lr_warmup_steps)
    objective = ControlNetObjective(parts, controlnet, hints, device, frozen_dtype)

    cache = None
    if args.cache_latents:
        cache = LatentCache(args.cache_dir, {"base": str(Path(args.base).resolve()), "resolution": args.resolution,
                                             "data": str(args.data.resolve()), "items": len(data)})
    samples = TrainingSamples(data, resolution=args.resolution, batch=args.batch, seed=args.seed, rank=rank, world=world,
                              center_crop=args.center_crop, random_flip=args.random_flip,
                              proportion_empty_prompts=args.proportion_empty_prompts,
                              num_groups=len(hints.choices), cache=cache)
    if cache is not None:
        try:
            cache.check_signature()
        except ValueError as e:
            raise SystemExit(f"error: {e}") from e
        built = cache.build(data, samples, objective, rank, world, main_process, objective.encode_text([""]))
        accelerator.wait_for_everyone()
        accelerator.print(f"latent cache: {built} entries computed on rank {rank}, {len(data)} in {args.cache_dir}")
        parts.vae.to("cpu")  # not needed on the device any more (validation borrows them back)
        parts.text_encoder.to("cpu")

    model, optimizer = accelerator.prepare(controlnet, optimizer)
    objective.controlnet = model
    ckpt_dir = args.output_dir / "checkpoints"
    start = 0
    if args.resume:
        found = checkpoints(ckpt_dir)
        path = (found[-1][1] if found else None) if args.resume == "latest" else Path(args.resume)
        if path is None:
            accelerator.print(f"no checkpoint in {ckpt_dir}; starting from step 0")
        elif not (path / "state.pt").is_file():
            raise SystemExit(f"error: --resume {path} is not a checkpoint folder (no state.pt)")
        else:
            start = load_checkpoint(path, accelerator.unwrap_model(model), optimizer.optimizer, scheduler, accelerator)
            accelerator.print(f"resumed from {path} at step {start}")
    if report != "none":
        accelerator.init_trackers("scg_controlnet", config={k: str(v) for k, v in vars(args).items()})

    loader = torch.utils.data.DataLoader(samples, batch_size=None, sampler=range(start * args.grad_accum, total * args.grad_accum),
                                         num_workers=args.workers, persistent_workers=args.workers > 0)
    batches = iter(loader)
    accelerator.print(f"{describe(data)} · base {parts.family} · {world} process(es) on {device} · {mixed} · "
                      f"{per_step} samples/step · steps {start}→{total} · hint groups: "
                      f"{'random of ' if args.random_groups else ''}{[c for c in hints.choices]}")
    metadata = controlnet_metadata(ae, args.groups, args.gains, random_groups=args.random_groups, base_model=parts.family)
    validation = Validation(args, parts, hints, device, frozen_dtype) if args.validation_image else None
    bar = tqdm(total=total, initial=start, disable=not main_process, desc="train_controlnet", dynamic_ncols=True)
    step, metrics, started, window = start, {}, time.perf_counter(), (time.perf_counter(), start)
    try:
        while step < total:
            loss_sum = 0.0
            for a in range(args.grad_accum):
                batch = next(batches)
                g = step_generator(device, args.seed, rank, step * args.grad_accum + a)
                sync = a == args.grad_accum - 1
                with nullcontext() if sync else accelerator.no_sync(model):
                    with accelerator.autocast():
                        loss = objective(batch, g)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss at step {step}; lower --lr or use bf16 instead of fp16")
                    accelerator.backward(loss / args.grad_accum)
                loss_sum += float(loss.detach()) / args.grad_accum
            if args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == total:
                now = time.perf_counter()
                rate = (step - window[1]) * per_step / max(now - window[0], 1e-9)
                window = (now, step)
                metrics = {"loss": loss_sum, "lr": scheduler.get_last_lr()[0], "samples_per_s": rate}
                bar.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{metrics['lr']:.2e}", samples_s=f"{rate:.2f}", refresh=False)
                accelerator.log(metrics, step=step)
                if main_process:
                    with (args.output_dir / "metrics.jsonl").open("a") as f:
                        f.write(json.dumps({"step": step, **metrics}) + "\n")
            if step % args.checkpoint_every == 0 and step < total and main_process:
                save_checkpoint(ckpt_dir, step, accelerator.unwrap_model(model), optimizer.optimizer, scheduler,
                                accelerator, args.keep_last)
            if validation and step % args.validate_every == 0 and main_process:
                validation.run(accelerator.unwrap_model(model), step, accelerator)
    except KeyboardInterrupt:
        if main_process:
            path = save_checkpoint(ckpt_dir, step, accelerator.unwrap_model(model), optimizer.optimizer, scheduler,
                                   accelerator, args.keep_last)
            print(f"\ninterrupted at step {step}: saved {path}; continue with --resume latest", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        bar.close()
    accelerator.wait_for_everyone()
    metrics["seconds"] = time.perf_counter() - started
    if main_process:
        final = accelerator.unwrap_model(model)
        save_checkpoint(ckpt_dir, step, final, optimizer.optimizer, scheduler, accelerator, args.keep_last)
        if validation and step % args.validate_every:
            validation.run(final, step, accelerator)
        training = {"steps": step, "batch": per_step, "lr": args.lr, "resolution": args.resolution,
                    "images": len(data), "data_layout": data.layout, "base": Path(args.base).name}
        out = export_controlnet(final, args.output_dir / f"{args.name}.safetensors",
                                {**metadata, "scg_training": json.dumps(training)}, args.export_dtype,
                                args.output_dir / f"{args.name}_diffusers")
        print(f"wrote {out} ({args.export_dtype}) and {args.name}_diffusers/ after {step} steps in "
              f"{metrics['seconds']:.0f} s; {describe(data)}")
        for line in list(data.skipped.items())[:10]:
            print(f"  skipped {line[0]}: {line[1]}")
    if args.save_every_rank:
        from safetensors.torch import save_file

        state = accelerator.unwrap_model(model).state_dict()
        save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()},
                  str(args.output_dir / f"rank{rank}_controlnet.safetensors"))
    accelerator.end_training()
    return metrics


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
                hint_image = tensor_to_pil(hint[0].cpu())  # uint8, as every host passes it
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


if __name__ == "__main__":
    main(parse_args())
