import numpy as np
import pytest
import torch
from PIL import Image, ImageFont

from scg_core import Group, ModularAE, ModularAEConfig
from scg_core.formats.images import tensor_to_pil
from scg_core.tools.sheet import (
    BACKGROUND,
    LABEL_HEIGHT,
    LEGEND,
    decomposition_sheet,
    decomposition_tiles,
    legend_height,
    module_visual,
    wrap,
)


def photo(h=64, w=96):
    torch.manual_seed(1)
    coarse = torch.rand(1, 3, 4, 6)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (x + 0.05 * torch.randn(x.shape)).clamp(0, 1)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_streamed_tiles_equal_the_all_at_once_computation(released_ae):
    x = photo()
    tiles = dict(decomposition_tiles(released_ae, x, tile=96))  # tile = the image's size: no resampling
    recon = released_ae.module_reconstructions(x)[0].detach()  # (k, 3, H, W), all modules at once
    energy = (recon - recon.mean((2, 3), keepdim=True)).pow(2).flatten(1).sum(1)
    share = energy / energy.sum()
    assert np.abs(pixels(tiles["input"]) - pixels(tensor_to_pil(x))).max() <= 1
    for g in released_ae.groups:
        hint = released_ae.hint(x, groups=[g.name]).detach()
        assert np.abs(pixels(tiles[g.title]) - pixels(tensor_to_pil(hint))).max() <= 1, g.title
    modules = [label for label in tiles if label.startswith("module ")]
    assert len(modules) == 16
    for i, label in enumerate(modules):
        assert label.startswith(f"module {i} · ") and f" · {100 * share[i]:.0f}% · x" in label, label
        assert np.abs(pixels(tiles[label]) - pixels(tensor_to_pil(module_visual(recon[i])))).max() <= 1, label


def test_stretch_factor_on_the_label_is_what_the_tile_shows(released_ae):
    x = photo()
    recon = released_ae.module_reconstructions(x)[0].detach()
    labels = [label for label, _ in decomposition_tiles(released_ae, x, tile=64)][1 + len(released_ae.groups):]
    for i, label in enumerate(labels):
        factor = float(label.rsplit("· x", 1)[1])
        # the tile maps ±peak to ±0.5; a hint shows raw·std: the label's factor is their ratio
        want = 0.5 / (float(recon[i].abs().max()) * float(released_ae.std.mean()))
        assert factor == pytest.approx(want, rel=0.05, abs=0.05), label


