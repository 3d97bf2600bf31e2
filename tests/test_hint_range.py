"""Display gains and spans stored with the groups, their calibration, and the hint stability measure."""

import pytest
import torch

from scg_core import ModularAE, load, save
from scg_core.controlnet.metadata import controlnet_metadata, parse_controlnet_metadata, selection_mismatch
from scg_core.model.groups import OFFICIAL_GROUPS, Group, with_gains
from scg_core.tools.characterize import pink_noise
from scg_core.model.display import contrast_factors
from scg_core.tools.hint_range import calibrate_contrast, calibrate_display, calibrate_gains, hint_range, hint_stability

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
    assert len(problems) == 1 and "display gain 2" in problems[0] and "at display gain 4" in problems[0]


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


# ------------------------------------------------------------------ per-image contrast (display span)
def stretched_model(max_gain=64.0):
    ae = faint_and_bright_model()
    ae.groups = with_gains(ae.groups, {"edges": max_gain}, spans={"edges": 0.6})
    return ae


def interior(ae, x):
    m = ae.config.receptive_field // 2
    return x[..., m:-m, m:-m]


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 1.5, float("nan"), True, "0.6"])
def test_a_group_refuses_a_bad_span(bad):
    with pytest.raises(ValueError, match="display span"):
        Group("edges", (1,), "edges", gain=8.0, span=bad)


def test_contrast_factors_reach_the_span_and_keep_clipping_under_one_percent():
    torch.manual_seed(0)
    mean = torch.tensor([0.5, 0.5, 0.5])
    gauss_dev = 0.01 * torch.randn(1, 3, 64, 64)
    heavy = 0.001 * torch.distributions.Cauchy(0.0, 1.0).sample((1, 3, 64, 64))  # tails the span alone would clip
    factors = contrast_factors(torch.cat([gauss_dev, heavy]), mean, 0.6, 1e6)
    assert factors.shape == (2,)
    for dev, s in zip((gauss_dev, heavy), factors):
        shown = 0.5 + s * dev
        outside = float(((shown < 0) | (shown > 1)).float().mean())
        assert outside <= 0.01 + 1e-3
    lo, hi = torch.quantile((0.5 + factors[0] * gauss_dev).flatten(), torch.tensor([0.01, 0.99]))
    assert float(hi - lo) == pytest.approx(0.6, rel=1e-3)  # the well-behaved image reaches the span exactly
    lo, hi = torch.quantile((0.5 + factors[1] * heavy).flatten(), torch.tensor([0.01, 0.99]))
    assert float(hi - lo) < 0.55  # the heavy-tailed one is held back by the clipping limit instead
    # the largest factor bounds a flat image; each image of a batch gets its own factor
    flat = 1e-6 * torch.randn(1, 3, 64, 64)
    assert float(contrast_factors(flat, mean, 0.6, 20.0)[0]) == 20.0
    assert torch.equal(contrast_factors(torch.cat([flat, gauss_dev]), mean, 0.6, 20.0)[1:], contrast_factors(gauss_dev, mean, 0.6, 20.0))


def test_contrast_factors_of_a_large_image_are_measured_on_a_sample_that_does_not_alias(monkeypatch):
    """Fine stripes (period 4 px, the default's edges) of varying strength on a 3 × 512 × 600 image:
    the subsample the quantiles read gives the factor of all the values within 2%."""
    import scg_core.model.display as display

    y, x = torch.meshgrid(torch.arange(512.0), torch.arange(600.0), indexing="ij")  # 921,600 values: every 4th…
    stripes = torch.sin(2 * torch.pi * x / 4) * (0.2 + (y / 512) ** 3) * 0.02  # …would hit one phase of each row
    deviation = torch.stack([stripes, 0.5 * stripes, -stripes])[None]
    scale, mean = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.5, 0.5, 0.5])
    sampled = contrast_factors(deviation / scale.view(1, 3, 1, 1), mean, 0.6, 1e6, scale=scale)
    monkeypatch.setattr(display, "MAX_VALUES", 10**9)  # every value
    every = contrast_factors(deviation, mean, 0.6, 1e6)
    assert float(sampled[0]) == pytest.approx(float(every[0]), rel=0.02)


def test_contrast_factors_ignore_the_margin():
    torch.manual_seed(0)
    dev = 0.01 * torch.randn(1, 3, 64, 64)
    framed = dev.clone()
    framed[..., :5, :] = 1.0  # a bright border, as zero padding makes
    mean = torch.tensor([0.5, 0.5, 0.5])
    assert torch.equal(contrast_factors(framed, mean, 0.6, 100.0, margin=5), contrast_factors(dev[..., 5:-5, 5:-5], mean, 0.6, 100.0))
    assert not torch.equal(contrast_factors(framed, mean, 0.6, 100.0), contrast_factors(dev, mean, 0.6, 100.0))


