"""Steps per second of the modular-autoencoder trainer, and where a step's time goes.

    python benchmarks/bench_train_ae.py                       # CPU, 2 threads, the quick_ae preset
    python benchmarks/bench_train_ae.py --preset default_ae   # the bundled default's 40,000-step setting (±8 px)
    python benchmarks/bench_train_ae.py --device cuda --compile reduce-overhead
    python benchmarks/bench_train_ae.py --paths whole --train-args "--context 3 --codebook-grid 17 17 8"

Runs the trainer's own objective and optimiser at the preset on the photos scikit-image and
scikit-learn ship (``training.gather_photos``), with two ways of making each step's batch, side by
side in one run:

* ``host``: decoding-free but per-pair Python on the CPU (``training.data.PairBatches``, what the
  trainer did before, and still does with ``--no-cache``);
* ``device``: the images held once on the device and every batch drawn there with tensor ops
  (``training.image_bank``), each pair's point a code cell of a crop, its transformed patch warped
  from the crop (the trainer's default, ``--pair-source crops``);
* ``device-images`` (only when asked for in ``--paths``): the same bank, each pair's window cut from
  the images (``--pair-source images``, the trainer's default before);
* ``whole`` (only when asked for in ``--paths``): the same, with ``--warp crops`` — each crop
  warped whole and the two feature maps compared at every code cell, in place of the patch pairs
  (another objective: what the official training code does).

With ``--against REV`` the same loop also runs the trainer of an earlier commit (its objective and
its data path, extracted with ``git archive``), in this run, so the speed-up is measured side by
side (the issue-16 baseline: ``--against 89f6ae0``).

Each phase — data, forward, backward, optimiser — is timed with the device synchronised before and
after it, so the split is exact but the total is a little slower than an unsynchronised run; the
``steps/s`` column times whole unsynchronised steps separately.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import ImageFolder, PairBatches, min_image_size  # noqa: E402
from training.gather_photos import gather  # noqa: E402
from training.image_bank import ImageBank, StepSampler  # noqa: E402
from training.train_modular_ae import Objective, make_optimizer, parse_args  # noqa: E402

PHASES = ("data", "forward", "backward", "optimiser")
REPO = Path(__file__).resolve().parents[1]
BASELINE = """
import sys, time, torch
torch.set_num_threads({threads})
from training.train_modular_ae import Objective, make_optimizer, parse_args
from training.data import ImageFolder, PairBatches, min_image_size
args = parse_args(["--preset", {preset!r}, "--data", {data!r}])
torch.manual_seed(0)
objective = Objective(args)
optimizer = make_optimizer(objective, args)
patch = objective.ae.config.receptive_field
folder = ImageFolder(args.data, min_image_size(args.crop, patch, args.max_shift))
batches = PairBatches(folder, seed=0, rank=0, crop=args.crop, batch=args.batch, pairs=args.pairs, patch=patch,
                      max_shift=args.max_shift, colour_augment=args.colour_augment, chroma_gain=args.chroma_gain)
def step(i):
    objective(batches[i])["total"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
for i in range({warmup}):
    step(i)
started = time.perf_counter()
for i in range({warmup}, {warmup} + {steps}):
    step(i)
print({steps} / (time.perf_counter() - started))
"""


def extract(rev: str, paths: list[str], tree: str) -> None:
    """Write ``paths`` (files or folders of this repository) as they were at commit ``rev`` under ``tree``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, *paths], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")


