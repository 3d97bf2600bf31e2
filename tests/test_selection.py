import pytest
import torch

from scg_core.formats.images import fit_to_size
from scg_core.hosts.selection import parse_gains, parse_groups


def test_groups_parse_and_reject_empty_names():
    assert parse_groups("HC1,HC2 ; edges") == ["HC1", "HC2", "edges"]
    assert parse_groups("a, a") == ["a"]
    assert parse_groups("") is None and parse_groups("ALL") is None
    with pytest.raises(ValueError, match="empty name"):
        parse_groups("a,,b")


@pytest.mark.parametrize("bad", ["colour", "colour=", "=2", "colour=abc"])
def test_bad_gains_name_the_item(bad):
    with pytest.raises(ValueError, match="group=factor"):
        parse_gains(bad)


@pytest.mark.parametrize("bad,text", [
    ("colour=nan", "'colour=nan' is not a finite number"),
    ("colour=inf", "'colour=inf' is not a finite number"),
    ("brightness=0", "'brightness=0' would drop the group; leave it out of the groups instead"),
    ("brightness=-0.0", "would drop the group"),
    ("brightness=-1", "'brightness=-1' would invert the group"),
    ("edges=10.5", "'edges=10.5' would saturate the group"),
])
def test_gains_outside_the_range_are_refused_with_the_range(bad, text):
    with pytest.raises(ValueError, match="factors must be > 0 and ≤ 10") as e:
        parse_gains(f"colour=1, {bad}")
    assert text in str(e.value)


def test_gains_in_the_range_are_kept():
    assert parse_gains("colour=0.001, edges=10; brightness=1e0") == {"colour": 0.001, "edges": 10.0, "brightness": 1.0}
    assert parse_gains("") == {} and parse_gains(" , ") == {}



def test_fit_to_size_covers_and_centres():
    x = torch.arange(4 * 8, dtype=torch.float32).view(1, 1, 4, 8)
    assert fit_to_size(x, (4, 8)) is x
    y = fit_to_size(x, (4, 4))  # same scale, centre crop
    assert torch.equal(y, x[..., 2:6])
    z = fit_to_size(torch.rand(2, 3, 100, 50), (64, 64))
    assert z.shape == (2, 3, 64, 64) and z.is_contiguous()


def test_display_gain_note_names_the_stored_gains_a_selection_uses():
    from scg_core import ModularAE
    from scg_core.hosts.selection import display_gain_note
    from scg_core.model.groups import Group

    ae = ModularAE(num_modules=4, module_channels=2, groups=[
        Group("brightness", (0,)), Group("edges_fine", (1,), "edges", gain=4.1), Group("texture", (2, 3), gain=2.5)])
    assert display_gain_note(ae, ["edges"]) == "edges_fine ×4.1"
    assert display_gain_note(ae, ["brightness", "texture", "edges_fine"]) == "texture ×2.5, edges_fine ×4.1"
    assert display_gain_note(ae, ["brightness"]) == "" and display_gain_note(ae, None) == ""
    ae.groups = (Group("colour", (0,), gain=1.2), Group("edges_fine", (1,), "edges", gain=16.0, span=0.6))
    assert display_gain_note(ae, ["edges", "colour"]) == "edges_fine contrast 60%, colour ×1.2"
