import math

import pytest
import torch

from scg_core import ModularAE, load, save
from scg_core.tools.characterize import (
    ModuleStats,
    characterize,
    equivariance_error,
    equivariance_residuals,
    kernel_stats,
    main,
    name_edge_scales,
    pink_noise,
)

R = 21
c = torch.arange(R, dtype=torch.float64) - R // 2
Y, X = torch.meshgrid(c, c, indexing="ij")
RR = X**2 + Y**2


def gauss(sigma):
    g = torch.exp(-RR / (2 * sigma**2))
    return g / g.sum()


def rgb(spatial, colour):
    k = spatial[None] * torch.tensor(colour, dtype=torch.float64).view(3, 1, 1)
    return k / k.norm()  # unit norm: energy shares then reflect what the image contains


def hand_built_model():
    """Five modules with known answers, 4 copies (rotations where it matters) per module."""
    lowpass = rgb(gauss(3.0), (1, 1, 1))
    opponent = rgb(gauss(3.0), (1, -1, 0))
    dog = rgb(gauss(0.8) - gauss(1.6), (1, 1, 1))  # fine centre-surround
    gabor = torch.exp(-RR / (2 * 3.0**2)) * torch.cos(2 * math.pi * 0.2 * X)
    kernels = [lowpass] * 4 + [opponent] * 4 + [dog] * 4
    kernels += [rgb(torch.rot90(gabor, n % 2), (1, 1, 1)) for n in range(4)]  # 0° and 90° copies
    kernels += [rgb(gauss(1.0), (1, 1, 1)) * 1e-3] * 4  # almost nothing: no energy
    ae = ModularAE(num_modules=5, module_channels=4, parameterization="single", kernel_size=R)
    with torch.no_grad():
        ae.kernels.copy_(torch.stack(kernels).float() * ae.std.view(1, 3, 1, 1))  # pixel-unit kernels
    return ae


def test_hand_built_modules_are_classified():
    # 1/f noise, like natural images, has little fine detail: the fine modules hold ~0.3%
    result = characterize(hand_built_model(), pink_noise(128), energy_threshold=0.001)
    kinds = [m["kind"] for m in result["modules"]]
    assert kinds == ["brightness", "colour", "edges_fine", "edges_fine", "texture"]
    m = result["modules"]
    assert m[0]["colour_fraction"] < 0.01 and m[1]["colour_fraction"] > 0.99
    assert m[0]["orientation_selectivity"] < 0.05 and m[2]["orientation_selectivity"] < 0.05
    assert m[3]["orientation_selectivity"] > 0.5  # the Gabor is oriented
    assert abs(m[3]["preferred_frequency"] - 0.2) <= 0.025
    assert m[2]["frequency_centroid"] >= 0.1
    names = {g["name"]: g["modules"] for g in result["groups"]}
    assert names == {"brightness": [0], "colour": [1], "edges_fine": [2, 3], "texture": [4]}
    s = result["summary"]
    assert (s["luminance_lowpass"], s["colour_opponent"], s["luminance_bandpass_fine"], s["mixed"]) == (1, 1, 2, 0)


def test_dc_and_edge_responses():
    stats, curves = kernel_stats(torch.stack([rgb(gauss(2.0), (1, 1, 1)), rgb(gauss(2.0), (1, -1, 0))]))
    blob = gauss(2.0)
    assert stats[0].dc["white"] == pytest.approx(1.5 * blob.sum() / (blob.norm() * 3**0.5))
    assert stats[0].dc["red"] == pytest.approx(stats[0].dc["white"] / 3)
    assert stats[1].dc["white"] == pytest.approx(0.0, abs=1e-12) and stats[1].dc["red"] == pytest.approx(stats[0].dc["red"] * 3**0.5 / 2**0.5)
    assert stats[0].edge_response < 1e-9  # a symmetric blob ignores a step through its centre
    assert len(curves["frequency"][0]) == 21 and len(curves["orientation"][0]) == 12


def test_equivariance_error_separates_symmetric_from_random_kernels():
    image = pink_noise(128)
    symmetric = characterize(hand_built_model(), image)["summary"]["relative_equivariance_error"]
    torch.manual_seed(0)
    random = characterize(ModularAE(num_modules=5, module_channels=4, parameterization="single", kernel_size=R), image)
    assert symmetric < 0.5 * random["summary"]["relative_equivariance_error"]