def baseline_steps_per_s(rev: str, data: Path, a: argparse.Namespace) -> float:
    """Steps/s of the trainer at commit ``rev`` (CPU only), run from a ``git archive`` of it."""
    with tempfile.TemporaryDirectory() as tree:
        extract(rev, ["scg_core", "training"], tree)
        preset = a.preset
        if preset == "quick_ae" and not (Path(tree) / "training/configs/quick_ae.json").exists():
            preset = "default_ae"  # the 5,400-step preset's name before the 40,000-step default took it
        code = BASELINE.format(threads=a.threads, preset=preset, data=str(data), warmup=a.warmup, steps=2 * a.steps)
        out = subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": tree})
        return float(out.stdout.strip().splitlines()[-1])


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, draw, objective, optimizer, device: torch.device, steps: int, warmup: int, compile_mode: str) -> dict:
    forward = objective if compile_mode == "none" else torch.compile(objective, mode=compile_mode)

    def step(i: int) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in draw(i).items()}
        forward(batch)["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for i in range(warmup):
        step(i)
    synchronise(device)
    warm = time.perf_counter() - started
    split = dict.fromkeys(PHASES, 0.0)
    for i in range(warmup, warmup + steps):  # timed phase by phase
        marks = [time.perf_counter()]
        batch = {k: v.to(device, non_blocking=True) for k, v in draw(i).items()}
        synchronise(device)
        marks.append(time.perf_counter())
        loss = forward(batch)["total"]
        synchronise(device)
        marks.append(time.perf_counter())
        loss.backward()
        synchronise(device)
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronise(device)
        marks.append(time.perf_counter())
        for phase, a, b in zip(PHASES, marks, marks[1:], strict=False):
            split[phase] += b - a
    synchronise(device)
    started = time.perf_counter()
    for i in range(warmup + steps, warmup + 2 * steps):  # whole steps, no synchronisation inside
        step(i)
    synchronise(device)
    rate = steps / (time.perf_counter() - started)
    total = sum(split.values())
    return {"path": name, "steps_per_s": rate, "ms_per_step": 1000 * total / steps, "warmup_s": warm,
            **{f"{p}_ms": 1000 * split[p] / steps for p in PHASES}, "data_share": split["data"] / total}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (the project's reference CPU has 2 cores)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per path (each path runs 2× this)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--preset", default="quick_ae", help="quick_ae (5,400 steps; what --against revisions know) or default_ae")
    p.add_argument("--data", type=Path, help="image folder (default: the photos scikit-image/scikit-learn ship)")
    p.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead", "max-autotune"])
    p.add_argument("--paths", default="host,device",
                   help="which data paths to run, comma-separated: host, device, device-images, whole")
    p.add_argument("--against", metavar="REV", help="also time the trainer of this git commit (CPU), e.g. 89f6ae0")
    p.add_argument("--train-args", default="", metavar="ARGS",
                   help='more trainer options for every path of this run, e.g. "--context 3 --codebook-grid 17 17 8"')
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    extra = a.train_args.split()
    if extra and a.against:
        p.error("--against runs an earlier commit's trainer at the plain preset; it cannot take --train-args")
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data or (gather(Path(tmp)) and Path(tmp) / "train")
        args = parse_args(["--preset", a.preset, "--data", str(data), *extra])
        patch = Objective(args).ae.config.receptive_field
        folder = ImageFolder(data, min_image_size(args.crop, patch, args.max_shift))
        options = dict(seed=0, rank=0, crop=args.crop, batch=args.batch, pairs=args.pairs, patch=patch,
                       max_shift=args.max_shift, colour_augment=args.colour_augment, chroma_gain=args.chroma_gain)
        bank = ImageBank(folder.decode_all(), device)
        draws = {"host": PairBatches(folder, **options).__getitem__, "device-images": StepSampler(bank, **options),
                 "device": StepSampler(bank, **options, pairs_in_crops=True, stride=args.stride),
                 "whole": StepSampler(bank, **options, whole_crops=True, stride=args.stride)}
        whole = parse_args(["--preset", a.preset, "--data", str(data), *extra, "--warp", "crops"])
        rows = []
        for name in a.paths.split(","):
            torch.manual_seed(0)
            run_args = whole if name == "whole" else args
            objective = Objective(run_args).to(device)
            rows.append(bench(name, draws[name], objective, make_optimizer(objective, run_args), device, a.steps, a.warmup,
                              a.compile))
        before = baseline_steps_per_s(a.against, data, a) if a.against else None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {a.threads} threads"
    print(f"train_modular_ae at preset {a.preset} ({args.batch} crops of {args.crop}², {args.pairs} pairs) on {gpu}, "
          f"torch {torch.__version__}, compile={a.compile}" + (f", {a.train_args}" if extra else ""))
    print("| path | steps/s | ms/step (synchronised) | data ms | forward ms | backward ms | optimiser ms | data share |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['steps_per_s']:.1f} | {r['ms_per_step']:.1f} | {r['data_ms']:.1f} | {r['forward_ms']:.1f} | "
              f"{r['backward_ms']:.1f} | {r['optimiser_ms']:.1f} | {100 * r['data_share']:.1f}% |")
    rate = {r["path"]: r["steps_per_s"] for r in rows}
    for faster, slower in (("device", "host"), ("device", "device-images"), ("whole", "device")):
        if faster in rate and slower in rate:
            print(f"{faster} / {slower}: {rate[faster] / rate[slower]:.2f}× steps/s")
    if before is not None:
        print(f"| trainer at {a.against} | {before:.1f} | | | | | | |")
        for name in rate:
            if name != "host":
                print(f"{name} / {a.against}: {rate[name] / before:.2f}× steps/s")
    if a.json:
        a.json.write_text(json.dumps({"device": gpu, "compile": a.compile, "rows": rows, "against": a.against,
                                      "against_steps_per_s": before}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
