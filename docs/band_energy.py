"""How a photo's mean-removed energy is spread over luminance and chroma bands of spatial frequency.

    python docs/band_energy.py PHOTO [PHOTO ...]

Each photo (as stored, RGB in [0,1], its mean colour removed) is projected on luminance
(1,1,1)/√3 and the chroma axes (1,−1,0)/√2 and (1,1,−2)/√6 (an orthonormal basis, so the three
parts' energies add up to the photo's), and each part's power spectrum is summed over radial bands
in cycles per pixel: luminance below 1/16, 1/16–1/8 (up to the stride-4 code's Nyquist frequency),
1/8–1/4 and above 1/4; chroma below and above 1/16. Printed as shares of the photo's energy: the
most any module can carry of a band is that band's share, so it bounds how many modules can hold
≥ 1% of the detail energy unless modules share a band (docs/training_modular_ae.md).
"""

import sys

import numpy as np

from scg_core.formats.images import load_image

AXES = {"lum": np.array([1, 1, 1]) / np.sqrt(3), "rg": np.array([1, -1, 0]) / np.sqrt(2),
        "by": np.array([1, 1, -2]) / np.sqrt(6)}
BANDS = {"lum": [0, 1 / 16, 1 / 8, 1 / 4, 1], "rg": [0, 1 / 16, 1], "by": [0, 1 / 16, 1]}


def band_shares(rgb: np.ndarray) -> dict[str, list[float]]:
    """``rgb`` ``[3,H,W]`` → per axis, the share of the mean-removed energy in each band of ``BANDS``."""
    x = rgb - rgb.mean(axis=(1, 2), keepdims=True)
    H, W = x.shape[1:]
    radius = np.hypot(np.fft.fftfreq(H)[:, None], np.fft.fftfreq(W)[None, :])
    power = {k: np.abs(np.fft.fft2(np.tensordot(a, x, axes=1))) ** 2 for k, a in AXES.items()}
    total = sum(p.sum() for p in power.values())
    return {k: [float(power[k][(radius >= lo) & (radius < hi)].sum() / total) for lo, hi in zip(b, b[1:])]
            for k, b in BANDS.items()}


def main(paths: list[str]) -> None:
    print("| photo | luminance <1/16 | 1/16–1/8 | 1/8–1/4 | >1/4 | rg <1/16 | rg >1/16 | by <1/16 | by >1/16 | bands ≥ 1% |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        shares = band_shares(load_image(path)[0].double().numpy())
        values = [v for k in AXES for v in shares[k]]
        cells = " | ".join(f"{100 * v:.1f}%" for v in values)
        print(f"| {path.rsplit('/', 1)[-1]} | {cells} | {sum(v >= 0.01 for v in values)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
