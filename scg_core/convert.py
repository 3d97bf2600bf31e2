"""``python -m scg_core.convert``: official checkpoints → scg_core safetensors.

    python -m scg_core.convert official-ae equ_nv16_vl4_rn1_Bipolar_norm.pth scg_official.safetensors
    python -m scg_core.convert official-controlnet scg_hc3.ckpt scg_hc3.safetensors --groups HC3

The autoencoder converter is :mod:`scg_core.formats.official_ae`, the ControlNet converter
:mod:`scg_core.controlnet.convert`; this module only parses the command line.
"""

from __future__ import annotations

import argparse
import sys

from .controlnet import convert as convert_controlnet
from .formats.official_ae import convert_official_ae


def main(argv: list[str] | None = None) -> int:
    """Run the converter; returns the exit code (2 with one ``error:`` line on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m scg_core.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("official-ae", help="official modular autoencoder .pth → scg_core safetensors")
    p.add_argument("src", help="official checkpoint, e.g. equ_nv16_vl4_rn1_Bipolar_norm.pth")
    p.add_argument("dst", help="output .safetensors")
    convert_controlnet.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "official-controlnet":
            message = convert_controlnet.run(args)
        else:
            message = f"wrote {args.dst}: {convert_official_ae(args.src, args.dst).extra_repr()}"
    except (ValueError, OSError) as e:  # WeightsError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
