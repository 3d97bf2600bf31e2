"""Phase-averaged hints (``ModularAE.phase_average``): the mean of the decodes over the stride²
positions of the code grid, which makes a hint move with its image pixel by pixel."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

import scg_core
from scg_core import ModularAE, WeightsError, load, save
from scg_core.controlnet.metadata import (
    controlnet_metadata,
    parse_controlnet_metadata,
    selection_mismatch,
)
from scg_core.model.display import contrast_factors
from scg_core.model.groups import Group
from scg_core.tools import characterize as characterize_tool
from scg_core.tools.characterize import pink_noise
from scg_core.tools.hint_range import hint_stability

from .test_characterize import hand_built_model
from .test_hint_range import faint_and_bright_model, photos, stretched_model


def random_bipolar(phase_average: bool) -> ModularAE:
    torch.manual_seed(0)  # random kernels: plenty of detail above the stride-4 code's Nyquist frequency
    return ModularAE(num_modules=4, module_channels=2, phase_average=phase_average,
                     groups=[Group("a", (0, 1)), Group("b", (2, 3), "edges")])


def deep_interior(ae: ModularAE, x: torch.Tensor) -> torch.Tensor:
    """Pixels no border reaches: encode and decode each spread a receptive field's half."""
    m = 2 * ae.config.padding + ae.config.stride
    return x[..., m:-m, m:-m]


@torch.no_grad()
@pytest.mark.parametrize("dy, dx", [(0, 1), (1, 0), (1, 3), (2, 2)])
def test_an_averaged_hint_moves_with_its_image_and_a_decimated_one_does_not(dy, dx):
    x = pink_noise(96)[..., :90, :100]
    averaged, decimated = random_bipolar(True), random_bipolar(False)
    for ae, exact in ((averaged, True), (decimated, False)):
        whole, moved = ae.raw_hint(x, ["b"]), ae.raw_hint(x[..., dy:, dx:], ["b"])
        error = (deep_interior(ae, whole[..., dy:, dx:]) - deep_interior(ae, moved)).abs().max()
        scale = deep_interior(ae, whole).abs().max()
        assert (error < 1e-5 * scale) if exact else (error > 0.05 * scale)


@torch.no_grad()
def test_the_averaged_hint_is_the_undecimated_encode_and_decode():
    """An independent formula: the composed kernel at stride 1, its transpose at stride 1, over stride²."""
    ae, x = random_bipolar(True), pink_noise(80)
    l, S, P = ae.config.module_channels, ae.config.stride, ae.config.padding
    kernel = ae.composed_kernel()[2 * l : 4 * l]  # modules 2 and 3: group "b"
    expected = F.conv_transpose2d(F.conv2d(ae.normalize(x), kernel, padding=P), kernel, padding=P) / S**2
    got = ae.raw_hint(x, ["b"])
    assert got.shape == x.shape
    assert torch.allclose(deep_interior(ae, got), deep_interior(ae, expected), atol=1e-5)
    # the reconstruction too: averaging keeps what the decimated one reconstructs
    full = ae.hint(x)
    assert full.shape == x.shape and 0 <= float(full.min()) and float(full.max()) <= 1


@torch.no_grad()
def test_averaging_lifts_the_stability_of_an_aliasing_group():
    ae = hand_built_model()  # module 2: a fine centre-surround, mostly above the stride's Nyquist frequency
    ae.groups = (Group("low", (0,)), Group("fine", (2,)))
    before = hint_stability(ae, pink_noise(128))["fine"]
    ae.phase_average = True
    after = hint_stability(ae, pink_noise(128))
    assert before["shift_1px"] < 0.95 and after["fine"]["shift_1px"] > 0.999
    assert after["fine"]["rotate_90"] > 0.999 and after["low"]["rotate_90"] > 0.999  # the kernels are isotropic


@torch.no_grad()
def test_a_stretched_group_is_stretched_on_its_averaged_decode():
    ae, x = stretched_model(), photos()[2][..., :160, :160]
    ae.phase_average = True
    group = ae.groups[1]
    plain = faint_and_bright_model()  # no span: the group's modules at factor 1
    plain.phase_average = True
    at_one = plain.raw_hint(x, modules=[1])
    factor = contrast_factors(at_one, ae.mean.flatten(), group.span, group.gain, 10, scale=ae.std.flatten())
    assert torch.allclose(ae.raw_hint(x, ["edges"]), at_one * factor.view(-1, 1, 1, 1), atol=1e-6)
    assert torch.allclose(ae.hint(x, ["edges"]), ae.denormalize(ae.raw_hint(x, ["edges"])).clamp(0, 1), atol=1e-6)