def test_a_stretched_group_looks_the_same_on_a_faint_copy_of_the_image():
    """A hazy or low-contrast picture (``0.5 + c·(x − 0.5)``) gives the same band-pass hint: the
    centre-surround module sees ``c`` times the deviations and the factor is ``1/c`` times larger."""
    ae, x = stretched_model(max_gain=1000.0), photos()[2]
    faint = 0.5 + 0.25 * (x - 0.5)
    a, b = interior(ae, ae.hint(x, ["edges"])), interior(ae, ae.hint(faint, ["edges"]))
    assert (a - 0.5).abs().mean() > 0.05  # a visible hint…
    assert (a - b).abs().mean() < 1e-3 and (a - b).abs().max() < 0.01  # …the same on the faint copy
    fixed = faint_and_bright_model()  # at a fixed gain the faint copy's hint is four times fainter
    a, b = (interior(fixed, fixed.hint(im, ["edges"], gains={"edges": 20.0})) for im in (x, faint))
    assert (a - b).abs().mean() > 0.015  # ¾ of the deviations lost, against < 0.001 above


@torch.no_grad()
def test_the_stretched_hint_is_the_one_every_path_shows():
    ae, images = stretched_model(), photos()
    x = torch.cat([images[0][..., :256, :256], images[2][..., :256, :256]])
    hint = ae.hint(x, ["edges"])
    # per image: a batch gives what each image gives alone
    assert torch.allclose(hint[1:], ae.hint(x[1:], ["edges"]), atol=1e-6)
    # raw_hint is the same hint before the image mapping; selecting by label is the same
    assert torch.allclose(hint, ae.denormalize(ae.raw_hint(x, ["edges"])).clamp(0, 1), atol=1e-6)
    assert torch.equal(hint, ae.hint(x, ["EDGES"]))
    # a user's factor multiplies the per-image one
    raw, halved = ae.raw_hint(x, ["edges"]), ae.raw_hint(x, ["edges"], gains={"edges": 0.5})
    assert torch.allclose(halved, 0.5 * raw, atol=1e-6)
    # with another group the two add: the stretched one at its factor, the other at its gain
    both = ae.raw_hint(x, ["edges", "brightness"])
    assert torch.allclose(both, raw + ae.raw_hint(x, ["brightness"]), atol=1e-5)
    # the reconstruction and modules chosen by index are not stretched
    plain = faint_and_bright_model()
    assert torch.equal(ae.hint(x), plain.hint(x)) and torch.equal(ae.hint(x, modules=[1]), plain.hint(x, modules=[1]))
    # hint_range measures what hint shows
    ranges = hint_range(ae, [x[:1]], ae.groups[1])
    lo, hi = torch.quantile(interior(ae, hint[:1]).flatten().double(), torch.tensor([0.01, 0.99], dtype=torch.float64))
    assert ranges["span"][0] == pytest.approx(float(hi - lo), abs=1e-3)


def test_calibrated_contrast_makes_every_photo_readable_and_clips_under_one_percent():
    ae, images = faint_and_bright_model(), photos()
    ae.groups = calibrate_display(ae, images, ["edges"])
    edges, brightness = ae.groups[1], ae.groups[0]
    assert edges.span == 0.6 and brightness.span is None and brightness.gain == 1.0
    with torch.no_grad():  # the edges module chosen by index: at factor 1
        needed = [float(contrast_factors(ae.raw_hint(im, modules=[1]) * ae.std, ae.mean, 0.6, float("inf"), 10)[0]) for im in images]
    assert edges.gain == pytest.approx(4 * sorted(needed)[1], rel=0.05)  # 4× the median image's factor
    after = hint_range(ae, images, edges)
    assert min(after["span"]) >= 0.55 and max(after["clipped"]) <= 0.01
    assert calibrate_contrast(ae, images, ["edges"], headroom=2.0)["edges"] == pytest.approx(edges.gain / 2, rel=0.05)
    with pytest.raises(ValueError, match="no group named 'nope'"):
        calibrate_contrast(ae, images, ["nope"])


def test_spans_are_saved_with_the_weights_recorded_by_controlnets_and_a_change_is_reported(tmp_path):
    model = model_with([Group("low", (0, 1)), Group("edges", (2, 3), "edges", gain=16.0, span=0.6)])
    loaded = load(save(model, tmp_path / "ae.safetensors"))
    assert [(g.gain, g.span) for g in loaded.groups] == [(1.0, None), (16.0, 0.6)]
    assert "span" not in loaded.groups[0].to_dict() and loaded.groups[1].to_dict()["span"] == 0.6
    info = parse_controlnet_metadata(controlnet_metadata(model, ["edges"]))
    assert [(g.name, g.gain, g.span) for g in info.groups] == [("edges", 16.0, 0.6)]
    assert selection_mismatch(info, model, ["edges"]) == []
    model.groups = with_gains(model.groups, {"edges": 4.0}, spans={"edges": None})  # back to a fixed gain
    problems = selection_mismatch(info, model, ["edges"])
    assert len(problems) == 1 and "display gain 4" in problems[0] and "contrast stretched to 60% (factor ≤ 16)" in problems[0]


