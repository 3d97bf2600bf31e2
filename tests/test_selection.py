import pytest
import torch

from scg_core.images import fit_to_size
from scg_core.selection import parse_gains, parse_groups


def test_groups_parse_and_reject_empty_names():
    assert parse_groups("HC1,HC2 ; edges") == ["HC1", "HC2", "edges"]
    assert parse_groups("a, a") == ["a"]
    assert parse_groups("") is None and parse_groups("ALL") is None
    with pytest.raises(ValueError, match="empty name"):
        parse_groups("a,,b")


@pytest.mark.parametrize("bad", ["colour", "colour=", "=2", "colour=abc", "colour=nan"])
def test_bad_gains_name_the_item(bad):
    with pytest.raises(ValueError, match="group=factor"):
        parse_gains(bad)


def test_fit_to_size_covers_and_centres():
    x = torch.arange(4 * 8, dtype=torch.float32).view(1, 1, 4, 8)
    assert fit_to_size(x, (4, 8)) is x
    y = fit_to_size(x, (4, 4))  # same scale, centre crop
    assert torch.equal(y, x[..., 2:6])
    z = fit_to_size(torch.rand(2, 3, 100, 50), (64, 64))
    assert z.shape == (2, 3, 64, 64) and z.is_contiguous()
