"""Command line: ``python -m scg_core {hint,decompose,info} ...``.

    python -m scg_core decompose photo.jpg -o sheet.png
    python -m scg_core hint sketch.png --groups edges -o hint.png
    python -m scg_core hint photo.jpg --groups colour,brightness --gain colour=1.5 -o hint.png --short-side 512
    python -m scg_core hint photo.jpg --groups HC3 --weights scg_official.safetensors -o hint.png

Group names are the autoencoder's: the bundled default has colour, brightness, edges_coarse and
edges_fine (both labelled edges) and texture; the official one (``--weights``, converted with
``python -m scg_core.convert official-ae``) has HC0–HC5. ``python -m scg_core info`` lists them.

Every failure prints one ``error: ...`` line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch

from ..formats.images import (
    check_output_path,
    load_image,
    resize_short_side,
    save_image,
)
from ..model.modular_ae import ModularAE
from ..tools.sheet import MAX_TILE, MIN_TILE, Progress, decomposition_sheet
from .hint import source_hint
from .loading import ModelCache
from .selection import MAX_GAIN, display_gain_note, parse_gains, parse_groups

DEVICES = "cpu, cuda, cuda:N, mps or auto"
OUTPUT_HELP = ("output image: .png, .jpg, .jpeg, .webp, .bmp, .tif or .tiff (png is lossless); "
               "a missing folder is created and the output line says so")


EXAMPLES = "examples:\n" + "\n".join(line for line in __doc__.splitlines() if line.startswith("    python -m"))


class UsageError(Exception):
    """A command line argparse refused; the message says which argument and why."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + error and exits; we want one line
        raise UsageError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m scg_core", description="SCG modular autoencoder: hints and decompositions. "
                    "Every failure prints one 'error:' line and exits with code 2.", epilog=EXAMPLES,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def common(p: argparse.ArgumentParser, image: bool = True) -> None:
        p.add_argument("--weights", type=Path, help="Modular AE .safetensors (default: the bundled default)")
        p.add_argument("--device", default="cpu", help=f"{DEVICES} (default: cpu; auto = cuda, else mps, else cpu)")
        if image:
            p.add_argument("--short-side", type=int, metavar="PX",
                           help="resize so the shorter side is PX pixels first, PX ≥ the receptive field (21) "
                                "(the official code uses 512)")

    p = sub.add_parser("hint", help="compute the hint image for some groups")
    p.add_argument("image", type=Path, help="input image (png, jpg, webp, …)")
    p.add_argument("-o", "--output", type=Path, required=True, help=OUTPUT_HELP)
    p.add_argument("--groups", nargs="+", metavar="NAME",
                   help="groups to keep, by name (HC3) or label (edges), separated by commas or spaces; "
                        "'all' (the default) keeps every module")
    p.add_argument("--modules", nargs="+", type=int, metavar="I", help="module indices to keep (added to --groups)")
    p.add_argument("--gain", action="append", default=[], metavar="NAME=FACTOR",
                   help=f"scale a group's modules, e.g. --gain colour=1.5 or --gain 'colour=1.5, edges=2'; "
                        f"0 < FACTOR ≤ {MAX_GAIN:g}; repeatable; a gained group is kept")
    common(p)

    p = sub.add_parser("decompose", help="labelled sheet: input, each group's hint, each module's reconstruction",
                       description="Works one module at a time at the image's full resolution (about 1.2 GB for "
                                   "12 MP); shows a progress bar when stderr is a terminal.")
    p.add_argument("image", type=Path, help="input image (png, jpg, webp, …)")
    p.add_argument("-o", "--output", type=Path, required=True, help=OUTPUT_HELP)
    p.add_argument("--tile", type=int, default=256, help=f"tile size in pixels, {MIN_TILE} to {MAX_TILE} (default 256)")
    common(p)

    p = sub.add_parser("info", help="print a weight file's config, groups and provenance")
    common(p, image=False)
    return parser


