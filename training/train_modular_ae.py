"""Train the SCG modular autoencoder with the equivariance constraint.

One process (CPU, or one GPU when available):

    python -m training.train_modular_ae --data photos/ --output ae.safetensors

Several GPUs or processes (identical weights on every rank, data split by rank):

    accelerate launch --num_processes 4 -m training.train_modular_ae --data photos/ --output ae.safetensors
    torchrun --nproc_per_node 2 -m training.train_modular_ae --data photos/ --device cpu --output ae.safetensors

Resume after an interruption (Ctrl-C or SIGTERM saves a checkpoint first; a kill loses at most
``--checkpoint-every`` steps). The run's arguments must be the same; those that may change are
listed in ``training.checkpoints.MAY_CHANGE`` (``--steps`` may not: it sets the cosine schedule):

    python -m training.train_modular_ae --data photos/ --output ae.safetensors --resume latest

Checkpoints (``OUTPUT_checkpoints/step-NNNNNNN/``, layout in ``training.checkpoints``),
``metrics.jsonl`` and the tensorboard log go to ``--checkpoint-dir``.

Objective: ``L_recon + λ1·L_equ + λ2·L_sym`` (docs/scg_notes.md §3). Reconstruction on random crops;
equivariance on patch pairs compared at their centres (see ``scg_core.model.pairs``), or with
``--warp crops`` on the crops warped whole and compared at every code cell (then
``--lambda-recon-pred`` adds the warped crops' reconstruction from their predicted code).
``--module-dropout Q`` reconstructs each crop from a random subset of the modules (not in the paper).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

import scg_core
from scg_core.model import functional as Fn
from scg_core.model.pairs import cell_correspondences, context_side, crop_margin, neighbour_deltas
from scg_core.model.losses import (
    EquivarianceCodebook,
    equivariance_loss,
    kernel_copy_loss,
    reconstruction_loss,
    soft_best_transforms,
    symmetry_loss,
)

from . import loop
from .checkpoints import Checkpoints, jsonable
from .data import ImageFolder, PairBatches, min_image_size
from .image_bank import ImageBank, StepSampler

PRESETS = Path(__file__).parent / "configs"
TRAINER = "training.train_modular_ae"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train_modular_ae", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", help=f"JSON file or name in {PRESETS} whose values replace the defaults below")
    io = p.add_argument_group("data and files")
    io.add_argument("--data", type=Path, required=True, help="folder of images (recursive: jpg, png, webp, bmp)")
    io.add_argument("--output", type=Path, default=Path("modular_ae.safetensors"), help="exported weights (scg_core format)")
    io.add_argument("--checkpoint-dir", type=Path, help="default: OUTPUT without suffix + '_checkpoints'")
    io.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    io.add_argument("--resume", help="'latest' (in --checkpoint-dir) or a checkpoint folder (step-NNNNNNN)")
    io.add_argument("--workers", type=int, default=0, help="dataloader worker processes (with --no-cache)")
    io.add_argument("--no-cache", action="store_true",
                    help="decode the step's images from disk every step, in --workers processes, instead of holding "
                         "every image in memory (on the GPU when it fits) and drawing batches there: for folders "
                         "larger than memory")
    io.add_argument("--colour-augment", type=float, nargs="?", const=1.0, default=0.0, metavar="P",
                    help="random RGB channel order for a share P of the images (alone: P = 1, colour-symmetric statistics)")
    io.add_argument("--chroma-gain", type=float, default=1.0, metavar="G",
                    help="scale each image's colour (pixel minus grey) by a random factor in [1, G]")
    model = p.add_argument_group("architecture (released model: 16 × 4, bipolar, stride 4)")
    model.add_argument("--num-modules", type=int, default=16)
    model.add_argument("--module-channels", type=int, default=4)
    model.add_argument("--parameterization", choices=["bipolar", "single"], default="bipolar")
    model.add_argument("--kernel-size", type=int, default=5)
    model.add_argument("--stride", type=int, default=4)
    opt = p.add_argument_group("optimisation (paper A.4.2: AdamW, cosine from lr 0.005, 40,000 steps)")
    opt.add_argument("--steps", type=int, default=40_000)
    opt.add_argument("--lr", type=float, default=0.005)
    opt.add_argument("--weight-decay", type=float, default=0.01, help="on the kernels; none on the codebook")
    opt.add_argument("--adam-eps", type=float, default=1e-8, help="AdamW epsilon")
    opt.add_argument("--batch", type=int, default=8, help="reconstruction crops per step and process")
    opt.add_argument("--crop", type=int, default=128, help="crop side for the reconstruction loss")
    opt.add_argument("--border", type=int, default=12, help="pixels at each crop edge left out of L_recon")
    objective = p.add_argument_group("equivariance constraint (values measured here, see docs/training_modular_ae.md)")
    objective.add_argument("--pairs", type=int, default=1024,
                           help="patch pairs per step and process for L_equ (with --warp crops: code cells compared)")
    objective.add_argument("--lambda-equ", type=float, default=1.0)
    objective.add_argument("--lambda-sym", type=float, default=1.0)
    objective.add_argument("--temperature", type=float, default=0.1, help="T of L_sym's soft best transformation")
    objective.add_argument("--lambda-copies", type=float, default=0.0,
                           help="weight of a term asking each module's kernels to be copies of one another under "
                                "the codebook's best transformations (L_sym asks only the codebook); 0: off")
    objective.add_argument("--sym-sign", type=float, choices=[1.0, -1.0], default=1.0, help="+1: stated intent; -1: printed formula")
    objective.add_argument("--codebook-grid", type=int, nargs=3, default=[5, 5, 8], metavar=("TX", "TY", "THETA"))
    objective.add_argument("--max-shift", type=float, help="translation range ± pixels (default: stride / 2)")
    objective.add_argument("--context", type=int, default=1, metavar="K",
                           help="predict a transformed feature from the K×K code cells around its point, each "
                                "through the codebook (the official release's neighbourhood, pred_ks); 1: from "
                                "the centre cell alone. K > 1 widens the codebook's translation range by "
                                "stride·(K−1)/√2; give --codebook-grid about 1 px apart")
    objective.add_argument("--pair-source", choices=["crops", "images"],
                           help="crops (default): each pair's point is a code cell of a reconstruction crop, its "
                                "feature read from the crop's code and its transformed patch warped from the crop; "
                                "images (always with --no-cache): anywhere in the step's images, each pair's "
                                "window cut from them (the random stream of runs before this option)")
    objective.add_argument("--warp", choices=["pairs", "crops"], default="pairs",
                           help="pairs: --pairs patch pairs, each moved about its own point and compared at its "
                                "centre; crops: each reconstruction crop warped whole (one transformation per crop, "
                                "as in the official training code) and the two feature maps compared at every code "
                                "cell, each predicted from the nearest cell(s) of the original")
    objective.add_argument("--lambda-recon-pred", type=float, default=0.0, metavar="λ",
                           help="with --warp crops: weight of the warped crops' reconstruction from their predicted "
                                "features (every valid code cell predicted through the codebook, decoded, compared "
                                "where only valid cells reach; the official code's lambda_recon_trans_pred); 0: off")
    objective.add_argument("--module-dropout", type=float, default=0.0, metavar="Q",
                           help="drop each module from a crop's reconstruction with probability Q (the others scaled "
                                "by 1/(1−Q)), so that a feature coded by one module costs more than one shared by "
                                "several; L_equ still sees every module, and the progress bar's recon and psnr_crop are "
                                "those of the reduced reconstruction; 0: off")
    objective.add_argument("--ablate", default="", help="comma list of terms to switch off: equ, sym")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    run.add_argument("--threads", type=int, help="CPU threads per process (default: torch's choice)")
    run.add_argument("--log-every", type=int, default=10)
    run.add_argument("--compile", choices=["none", "default", "reduce-overhead", "max-autotune"], default="none",
                     help="torch.compile the objective (reduce-overhead: CUDA graphs); the same maths, minutes of start-up")
    run.add_argument("--report-to", choices=["auto", "tensorboard", "none"], default="auto",
                     help="tensorboard log in --checkpoint-dir (auto: when installed)")
    run.add_argument("--save-every-rank", action="store_true", help="diagnostic: each rank also writes its final weights")

    argv = sys.argv[1:] if argv is None else argv
    pre, _ = p.parse_known_args(argv)
    if pre.preset:
        path = Path(pre.preset) if Path(pre.preset).suffix == ".json" else PRESETS / f"{pre.preset}.json"
        preset = json.loads(path.read_text())
        unknown = sorted(set(preset) - {a.dest for a in p._actions})
        if unknown:
            p.error(f"preset {path} has unknown keys {unknown}")
        p.set_defaults(**preset)
    args = p.parse_args(argv)
    args.ablate = sorted({t.strip() for t in args.ablate.split(",") if t.strip()})
    if set(args.ablate) - {"equ", "sym"}:
        p.error(f"--ablate takes equ and/or sym; got {args.ablate}")
    if args.max_shift is None:
        args.max_shift = args.stride / 2
    if args.lambda_recon_pred and (args.warp != "crops" or args.ablate == ["equ", "sym"]):
        p.error("--lambda-recon-pred decodes the features the codebook predicts for the whole warped crops: it needs "
                "--warp crops and a codebook (do not ablate both equ and sym)")
    if args.warp == "crops" and args.no_cache:
        p.error("--warp crops draws its batches from the images held in memory: drop --no-cache")
    if args.pair_source == "crops" and args.no_cache:
        p.error("--pair-source crops draws the pairs from the crops held in memory: drop --no-cache (or use images)")
    if args.pair_source is None:
        args.pair_source = "images" if args.no_cache else "crops"
    if not 0 <= args.module_dropout < 1:
        p.error(f"--module-dropout is a probability in [0, 1); got {args.module_dropout}")
    if args.context < 1 or args.context % 2 == 0:
        p.error(f"--context must be an odd number of code cells ≥ 1; got {args.context}")
    if args.checkpoint_dir is None:
        args.checkpoint_dir = args.output.with_name(args.output.stem + "_checkpoints")
    for name in ("steps", "batch", "crop", "pairs", "checkpoint_every", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if 2 * args.border >= args.crop:
        p.error(f"--border {args.border} leaves nothing of a {args.crop}-pixel crop")
    return args


class Objective(nn.Module):
    """The autoencoder and its codebook; ``forward(batch)`` returns every loss term."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.ae = scg_core.ModularAE(num_modules=args.num_modules, module_channels=args.module_channels,
                                     parameterization=args.parameterization, kernel_size=args.kernel_size, stride=args.stride)
        self.use_equ, self.use_sym = "equ" not in args.ablate, "sym" not in args.ablate
        self.codebook = None
        if self.use_equ or self.use_sym:
            reach = codebook_reach(args)
            self.codebook = EquivarianceCodebook(args.num_modules, args.module_channels, tuple(args.codebook_grid),
                                                 (-reach, reach), tent=args.stride if args.context > 1 else None)
        self.args = args

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ae, cfg, a = self.ae, self.ae.config, self.args
        weights = ae.factor_weights()
        crops = ae.normalize(batch["crops"])
        code = Fn.encode_factorised(crops, weights, cfg)
        kept = code if "module_keep" not in batch else code * batch["module_keep"].repeat_interleave(cfg.module_channels, 1)[..., None, None]
        recon = Fn.decode_factorised(kept, weights, cfg, crops.shape[-2:])
        losses = {"recon": reconstruction_loss(recon, crops, border=a.border)}
        total = losses["recon"]
        whole = a.warp == "crops"
        kernel = Fn.compose_kernel(weights, cfg) if (self.use_equ and not whole) or a.lambda_copies else None  # (k·l, C, R, R)
        if whole:
            warped_crops = ae.normalize(batch["transformed"])
            with torch.no_grad():
                cells = cell_correspondences(batch["delta"], a.crop, cfg.stride, cfg.padding, a.context)
        if self.use_equ and whole:
            warped = Fn.encode_factorised(warped_crops, weights, cfg)
            losses["equ"] = self.whole_crop_equivariance(code, warped, cells, batch["cell_keys"])
            total = total + a.lambda_equ * losses["equ"]
        elif self.use_equ:
            f_t = Fn.centre_features(kernel, batch["transformed"], ae.mean, ae.std)
            if "cells" in batch:  # the pairs' points are code cells of the crops: their features are in the code
                f = cell_features(code, batch["cells"], a.context)  # (N, K², k·l)
            elif a.context == 1:
                f = Fn.centre_features(kernel, batch["patches"], ae.mean, ae.std)[:, None]
            else:
                f = Fn.context_features(kernel, batch["patches"], ae.mean, ae.std, cfg.stride)
            if a.context == 1:
                matrices, f = self.codebook(batch["delta"]), f[:, 0]
            else:
                deltas = neighbour_deltas(batch["delta"], cfg.stride, a.context)  # (N, K², 3)
                matrices = self.codebook.read(deltas.reshape(-1, 3)).view(*deltas.shape[:2], cfg.num_modules,
                                                                           cfg.module_channels, cfg.module_channels)
            losses["equ"] = equivariance_loss(f, f_t, matrices, relative=True)
            total = total + a.lambda_equ * losses["equ"]
        if a.lambda_recon_pred and self.codebook is not None:
            losses["recon_pred"] = self.predicted_reconstruction(code, warped_crops, cells, weights)
            total = total + a.lambda_recon_pred * losses["recon_pred"]
        if self.use_sym:
            losses["sym"] = symmetry_loss(self.codebook, a.temperature, a.sym_sign, reduction="mean")
            total = total + a.lambda_sym * losses["sym"]
        if a.lambda_copies and self.codebook is not None:
            best = soft_best_transforms(self.codebook, a.temperature, a.sym_sign).detach()
            losses["copies"] = kernel_copy_loss(kernel, best, cfg.module_channels)
            total = total + a.lambda_copies * losses["copies"]
        losses["total"] = total
        return losses

    def whole_crop_equivariance(self, code: torch.Tensor, warped: torch.Tensor, cells: tuple[torch.Tensor, ...],
                                keys: torch.Tensor) -> torch.Tensor:
        """``L_equ`` between the codes ``[B,k·l,h,w]`` of the crops and of the crops warped whole, with
        ``cells`` = :func:`scg_core.model.pairs.cell_correspondences` of the warp: the code cells of the
        warped crops whose patch, and whose predicting cells' patches, lie inside the crops — at most
        ``--pairs`` of them, those with the smallest ``keys`` ``[B,h,w]`` — each predicted from the
        nearest cell(s) of the original."""
        cfg, K = self.ae.config, self.args.context
        source, deltas, valid = cells
        with torch.no_grad():
            keys = keys.flatten().masked_fill(~valid.flatten(), float("inf"))
            picked = keys.topk(min(self.args.pairs, keys.numel()), largest=False).indices
            picked = picked[keys[picked].isfinite()]
            image, cell = picked // valid.shape[1], picked % valid.shape[1]  # (N,), (N,)
        f = predicting_features(code, source, image, cell)  # (N, K², k·l)
        target = code_rows(warped).index_select(0, image * code[0, 0].numel() + cell)  # (N, k·l)
        d = deltas[image, cell]  # (N, K², 3)
        k, l = cfg.num_modules, cfg.module_channels
        if K == 1:
            return equivariance_loss(f[:, 0], target, self.codebook(d[:, 0]), relative=True)
        matrices = self.codebook.read(d.reshape(-1, 3)).view(*d.shape[:2], k, l, l)
        return equivariance_loss(f, target, matrices, relative=True)

    def predicted_reconstruction(self, code: torch.Tensor, warped: torch.Tensor, cells: tuple[torch.Tensor, ...],
                                 weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared error of the warped crops ``[B,3,c,c]`` (normalised) decoded from the code that
        the codebook predicts for them from the crops' code ``[B,k·l,h,w]`` (``cells`` as for
        :meth:`whole_crop_equivariance`): every valid cell predicted as there, the others left at zero,
        and the error taken over the pixels that only valid cells reach. Unlike ``L_equ``, an error
        counts by what it does to the image, not relative to the features' energy."""
        cfg = self.ae.config
        k, l = cfg.num_modules, cfg.module_channels
        source, deltas, valid = cells
        with torch.no_grad():
            picked = valid.flatten().nonzero().squeeze(1)  # (N,) flat (crop, cell)
            image, cell = picked // valid.shape[1], picked % valid.shape[1]
        B, J, H, W = code.shape
        f = predicting_features(code, source, image, cell).unflatten(-1, (k, l))  # (N, K², k, l)
        d = deltas[image, cell]  # (N, K², 3)
        matrices = self.codebook.read(d.reshape(-1, 3)).view(*d.shape[:2], k, l, l)
        predicted = torch.einsum("nqkij,nqkj->nki", matrices, f).reshape(-1, J)
        predicted = code.new_zeros(B * H * W, J).index_copy(0, picked, predicted)
        decoded = Fn.decode_factorised(predicted.view(B, H, W, J).permute(0, 3, 1, 2), weights, cfg, warped.shape[-2:])
        with torch.no_grad():  # pixels within reach of an invalid cell (padding each way) are left out
            invalid = (~valid).to(code.dtype).view(B, 1, H, W)
            R, S, P = cfg.receptive_field, cfg.stride, cfg.padding
            extra = warped.shape[-1] - ((W - 1) * S - 2 * P + R)
            reach = torch.nn.functional.conv_transpose2d(invalid, invalid.new_ones(1, 1, R, R), stride=S, padding=P,
                                                         output_padding=extra)
            mask = (reach < 0.5).to(code.dtype)
        return ((decoded - warped).pow(2) * mask).sum() / (mask.sum() * warped.shape[1]).clamp_min(1)


