import pytest
import torch

from scg_core import Group, ModularAE, ModularAEConfig


def test_encode_decode_shapes_for_any_size(released_ae):
    for H, W in [(21, 21), (64, 64), (101, 77), (512, 333)]:
        x = torch.rand(2, 3, H, W)
        f = released_ae.encode(x)
        assert f.shape == (2, 64, -(-H // 4), -(-W // 4))
        assert released_ae.decode(f, (H, W)).shape == (2, 3, H, W)
        assert released_ae.hint(x, groups=["HC3"]).shape == (2, 3, H, W)


def test_hint_is_the_clamped_denormalised_raw_hint(released_ae):
    x = torch.rand(1, 3, 48, 40)
    raw = released_ae.raw_hint(x, groups=["HC1"])
    hint = released_ae.hint(x, groups=["HC1"])
    assert hint.min() >= 0 and hint.max() <= 1
    expected = (raw * released_ae.std + released_ae.mean).clamp(0, 1)
    torch.testing.assert_close(hint, expected)
    assert hint.is_contiguous()


def test_selection_by_group_equals_selection_by_modules(released_ae):
    x = torch.rand(1, 3, 40, 40)
    torch.testing.assert_close(released_ae.raw_hint(x, groups=["HC2"]), released_ae.raw_hint(x, modules=[5, 12]))
    # a label selects every group that carries it: HC2 ∪ HC3
    torch.testing.assert_close(released_ae.raw_hint(x, groups=["edges"]), released_ae.raw_hint(x, modules=[5, 10, 12]))
    # names are case-insensitive when no exact match exists
    torch.testing.assert_close(released_ae.raw_hint(x, groups=["hc2"]), released_ae.raw_hint(x, modules=[5, 12]))


def test_modules_sum_to_the_reconstruction_and_gains_are_linear(released_ae):
    x = torch.rand(1, 3, 36, 52, dtype=torch.float64)
    ae = released_ae.double()
    per_module = ae.module_reconstructions(x)
    torch.testing.assert_close(per_module.sum(1), ae.raw_hint(x))
    boosted = ae.raw_hint(x, gains={"HC0": 2.0})  # keeps everything, HC0 doubled
    hc0 = ae.raw_hint(x, groups=["HC0"])
    torch.testing.assert_close(boosted, ae.raw_hint(x) + hc0)
    only_scaled = ae.raw_hint(x, groups=["HC1"], gains={"HC0": 0.5})
    torch.testing.assert_close(only_scaled, ae.raw_hint(x, groups=["HC1"]) + 0.5 * hc0)


def test_all_modules_dropped_gives_a_zero_raw_hint(released_ae):
    x = torch.rand(1, 3, 30, 30)
    gains = {g.name: 0.0 for g in released_ae.groups}
    assert torch.count_nonzero(released_ae.raw_hint(x, gains=gains)) == 0


def test_dtype_is_preserved_and_non_contiguous_input_works(released_ae):
    x = torch.rand(1, 3, 40, 56, dtype=torch.float64)
    assert released_ae.hint(x).dtype == torch.float64  # float32 weights follow the input
    xt = torch.rand(1, 3, 56, 40).transpose(-1, -2)
    assert not xt.is_contiguous()
    torch.testing.assert_close(released_ae.hint(xt, groups=["HC3"]), released_ae.hint(xt.contiguous(), groups=["HC3"]))


def test_gradcheck_through_the_fast_path(tiny_ae):
    ae = tiny_ae.double()
    x = torch.rand(1, 3, 23, 26, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ae.raw_hint(t, modules=[0, 2]), (x,))


def test_gradients_reach_every_parameter(tiny_ae):
    x = torch.rand(2, 3, 30, 30)
    loss = (tiny_ae.decode(tiny_ae.encode(x), (30, 30)) - tiny_ae.normalize(x)).pow(2).mean()
    loss.backward()
    for name, p in tiny_ae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "x,error,text",
    [
        (torch.rand(3, 32, 32), ValueError, "add a batch dimension"),
        (torch.rand(1, 32, 32, 3), ValueError, "movedim"),
        (torch.rand(1, 4, 32, 32), ValueError, "RGBA"),
        ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), TypeError, "x.float() / 255"),
        (torch.rand(1, 3, 32, 32) * 255, ValueError, "divide by 255"),
        (torch.rand(1, 3, 32, 32) * 2 - 1, ValueError, "(x + 1) / 2"),
        (torch.rand(1, 3, 12, 40), ValueError, "at least 21×21"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, "NaN"),
        ([[0.5]], TypeError, "torch.Tensor"),
    ],
    ids=["3d", "channels-last", "rgba", "uint8", "0-255", "minus1-1", "too-small", "nan", "list"],
)
def test_bad_input_is_refused_with_the_fix_in_the_message(released_ae, x, error, text):
    with pytest.raises(error) as info:
        released_ae.hint(x)
    assert text in str(info.value)


def test_one_nan_pixel_is_refused(released_ae):
    x = torch.rand(1, 3, 32, 32)
    x[0, 1, 5, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        released_ae.encode(x)


def test_unknown_group_lists_the_available_ones(released_ae):
    with pytest.raises(ValueError) as info:
        released_ae.hint(torch.rand(1, 3, 32, 32), groups=["HC9"])
    assert "unknown group 'HC9'" in str(info.value) and "HC3 (edges)" in str(info.value)


def test_bad_module_selection_and_feature_shapes(released_ae):
    with pytest.raises(ValueError, match="ascending"):
        released_ae.encode(torch.rand(1, 3, 32, 32), modules=[3, 1])
    with pytest.raises(ValueError, match="out of range"):
        released_ae.hint(torch.rand(1, 3, 32, 32), modules=[16])
    with pytest.raises(ValueError, match=r"\[B,64,8,8\]"):
        released_ae.decode(torch.rand(1, 64, 9, 8), (32, 32))


def test_groups_are_validated_against_the_module_count():
    with pytest.raises(ValueError, match="modules 0..3"):
        ModularAE(num_modules=4, groups=[Group("X", (4,))])
    with pytest.raises(ValueError, match="unique"):
        ModularAE(num_modules=4, groups=[Group("X", (1,)), Group("X", (2,))])


def test_config_round_trip_and_validation():
    config = ModularAEConfig(num_modules=8, module_channels=2, parameterization="single", kernel_size=11, stride=4)
    assert ModularAEConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        ModularAEConfig.from_dict({**config.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match=r"missing keys \['stride'\]"):
        ModularAEConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "stride"})
    with pytest.raises(ValueError, match="stride must be even"):
        ModularAEConfig(stride=3)
    with pytest.raises(ValueError, match="one value per input channel"):
        ModularAEConfig(in_channels=1)
    with pytest.raises(ValueError, match="odd"):
        ModularAEConfig(kernel_size=4)
    assert ModularAEConfig().receptive_field == 21 and ModularAEConfig().padding == 10


def test_overrides_build_a_new_config():
    ae = ModularAE(num_modules=4, module_channels=2)
    assert ae.config.feature_channels == 8
    assert ae.expected_shapes()["module_kernels"] == (8, 1, 5, 5)
