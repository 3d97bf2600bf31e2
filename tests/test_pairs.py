import math

import pytest
import torch
import torch.nn.functional as F

from scg_core.model.pairs import (
    cell_correspondences,
    context_side,
    crop_margin,
    neighbour_deltas,
    pair_margin,
    sample_patch_pairs,
    warp_grid,
)


def test_identity_transform_returns_the_same_patch():
    img = torch.rand(3, 60, 70)
    P, Q, _delta = sample_patch_pairs([img], 8, torch.Generator().manual_seed(0), delta=torch.zeros(8, 3))
    assert P.shape == Q.shape == (8, 3, 21, 21)
    torch.testing.assert_close(P, Q, atol=1e-5, rtol=0)


def test_quarter_turn_is_a_rot90_about_the_centre():
    img = torch.rand(3, 60, 70)
    delta = torch.tensor([[0.0, 0.0, math.pi / 2]]).expand(4, 3)
    P, Q, _ = sample_patch_pairs([img], 4, torch.Generator().manual_seed(1), delta=delta)
    # counter-clockwise as displayed (y down) is rot90 with k=1 over (H, W)
    torch.testing.assert_close(Q, torch.rot90(P, 1, dims=(-2, -1)), atol=1e-4, rtol=0)


def test_whole_pixel_shift_moves_the_content():
    img = torch.rand(3, 60, 70)
    P, Q, _ = sample_patch_pairs([img], 3, torch.Generator().manual_seed(2), delta=torch.tensor([[1.0, 0.0, 0.0]]).expand(3, 3))
    torch.testing.assert_close(Q[..., 1:], P[..., :-1], atol=1e-5, rtol=0)


def test_draws_are_repeatable_and_in_range():
    imgs = [torch.rand(3, 50, 50), torch.rand(3, 80, 40)]
    a = sample_patch_pairs(imgs, 16, torch.Generator().manual_seed(3))
    b = sample_patch_pairs(imgs, 16, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    delta = a[2]
    assert delta[:, :2].abs().max() <= 2.0 and 0 <= delta[:, 2].min() and delta[:, 2].max() < 2 * math.pi


def test_errors():
    with pytest.raises(ValueError, match="at least"):
        sample_patch_pairs([torch.rand(3, 30, 30)], 2, torch.Generator())
    with pytest.raises(ValueError, match="delta must be"):
        sample_patch_pairs([torch.rand(3, 60, 60)], 2, torch.Generator(), delta=torch.tensor([[5.0, 0, 0], [0, 0, 0]]))
    assert pair_margin(21, 2.0) == math.ceil((10 + 2) * math.sqrt(2)) + 1 == 18
    assert pair_margin(21, 8.0) == math.ceil((10 + 8) * math.sqrt(2)) + 1 == 27


@pytest.mark.parametrize("max_shift", [2.0, 8.0])
def test_pairs_read_inside_the_image_at_the_longest_shifts(max_shift):
    # The farthest sample of a transformed patch: a corner q of the patch against a diagonal shift t,
    # rotated onto an image axis — |Aᵀ(q − t)| = (10 + max_shift)·√2 on that axis. Each pixel holds its
    # own coordinates, so a sample that left the window (read as zero padding) shows as a wrong position.
    R = pair_margin(21, max_shift)
    side = 2 * R + 1
    y, x = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij")
    image = torch.stack([x, y, torch.ones_like(x)]) / 255  # linear, so bilinear sampling reads positions back exactly
    s = max_shift
    delta = torch.tensor([[-s, s, math.pi / 4], [s, s, -math.pi / 4], [s, -s, math.pi / 4], [-s, -s, 3 * math.pi / 4],
                          [-s, s, 5 * math.pi / 4], [s, -s, -3 * math.pi / 4]])
    _, warped, _ = sample_patch_pairs([image], len(delta), torch.Generator().manual_seed(0), max_shift=max_shift, delta=delta)
    offsets = torch.arange(-10, 11, dtype=torch.float32)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    qx, qy = dx - delta[:, 0, None, None], dy - delta[:, 1, None, None]
    cos, sin = torch.cos(delta[:, 2])[:, None, None], torch.sin(delta[:, 2])[:, None, None]
    reach = (cos * qx - sin * qy).abs().amax(dim=(1, 2))
    assert reach.max() > math.ceil((10 + s) * math.sqrt(2)) - 1  # the test reaches the last pixel of the margin
    torch.testing.assert_close(warped[:, 0] * 255, R + cos * qx - sin * qy, atol=1e-3, rtol=0)
    torch.testing.assert_close(warped[:, 1] * 255, R + sin * qx + cos * qy, atol=1e-3, rtol=0)


def test_warp_equals_kornias_warp_affine():
    # the reference the pairs were drawn with before the grid was written by hand
    from kornia.geometry.transform import get_rotation_matrix2d, warp_affine

    from scg_core.model.pairs import warp_grid

    g = torch.Generator().manual_seed(4)
    R, n = pair_margin(21, 2.0), 32
    windows = torch.rand(n, 3, 2 * R + 1, 2 * R + 1, generator=g)
    delta = torch.stack([4 * torch.rand(n, generator=g) - 2, 4 * torch.rand(n, generator=g) - 2,
                         2 * math.pi * torch.rand(n, generator=g)], dim=1)
    matrix = get_rotation_matrix2d(torch.full((n, 2), float(R)), torch.rad2deg(delta[:, 2]), torch.ones(n, 2))
    matrix[:, :, 2] += delta[:, :2]
    reference = warp_affine(windows, matrix, (2 * R + 1, 2 * R + 1), align_corners=True)[..., R - 10:R + 11, R - 10:R + 11]
    ours = torch.nn.functional.grid_sample(windows, warp_grid(delta, 21, R), align_corners=True)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=0)


