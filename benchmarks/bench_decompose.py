"""Decomposition sheet: wall time and peak memory of the streaming sheet vs the old all-at-once one.

    python benchmarks/bench_decompose.py                      # 4000×3000 and 2000×1500, CPU, 2 threads
    python benchmarks/bench_decompose.py --sizes 4000x3000 --variants streaming

Each (size, variant) runs in a fresh subprocess, which reports its own peak resident memory
(``ru_maxrss``: everything torch allocated, which tracemalloc cannot see) and the baseline before the
sheet (python + torch + model + input image), so the figures do not leak into each other. CPU s
(user + system time of all threads) is shown next to wall time because a shared machine's load
moves wall time a lot.

* ``streaming``: ``scg_core.tools.sheet.decomposition_sheet`` — one group or module at a time, each shrunk
  to its tile at once (target: ≤ 1.5 GB peak for 12 MP).
* ``all-at-once``: the previous implementation, kept here as the reference —
  ``model.module_reconstructions`` at full size (all k modules at once), then each tile resized.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def synthetic_photo(width: int, height: int):
    """A deterministic photo-like ``[1,3,H,W]`` in [0,1]: smooth colour blobs plus fine grain."""
    import torch

    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 12, 16, generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return image.add_(0.05 * torch.randn(image.shape, generator=g)).clamp_(0, 1)


def all_at_once(model, image, tile: int = 256):
    """The old sheet's computation (tiles only; the layout is the same in both)."""
    import torch
    from PIL import Image

    from scg_core.formats.images import tensor_to_pil
    from scg_core.tools.sheet import module_visual

    H, W = image.shape[-2:]
    scale = tile / max(H, W)
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    with torch.inference_mode():
        tiles = [image[0]] + [model.hint(image, groups=[g.name])[0] for g in model.groups]
        recon = model.module_reconstructions(image)[0]  # (k, 3, H, W)
        energy = (recon - recon.mean((2, 3), keepdim=True)).pow(2).flatten(1).sum(1)
        share = energy / energy.sum().clamp_min(1e-12)
        tiles += [module_visual(recon[i]) for i in range(model.config.num_modules)]
    return [tensor_to_pil(x).resize(size, Image.Resampling.LANCZOS) for x in tiles], share


def child(variant: str, width: int, height: int, threads: int) -> None:
    import torch

    import scg_core
    from scg_core.tools.sheet import decomposition_sheet

    torch.set_num_threads(threads)
    model = scg_core.load_default()
    image = synthetic_photo(width, height)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    if variant == "streaming":
        decomposition_sheet(model, image)
    else:
        all_at_once(model, image)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_gb": peak / 2**20, "baseline_gb": baseline / 2**20}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["4000x3000", "2000x1500"], metavar="WxH")
    p.add_argument("--variants", nargs="+", default=["streaming", "all-at-once"], choices=["streaming", "all-at-once"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", nargs=3, metavar=("VARIANT", "W", "H"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.threads)
        return
    print(f"decomposition sheet (tile 256), default autoencoder, CPU, {args.threads} threads; peak = process max RSS")
    print(f"{'image':>10} {'variant':>12} {'wall s':>8} {'CPU s':>8} {'peak GB':>8} {'baseline GB':>12}")
    for size in args.sizes:
        w, h = (int(n) for n in size.lower().split("x"))
        for variant in args.variants:
            proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", variant, str(w), str(h)],
                                  check=False, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                print(f"{size:>10} {variant:>12} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{size:>10} {variant:>12} {r['seconds']:8.1f} {r['cpu_seconds']:8.1f} {r['peak_gb']:8.2f} {r['baseline_gb']:12.2f}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
