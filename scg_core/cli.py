"""Command line: ``python -m scg_core {hint,decompose,info} ...``.

    python -m scg_core decompose photo.jpg -o sheet.png
    python -m scg_core hint sketch.png --groups HC3 -o hint.png
    python -m scg_core hint photo.jpg --groups HC0 HC1 --gain HC0=1.5 -o hint.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .images import ImageError, load_image, save_image
from .model import ModularAE
from .sheet import decomposition_sheet
from .weights_io import NoDefaultWeightsError, WeightsError, load, load_default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scg_core", description="SCG modular autoencoder: hints and decompositions.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--weights", type=Path, help="Modular AE .safetensors (default: the bundled default)")
        p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
        p.add_argument("--short-side", type=int, metavar="PX",
                       help="resize so the shorter side is PX pixels first (the official code uses 512)")

    p = sub.add_parser("hint", help="compute the hint image for some groups")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="output image (png recommended)")
    p.add_argument("--groups", nargs="+", metavar="NAME", help="groups to keep, by name (HC3) or label (edges); default: all")
    p.add_argument("--modules", nargs="+", type=int, metavar="I", help="module indices to keep (added to --groups)")
    p.add_argument("--gain", action="append", default=[], metavar="NAME=FACTOR",
                   help="scale a group's modules, e.g. --gain HC0=1.5 (repeatable; keeps that group)")
    common(p)

    p = sub.add_parser("decompose", help="labelled sheet: input, each group's hint, each module's reconstruction")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="output sheet (png)")
    p.add_argument("--tile", type=int, default=256, help="tile size in pixels (default 256)")
    common(p)

    p = sub.add_parser("info", help="print a weight file's config, groups and provenance")
    p.add_argument("--weights", type=Path, help="Modular AE .safetensors (default: the bundled default)")
    return parser


def parse_gains(items: list[str]) -> dict[str, float]:
    gains = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            gains[name] = float(value)
        except ValueError:
            raise ValueError(f"--gain expects NAME=FACTOR (e.g. HC0=1.5); got {item!r}") from None
    return gains


def load_model(weights: Path | None, device: str = "cpu") -> ModularAE:
    return load(weights, device=device) if weights else load_default(device=device)


def read_input(path: Path, short_side: int | None, device: str) -> torch.Tensor:
    image = load_image(path)
    if short_side:
        H, W = image.shape[-2:]
        scale = short_side / min(H, W)
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        image = torch.nn.functional.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return image.to(device)


def run(args: argparse.Namespace) -> None:
    if args.command == "info":
        model = load_model(args.weights)
        print(model)
        for g in model.groups:
            print(f"  {g.title}: modules {list(g.modules)}")
        print(f"  provenance: {model.provenance}")
        return
    model = load_model(args.weights, args.device)
    image = read_input(args.image, args.short_side, args.device)
    start = time.perf_counter()
    if args.command == "hint":
        with torch.inference_mode():
            hint = model.hint(image, groups=args.groups, modules=args.modules, gains=parse_gains(args.gain))
        save_image(hint, args.output)
        kept = [i for i, g in enumerate(model.module_gains(args.groups, args.modules, parse_gains(args.gain))) if g]
        print(f"wrote {args.output} ({image.shape[-1]}×{image.shape[-2]}, modules {kept}, {1000 * (time.perf_counter() - start):.0f} ms)")
    else:
        sheet = decomposition_sheet(model, image, tile=args.tile)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.output)
        print(f"wrote {args.output} ({sheet.width}×{sheet.height}, {1000 * (time.perf_counter() - start):.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (NoDefaultWeightsError, FileNotFoundError, WeightsError, ImageError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
