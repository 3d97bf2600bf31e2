"""What each module of a Modular AE codes, on a photo and on white noise, side by side.

    python docs/module_census.py WEIGHTS PHOTO

One row per module, ordered by frequency centroid: the kind `characterize` gives it on the photo,
its composed kernel's norm, centroid (cycles/px), share of kernel energy on the colour axes, and its
share of the decoded, mean-removed energy on the photo and on white noise (RGB, σ = 0.12 about
mid-grey, 384², seed 0). Hints are phase-averaged, as the bundled default computes them. White noise
holds the same energy at every frequency and in every colour direction, so a module that carries
little of a photo's energy but much of the noise's is coding a band the photo barely has — not
silenced (docs/training_modular_ae.md).
"""

import sys

import torch

import scg_core
from scg_core.formats.images import load_image
from scg_core.tools.characterize import characterize


def white_noise(size: int = 384, sigma: float = 0.12, seed: int = 0) -> torch.Tensor:
    """``[1,3,size,size]`` float in [0,1]: independent Gaussian pixels about 0.5 (clipping < 0.01%)."""
    g = torch.Generator().manual_seed(seed)
    return (0.5 + sigma * torch.randn(1, 3, size, size, generator=g)).clamp(0, 1)


def main(weights: str, photo: str) -> None:
    model = scg_core.load(weights)
    model.phase_average = True
    on_photo = characterize(model, load_image(photo), 0.01)
    on_noise = characterize(model, white_noise(), 0.01)
    print("| module | kind on the photo | kernel norm | centroid c/px | colour share | energy share: photo | white noise |")
    print("|---|---|---|---|---|---|---|")
    rows = sorted(zip(on_photo["modules"], on_noise["modules"]), key=lambda pair: pair[0]["frequency_centroid"])
    for m, n in rows:
        print(f"| {m['index']} | {m['kind']} | {m['weight_norm']:.2f} | {m['frequency_centroid']:.3f} | "
              f"{m['colour_fraction']:.2f} | {100 * m['energy_share']:.2f}% | {100 * n['energy_share']:.2f}% |")
    print(f"\nmodules carrying ≥ 1%: photo {on_photo['summary']['modules_carrying_energy']}, "
          f"white noise {on_noise['summary']['modules_carrying_energy']}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
