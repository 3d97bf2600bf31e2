"""Display gains stored with the groups, their calibration, and the hint stability measure."""

import pytest
import torch

from scg_core import ModularAE, load, save
from scg_core.controlnet.metadata import controlnet_metadata, parse_controlnet_metadata, selection_mismatch
from scg_core.model.groups import OFFICIAL_GROUPS, Group, with_gains
from scg_core.tools.characterize import pink_noise
from scg_core.tools.hint_range import calibrate_gains, hint_range, hint_stability

from .test_characterize import gauss, hand_built_model, rgb


def model_with(groups):
    torch.manual_seed(0)
    return ModularAE(num_modules=4, module_channels=2, groups=groups)


def test_a_stored_gain_scales_the_group_in_every_hint_that_keeps_it():
    plain = model_with([Group("low", (0, 1), "brightness"), Group("edges", (2, 3), "edges")])
    gained = model_with([Group("low", (0, 1), "brightness"), Group("edges", (2, 3), "edges", gain=3.0)])
    x = torch.rand(1, 3, 40, 48)
    assert torch.equal(gained.hint(x, ["edges"]), plain.hint(x, ["edges"], gains={"edges": 3.0}))
    assert not torch.allclose(gained.hint(x, ["edges"]), plain.hint(x, ["edges"]))
    # a user's gain multiplies the stored one; selecting by label applies it too
    assert torch.allclose(gained.hint(x, gains={"edges": 0.5}), plain.hint(x, gains={"edges": 1.5}))
    assert torch.equal(gained.hint(x, ["edges"]), gained.hint(x, ["EDGES"]))
    # the reconstruction and modules chosen by index stay at gain 1
    assert torch.equal(gained.hint(x), plain.hint(x))
    assert torch.equal(gained.hint(x, modules=[2, 3]), plain.hint(x, modules=[2, 3]))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "2"])
def test_a_group_refuses_a_bad_gain(bad):
    with pytest.raises(ValueError, match="display gain"):
        Group("edges", (1,), "edges", gain=bad)


def test_gains_are_saved_with_the_weights_and_official_groups_keep_none(tmp_path):
    model = model_with(with_gains([Group("low", (0, 1)), Group("edges", (2, 3), "edges")], {"edges": 4.5}))
    path = save(model, tmp_path / "ae.safetensors")
    assert [g.gain for g in load(path).groups] == [1.0, 4.5]
    assert load(path).groups[1].to_dict()["gain"] == 4.5
    assert all("gain" not in g.to_dict() for g in OFFICIAL_GROUPS)  # official files are written as before
    with pytest.raises(ValueError, match="no group named 'nope'"):
        with_gains(model.groups, {"nope": 2.0})


def test_controlnet_metadata_records_the_gain_and_a_changed_gain_is_reported():
    model = model_with([Group("low", (0, 1)), Group("edges", (2, 3), "edges", gain=4.0)])
    info = parse_controlnet_metadata(controlnet_metadata(model, ["edges"]))
    assert [(g.name, g.gain) for g in info.groups] == [("edges", 4.0)]
    assert selection_mismatch(info, model, ["edges"]) == []
    model.groups = with_gains(model.groups, {"edges": 2.0})  # same weights, another display gain
    problems = selection_mismatch(info, model, ["edges"])
    assert len(problems) == 1 and "display gain 2" in problems[0] and "at 4" in problems[0]


def faint_and_bright_model():
    """Module 0 a low-pass, strong enough to clip already at gain 1; module 1 a centre-surround
    (unit norm), whose tied reconstruction of a photo is a faint band-pass image."""
    ae = ModularAE(num_modules=2, module_channels=1, parameterization="single", kernel_size=21,
                   groups=[Group("brightness", (0,)), Group("edges", (1,), "edges")])
    kernels = [3 * rgb(gauss(2.0), (1, 1, 1)), rgb(gauss(1.5) - gauss(3.0), (1, 1, 1))]
    with torch.no_grad():
        ae.kernels.copy_(torch.stack(kernels).float() * ae.std.view(1, 3, 1, 1))
    return ae


def photos():
    from skimage import data

    return [torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float()[None] / 255 for name in ("astronaut", "coffee", "chelsea")]


def test_calibration_makes_a_faint_group_readable_and_never_turns_one_down():
    ae, images = faint_and_bright_model(), photos()
    before = hint_range(ae, images, ae.groups[1])
    gains = calibrate_gains(ae, images, span=0.6, clip=0.005)
    assert max(before["span"]) < 0.1 and gains["edges"] > 10
    ae.groups = with_gains(ae.groups, gains)
    after = hint_range(ae, images, ae.groups[1])
    # the median image reaches ~the span aimed at; none clips much
    assert sorted(after["span"])[1] >= 0.55 and max(after["clipped"]) <= 0.02
    assert min(hint_range(ae, images, ae.groups[0])["clipped"]) > 0.01 and gains["brightness"] == 1.0
    # the hint hosts show is the gained one
    x = images[2]
    assert torch.equal(ae.hint(x, ["edges"]), faint_and_bright_model().hint(x, ["edges"], gains={"edges": gains["edges"]}))


def test_stability_separates_a_smooth_group_from_an_aliasing_one():
    ae = hand_built_model()  # modules: low-pass, opponent, a fine centre-surround (mostly above the stride's Nyquist), ...
    ae.groups = (Group("low", (0,)), Group("fine", (2,)))
    r = hint_stability(ae, pink_noise(128))
    assert r["low"]["shift_1px"] > 0.999 and r["low"]["rotate_90"] > 0.999
    assert r["fine"]["shift_1px"] < 0.95 and r["fine"]["rotate_90"] < 0.95  # sampled every 4 px, it aliases
    assert r == hint_stability(ae, pink_noise(128), ["low", "fine"])
