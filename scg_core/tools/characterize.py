"""Measure what each module of a Modular AE carries, propose groups, and write a report.

    python -m scg_core.characterize WEIGHTS [--image PHOTO] [--report DIR] [--write-groups [--calibrate PHOTOS]]

Each feature channel is a linear kernel, so probing it with a stimulus is a dot product of the
stimulus with the composed kernel (in pixel units: the kernel divided by the input std). Probes:

* uniform colours and luminance steps (DC and edge responses);
* sinusoidal gratings, cosine and sine phase, over spatial frequency × orientation, modulating
  luminance and the two colour-opponent axes (red–green, blue–yellow). The response amplitude
  ``sqrt(cos² + sin²)`` gives tuning curves, the preferred frequency, the power-weighted
  frequency centroid and the orientation-selectivity index ``|Σ A(θ)e^{2iθ}| / Σ A(θ)``.

A module "carries energy" when it holds at least ``--energy-threshold`` of the test image's
mean-removed reconstruction energy; those modules are classified:

* ``colour`` — colour-opponent (at least 75% of the kernel energy along colour axes);
* ``brightness`` — luminance (at most 25% colour) and low-pass: its response to a uniform field
  (frequency 0) is within 3 dB of its peak response (``A(0) ≥ max A / √2``);
* ``edges_coarse`` / ``edges_fine`` — luminance band-pass. Modules whose centroids span at least
  an octave are split at their widest gap into the two scales (as the official HC2 / HC3);
  band-pass modules within one octave are one scale: coarse below 0.1 c/px, fine from it;
* ``mixed`` — anything in between;
and the rest are grouped as ``texture`` (weak, mostly high-frequency residue).

For each proposed group the summary also gives how its hint follows the test image
(``hint_stability``: Pearson r after a 1-pixel shift and an exact 90° rotation, aligned back) and how
much of the grey range it uses (``hint_span``, 1st–99th percentile, and ``hint_clipped``, at gain 1).
``--calibrate PHOTOS`` sets each group's display settings from a folder of photos
(:func:`scg_core.tools.hint_range.calibrate_display`: every group stretched per image about its hint
of mid-grey, by at most a calibrated factor) and reports the spans they give the test image.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..formats.images import load_image
from ..formats.weights import WeightsError, load, save
from ..model import functional as Fn
from ..model.groups import Group, validate_groups
from ..model.modular_ae import ModularAE
from ..model.pairs import sample_patch_pairs
from .hint_range import calibrate_display, hint_range, hint_stability
from .sheet import decomposition_sheet

FREQUENCIES = torch.linspace(0.0, 0.5, 21)  # cycles per pixel, up to Nyquist
ORIENTATIONS = torch.arange(12) * (math.pi / 12)
COLOUR_AXES = {  # unit directions in RGB
    "luminance": torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3),
    "red_green": torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2),
    "blue_yellow": torch.tensor([-1.0, -1.0, 2.0]) / math.sqrt(6),
}
UNIFORM_COLOURS = {"white": (1, 1, 1), "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1),
                   "yellow": (1, 1, 0), "cyan": (0, 1, 1), "magenta": (1, 0, 1)}
COLOUR_MIN, LUMINANCE_MAX, FINE_EDGES, LOWPASS_DC_GAIN = 0.75, 0.25, 0.1, 1 / math.sqrt(2)
STRETCHED = ("colour", "brightness", "edges_coarse", "edges_fine", "mixed", "texture")  # shown stretched per image (scg_core.model.display)
LABELS = {"colour": "colour", "brightness": "brightness", "edges_coarse": "coarse edges",
          "edges_fine": "fine edges", "mixed": "colour + luminance", "texture": "weak, high frequency"}


@dataclass
class KernelStats:
    colour_fraction: float  # share of the kernel's energy along the colour-opponent axes
    dc: dict  # response to uniform colours (deviation 0.5 from grey, each channel)
    edge_response: float  # strongest response to a luminance step through the centre
    preferred_frequency: float  # cycles/px where the mean grating amplitude peaks
    dc_gain_ratio: float  # amplitude at frequency 0 / peak amplitude (1 = low-pass, 0 = band-pass)
    frequency_centroid: float  # power-weighted mean frequency
    orientation_selectivity: float  # 0 = rotation symmetric, 1 = one orientation only
    preferred_orientation: float  # radians in [0, π)


@dataclass
class ModuleStats:
    index: int
    energy_share: float
    weight_norm: float
    colour_fraction: float
    preferred_frequency: float
    frequency_centroid: float
    dc_gain_ratio: float
    orientation_selectivity: float
    dc_luminance: float
    kind: str
    equivariance_error: float = float("nan")  # this module's Σ||f' − M f||² / Σ||f||² (fitted codebook)


def pixel_kernels(model: ModularAE, composed: Tensor | None = None) -> Tensor:
    """Composed kernels in pixel units ``[k·l, C, R, R]``: response to a pixel deviation."""
    composed = model.composed_kernel().detach() if composed is None else composed
    return composed.double() / model.std.double().view(1, -1, 1, 1)


def grating_amplitudes(kernels: Tensor) -> dict[str, Tensor]:
    """Amplitude of each kernel's response to unit gratings, per colour axis: ``[k·l, F, Θ]``."""
    R = kernels.shape[-1]
    coords = torch.arange(R, dtype=torch.float64) - (R - 1) / 2
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    along = x[None] * torch.cos(ORIENTATIONS).double()[:, None, None] + y[None] * torch.sin(ORIENTATIONS).double()[:, None, None]
    phase = 2 * math.pi * FREQUENCIES.double()[:, None, None, None] * along[None]  # (F, Θ, R, R)
    out = {}
    for axis, direction in COLOUR_AXES.items():
        projected = torch.einsum("jcxy,c->jxy", kernels, direction.double())
        cos = torch.einsum("jxy,ftxy->jft", projected, torch.cos(phase))
        sin = torch.einsum("jxy,ftxy->jft", projected, torch.sin(phase))
        out[axis] = (cos**2 + sin**2).sqrt()
    return out