def code_rows(code: torch.Tensor) -> torch.Tensor:
    """``[B,J,h,w]`` → ``[B·h·w, J]``, one row per code cell (``index_select``'s backward then adds
    whole rows: 3–5× faster than a 4-D index's on the CPU)."""
    return code.permute(0, 2, 3, 1).reshape(-1, code.shape[1])


def predicting_features(code: torch.Tensor, source: torch.Tensor, image: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """The features of the cells that predict code cell ``cell`` of crop ``image`` (both ``[N]``),
    ``source`` ``[B, h·w, K²]`` from :func:`scg_core.model.pairs.cell_correspondences` → ``[N, K², J]``."""
    cells = code.shape[-2] * code.shape[-1]
    index = image[:, None] * cells + source[image, cell]
    return code_rows(code).index_select(0, index.reshape(-1)).view(*index.shape, code.shape[1])


def cell_features(code: torch.Tensor, cells: torch.Tensor, context: int) -> torch.Tensor:
    """The features at code cells and the ``context × context`` cells around them: ``code``
    ``[B,J,h,w]``, ``cells`` ``[N,3]`` long ``(crop, row, column)`` → ``[N, context², J]``, cells in
    row-major order (:func:`scg_core.model.pairs.neighbour_deltas`)."""
    _, J, H, W = code.shape
    h = (context - 1) // 2
    offsets = torch.arange(-h, h + 1, device=cells.device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    crop, row, column = cells.unbind(1)
    index = (crop[:, None] * H + row[:, None] + dy.reshape(1, -1)) * W + column[:, None] + dx.reshape(1, -1)
    return code_rows(code).index_select(0, index.reshape(-1)).view(-1, context * context, J)


def codebook_reach(args: argparse.Namespace) -> float:
    """± pixels the codebook's translation axes span: the shifts drawn (with ``--warp crops``: the
    residual from the nearest code cell, at most stride/2 per axis, at any rotation), plus the farthest
    code cell of the context at any rotation (:func:`scg_core.model.pairs.neighbour_deltas`)."""
    shift = args.stride / 2 * math.sqrt(2) if args.warp == "crops" else args.max_shift
    return shift + args.stride * (args.context - 1) / 2 * math.sqrt(2)


def make_optimizer(objective: Objective, args: argparse.Namespace) -> torch.optim.Optimizer:
    groups = [{"params": list(objective.ae.parameters()), "weight_decay": args.weight_decay}]
    if objective.codebook is not None:
        groups.append({"params": list(objective.codebook.parameters()), "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=args.lr, eps=args.adam_eps)


def step_batches(args: argparse.Namespace, folder: ImageFolder, patch: int, accelerator, start: int) -> Iterator[dict]:
    """The batches of steps ``start …`` for this rank: drawn on the device from the images held
    there once (:mod:`training.image_bank`), or with ``--no-cache`` decoded per step in workers."""
    options = dict(seed=args.seed, rank=accelerator.process_index, crop=args.crop, batch=args.batch, pairs=args.pairs,
                   patch=patch, max_shift=args.max_shift, colour_augment=args.colour_augment, chroma_gain=args.chroma_gain,
                   context_patch=context_side(patch, args.stride, args.context))
    if args.warp == "crops":
        options.update(whole_crops=True, stride=args.stride)
    elif args.pair_source == "crops":
        options.update(pairs_in_crops=True, stride=args.stride)
    if args.no_cache:
        return with_module_keep(loop.batches(PairBatches(folder, **options), start, args.steps, args.workers), args,
                                accelerator.process_index, start)
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else None
    if free is not None and folder.decoded_bytes > 0.8 * free:
        raise SystemExit(f"error: the {len(folder)} images take {folder.decoded_bytes / 2**30:.1f} GiB decoded, more than "
                         f"this machine's free memory ({free / 2**30:.1f} GiB): pass --no-cache (and --workers N) to "
                         "decode them per step instead")
    bank = ImageBank(folder.decode_all(progress=accelerator.is_main_process), accelerator.device)
    sampler = StepSampler(bank, **options)
    return with_module_keep(map(sampler, range(start, args.steps)), args, accelerator.process_index, start)


def with_module_keep(batches: Iterator[dict], args: argparse.Namespace, rank: int, start: int) -> Iterator[dict]:
    """``batches`` with ``module_keep`` ``[B,k]`` (0, or 1/(1−Q) for a kept module) under ``--module-dropout Q``,
    drawn from a stream of its own seeded by step, so a resumed run draws the same and runs without it are
    unchanged."""
    if not args.module_dropout:
        yield from batches
        return
    q = args.module_dropout
    for step, batch in enumerate(batches, start):
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + rank * 7_919 + step + 0x5EED)
        keep = (torch.rand(args.batch, args.num_modules, generator=g) >= q).float() / (1 - q)
        yield dict(batch, module_keep=keep)


def export(objective: Objective, args: argparse.Namespace, path: Path, step: int, metrics: dict) -> None:
    provenance = {"source": TRAINER, "step": step, "args": jsonable(vars(args)),
                  "final_losses": metrics, "scg_core": scg_core.__version__}
    scg_core.save(objective.ae, path, provenance=provenance)


def main(args: argparse.Namespace) -> dict:
    accelerator = loop.start(args, log_dir=args.checkpoint_dir)
    torch.manual_seed(args.seed)  # identical initial weights on every rank
    objective = Objective(args)
    optimizer = make_optimizer(objective, args)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    model, optimizer = accelerator.prepare(objective, optimizer)
    checkpoints = Checkpoints(args.checkpoint_dir, trainer=TRAINER, args=args, accelerator=accelerator, model=model,
                              optimizer=optimizer, scheduler=scheduler, checked={"steps": "the cosine schedule's length"})
    start = checkpoints.resume(args.resume)

    patch = objective.ae.config.receptive_field
    smallest = min_image_size(args.crop, patch, args.max_shift, context_side(patch, args.stride, args.context))
    if args.warp == "crops":
        smallest = 2 * crop_margin(args.crop, args.max_shift) + 1
    folder = ImageFolder(args.data, smallest, cache=not args.no_cache)
    samples = step_batches(args, folder, patch, accelerator, start)
    accelerator.print(f"{len(folder)} images ({len(folder.skipped)} skipped) · {accelerator.num_processes} process(es) on "
                      f"{accelerator.device} · steps {start}→{args.steps} · ablate: {','.join(args.ablate) or 'none'}")
    loop.track(accelerator, "train_modular_ae", args)
    device = accelerator.device
    forward = model if args.compile == "none" else torch.compile(model, mode=args.compile)
    step, metrics = loop.Loop(
        accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, checkpoints=checkpoints,
        batches=samples, objective="total",
        loss=lambda batch, _: forward({k: v.to(device, non_blocking=True) for k, v in batch.items()}),
        derived=lambda m: {"psnr_crop": _psnr(m["recon"], objective.ae)}, total=args.steps, log_dir=args.checkpoint_dir,
        name="train_modular_ae", samples_per_step=args.batch * accelerator.num_processes, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
    ).run(start)

    if accelerator.is_main_process:
        export(objective, args, args.output, step, metrics)
        print(f"wrote {args.output} after {step} steps in {metrics['seconds']:.0f} s; skipped images: {len(folder.skipped)}")
        for path, reason in folder.skipped.items():
            print(f"  skipped {path}: {reason}")
    if args.save_every_rank:
        export(objective, args, args.output.with_name(f"{args.output.stem}.rank{accelerator.process_index}.safetensors"), step, metrics)
    accelerator.end_training()
    return metrics


def _psnr(mse_normalised: float, ae: scg_core.ModularAE) -> float:
    """PSNR in dB of a [0,1] image from an MSE measured in normalised units."""
    mse = mse_normalised * float(ae.std.pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


if __name__ == "__main__":
    main(parse_args())