@torch.no_grad()
def test_stretched_groups_shown_together_keep_their_sum_under_one_percent_clipped():
    """Two edge scales both labelled ``edges``: each is stretched to the span, and their sum is
    turned down (never up) only as far as keeps ≤ 1% of its values outside [0, 1]."""
    ae = ModularAE(num_modules=3, module_channels=1, parameterization="single", kernel_size=21, groups=[
        Group("brightness", (0,)), Group("edges_coarse", (1,), "edges", gain=1000.0, span=0.6),
        Group("edges_fine", (2,), "edges", gain=1000.0, span=0.6)])
    kernels = [3 * rgb(gauss(2.0), (1, 1, 1)), rgb(gauss(1.5) - gauss(3.0), (1, 1, 1)), rgb(gauss(0.7) - gauss(1.4), (1, 1, 1))]
    with torch.no_grad():
        ae.kernels.copy_(torch.stack(kernels).float() * ae.std.view(1, 3, 1, 1))
    x = photos()[2][..., :160, :160]
    alone = [ae.raw_hint(x, [name]) for name in ("edges_coarse", "edges_fine")]
    both = ae.raw_hint(x, ["edges"])
    shown = interior(ae, ae.denormalize(both))
    clipped = float(((shown < 0) | (shown > 1)).float().mean())
    assert clipped <= 0.0105
    summed = interior(ae, ae.denormalize(alone[0] + alone[1]))
    assert float(((summed < 0) | (summed > 1)).float().mean()) > 0.015  # what the plain sum would clip
    scale = float((both * (alone[0] + alone[1])).sum() / (alone[0] + alone[1]).pow(2).sum())
    assert 0.3 < scale < 1 and torch.allclose(both, scale * (alone[0] + alone[1]), atol=1e-5)  # one factor on the sum
    # a user's factor still multiplies what is shown; a group alone is not limited by the other
    assert torch.allclose(ae.raw_hint(x, ["edges"], gains={"edges": 2.0}), 2 * both, atol=1e-5)
    assert torch.allclose(ae.raw_hint(x, ["edges_fine", "brightness"]), alone[1] + ae.raw_hint(x, ["brightness"]), atol=1e-5)


def test_per_channel_clipping_says_which_channel_leaves_the_range_and_on_which_side():
    # the bundled default's brightness decode adds the warm dataset mean: at factor 1 (not stretched, which
    # would turn it down until it fits) on a black page blue leaves the range below 0 and nothing above 1;
    # on a white page red and green leave it above 1, blue stays inside
    import scg_core

    ae = scg_core.load_default()
    brightness = ae.find_groups("brightness")[0]
    black, white = torch.zeros(1, 3, 96, 96), torch.ones(1, 3, 96, 96)
    assert max(hint_range(ae, [black, white], brightness)["clipped"]) <= 0.01  # as shown: stretched to fit
    r = hint_range(ae, [black, white], brightness, gain=1.0)
    (below_black, below_white), (above_black, above_white) = r["below"], r["above"]
    assert below_black[2] == 1.0 and below_black[0] == 0.0 and max(above_black) == 0.0
    assert above_white[0] == 1.0 and above_white[2] == 0.0 and max(below_white) == 0.0
    # the pooled share is the mean of the per-channel ones
    for i in range(2):
        assert r["clipped"][i] == pytest.approx((sum(r["below"][i]) + sum(r["above"][i])) / 3)


@pytest.mark.parametrize("phase_average", [False, True])
def test_grey_response_is_the_decode_of_a_uniform_mid_grey_image(phase_average):
    torch.manual_seed(3)
    ae = ModularAE(num_modules=4, module_channels=2, phase_average=phase_average)
    grey = torch.full((1, 3, 72, 72), 0.5)
    for modules in ([0], [1, 3], [0, 1, 2, 3]):
        decoded = ae.raw_hint(grey, modules=modules)[..., 24:48, 24:48].mean(dim=(-2, -1), keepdim=True)
        assert torch.allclose(ae.grey_response(modules), decoded, atol=1e-5)
    assert not torch.allclose(ae.grey_response([0]), ae.grey_response([1]))


def test_a_stretched_group_is_stretched_about_its_grey_response():
    torch.manual_seed(4)
    groups = [Group("low", (0, 1), "brightness", gain=3.0, span=0.6), Group("edges", (2, 3), "edges")]
    ae = ModularAE(num_modules=4, module_channels=2, groups=groups, phase_average=True)
    x = torch.rand(1, 3, 64, 64) * 0.4 + 0.3
    plain = ae.raw_hint(x, modules=[0, 1])
    centre = ae.grey_response([0, 1])
    factor = float(ae.contrast_factors(ae.groups[0], plain))
    assert factor != 1.0
    assert torch.allclose(ae.raw_hint(x, ["low"]), centre + factor * (plain - centre), atol=1e-5)
    # a uniform mid-grey image shows as its grey response whatever the factor (phase-averaged: the same
    # everywhere inside)
    grey = torch.full((1, 3, 96, 96), 0.5)
    assert torch.allclose(ae.raw_hint(grey, ["low"])[..., 32:64, 32:64], centre.expand(1, 3, 32, 32), atol=1e-5)