def test_each_code_cell_of_the_context_maps_to_the_transformed_patch_by_its_neighbour_delta():
    # I' = L_δ(I) about c is the patch at c + stride·n under δ_n: warping that patch by δ_n reads
    # exactly the pixels the centre's warp by δ reads, for any shift and rotation
    img = torch.rand(3, 120, 120, dtype=torch.float64)
    stride, R, c = 4, 25, 60
    delta = torch.tensor([[1.3, -0.7, 0.9], [-2.0, 1.9, 4.0], [0.5, 0.0, math.pi / 2]], dtype=torch.float64)
    deltas = neighbour_deltas(delta, stride, 3)
    assert deltas.shape == (3, 9, 3)
    window = lambda y, x: img[:, y - R : y + R + 1, x - R : x + R + 1][None]
    for i in range(3):
        expected = F.grid_sample(window(c, c), warp_grid(delta[i : i + 1], 21, R), align_corners=True)
        cells = [(ny, nx) for ny in (-1, 0, 1) for nx in (-1, 0, 1)]  # row-major, like a conv output
        for j, (ny, nx) in enumerate(cells):
            moved = F.grid_sample(window(c + stride * ny, c + stride * nx), warp_grid(deltas[i, j : j + 1], 21, R), align_corners=True)
            torch.testing.assert_close(moved, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(deltas[:, 4], delta)  # the centre cell keeps δ


def test_context_patches_are_centred_on_the_pair_point():
    img = torch.rand(3, 80, 90)
    side = context_side(21, 4, 3)
    P, Q, _ = sample_patch_pairs([img], 5, torch.Generator().manual_seed(4), delta=torch.zeros(5, 3), context_patch=side)
    assert P.shape == (5, 3, 29, 29) and Q.shape == (5, 3, 21, 21)
    torch.testing.assert_close(P[..., 4:25, 4:25], Q, atol=1e-5, rtol=0)
    assert pair_margin(21, 2.0, 61) == 30
    with pytest.raises(ValueError, match="odd"):
        context_side(21, 4, 2)


def warp_whole(window: torch.Tensor, delta: torch.Tensor, crop: int) -> torch.Tensor:
    """The crop at the centre of ``window`` ``[B,C,2R+1,2R+1]`` warped whole by ``delta`` ``[B,3]``."""
    R = (window.shape[-1] - 1) // 2
    return F.grid_sample(window, warp_grid(delta.to(window.dtype), crop, R), mode="bilinear", align_corners=True)


def test_an_even_crop_turns_about_its_pixel_half_its_side():
    window = torch.rand(1, 3, 41, 41, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    crop = window[..., 4:36, 4:36]  # 32 pixels, pixel 16 on the window's centre
    torch.testing.assert_close(warp_whole(window, torch.zeros(1, 3), 32), crop)
    turned = warp_whole(window, torch.tensor([[0.0, 0.0, math.pi / 2]]), 32)
    torch.testing.assert_close(turned, torch.rot90(window, 1, dims=(-2, -1))[..., 4:36, 4:36], atol=1e-5, rtol=0)
    moved = warp_whole(window, torch.tensor([[3.0, -2.0, 0.0]]), 32)  # content moves right 3, up 2
    torch.testing.assert_close(moved, window[..., 6:38, 1:33])


@pytest.mark.parametrize("context", [1, 3])
def test_each_cell_of_a_whole_warped_crop_is_its_sources_patch_under_the_cells_delta(context):
    # Every cell's patch of I' = L_δ(I) must equal, up to float rounding, the patch of the cell(s) of I it is
    # predicted from, warped like a patch pair by that cell's transformation.
    crop, stride, padding = 48, 4, 10
    g = torch.Generator().manual_seed(context)
    delta = torch.tensor([[3.7, -5.2, 1.1], [-11.0, 7.5, 4.0], [0.4, 0.2, 0.3]], dtype=torch.float64)
    R = crop_margin(crop, 12.0)
    window = torch.rand(3, 3, 2 * R + 1, 2 * R + 1, generator=g, dtype=torch.float64)
    warped = warp_whole(window, delta, crop)
    source, deltas, valid = cell_correspondences(delta, crop, stride, padding, context)
    n = (crop - 1) // stride + 1
    assert source.shape == (3, n * n, context ** 2) and deltas.shape == (3, n * n, context ** 2, 3)
    assert valid.sum() >= 3 and not valid.all()
    lo, r = R - crop // 2, 3 * padding  # crop pixel (x, y) is window pixel (x + lo, y + lo); r: a neighbour's reach
    checked = 0
    for b, cell in valid.nonzero().tolist():
        i, j = divmod(cell, n)
        target = warped[b, :, stride * i - padding:stride * i + padding + 1, stride * j - padding:stride * j + padding + 1]
        for q in range(context ** 2):
            si, sj = divmod(int(source[b, cell, q]), n)
            y, x = stride * si + lo, stride * sj + lo
            around = window[b:b + 1, :, y - r:y + r + 1, x - r:x + r + 1]
            pair = F.grid_sample(around, warp_grid(deltas[b, cell, q][None], 2 * padding + 1, r), mode="bilinear",
                                 align_corners=True)[0]
            torch.testing.assert_close(pair, target, atol=1e-12, rtol=0)
            checked += 1
    assert checked == valid.sum() * context ** 2
    centre = deltas[..., (context ** 2) // 2, :]
    assert centre[..., :2].abs().max() <= stride / 2 * math.sqrt(2) + 1e-9  # a residual, whatever the shift
    torch.testing.assert_close(deltas[..., 2], delta[:, None, None, 2].expand_as(deltas[..., 2]))


def test_cells_whose_patches_reach_the_padding_are_left_out():
    # no transformation: each cell predicts itself; only cells whose 21-px patch lies inside the crop count
    source, deltas, valid = cell_correspondences(torch.zeros(1, 3), 48, 4, 10)
    n = 12
    inside = torch.zeros(n, n, dtype=torch.bool)
    inside[3:10, 3:10] = True  # cell centres 12 … 36 px: 10 px from both edges of a 48-px crop (last pixel 47)
    assert torch.equal(valid[0], inside.flatten())
    assert torch.equal(source[0, :, 0], torch.arange(n * n)) and deltas.abs().max() == 0
