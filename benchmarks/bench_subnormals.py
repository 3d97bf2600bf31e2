"""A reconstruction step of the modular autoencoder whose silent modules compute subnormal numbers,
with and without the setting ``training.loop.flush_subnormals`` turns on (``torch.set_flush_denormal``),
side by side in one process.

    python benchmarks/bench_subnormals.py                 # CPU, one thread
    python benchmarks/bench_subnormals.py --silent 0      # control: no module silent, no difference

``--silent`` modules (of 16) get factors of 1e-20 in their pathway and module kernels, as a module
that falls silent in training drifts towards: their code, a product of the factors, is then below
float32's normal range (1.2e-38). The step is encode → decode → MSE → backward on a
``--batch`` × 3 × 128 × 128 batch, the trainer's reconstruction shape. Rounds alternate between the
two settings; medians are printed. One thread, because the setting belongs to each thread and
this process's worker threads would keep the one they started with.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scg_core import ModularAE  # noqa: E402


def silence(ae: ModularAE, modules: int) -> None:
    """Scale the last ``modules`` modules' factors by 1e-20 (their code becomes subnormal)."""
    k, l = ae.config.num_modules, ae.config.module_channels
    with torch.no_grad():
        for i in range(k - modules, k):
            ae.pathway_a[i] *= 1e-20
            ae.pathway_b[i] *= 1e-20
            ae.module_kernels[i * l:(i + 1) * l] *= 1e-20


def step_ms(ae: ModularAE, x: torch.Tensor) -> float:
    start = time.perf_counter()
    ae.zero_grad(set_to_none=True)
    f = ae.encode(x)
    loss = (ae.decode(f, x.shape[-2:]) - ae.normalize(x)).pow(2).mean()
    loss.backward()
    return (time.perf_counter() - start) * 1e3


def subnormal_share(ae: ModularAE, x: torch.Tensor) -> float:
    with torch.no_grad():
        f = ae.encode(x)
    return float(((f != 0) & (f.abs() < torch.finfo(torch.float32).tiny)).double().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--silent", type=int, default=12, help="modules of 16 made silent (default: 12)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ae = ModularAE()
    silence(ae, a.silent)
    x = torch.rand(a.batch, 3, 128, 128)
    torch.set_flush_denormal(False)
    print(f"{a.silent} of 16 modules silent: {100 * subnormal_share(ae, x):.1f}% of the code is subnormal "
          f"(without flushing)")
    times = {False: [], True: []}
    for r in range(a.rounds + 1):
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            ms = step_ms(ae, x)
            if r:  # the first round warms up
                times[flush].append(ms)
    torch.set_flush_denormal(False)
    plain, flushed = statistics.median(times[False]), statistics.median(times[True])
    print(f"step, subnormals computed:  {plain:8.1f} ms")
    print(f"step, subnormals flushed:   {flushed:8.1f} ms")
    print(f"ratio: {plain / flushed:.2f}x")


if __name__ == "__main__":
    main()
