import itertools

import pytest
import torch
import torch.nn.functional as F

from devtools.official_reference import layer_chain, official_raw_hint, probe_kernel
from scg_core import ModularAEConfig
from scg_core.model import functional as Fn
from scg_core.model.config import RELEASED_MEAN, RELEASED_STD

from .conftest import factor_weights

CONFIGS = [
    ModularAEConfig(),  # released
    ModularAEConfig(num_modules=5, module_channels=3, kernel_size=3, stride=6),
    ModularAEConfig(num_modules=3, module_channels=2, kernel_size=7, stride=2),
    ModularAEConfig(parameterization="single", kernel_size=9, stride=4),
    ModularAEConfig(parameterization="single", kernel_size=5, stride=3),
]


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.parameterization}-K{c.kernel_size}-S{c.stride}")
def test_factorised_equals_composed_everywhere(config):
    # The fast path pads the input once and runs every factor unpadded, so it must equal the
    # composed convolution on every pixel, borders included, for any H, W.
    w = factor_weights(config)
    kernel = Fn.compose_kernel(w, config)
    assert kernel.shape[-1] == config.receptive_field
    for H, W in itertools.product((21, 22, 23, 24, 31), (25, 40)):
        x = torch.randn(2, 3, H, W, dtype=torch.float64)
        f_fast, f_ref = Fn.encode_factorised(x, w, config), Fn.encode_composed(x, kernel, config)
        assert f_fast.shape == f_ref.shape == (2, config.feature_channels, Fn.feature_size(H, config), Fn.feature_size(W, config))
        assert rel(f_fast, f_ref) < 1e-12
        d_fast, d_ref = Fn.decode_factorised(f_ref, w, config, (H, W)), Fn.decode_composed(f_ref, kernel, config, (H, W))
        assert d_fast.shape == (2, 3, H, W)
        assert rel(d_fast, d_ref) < 1e-12


@pytest.mark.parametrize("config", CONFIGS[:2] + CONFIGS[3:4], ids=str)
def test_kept_modules_are_the_same_numbers_as_masking(config):
    w = factor_weights(config)
    kernel = Fn.compose_kernel(w, config)
    x = torch.randn(1, 3, 45, 38, dtype=torch.float64)
    kept = [0, 2]
    channels = [m * config.module_channels + j for m in kept for j in range(config.module_channels)]
    f_all = Fn.encode_composed(x, kernel, config)
    f_kept = Fn.encode_factorised(x, w, config, kept)
    assert rel(f_kept, f_all[:, channels]) < 1e-12
    mask = torch.zeros(config.feature_channels, dtype=torch.float64)
    mask[channels] = 1
    masked = Fn.decode_composed(f_all * mask.view(1, -1, 1, 1), kernel, config, (45, 38))
    assert rel(Fn.decode_factorised(f_kept, w, config, (45, 38), kept), masked) < 1e-12


def test_decoder_is_the_adjoint_of_the_encoder():
    config = CONFIGS[0]
    w = factor_weights(config)
    x = torch.randn(1, 3, 37, 29, dtype=torch.float64)
    y = torch.randn_like(Fn.encode_factorised(x, w, config))
    lhs = (Fn.encode_factorised(x, w, config) * y).sum()
    rhs = (x * Fn.decode_factorised(y, w, config, (37, 29))).sum()
    assert abs(lhs - rhs) < 1e-9 * abs(lhs)


def test_composition_matches_the_layer_chain_probed_independently():
    config = CONFIGS[0]
    w = factor_weights(config)
    assert rel(Fn.compose_kernel(w, config), probe_kernel(w)) < 1e-12


def test_layer_chain_agrees_with_composed_away_from_the_border_only():
    # Running the official layers as padded convs differs from the composed kernel near borders
    # (intermediate maps are zero-padded); inside, both are the same linear map.
    config = CONFIGS[0]
    w = factor_weights(config)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    chain, fast = layer_chain(x, w), Fn.encode_factorised(x, w, config)
    assert chain.shape == fast.shape
    margin = 3  # feature cells whose 21×21 footprint reaches the zero padding
    assert rel(chain[..., margin:-margin, margin:-margin], fast[..., margin:-margin, margin:-margin]) < 1e-12
    assert rel(chain, fast) > 1e-3


def test_hint_matches_the_official_computation_on_the_509_overlap():
    # Official: composed kernel, stride 4, padding 10, no output padding → 509×509 for 512×512.
    config = CONFIGS[0]
    w = factor_weights(config, dtype=torch.float32)
    torch.manual_seed(1)
    x = torch.rand(1, 3, 512, 512)
    mean, std = torch.tensor(RELEASED_MEAN).view(1, 3, 1, 1), torch.tensor(RELEASED_STD).view(1, 3, 1, 1)
    xn = (x - mean) / std
    kept = [5, 10, 12]
    mask = torch.zeros(config.feature_channels)
    for m in kept:
        mask[4 * m : 4 * m + 4] = 1
    official = official_raw_hint(xn, probe_kernel({k: v.double() for k, v in w.items()}).float(), mask)
    assert official.shape[-2:] == (509, 509)
    ours = Fn.decode_factorised(Fn.encode_factorised(xn, w, config, kept), w, config, (512, 512), kept)
    assert ours.shape[-2:] == (512, 512)
    err = (ours[..., :509, :509] - official).abs().max().item()
    assert err < 1e-5 * official.abs().max().item(), err


@pytest.mark.parametrize("c_in,c_out,groups,K,stride", [(8, 3, 1, 5, 2), (16, 4, 4, 5, 2), (6, 6, 6, 5, 1), (4, 3, 1, 21, 4), (4, 2, 1, 5, 3)])
def test_subpixel_transposed_conv_equals_conv_transpose2d(c_in, c_out, groups, K, stride):
    weight = torch.randn(c_in, c_out // groups, K, K, dtype=torch.float64)
    f = torch.randn(2, c_in, 7, 9, dtype=torch.float64)
    ref = F.conv_transpose2d(f, weight, stride=stride, groups=groups)
    out = Fn.conv_transpose2d_subpixel(f, weight, stride, groups)
    assert out.shape == ref.shape
    assert rel(out, ref) < 1e-12



def test_centre_features_fold_the_normalisation_into_the_kernel():
    from scg_core import ModularAE

    ae = ModularAE()
    with torch.no_grad():
        for p in ae.parameters():
            p.normal_(generator=torch.Generator().manual_seed(1))
        kernel = Fn.compose_kernel(ae.factor_weights(), ae.config)
    R = ae.config.receptive_field
    patches = torch.rand(5, 3, R, R, generator=torch.Generator().manual_seed(0))
    expected = torch.einsum("jcxy,ncxy->nj", kernel, ae.normalize(patches))
    got = Fn.centre_features(kernel, patches, ae.mean, ae.std)
    torch.testing.assert_close(got, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)
