import pytest
import torch
import torch.nn as nn

from scg_core.controlnet.official_hint import OfficialHint, OfficialHintConv


def test_official_hint_conv_is_the_official_hint_block_input():
    """OfficialHintConv on the full-size hint = the conv on the decoder-size hint padded with the value."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    official = OfficialHint((0.2, 0.4, 0.6))
    x = torch.rand(2, 3, 64, 48)
    value = torch.tensor(official.pad_value).view(1, 3, 1, 1)
    cropped = x[..., :61, :45]  # 4·ceil(n/4) − 3
    expected = nn.functional.conv2d(nn.functional.pad(cropped - value, (1, 1, 1, 1)) + value, conv.weight, conv.bias)
    out = OfficialHintConv(conv, official)(x)
    assert out.shape == (2, 5, 61, 45) and torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(conv(cropped)[..., 1:-1, 1:-1], out[..., 1:-1, 1:-1])  # the interior is untouched
    with pytest.raises(ValueError, match="stride 1"):
        OfficialHintConv(nn.Conv2d(3, 5, 3, stride=2, padding=1), official)
    with pytest.raises(ValueError, match="one border value per input channel"):
        OfficialHintConv(nn.Conv2d(4, 5, 3, padding=1), official)