def test_the_setting_is_saved_with_the_weights_and_old_files_stay_version_1(tmp_path):
    averaged = load(save(random_bipolar(True), tmp_path / "averaged.safetensors"))
    decimated = load(save(random_bipolar(False), tmp_path / "decimated.safetensors"))
    assert averaged.phase_average and not decimated.phase_average
    with safe_open(str(tmp_path / "averaged.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["scg_format_version"] == "2" and json.loads(meta["hint"]) == {"phase_average": True}
    with safe_open(str(tmp_path / "decimated.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["scg_format_version"] == "1" and "hint" not in meta  # readers of version 1 still load it


@pytest.mark.parametrize("bad", ['{"phase_average": 1}', '{"phase_avg": true}', "[true]", "not json"])
def test_a_damaged_hint_setting_is_refused_with_the_file_named(tmp_path, bad):
    from safetensors.torch import load_file, save_file

    path = save(random_bipolar(True), tmp_path / "ae.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file(load_file(str(path)), str(path), metadata={**meta, "hint": bad})
    with pytest.raises(WeightsError, match="ae.safetensors"):
        load(path)


def test_controlnets_record_the_setting_and_a_change_is_reported():
    averaged, decimated = random_bipolar(True), random_bipolar(False)
    meta = controlnet_metadata(averaged, ["edges"])
    assert meta["scg_hint_phase_average"] == "1" and "scg_hint_phase_average" not in controlnet_metadata(decimated, ["edges"])
    info = parse_controlnet_metadata(meta)
    assert info.phase_average and selection_mismatch(info, averaged, ["edges"]) == []
    problems = selection_mismatch(info, decimated, ["edges"])
    assert len(problems) == 1 and "averaged over the code grid's positions" in problems[0] and "one code grid" in problems[0]
    old = parse_controlnet_metadata(controlnet_metadata(decimated, ["edges"]))
    assert not old.phase_average and "one code grid (no phase_average)" in selection_mismatch(old, averaged, ["edges"])[0]
    with pytest.raises(ValueError, match="scg_hint_phase_average"):
        parse_controlnet_metadata({**meta, "scg_hint_phase_average": "yes"})


def test_characterize_stores_the_setting_only_with_the_groups(tmp_path, capsys):
    path = save(random_bipolar(False), tmp_path / "ae.safetensors")
    with pytest.raises(SystemExit):
        characterize_tool.main([str(path), "--phase-average"])
    assert "pass both" in capsys.readouterr().err
    assert characterize_tool.main([str(path), "--write-groups", "--phase-average"]) == 0
    assert load(path).phase_average


@torch.no_grad()
def test_the_bundled_default_hints_follow_a_shift_and_a_quarter_turn_of_a_held_out_photo():
    """Issue 17's stability check on the shipped file: every group r ≥ 0.9 (chelsea was never trained on)."""
    ae = scg_core.load_default()
    assert ae.phase_average
    photo = photos()[2][..., :256, :320]  # chelsea
    for name, r in hint_stability(ae, photo).items():
        assert r["shift_1px"] >= 0.9 and r["rotate_90"] >= 0.9, (name, r)


def test_info_says_how_a_file_computes_its_hints(tmp_path, capsys):
    from scg_core.hosts.cli import main

    assert main(["info", "--device", "cpu"]) == 0  # the bundled default
    assert "hints: averaged over the 16 positions of the code grid" in capsys.readouterr().out
    path = save(random_bipolar(False), tmp_path / "ae.safetensors")
    assert main(["info", "--weights", str(path), "--device", "cpu"]) == 0
    assert "hints: decoded from one code grid (as the official release)" in capsys.readouterr().out


@torch.no_grad()
def test_an_averaged_hint_keeps_the_input_dtype_and_batches_image_by_image():
    ae, x = random_bipolar(True), torch.cat([pink_noise(64), pink_noise(64).flip(-1)])
    full = ae.hint(x, ["b"])
    assert full.dtype == torch.float32 and torch.allclose(full[1:], ae.hint(x[1:], ["b"]), atol=1e-6)
    low = ae.to(torch.bfloat16).hint(x.to(torch.bfloat16), ["b"])
    assert low.dtype == torch.bfloat16 and float((low.float() - full).abs().max()) < 0.05
