"""Where the study's colour modules point in the chroma plane, against the held-out photo's palette.

    python docs/chroma_axes.py     # after python -m training.build_default (reads build/default_ae/)

For each constrained seed: every module with ≥75% colour energy (or classed colour), its share of
the held-out photo's energy and the angle between its colour axis (top singular vector of its
kernels' DC weights, projected on the plane orthogonal to (1,1,1)) and the photo's main chroma
axis. A colour module lined up with a photo whose chroma has one axis leaves its orthogonal partner
little of that photo's energy (docs/training_modular_ae.md, "Chroma gain").
"""

import json
from pathlib import Path

import numpy as np

import scg_core
from scg_core.formats.images import load_image

ROOT = Path(__file__).resolve().parents[1]
U, V = np.array([1, -1, 0]) / np.sqrt(2), np.array([1, 1, -2]) / np.sqrt(6)  # chroma plane basis


def chroma_angle(rgb: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(rgb @ V, rgb @ U)) % 180)


def main() -> None:
    pixels = load_image(ROOT / "build/default_ae/photos/heldout/chelsea.png")[0].reshape(3, -1).numpy().T
    centred = pixels - pixels.mean(0)
    variances, axes = np.linalg.eigh(np.cov(np.stack([centred @ U, centred @ V], 1).T))
    photo_axis = float(np.degrees(np.arctan2(axes[1, 1], axes[0, 1])) % 180)
    print(f"held-out photo: chroma variance {variances[1] / variances[0]:.1f}× larger along its main axis ({photo_axis:.0f}°)")
    for seed in (0, 1, 2):
        ae = scg_core.load(ROOT / f"build/default_ae/seed{seed}_constrained.safetensors")
        study = json.loads((ROOT / f"docs/specialisation/seed{seed}_constrained/characterization.json").read_text())
        dc = ae.composed_kernel().detach().sum((2, 3)).numpy()
        l = ae.config.module_channels
        rows = []
        for m in study["modules"]:
            if m["kind"] != "colour" and m["colour_fraction"] < 0.75:
                continue
            axis = np.linalg.svd(dc[m["index"] * l : (m["index"] + 1) * l])[2][0]
            off = (chroma_angle(axis) - photo_axis + 90) % 180 - 90
            rows.append(f"module {m['index']}: {100 * m['energy_share']:.1f}% energy, {off:+.0f}°")
        print(f"seed {seed}: " + "; ".join(rows))


if __name__ == "__main__":
    main()
