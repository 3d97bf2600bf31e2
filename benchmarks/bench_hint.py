"""Hint speed: scg_core's factorised path vs the official composed-kernel path vs Canny (and what the
per-image contrast of edges and texture groups and the phase-averaged hints cost).

    python benchmarks/bench_hint.py                 # CPU, 2 threads, 512² and 1024², batch 1
    python benchmarks/bench_hint.py --weights FILE  # any Modular AE (speed does not depend on values)

All methods are timed in the same run; the two hint computations are interleaved round by round
(so background load hits them alike), the Canny references in rounds of their own. The table
reports medians and ratios (Canny against the all-groups composed time). The factorised and composed
paths are compared on one code grid (``phase_average`` off, as the official hint is); a second table
times the hint averaged over the code grid's positions (``phase_average``, through the FFT) against
one grid, and the per-image contrast is timed as the weight file computes its hints. When CUDA is available it also prints images/s at 512² for batch 32 in
fp16 and bf16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import scg_core
from scg_core.model import functional as Fn


def test_image(size: int, batch: int = 1, device: str = "cpu", dtype=torch.float32) -> torch.Tensor:
    """A deterministic structured image in [0,1]: gradients, rings and a few hard edges."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    r = ((x - 0.4) ** 2 + (y - 0.6) ** 2).sqrt()
    img = torch.stack([x, 0.5 + 0.5 * torch.sin(30 * r), ((x > 0.3) & (y < 0.7)).float() * 0.8 + 0.1 * y])
    return img.clamp(0, 1)[None].expand(batch, -1, -1, -1).contiguous().to(device, dtype)


