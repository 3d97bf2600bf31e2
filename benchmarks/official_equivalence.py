"""How far scg_core's hint is from the official computation, on the overlap.

    python benchmarks/official_equivalence.py [--weights FILE]

Official: the composed 21×21 kernel (recovered here by probing the official layer chain with
autograd, independently of scg_core's composition), conv2d stride 4 padding 10, channel mask,
conv_transpose2d with no output padding → 509×509 for a 512×512 input. scg_core returns 512×512;
the table compares the overlapping 509×509 region in float32.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import scg_core  # noqa: E402
from devtools.official_reference import official_raw_hint, probe_kernel  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path)
    args = p.parse_args()
    torch.manual_seed(0)
    ae = scg_core.load(args.weights) if args.weights else scg_core.ModularAE(groups=scg_core.OFFICIAL_GROUPS)
    weights = {k: v.detach().double() for k, v in ae.factor_weights().items()}
    kernel = probe_kernel(weights).float()
    x = torch.rand(1, 3, 512, 512)
    print(f"{'groups':<12} {'official':>9} {'ours':>9} {'max |err|':>10} {'max |official|':>15} {'relative':>9}")
    for g in [None] + [[grp.name] for grp in ae.groups]:
        mask = torch.tensor(ae.module_gains(g)).repeat_interleave(ae.config.module_channels)
        official = official_raw_hint(ae.normalize(x), kernel, mask)
        with torch.no_grad():
            ours = ae.raw_hint(x, groups=g)
        err = (ours[..., :509, :509] - official).abs().max()
        print(f"{(g or ['all'])[0]:<12} {'×'.join(map(str, official.shape[-2:])):>9} {'×'.join(map(str, ours.shape[-2:])):>9} "
              f"{err:>10.2e} {official.abs().max():>15.3g} {err / official.abs().max():>9.1e}")


if __name__ == "__main__":
    main()