def test_each_module_reports_its_own_equivariance_error():
    # Four identical copies of a fine centre-surround kernel span one direction: a sub-cell shift
    # changes its response in ways no 4×4 matrix predicts; smooth low-pass copies barely change
    model, image = hand_built_model(), pink_noise(128)
    result = characterize(model, image, energy_threshold=0.001)
    errors = [m["equivariance_error"] for m in result["modules"]]
    assert errors[0] < 0.2 and errors[1] < 0.2  # brightness, colour
    assert errors[2] > 0.5 > errors[0] * 5  # the fine centre-surround module
    residual, energy = equivariance_residuals(model, image)
    assert residual.tolist() == pytest.approx([e * f for e, f in zip(errors, energy.tolist(), strict=True)], rel=1e-9)
    assert result["summary"]["relative_equivariance_error"] == pytest.approx(float(residual.sum() / energy.sum()), rel=1e-12)
    assert result["summary"]["relative_equivariance_error"] == pytest.approx(equivariance_error(model, image))


def test_cli_writes_groups_and_report(tmp_path, capsys):
    path = save(hand_built_model(), tmp_path / "ae.safetensors")
    assert main([str(path), "--report", str(tmp_path / "report"), "--write-groups", "--energy-threshold", "0.001"]) == 0
    assert [g.name for g in load(path).groups] == ["colour", "brightness", "edges_fine", "texture"]
    assert load(path).provenance["characterize"]["colour_opponent"] == 1
    for name in ("kernels.png", "tuning.png", "modules.png", "characterization.json"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert main([str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_low_pass_means_dc_within_3db_of_the_peak():
    # a low-pass with a weak surround peaks just above frequency 0 but is still low-pass;
    # a balanced centre-surround passes nothing at frequency 0
    sagging = rgb(gauss(3.0) - 0.6 * gauss(5.0), (1, 1, 1))
    balanced = rgb(gauss(1.5) - gauss(3.0), (1, 1, 1))
    (s, b), _ = kernel_stats(torch.stack([sagging, balanced]))
    assert s.preferred_frequency > 0 and s.dc_gain_ratio > 1 / 2**0.5
    assert b.dc_gain_ratio < 0.01


def test_cli_calibrates_display_gains_from_a_photo_folder(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    (tmp_path / "photos").mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()).save(tmp_path / "photos" / f"{name}.png")
    path = save(hand_built_model(), tmp_path / "ae.safetensors")
    with pytest.raises(SystemExit, match="2"):  # gains need the groups --write-groups stores
        main([str(path), "--calibrate", str(tmp_path / "photos")])
    args = [str(path), "--write-groups", "--energy-threshold", "0.001", "--calibrate", str(tmp_path / "photos")]
    assert main(args) == 0
    groups = {g.name: g for g in load(path).groups}
    assert groups["edges_fine"].gain > 1 and all(g.gain >= 1 for g in groups.values())
    # every group is stretched per image, colour and brightness too
    assert {g.span for g in groups.values()} == {0.6} and {"colour", "brightness", "edges_fine"} <= set(groups)
    out = capsys.readouterr().out
    assert f"edges_fine: stretched to 60% by at most {groups['edges_fine'].gain:g}" in out and "hint r: 1-px shift" in out
    assert main([str(path), "--write-groups", "--calibrate", str(tmp_path / "report-none")]) == 2


def _bandpass(index, centroid):
    return ModuleStats(index=index, energy_share=0.02, weight_norm=1.0, colour_fraction=0.0,
                       preferred_frequency=centroid, frequency_centroid=centroid, dc_gain_ratio=0.0,
                       orientation_selectivity=0.0, dc_luminance=0.0, kind="edges")


@pytest.mark.parametrize("centroids, kinds", [
    ([0.101, 0.213], ["edges_coarse", "edges_fine"]),  # an octave apart, both above 0.1 c/px
    ([0.05, 0.06, 0.2], ["edges_coarse", "edges_coarse", "edges_fine"]),  # cut at the widest gap
    ([0.05, 0.15, 0.2], ["edges_coarse", "edges_fine", "edges_fine"]),
    ([0.15, 0.23, 0.31], ["edges_coarse", "edges_fine", "edges_fine"]),  # 1.05 octaves: cut at ×1.53
    ([0.18, 0.3], ["edges_fine"] * 2),  # one scale (0.74 octave), above 0.1 c/px
    ([0.06, 0.09], ["edges_coarse"] * 2),  # one scale, below it
    ([0.2], ["edges_fine"]), ([0.05], ["edges_coarse"]),
])
def test_edge_scales_are_relative(centroids, kinds):
    modules = [_bandpass(i, f) for i, f in enumerate(reversed(centroids))]  # order must not matter
    name_edge_scales(modules)
    assert [m.kind for m in reversed(modules)] == kinds
