import math

import numpy as np
import pytest
import torch
from PIL import Image

from training.band_pass import band_pass_levels, to_uint8, up
from training.gather_photos import BAND_MIN_SIDE, HELDOUT, gather


def grating(frequency: float, side: int = 256) -> torch.Tensor:
    """``[3,side,side]`` in [0,1]: a vertical grating of ``frequency`` cycles/px around grey."""
    x = torch.arange(side, dtype=torch.float32)
    row = 0.5 + 0.4 * torch.cos(2 * math.pi * frequency * x)
    return row.expand(3, side, side).clone()


def test_levels_rebuild_the_image_and_halve_until_the_smallest_side():
    image = torch.rand(3, 200, 300, generator=torch.Generator().manual_seed(0))
    bands, coarsest = band_pass_levels(image, levels=5, min_side=40)
    assert [tuple(b.shape[-2:]) for b in bands] == [(200, 300), (100, 150), (50, 75)]  # 25 px < 40: stopped
    assert tuple(coarsest.shape[-2:]) == (25, 37)
    rebuilt = coarsest[None]
    for band in reversed(bands):  # G_i = band_i + up(G_{i+1}), from the coarsest level up
        rebuilt = band[None] + up(rebuilt, band.shape[-2:])
    torch.testing.assert_close(rebuilt[0], image, atol=1e-5, rtol=0)


def test_levels_are_band_pass():
    flat_bands, _ = band_pass_levels(torch.full((3, 128, 128), 0.3), 2, 32)
    assert all(float(b.abs().max()) < 1e-5 for b in flat_bands)  # no response to a constant
    fine = [float(b.pow(2).mean()) for b in band_pass_levels(grating(0.35), 3, 32)[0]]
    coarse = [float(b.pow(2).mean()) for b in band_pass_levels(grating(0.03), 3, 32)[0]]
    assert fine[0] > 20 * max(fine[1:])  # a fine grating lives in the finest level
    assert coarse[0] < 0.05 * max(coarse[1:])  # a coarse one in a coarser level, not the finest


def test_to_uint8_stretches_to_the_standard_deviation_around_grey():
    band = 0.03 * torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(1))
    band[0, 0, 0] = 0.5  # one outlier, ~17 standard deviations out
    shown, gain, clipped = to_uint8(band, 0.12)
    assert shown.dtype == torch.uint8 and gain == pytest.approx(0.12 / float(band.std()))
    values = shown.float() / 255
    assert float(values.mean()) == pytest.approx(0.5, abs=0.01) and float(values.std()) == pytest.approx(0.12, rel=0.05)
    assert clipped == pytest.approx(1 / band.numel()) and shown[0, 0, 0] == 255  # the outlier, and no Gaussian value (< 4.2 sd)
    assert to_uint8(band, None)[1] == 1.0


def test_gather_photos_writes_band_pass_levels_of_training_photos_only(tmp_path):
    paths = gather(tmp_path, band_pass=4)
    train = {p.name: Image.open(p).size for p in paths if p.parent.name == "train"}
    assert train["astronaut.png"] == (512, 512)  # levels of 512, 256, 128 and 64 px, kept down to the smallest side
    kept = [(side, side) if side >= BAND_MIN_SIDE else None for side in (512, 256, 128, 64)]
    assert [train.get(f"astronaut_bp{i}.png") for i in range(4)] == kept and kept.count(None) == 1
    level0 = np.asarray(Image.open(tmp_path / "train" / "china_bp0.png"), dtype=np.float32) / 255
    assert abs(level0.mean() - 0.5) < 0.02 and abs(level0.std() - 0.12) < 0.01
    assert [p.name for p in paths if p.parent.name == "heldout"] == [f"{HELDOUT}.png"]
    assert "| train/china_bp1.png | scikit-learn `load_sample_image`, band-pass level 1 (0.5 + " in (tmp_path / "SOURCES.md").read_text()
    with pytest.raises(SystemExit, match="--band-pass"):
        gather(tmp_path / "bad", band_pass=2, band_pass_std=0.8)