def test_progress_counts_every_module_pass_and_ungrouped_modules_get_tiles():
    torch.manual_seed(0)
    config = ModularAEConfig(num_modules=3, module_channels=2, kernel_size=3, stride=4)
    ae = ModularAE(config, groups=[Group("A", (0,)), Group("B", (0, 1), "edges")])  # module 2 in no group
    calls = []
    tiles = decomposition_tiles(ae, photo(40, 50), tile=64, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # A: 0; B: 0, 1; ungrouped: 2
    labels = [label for label, _ in tiles]
    assert labels[:3] == ["input", "A", "B (edges)"]
    assert labels[3].startswith("module 0 · B · ") and labels[5].startswith("module 2 · ") and " · B" not in labels[5]


def test_sheet_has_a_legend_above_the_labelled_tiles(released_ae):
    sheet = decomposition_sheet(released_ae, photo(), tile=64)
    columns, tw, th, rows = 6, 64, round(64 * 64 / 96), -(-(1 + 6 + 16) // 6)
    top = legend_height(columns * tw)
    assert top > 2 * 14  # at 384 px the legend takes several lines
    assert sheet.size == (columns * tw, top + rows * (th + LABEL_HEIGHT))
    legend = pixels(sheet.crop((0, 0, sheet.width, top)))
    assert (legend != BACKGROUND).any(axis=-1).sum() > 500  # text drawn there


def test_legend_wraps_within_the_width_and_keeps_every_word():
    font = ImageFont.load_default()
    lines = wrap(LEGEND, font, 300)
    assert " ".join(lines) == " ".join(LEGEND.split())
    assert all(font.getlength(line) <= 300 for line in lines)
    assert "stretched" in LEGEND and "not stretched" in LEGEND  # modules are stretched, group hints are not


@pytest.mark.parametrize("tile,text", [(0, "from 64 to 1024"), (2000, "from 64 to 1024"), (100.5, "whole number")])
def test_bad_tile_sizes_are_refused(released_ae, tile, text):
    with pytest.raises(ValueError, match=text):
        decomposition_sheet(released_ae, photo(), tile=tile)


def test_a_batch_is_refused(released_ae):
    with pytest.raises(ValueError, match="one image"):
        decomposition_sheet(released_ae, photo().expand(2, -1, -1, -1))


def test_group_tiles_of_a_phase_averaged_model_are_its_hints(released_ae):
    # the bundled default averages its hints over the code grid's positions: the sheet's group tiles
    # must show those (what a ControlNet is given), not one grid's aliased decode
    from scg_core.model.groups import with_gains

    x = photo()
    averaged = ModularAE(released_ae.config, groups=with_gains(released_ae.groups, {"HC0": 3.0, "HC3": 30.0},
                                                               spans={"HC0": 0.6, "HC3": 0.6}), phase_average=True)
    averaged.load_state_dict(released_ae.state_dict())
    tiles = dict(decomposition_tiles(averaged, x, tile=96))
    with torch.no_grad():
        for g in averaged.groups:
            assert np.abs(pixels(tiles[g.title]) - pixels(tensor_to_pil(averaged.hint(x, [g.name])))).max() <= 1, g.title
    one_grid = dict(decomposition_tiles(released_ae, x, tile=96))
    title = next(g.title for g in averaged.groups if g.name == "HC5")
    assert np.abs(pixels(tiles[title]) - pixels(one_grid[title])).max() > 10  # averaging did change it
    # module tiles and shares stay one grid's, as characterize measures them
    shares = lambda tiles: [k.rsplit(" · x", 1)[0] for k in tiles if k.startswith("module ")]  # noqa: E731
    assert shares(tiles) == shares(one_grid)
    for label in (k for k in tiles if k.startswith("module ")):
        assert np.array_equal(pixels(tiles[label]), pixels(one_grid[next(k for k in one_grid if k.startswith(label.rsplit(" · x", 1)[0]))]))


def test_group_tiles_and_stretch_factors_follow_the_display_gains(released_ae):
    from scg_core.model.groups import with_gains

    x = photo()
    gained = ModularAE(released_ae.config, groups=with_gains(released_ae.groups, {"HC3": 4.0}))
    gained.load_state_dict(released_ae.state_dict())
    tiles = dict(decomposition_tiles(gained, x, tile=96))
    title = next(g.title for g in gained.groups if g.name == "HC3")
    assert np.abs(pixels(tiles[title]) - pixels(tensor_to_pil(gained.hint(x, ["HC3"])))).max() <= 1
    assert np.abs(pixels(tiles[title]) - pixels(tensor_to_pil(released_ae.hint(x, ["HC3"])))).max() > 10  # it did change
    plain = dict(decomposition_tiles(released_ae, x, tile=96))
    module = next(g.modules[0] for g in gained.groups if g.name == "HC3")
    factor = lambda tiles: float(next(k for k in tiles if k.startswith(f"module {module} · ")).rsplit("· x", 1)[1])  # noqa: E731
    assert factor(tiles) == pytest.approx(factor(plain) / 4, rel=0.05, abs=0.05)


def test_a_group_tile_with_a_display_span_is_the_stretched_hint(released_ae):
    from scg_core.model.groups import with_gains

    x = photo()
    stretched = ModularAE(released_ae.config, groups=with_gains(released_ae.groups, {"HC3": 50.0}, spans={"HC3": 0.6}))
    stretched.load_state_dict(released_ae.state_dict())
    tiles = dict(decomposition_tiles(stretched, x, tile=96))
    title = next(g.title for g in stretched.groups if g.name == "HC3")
    with torch.no_grad():
        hint = stretched.hint(x, ["HC3"])
    assert np.abs(pixels(tiles[title]) - pixels(tensor_to_pil(hint))).max() <= 1
    assert np.abs(pixels(tiles[title]) - pixels(tensor_to_pil(released_ae.hint(x, ["HC3"])))).max() > 10  # it did change