def kernel_stats(kernels: Tensor) -> tuple[list[KernelStats], dict[str, list[list[float]]]]:
    """Per-kernel measurements, and the tuning curves (``frequency``: mean amplitude over
    orientations ``[J, F]``; ``orientation``: amplitude at the measured frequency ``[J, Θ]``)."""
    amp = grating_amplitudes(kernels)
    total = sum(a**2 for a in amp.values()).sqrt()  # (J, F, Θ): amplitude over all colour axes
    lum = kernels.mean(1, keepdim=True)
    colour_fraction = ((kernels - lum).pow(2).sum((1, 2, 3)) / kernels.pow(2).sum((1, 2, 3)).clamp_min(1e-30))
    R = kernels.shape[-1]
    coords = torch.arange(R, dtype=torch.float64) - (R - 1) / 2
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    steps = torch.stack([torch.sign(x * math.cos(t) + y * math.sin(t)) for t in ORIENTATIONS.tolist()])  # (Θ, R, R)
    edge = torch.einsum("jxy,txy->jt", kernels.sum(1), steps).abs().amax(1)
    stats, curves = [], {"frequency": total.mean(2).tolist(), "orientation": []}
    for j in range(kernels.shape[0]):
        power = total[j].pow(2).mean(1)  # (F,)
        f_pref = float(FREQUENCIES[int(power.argmax())])
        centroid = float((FREQUENCIES.double() * power).sum() / power.sum().clamp_min(1e-30))
        # orientation is measured where the kernel passes energy: its preferred frequency, or its
        # centroid for a low-pass kernel (at frequency 0 every orientation is the same grating)
        f_osi = int(power.argmax()) if f_pref > 0 else max(1, int((FREQUENCIES - centroid).abs().argmin()))
        a = total[j, f_osi]
        curves["orientation"].append(a.tolist())
        vector = (a * torch.exp(2j * ORIENTATIONS.double())).sum()
        dc = {name: float((kernels[j] * (0.5 * torch.tensor(rgb, dtype=torch.float64)).view(-1, 1, 1)).sum()) for name, rgb in UNIFORM_COLOURS.items()}
        stats.append(KernelStats(
            colour_fraction=float(colour_fraction[j]), dc=dc, edge_response=float(edge[j]),
            preferred_frequency=f_pref, frequency_centroid=centroid,
            dc_gain_ratio=float(power[0].sqrt() / power.max().sqrt().clamp_min(1e-30)),
            orientation_selectivity=float(vector.abs() / a.sum().clamp_min(1e-30)),
            preferred_orientation=float((torch.angle(vector) / 2) % math.pi),
        ))
    return stats, curves