def resolve_device(text: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` → a usable device; ``ValueError`` says why
    one is not usable here. ``auto`` = cuda if available, else mps if available, else cpu."""
    name = text.strip().lower()
    with warnings.catch_warnings(record=True) as caught:  # torch warns (rather than raises) about broken drivers
        warnings.simplefilter("always")
        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return torch.device("cuda" if cuda_count else "mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("--device mps: mps is only available on Apple silicon (macOS 12.3+) with a torch built "
                             "for it; use --device cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise ValueError(f"--device {text!r} is not accepted; use {DEVICES}")
    if torch.version.cuda is None and torch.version.hip is None:
        raise ValueError(f"--device {text}: this torch build has no CUDA (torch {torch.__version__}); "
                         f"install a CUDA build of torch, or use --device cpu")
    if not cuda_count:
        why = f" ({str(caught[0].message).splitlines()[0]})" if caught else ""
        raise ValueError(f"--device {text}: no CUDA device is visible{why}; check the GPU driver and "
                         f"CUDA_VISIBLE_DEVICES, or use --device cpu")
    index = int(match.group(1) or 0)
    if index >= cuda_count:
        plural = "device" if cuda_count == 1 else "devices"
        raise ValueError(f"--device {text}: only {cuda_count} CUDA {plural} (cuda:0 to cuda:{cuda_count - 1})")
    return torch.device("cuda", index)


def load_model(weights: Path | None, device: torch.device | str = "cpu") -> ModularAE:
    """``--weights`` (``None``: the bundled default) on ``device``."""
    return ModelCache().load(weights).to(device)


def check_short_side(short_side: int | None, min_side: int) -> None:
    if short_side is not None and short_side < min_side:
        raise ValueError(f"--short-side {short_side}: must be at least {min_side} pixels (the autoencoder's "
                         f"receptive field); the official code uses 512")


@contextmanager
def progress_bar(what: str, stream: IO[str] | None = None) -> Iterator[Progress | None]:
    """A ``progress(done, total)`` callback drawing a bar on ``stream`` (stderr): tqdm's when it is
    installed, else a plain counter; ``None`` when ``stream`` is not a terminal (logs stay clean)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda done, total: print(f"\r{what}: {done}/{total}", end="\n" if done >= total else "", file=stream, flush=True)
        return
    bar = tqdm(desc=what, unit="step", file=stream, leave=False)

    def update(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def run(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if args.command == "info":
        model = load_model(args.weights, device)
        print(model)
        for g in model.groups:
            shown = (f", shown with its contrast stretched to {100 * g.span:g}% (factor ≤ {g.gain:g})" if g.span is not None
                     else "" if g.gain == 1.0 else f", shown at display gain {g.gain:g}")
            print(f"  {g.title}: modules {list(g.modules)}{shown}")
        grids = model.config.stride ** 2
        print(f"  hints: averaged over the {grids} positions of the code grid (they move with the image pixel by pixel)"
              if model.phase_average else "  hints: decoded from one code grid (as the official release)")
        print(f"  provenance: {model.provenance}")
        print(f"  device: {device}")
        return
    output = check_output_path(args.output)
    if args.command == "decompose" and not MIN_TILE <= args.tile <= MAX_TILE:
        raise ValueError(f"--tile {args.tile}: must be from {MIN_TILE} to {MAX_TILE} pixels (default 256)")
    if args.command == "hint":
        # The CLI takes the same text as the ComfyUI and A1111 hosts; shell-split words are rejoined.
        words = [w.strip(" ,;") for w in args.groups or []]
        keep = parse_groups(",".join(w for w in words if w)) if args.groups else None
        modules = None if args.groups and keep is None else args.modules  # 'all' already keeps every module
        gains = parse_gains(",".join(args.gain))
    model = load_model(args.weights, device)
    if args.command == "hint":
        kept = [i for i, g in enumerate(model.module_gains(keep, modules, gains)) if g]  # unknown names fail here
    check_short_side(args.short_side, model.config.receptive_field)
    image = load_image(args.image).to(device)
    created = None if output.parent.exists() else output.parent
    start = time.perf_counter()
    if args.command == "hint":
        result = source_hint(model, image, keep, gains, modules=modules, short_side=args.short_side)
        shown = display_gain_note(model, keep)
        what = f"{result.shape[-1]}×{result.shape[-2]}, modules {kept}" + (f", display: {shown}" if shown else "")
    else:
        if args.short_side is not None:
            image = resize_short_side(image, args.short_side)
        with progress_bar("decompose") as progress:
            result = decomposition_sheet(model, image, tile=args.tile, progress=progress)
        what = f"{result.width}×{result.height}"
    save_image(result, output)
    note = f"; created folder {created}" if created else ""
    print(f"wrote {output} ({what}, {1000 * (time.perf_counter() - start):.0f} ms{note})")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, or 2 after one ``error:`` line on stderr)."""
    try:
        run(build_parser().parse_args(argv))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; resize the image first with --short-side (e.g. 1024)", file=sys.stderr)
        return 2
    except (UsageError, OSError, ValueError, TypeError, RuntimeError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    return 0
