"""Train the SCG pattern-completion ControlNet on a frozen Stable Diffusion 1.5 (docs/scg_notes.md §6).

No annotation: the condition is the modular autoencoder's hint of the training image itself.
One process (one GPU, or the CPU):

    python -m training.train_controlnet --base models/sd15 --data photos/ --groups edges --output-dir runs/edges

Several GPUs or machines (same command under accelerate; the data is split by rank):

    accelerate launch --num_processes 8 -m training.train_controlnet --base models/sd15 --data coco/train2017 \\
        --captions coco/annotations/captions_train2017.json --random-groups --output-dir runs/coco

Continue after an interruption (Ctrl-C or SIGTERM saves a checkpoint first): the same command with
``--resume latest`` (or ``--resume OUTPUT_DIR/checkpoints/step-NNNNNNN``). The run's arguments must be
the same; those that may change (``--steps``, ``--epochs``, ``--workers`` …) are listed in
``training.checkpoints.MAY_CHANGE``.

Writes ``OUTPUT_DIR/checkpoints/step-NNNNNNN/`` (layout in ``training.checkpoints``), ``metrics.jsonl``
and the tensorboard log during the run, and at the end ``OUTPUT_DIR/NAME.safetensors`` (single file for
ComfyUI / sd-webui-controlnet, fp16) and ``OUTPUT_DIR/NAME_diffusers/``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

import scg_core
from scg_core.controlnet.metadata import controlnet_metadata
from scg_core.hosts.selection import parse_gains, parse_groups

from . import loop, speed
from .caption_data import CaptionedImages, TrainingSamples, describe
from .checkpoints import Checkpoints
from .controlnet_export import DTYPES, export_controlnet
from .controlnet_step import ControlNetObjective, HintMaker, step_generator
from .controlnet_validation import Validation
from .latent_cache import LatentCache
from .sd_base import BaseModelError, load_base, make_controlnet

TRAINER = "training.train_controlnet"
FROZEN_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    r.add_argument("--resume", help="'latest' (in OUTPUT_DIR/checkpoints) or a checkpoint folder (step-NNNNNNN)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    r.add_argument("--threads", type=int, help="CPU threads per process")
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--save-every-rank", action="store_true", help="diagnostic: each rank also writes its final ControlNet")
    r.add_argument("--report-to", choices=["auto", "tensorboard", "none"], default="auto",
                   help="auto: tensorboard when installed")
    speed.add_arguments(p)
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


def make_scheduler(optimizer, args):
    """Constant lr, after ``--lr-warmup-steps`` of linear warm-up."""
    from diffusers.optimization import get_scheduler

    return get_scheduler("constant_with_warmup" if args.lr_warmup_steps else "constant", optimizer,
                         num_warmup_steps=args.lr_warmup_steps)


def resolve_mixed_precision(choice: str, cpu: bool) -> str:
    if choice != "auto":
        return choice
    return "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"


def main(args: argparse.Namespace) -> dict:
    check_output_dir(args.output_dir)
    mixed = resolve_mixed_precision(args.mixed_precision, loop.uses_cpu(args.device))
    accelerator = loop.start(args, log_dir=args.output_dir, mixed_precision=mixed)
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    frozen_dtype = FROZEN_DTYPES[mixed]
    ae, hints, data, parts, controlnet = load_models(args, device, frozen_dtype, accelerator.is_main_process)

    per_step = args.batch * args.grad_accum * world
    total = args.steps or max(1, math.ceil(args.epochs * len(data) / per_step))
    optimizer = make_optimizer(controlnet, args)
    scheduler = make_scheduler(optimizer, args)
    levers = speed.Levers.from_args(args)
    levers.set_backends()
    objective = ControlNetObjective(parts, controlnet, hints, device, frozen_dtype, levers)
    cache = latent_cache(args, data) if args.cache_latents else None
    samples = TrainingSamples(data, resolution=args.resolution, batch=args.batch, seed=args.seed, rank=rank, world=world,
                              center_crop=args.center_crop, random_flip=args.random_flip,
                              proportion_empty_prompts=args.proportion_empty_prompts,
                              num_groups=len(hints.choices), cache=cache)
    if cache is not None:
        fill_cache(cache, args, data, samples, objective, accelerator)

    model, optimizer = accelerator.prepare(controlnet, optimizer)
    objective.controlnet, objective.unet = levers.prepare(model), levers.prepare(parts.unet)
    checkpoints = Checkpoints(args.output_dir / "checkpoints", trainer=TRAINER, args=args, accelerator=accelerator,
                              model=model, optimizer=optimizer, scheduler=scheduler, keep_last=args.keep_last)
    start = checkpoints.resume(args.resume)
    accelerator.print(f"{describe(data)} · base {parts.family} · {world} process(es) on {device} · {mixed} · "
                      f"{per_step} samples/step · steps {start}→{total} · hint groups: "
                      f"{'random of ' if args.random_groups else ''}{list(hints.choices)}")
    loop.track(accelerator, "scg_controlnet", args)
    validation = Validation(args, parts, hints, device, frozen_dtype) if args.validation_image else None
    step, metrics = loop.Loop(
        accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, checkpoints=checkpoints,
        batches=loop.batches(samples, start * args.grad_accum, total * args.grad_accum, args.workers),
        loss=lambda batch, micro: {"loss": objective(batch, step_generator(device, args.seed, rank, micro))},
        objective="loss", total=total, log_dir=args.output_dir, name="train_controlnet", samples_per_step=per_step,
        grad_accum=args.grad_accum, max_grad_norm=args.max_grad_norm, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, eval_every=args.validate_every,
        evaluate=validation and (lambda s: validation.run(accelerator.unwrap_model(model), s, accelerator)),
    ).run(start)

    final = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        if validation:  # the loop validates before a step, so never after the last
            validation.run(final, step, accelerator)
        export(args, final, controlnet_metadata(ae, args.groups, args.gains, random_groups=args.random_groups,
                                                base_model=parts.family), data, step, per_step, metrics)
    if args.save_every_rank:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in final.state_dict().items()},
                  str(args.output_dir / f"rank{rank}_controlnet.safetensors"))
    accelerator.end_training()
    return metrics


def load_models(args, device, frozen_dtype: torch.dtype, progress: bool):
    """The frozen autoencoder (hints), the data, the frozen SD1.5 parts on ``device`` in
    ``frozen_dtype``, and the ControlNet to train (fp32); errors end the run with one line."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    ae = scg_core.load(args.ae) if args.ae else scg_core.load_default()
    hints = HintMaker(ae.to(device), args.groups, args.gains, args.random_groups)
    try:
        data = CaptionedImages(args.data, args.captions, caption_column=args.caption_column,
                               min_size=min(64, args.resolution), progress=progress)
        parts = load_base(args.base, args.base_config)
        torch.manual_seed(args.seed)  # the new layers of the ControlNet are drawn here
        controlnet = make_controlnet(parts.unet, args.controlnet)
    except (BaseModelError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    for module in (parts.unet, controlnet):
        module.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (flash / memory-efficient kernels on GPU)
    if args.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        parts.unet.enable_gradient_checkpointing()
    for frozen in (parts.unet, parts.text_encoder, parts.vae):
        frozen.to(device, frozen_dtype)
    controlnet.to(device).train()
    return ae, hints, data, parts, controlnet


def latent_cache(args, data) -> LatentCache:
    cache = LatentCache(args.cache_dir, {"base": str(Path(args.base).resolve()), "resolution": args.resolution,
                                         "data": str(args.data.resolve()), "items": len(data)})
    try:
        cache.check_signature()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    return cache


def fill_cache(cache: LatentCache, args, data, samples, objective, accelerator) -> None:
    """Compute the missing cache entries (shared out over the ranks), then free the device of
    the VAE and text encoder (validation borrows them back)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    built = cache.build(data, samples, objective, rank, world, accelerator.is_main_process, objective.encode_text([""]))
    accelerator.wait_for_everyone()
    accelerator.print(f"latent cache: {built} entries computed on rank {rank}, {len(data)} in {args.cache_dir}")
    objective.parts.vae.to("cpu")
    objective.parts.text_encoder.to("cpu")


def export(args, controlnet, metadata: dict, data, step: int, per_step: int, metrics: dict) -> None:
    """``NAME.safetensors`` (``--export-dtype``) and ``NAME_diffusers/``, with the SCG metadata."""
    training = {"steps": step, "batch": per_step, "lr": args.lr, "resolution": args.resolution,
                "images": len(data), "data_layout": data.layout, "base": Path(args.base).name}
    out = export_controlnet(controlnet, args.output_dir / f"{args.name}.safetensors",
                            {**metadata, "scg_training": json.dumps(training)}, args.export_dtype,
                            args.output_dir / f"{args.name}_diffusers")
    print(f"wrote {out} ({args.export_dtype}) and {args.name}_diffusers/ after {step} steps in "
          f"{metrics['seconds']:.0f} s; {describe(data)}")
    for path, reason in list(data.skipped.items())[:10]:
        print(f"  skipped {path}: {reason}")


if __name__ == "__main__":
    main(parse_args())
