"""Reading the equivariance codebook at many transformations: the trainer's ``read`` against the
3-D ``grid_sample`` it replaced, side by side (forward and forward + backward).

    python benchmarks/bench_codebook_read.py                  # CPU, 2 threads
    python benchmarks/bench_codebook_read.py --device cuda

The shape is a ``--context 3`` step: ``--rows`` (9 × 1,024 cells) transformations read from a
16-module, 4-channel codebook on a 17 × 17 × 8 grid. Both return the same matrices (checked here).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scg_core.model.losses import EquivarianceCodebook  # noqa: E402


def grid_sample_read(codebook: EquivarianceCodebook, delta: torch.Tensor) -> torch.Tensor:
    """The former ``read``: the codebook as a ``[1, k·l·l, n_θ+1, n_ty, n_tx]`` volume, one 3-D ``grid_sample``."""
    k, nx, ny, nt, l, _ = codebook.matrices.shape
    volume = codebook.matrices.permute(0, 4, 5, 3, 2, 1).reshape(1, k * l * l, nt, ny, nx)
    volume = torch.cat([volume, volume[:, :, :1]], dim=2)  # θ = 2π repeats θ = 0
    lo, hi = codebook.translation_range
    axis = lambda v: (v - lo) / (hi - lo) * 2 - 1
    theta = torch.remainder(delta[:, 2], 2 * math.pi) / math.pi - 1
    grid = torch.stack([axis(delta[:, 0]), axis(delta[:, 1]), theta], dim=-1).view(1, -1, 1, 1, 3)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(k, l, l, -1).permute(3, 0, 1, 2)


def timed(fn, device: torch.device, rounds: int) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    sync()
    return (time.perf_counter() - start) / rounds * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=9 * 1024)
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    codebook = EquivarianceCodebook(16, 4, (17, 17, 8), (-8.5, 8.5), tent=4).to(device)
    with torch.no_grad():
        codebook.matrices.add_(0.1 * torch.randn_like(codebook.matrices))
    span = torch.tensor([17.0, 17.0, 2 * math.pi], device=device)
    delta = torch.rand(a.rows, 3, device=device) * span - torch.tensor([8.5, 8.5, 0.0], device=device)
    grad = torch.randn(a.rows, 16, 4, 4, device=device)
    err = (codebook.read(delta) - grid_sample_read(codebook, delta)).abs().max().item()
    print(f"{a.rows} rows, {device}, {a.threads} threads; largest difference between the two: {err:.2e}")
    rows = {}
    for name, read in (("read (embedding_bag)", codebook.read), ("grid_sample (former)", lambda d: grid_sample_read(codebook, d))):
        forward = timed(lambda read=read: read(delta), device, a.rounds)
        both = timed(lambda read=read: read(delta).backward(grad), device, a.rounds)
        rows[name] = (forward, both)
        print(f"{name:22s} forward {forward:8.2f} ms   forward+backward {both:8.2f} ms")
    (f_new, b_new), (f_old, b_old) = rows.values()
    print(f"speed-up: forward {f_old / f_new:.1f}×, forward+backward {b_old / b_new:.1f}×")


if __name__ == "__main__":
    main()