def composed_hint(model: scg_core.ModularAE, kernel: torch.Tensor, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The official computation: composed conv (stride 4, padding 10), mask, transposed conv."""
    f = Fn.encode_composed(model.normalize(x), kernel, model.config) * mask
    return model.denormalize(Fn.decode_composed(f, kernel, model.config, x.shape[-2:])).clamp(0, 1)


def channel_mask(model: scg_core.ModularAE, group: str | None, x: torch.Tensor) -> torch.Tensor:
    gains = model.module_gains(groups=[group] if group else None)
    per_channel = torch.tensor(gains).repeat_interleave(model.config.module_channels)
    return per_channel.view(1, -1, 1, 1).to(x.device, x.dtype)


def methods(model, x, group):
    """The two hint computations for one selection (``group=None``: all groups)."""
    kernel = model.composed_kernel().detach().to(x.dtype)
    return {
        "scg_core (factorised)": lambda: model.hint(x, groups=[group] if group else None),
        "composed kernel (official)": lambda m=channel_mask(model, group, x): composed_hint(model, kernel, m, x),
    }


def edge_maps(x):
    """Canny references. Timed in their own rounds: kornia's allocates and frees large buffers, which
    would otherwise change the allocator state the hint methods run in."""
    import kornia

    out = {"Canny (kornia)": lambda: kornia.filters.canny(x, low_threshold=0.1, high_threshold=0.2)[1]}
    try:
        import cv2

        gray = (x[0].mean(0) * 255).to(torch.uint8).cpu().numpy()
        out["Canny (OpenCV)"] = lambda: cv2.Canny(gray, 100, 200)
    except ImportError:
        pass
    return out


def time_interleaved(fns: dict, rounds: int, warmup: int = 2, sync=lambda: None) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def cpu_table(model, sizes, rounds, single_group):
    rows = []
    with torch.inference_mode():
        for size in sizes:
            x = test_image(size)
            base = None
            for group in (None, single_group, "edges"):
                ms = time_interleaved(edge_maps(x), rounds) if group == "edges" else time_interleaved(methods(model, x, group), rounds)
                base = ms.get("composed kernel (official)", base)  # the all-groups composed time for Canny
                for name, value in ms.items():
                    label = "-" if group == "edges" else group or "all"
                    rows.append({"size": size, "groups": label, "method": name, "ms": value, "speedup_vs_composed": base / value})
    return rows


def contrast_table(model, sizes, rounds):
    """What the per-image contrast of a group with a display span costs (scg_core.model.display):
    its hint against the same group's hint at a fixed gain (the group's largest factor), interleaved."""
    from scg_core.model.groups import with_gains

    stretched = [g.name for g in model.groups if g.span is not None]
    fixed = scg_core.ModularAE(model.config, groups=with_gains(model.groups, {}, spans=dict.fromkeys(stretched)),
                               phase_average=model.phase_average)
    fixed.load_state_dict(model.state_dict())
    rows = []
    with torch.inference_mode():
        for size in sizes:
            x = test_image(size)
            for name in stretched:
                ms = time_interleaved({"per image": lambda n=name: model.hint(x, [n]), "fixed": lambda n=name: fixed.hint(x, [n])}, rounds)
                rows.append({"size": size, "group": name, "per_image_ms": ms["per image"], "fixed_ms": ms["fixed"]})
    return rows


def phase_table(model, sizes, rounds, groups):
    """The hint averaged over the ``stride²`` code-grid positions against one grid, interleaved."""
    one_grid = scg_core.ModularAE(model.config, groups=model.groups)
    one_grid.load_state_dict(model.state_dict())
    averaged = scg_core.ModularAE(model.config, groups=model.groups, phase_average=True)
    averaged.load_state_dict(model.state_dict())
    rows = []
    with torch.inference_mode():
        for size in sizes:
            x = test_image(size)
            for group in groups:
                sel = [group] if group else None
                ms = time_interleaved({"averaged": lambda x=x, sel=sel: averaged.hint(x, sel), "one grid": lambda x=x, sel=sel: one_grid.hint(x, sel)}, rounds)
                rows.append({"size": size, "group": group or "all", "averaged_ms": ms["averaged"], "one_grid_ms": ms["one grid"]})
    return rows


def gpu_table(model, batch, rounds, single_group):
    rows = []
    sync = torch.cuda.synchronize
    with torch.inference_mode():
        for dtype in (torch.float16, torch.bfloat16):
            x = test_image(512, batch, "cuda", dtype)
            m = model.to("cuda", dtype)
            for group in (None, single_group):
                ms = time_interleaved(methods(m, x, group), rounds, warmup=3, sync=sync)
                for name, value in ms.items():
                    rows.append({"dtype": str(dtype).split(".")[-1], "groups": group or "all", "method": name,
                                 "images_per_s": batch * 1000 / value})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, help="Modular AE file (default: bundled default, else random weights of the released shape)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--group", help="the single group timed (default: the model's smallest group)")
    p.add_argument("--gpu-batch", type=int, default=32)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.weights:
        model, source = scg_core.load(args.weights), str(args.weights)
    elif scg_core.DEFAULT_WEIGHTS.is_file():
        model, source = scg_core.load_default(), "bundled default"
    else:
        torch.manual_seed(0)
        model, source = scg_core.ModularAE(groups=scg_core.OFFICIAL_GROUPS), "random weights, released shape (no default installed)"
    model.requires_grad_(False)
    stored_average, model.phase_average = model.phase_average, False  # the official hint uses one grid
    args.group = args.group or min(model.groups, key=lambda g: len(g.modules)).name
    group_modules = model.find_groups(args.group)
    print(f"weights: {source}\ntorch {torch.__version__}, {args.threads} CPU threads, batch 1, median of {args.rounds} interleaved rounds")
    print(f"single group: {args.group} = modules {sorted(m for g in group_modules for m in g.modules)} of {model.config.num_modules}\n")

    rows = cpu_table(model, args.sizes, args.rounds, args.group)
    print(f"{'size':>6} {'groups':>10}  {'method':<28} {'ms/hint':>9} {'speed-up vs composed':>21}")
    for r in rows:
        print(f"{r['size']:>5}² {r['groups']:>10}  {r['method']:<28} {r['ms']:>9.1f} {r['speedup_vs_composed']:>20.1f}×")
    ours_all = {r["size"]: r["ms"] for r in rows if r["groups"] == "all" and r["method"].startswith("scg_core")}
    ours_one = {r["size"]: r["ms"] for r in rows if r["groups"] == args.group and r["method"].startswith("scg_core")}
    comp = {r["size"]: r["ms"] for r in rows if r["groups"] == "all" and r["method"].startswith("composed")}
    for s in args.sizes:
        print(f"\n{s}²: factorised all groups {comp[s] / ours_all[s]:.1f}× faster than composed; "
              f"one group {ours_all[s] / ours_one[s]:.1f}× faster than all groups, {comp[s] / ours_one[s]:.1f}× faster than composed")
    result = {"source": source, "threads": args.threads, "cpu": rows}
    result["phase"] = phase_table(model, args.sizes, max(3, args.rounds // 3), [None, args.group])
    for r in result["phase"]:
        print(f"{r['size']}² {r['group']}: phase-averaged {r['averaged_ms']:.1f} ms, one grid {r['one_grid_ms']:.1f} ms "
              f"({r['averaged_ms'] / r['one_grid_ms']:.1f}× the time)")
    model.phase_average = stored_average
    print(f"contrast per image, hints {'phase-averaged' if stored_average else 'on one grid'} as the file says:")
    result["contrast"] = contrast_table(model, args.sizes, args.rounds)
    for r in result["contrast"]:
        print(f"{r['size']}² {r['group']}: per-image contrast {r['per_image_ms']:.1f} ms, fixed gain {r['fixed_ms']:.1f} ms "
              f"({r['per_image_ms'] / r['fixed_ms']:.2f}× the time)")
    model.phase_average = False
    if torch.cuda.is_available():
        print(f"\nGPU {torch.cuda.get_device_name()}: 512², batch {args.gpu_batch}")
        result["gpu"] = gpu_table(model, args.gpu_batch, args.rounds, args.group)
        for r in result["gpu"]:
            print(f"  {r['dtype']:>8} {r['groups']:>6}  {r['method']:<28} {r['images_per_s']:>9.0f} images/s")
    else:
        print("\nno CUDA device: GPU figures not measured")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