def pink_noise(size: int = 256, seed: int = 0) -> Tensor:
    """A deterministic 1/f colour-noise image ``[1,3,size,size]`` in [0,1]: natural-image statistics
    without shipping a photo."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(size)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt().clamp_min(1.0 / size)
    spectrum = torch.randn(3, size, size, generator=g, dtype=torch.complex64) / radius
    mix = torch.tensor([[1.0, 0.3, 0.2], [1.0, -0.3, 0.2], [1.0, 0.0, -0.4]])  # mostly luminance
    img = torch.einsum("cd,dxy->cxy", mix, torch.fft.ifft2(spectrum).real)
    img = (img - img.mean()) / (4 * img.std()) + 0.5
    return img.clamp(0, 1)[None]


def psnr(model: ModularAE, image: Tensor, border: int = 12) -> float:
    with torch.inference_mode():
        recon = model.denormalize(model.raw_hint(image))
    err = (recon - image)[..., border:-border, border:-border].pow(2).mean()
    return float(10 * torch.log10(1.0 / err.clamp_min(1e-12)))


def equivariance_error(model: ModularAE, image: Tensor, per_cell: int = 64, grid=(3, 3, 8), seed: int = 0) -> float:
    """Relative equivariance error with a codebook fitted to this model's frozen features.

    Patch pairs are drawn at grid transformations (tx, ty ∈ ±stride/2, θ ∈ 2π·j/8); for every
    module and grid cell the best ``l×l`` matrix is fitted by least squares on one half of the pairs
    and the error ``Σ||f' − M f||² / Σ||f||²`` is measured on the other half.
    """
    residual, energy = equivariance_residuals(model, image, per_cell, grid, seed)
    return float(residual.sum() / energy.sum().clamp_min(1e-30))


def equivariance_residuals(model: ModularAE, image: Tensor, per_cell: int = 64, grid=(3, 3, 8),
                           seed: int = 0) -> tuple[Tensor, Tensor]:
    """The sums behind :func:`equivariance_error`, kept per module: ``Σ||f' − M f||²`` and
    ``Σ||f||²``, each ``[k]`` float64 ≥ 0 (their ratio is a module's own relative error)."""
    g = torch.Generator().manual_seed(seed)
    shift = model.config.stride / 2
    kernel = model.composed_kernel().detach()
    k, l = model.config.num_modules, model.config.module_channels
    residual = torch.zeros(k, dtype=torch.float64)
    energy = torch.zeros(k, dtype=torch.float64)
    tx, ty = torch.linspace(-shift, shift, grid[0]), torch.linspace(-shift, shift, grid[1])
    for a in tx.tolist():
        for b in ty.tolist():
            for t in range(grid[2]):
                delta = torch.tensor([a, b, 2 * math.pi * t / grid[2]]).expand(2 * per_cell, 3)
                P, Q, _ = sample_patch_pairs([image[0]], 2 * per_cell, g, model.config.receptive_field, shift, delta=delta)
                f = Fn.centre_features(kernel, P, model.mean, model.std).double().view(-1, k, l)
                q = Fn.centre_features(kernel, Q, model.mean, model.std).double().view(-1, k, l)
                fit_f, fit_q, ev_f, ev_q = f[:per_cell], q[:per_cell], f[per_cell:], q[per_cell:]
                gram = torch.einsum("nki,nkj->kij", fit_f, fit_f) + 1e-9 * torch.eye(l, dtype=torch.float64)
                cross = torch.einsum("nki,nkj->kij", fit_q, fit_f)
                M = cross @ torch.linalg.inv(gram)  # (k, l, l)
                residual += (ev_q - torch.einsum("kij,nkj->nki", M, ev_f)).pow(2).sum((0, 2))
                energy += ev_f.pow(2).sum((0, 2))
    return residual, energy


def characterize(model: ModularAE, image: Tensor, energy_threshold: float = 0.01) -> dict:
    """All measurements, the module classes, proposed groups and the acceptance checks."""
    composed = model.composed_kernel().detach().double()
    kernels = pixel_kernels(model, composed)
    per_kernel, curves = kernel_stats(kernels)
    k, l = model.config.num_modules, model.config.module_channels
    with torch.inference_mode():
        recon = model.module_reconstructions(image)[0].double()  # (k, 3, H, W)
    # Mean-removed energy: the photo's average colour, which only low-pass modules can carry,
    # would otherwise swamp every other module's share.
    energy = (recon - recon.mean((2, 3), keepdim=True)).pow(2).sum((1, 2, 3))
    share = energy / energy.sum().clamp_min(1e-30)
    norms = composed.reshape(k, -1).norm(dim=1)
    residual, feature_energy = equivariance_residuals(model, image)
    modules = []
    for i in range(k):
        ks = per_kernel[i * l : (i + 1) * l]
        weights = kernels[i * l : (i + 1) * l].pow(2).sum((1, 2, 3))
        w = (weights / weights.sum().clamp_min(1e-30)).tolist()
        mean = lambda values: float(sum(wi * v for wi, v in zip(w, values)))
        colour = mean([s.colour_fraction for s in ks])
        f_pref = float(torch.tensor([s.preferred_frequency for s in ks]).median())
        centroid = mean([s.frequency_centroid for s in ks])
        dc_gain = mean([s.dc_gain_ratio for s in ks])
        if share[i] < energy_threshold:
            kind = "texture"
        elif colour >= COLOUR_MIN:
            kind = "colour"
        elif colour <= LUMINANCE_MAX:
            kind = "brightness" if dc_gain >= LOWPASS_DC_GAIN else "edges"
        else:
            kind = "mixed"
        modules.append(ModuleStats(
            index=i, energy_share=float(share[i]), weight_norm=float(norms[i]), colour_fraction=colour,
            preferred_frequency=f_pref, frequency_centroid=centroid, dc_gain_ratio=dc_gain,
            orientation_selectivity=float(torch.tensor([s.orientation_selectivity for s in ks]).median()),
            dc_luminance=sum(s.dc["white"] for s in ks), kind=kind,
            equivariance_error=float(residual[i] / feature_energy[i].clamp_min(1e-30)),
        ))
    name_edge_scales(modules)
    carrying = [m for m in modules if m.kind != "texture"]
    osi = [per_kernel[m.index * l + j].orientation_selectivity for m in carrying for j in range(l)]
    summary = {
        "psnr_db": psnr(model, image),
        "relative_equivariance_error": float(residual.sum() / feature_energy.sum().clamp_min(1e-30)),
        "modules_carrying_energy": len(carrying),
        "min_weight_norm_ratio": min(m.weight_norm for m in modules) / max(m.weight_norm for m in modules),
        "luminance_lowpass": sum(m.kind == "brightness" for m in modules),
        "colour_opponent": sum(m.kind == "colour" for m in modules),
        "luminance_bandpass_fine": sum(m.kind == "edges_fine" for m in modules),
        "luminance_bandpass_coarse": sum(m.kind == "edges_coarse" for m in modules),
        "mixed": sum(m.kind == "mixed" for m in modules),
        "median_orientation_selectivity": float(torch.tensor(osi).median()) if osi else float("nan"),
        "frequency_centroids_of_carrying_modules": sorted(round(m.frequency_centroid, 4) for m in carrying),
        "bandpass_centroids": sorted(round(m.frequency_centroid, 4) for m in modules if m.kind.startswith("edges")),
    }
    proposed = copy.copy(model)  # shares the weights; only the groups differ
    proposed.groups = propose_groups(modules)
    summary["hint_stability"] = hint_stability(proposed, image)
    for group in proposed.groups:
        ranges = hint_range(proposed, [image], group)
        summary.setdefault("hint_span", {})[group.name] = ranges["span"][0]
        summary.setdefault("hint_clipped", {})[group.name] = ranges["clipped"][0]
    return {"summary": summary, "modules": [asdict(m) for m in modules], "kernels": [asdict(s) for s in per_kernel],
            "groups": [g.to_dict() for g in proposed.groups], "curves": curves}


def name_edge_scales(modules: list[ModuleStats]) -> None:
    """Turn each ``edges`` kind into ``edges_coarse`` or ``edges_fine``, in place.

    Scales are relative: band-pass modules whose centroids span ≥ 1 octave are cut at the widest
    ratio between neighbouring centroids; a set within one octave is one scale, named by its
    geometric-mean centroid against ``FINE_EDGES`` (0.1 c/px, the stride-4 code's Nyquist
    frequency is 0.125)."""
    edges = sorted((m for m in modules if m.kind == "edges"), key=lambda m: m.frequency_centroid)
    if not edges:
        return
    log_f = [math.log2(max(m.frequency_centroid, 1e-6)) for m in edges]
    if log_f[-1] - log_f[0] >= 1.0:
        cut = max(range(1, len(edges)), key=lambda i: log_f[i] - log_f[i - 1])
    else:
        cut = len(edges) if sum(log_f) / len(log_f) < math.log2(FINE_EDGES) else 0
    for i, m in enumerate(edges):
        m.kind = "edges_coarse" if i < cut else "edges_fine"


def propose_groups(modules: list[ModuleStats]) -> list[Group]:
    """One group per kind present, named for what it carries, in a fixed order. Both edge kinds
    are labelled ``edges`` (as the official HC2/HC3 are), so ``"edges"`` selects all of them."""
    groups = []
    for kind in ("colour", "brightness", "edges_coarse", "edges_fine", "mixed", "texture"):
        members = tuple(m.index for m in modules if m.kind == kind)
        if members:
            groups.append(Group(kind, members, "edges" if kind.startswith("edges") else LABELS[kind]))
    return groups


# ----------------------------------------------------------------------------- report pictures
def kernel_sheet(model: ModularAE, result: dict, zoom: int = 5) -> Image.Image:
    """All kernels, one module per row (like the paper's Fig. 3), each row scaled to its own peak."""
    kernels = pixel_kernels(model).float()
    k, l, R = model.config.num_modules, model.config.module_channels, kernels.shape[-1]
    cell, label_w = R * zoom + 4, 210
    sheet = Image.new("RGB", (label_w + l * cell, k * cell), (32, 32, 32))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i in range(k):
        block = kernels[i * l : (i + 1) * l]
        block = 0.5 + 0.5 * block / block.abs().amax().clamp_min(1e-12)
        m = result["modules"][i]
        draw.text((4, i * cell + cell // 2 - 10), f"{i:2d} {m['kind']}", fill=(235, 235, 235), font=font)
        draw.text((4, i * cell + cell // 2 + 2), f"   {100 * m['energy_share']:.1f}% · {m['frequency_centroid']:.3f} c/px", fill=(170, 170, 170), font=font)
        for j in range(l):
            a = (block[j].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            tile = Image.fromarray(a, "RGB").resize((R * zoom, R * zoom), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_w + j * cell + 2, i * cell + 2))
    return sheet


def tuning_plots(result: dict, l: int, columns: int = 4) -> Image.Image:
    """Per module: frequency tuning (left) and orientation tuning at the measured frequency (right)
    of each kernel, like the paper's Fig. S4."""
    modules = result["modules"]
    pw, ph = 300, 120
    rows = -(-len(modules) // columns)
    img = Image.new("RGB", (columns * pw, rows * ph), (255, 255, 255))
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    colours = [(200, 30, 30), (30, 120, 200), (30, 160, 60), (150, 80, 180), (220, 140, 0), (0, 0, 0)]
    curves = result["curves"]
    for n, m in enumerate(modules):
        x0, y0 = (n % columns) * pw, (n // columns) * ph
        draw.text((x0 + 4, y0 + 2), f"module {m['index']} · {m['kind']}", fill=(0, 0, 0), font=font)
        for panel, key, xs in ((0, "frequency", FREQUENCIES.tolist()), (1, "orientation", ORIENTATIONS.tolist())):
            px, py, w, h = x0 + 10 + panel * 145, y0 + 18, 130, ph - 30
            draw.rectangle([px, py, px + w, py + h], outline=(190, 190, 190))
            data = curves[key][m["index"] * l : (m["index"] + 1) * l]
            peak = max(max(c) for c in data) or 1.0
            for j, c in enumerate(data):
                pts = [(px + w * t / (len(xs) - 1), py + h - h * v / peak) for t, v in enumerate(c)]
                draw.line(pts, fill=colours[j % len(colours)], width=1)
            draw.text((px + 2, py + h - 11), "0 → 0.5 c/px" if panel == 0 else "0 → 180°", fill=(120, 120, 120), font=font)
    return img


def write_report(model: ModularAE, image: Tensor, result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "kernels.png", out / "tuning.png", out / "modules.png", out / "characterization.json"]
    kernel_sheet(model, result).save(paths[0])
    tuning_plots(result, model.config.module_channels).save(paths[1])
    decomposition_sheet(model, image, tile=192).save(paths[2])
    paths[3].write_text(json.dumps(result, indent=1))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scg_core.characterize", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--image", type=Path, help="test photo for energies, PSNR and equivariance (default: 1/f noise)")
    p.add_argument("--report", type=Path, help="write kernels.png, tuning.png, modules.png and characterization.json here")
    p.add_argument("--write-groups", action="store_true", help="store the proposed groups in the weight file")
    p.add_argument("--calibrate", type=Path, metavar="PHOTOS",
                   help="with --write-groups: set each group's display gain (or, for edges and texture, its "
                        "per-image contrast) from this folder of photos (png/jpg)")
    p.add_argument("--phase-average", action="store_true",
                   help="with --write-groups: compute this file's hints averaged over the code grid's positions, "
                        "so they move with the image pixel by pixel (stored in the file; measured that way here)")
    p.add_argument("--energy-threshold", type=float, default=0.01)
    args = p.parse_args(argv)
    if args.calibrate and not args.write_groups:
        p.error("--calibrate sets the gains of the groups --write-groups stores; pass both")
    if args.phase_average and not args.write_groups:
        p.error("--phase-average is stored with the groups --write-groups writes; pass both")
    try:
        model = load(args.weights)
        model.phase_average = model.phase_average or args.phase_average
        image = load_image(args.image) if args.image else pink_noise()
        result = characterize(model, image, args.energy_threshold)
    except (WeightsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for m in result["modules"]:
        print(f"module {m['index']:2d}  {m['kind']:<13} energy {100 * m['energy_share']:5.1f}%  colour {m['colour_fraction']:.2f}  "
              f"f* {m['preferred_frequency']:.3f}  centroid {m['frequency_centroid']:.3f}  OSI {m['orientation_selectivity']:.2f}  "
              f"equ. error {m['equivariance_error']:.3f}")
    for name, r in result["summary"]["hint_stability"].items():
        print(f"group {name:<13} hint r: 1-px shift {r['shift_1px']:.3f}, 90° rotation {r['rotate_90']:.3f}; "
              f"span {100 * result['summary']['hint_span'][name]:.0f}% of the grey range at gain 1")
    print(json.dumps(result["summary"], indent=1))
    if args.report:
        for path in write_report(model, image, result, args.report):
            print(f"wrote {path}")
    if args.write_groups:
        model.groups = validate_groups([Group.from_dict(g) for g in result["groups"]], model.config.num_modules)
        if args.calibrate:
            photos = sorted(q for q in args.calibrate.rglob("*") if q.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
            if not photos:
                print(f"error: no png/jpg/webp photos in {args.calibrate}", file=sys.stderr)
                return 2
            model.groups = calibrate_display(model, [load_image(q) for q in photos], STRETCHED)
            for g in model.groups:
                span = hint_range(model, [image], g)["span"][0]
                how = f"stretched to {100 * g.span:.0f}% by at most {g.gain:g}" if g.span else f"display gain {g.gain:g}"
                print(f"{g.name}: {how} (test image: spans {100 * span:.0f}% of the grey range)")
        save(model, args.weights, provenance={"characterize": result["summary"]})
        print(f"wrote groups {[g.title for g in model.groups]} into {args.weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
