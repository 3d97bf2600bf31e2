"""The autoencoder trainer's batch sampler against an earlier commit's, side by side in the training loop.

    python benchmarks/bench_sampler.py --against HEAD~1            # CPU, 2 threads, the quick_ae preset
    python benchmarks/bench_sampler.py --against a01675a --steps 120

Both samplers (``training.image_bank.StepSampler`` of this tree and of ``REV``, extracted with
``git archive``) draw from the same photos with the same options. Round by round, each draws step
``i``'s batch (timed) and a training step follows it (not timed), so the caches are as cold as in
training and background load hits both alike; the order alternates every round. Before timing it
checks that both give the same batches on the first steps (a speed change must not change the data:
equal tensors, except the warped patches, which may differ by the float rounding of another warp
grid, up to ``ROUNDING`` on the [0,1] scale), and prints the median of per-round times with the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train_ae import extract  # the script's own folder is on sys.path

from training import image_bank
from training.data import ImageFolder, min_image_size
from training.gather_photos import gather
from training.train_modular_ae import Objective, make_optimizer, parse_args


def module_at(rev: str, tree: str):
    """``training/image_bank.py`` as it was at commit ``rev``, imported under another name."""
    extract(rev, ["training/image_bank.py"], tree)
    spec = importlib.util.spec_from_file_location(f"image_bank_{rev}", Path(tree) / "training/image_bank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROUNDING = 1e-5  # largest difference allowed between the two samplers' warped patches (values in [0,1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", required=True, metavar="REV", help="the git commit whose sampler to time against")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=80, help="timed rounds (each draws one batch per sampler)")
    p.add_argument("--preset", default="quick_ae")
    p.add_argument("--data", type=Path, help="image folder (default: the photos scikit-image/scikit-learn ship)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data or (gather(Path(tmp) / "photos") and Path(tmp) / "photos" / "train")
        args = parse_args(["--preset", a.preset, "--data", str(data)])
        torch.manual_seed(0)
        objective = Objective(args)
        optimizer = make_optimizer(objective, args)
        patch = objective.ae.config.receptive_field
        images = list(ImageFolder(data, min_image_size(args.crop, patch, args.max_shift)).decode_all())
        options = {"seed": 0, "rank": 0, "crop": args.crop, "batch": args.batch, "pairs": args.pairs, "patch": patch,
                   "max_shift": args.max_shift, "colour_augment": args.colour_augment, "chroma_gain": args.chroma_gain}
        before = module_at(a.against, tmp)
        samplers = {a.against: before.StepSampler(before.ImageBank(images), **options),
                    "this tree": image_bank.StepSampler(image_bank.ImageBank(images), **options)}
    old, new = samplers.values()
    pairs = [(old(i), new(i)) for i in range(3)]
    equal = all(torch.equal(x[k], y[k]) for x, y in pairs for k in x if k != "transformed")
    rounding = max(float((x["transformed"] - y["transformed"]).abs().max()) for x, y in pairs)
    equal = equal and rounding <= ROUNDING
    times = {name: [] for name in samplers}
    for i in range(a.steps + 3):
        names = list(samplers) if i % 2 else list(samplers)[::-1]
        for name in names:
            started = time.perf_counter()
            batch = samplers[name](i)
            if i >= 3:  # the first rounds warm up
                times[name].append(time.perf_counter() - started)
            objective(batch)["total"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    median = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"StepSampler at preset {a.preset} ({args.batch} crops of {args.crop}², {args.pairs} pairs), CPU, {a.threads} threads, "
          f"{a.steps} rounds; batches the same on the first 3 steps: {equal} (warped patches differ by ≤ {rounding:.1e})")
    for name, ms in median.items():
        print(f"  {name}: {ms:.2f} ms per step (median)")
    print(f"  this tree / {a.against}: {median['this tree'] / median[a.against]:.2f}× the time")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
