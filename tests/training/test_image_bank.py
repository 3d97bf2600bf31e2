import math

import pytest
import torch

from scg_core.model.pairs import pair_margin
from training.image_bank import ImageBank, StepSampler


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """uint8 ``[3,H,W]``: channel 0 holds x, channel 1 holds y, channel 2 is 50 — linear, so
    bilinear sampling reads positions back exactly."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([x, y, torch.full_like(x, 50)]).to(torch.uint8)


def test_windows_are_the_images_rectangles_whatever_their_sizes():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in [(40, 70), (90, 33), (64, 64)]]
    bank = ImageBank(images)
    which, top, left = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([0, 57, 10, 3, 25]), torch.tensor([48, 0, 31, 11, 0])
    cut = bank.windows(which, top, left, 15, 22)
    assert cut.shape == (5, 15, 22, 3) and cut.dtype == torch.uint8
    for n, (i, y, x) in enumerate(zip(which.tolist(), top.tolist(), left.tolist(), strict=True)):
        assert torch.equal(cut[n].permute(2, 0, 1), images[i][:, y:y + 15, x:x + 22]), n


def test_float_images_are_stored_as_8_bits():
    image = torch.rand(3, 30, 30)
    bank = ImageBank([image])
    cut = bank.windows(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 30, 30)[0].permute(2, 0, 1)
    assert torch.equal(cut, (image * 255).round().to(torch.uint8))
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        ImageBank([torch.rand(30, 30)])


def sampler(bank, **kw):
    options = {"seed": 3, "rank": 0, "crop": 32, "batch": 4, "pairs": 64, "patch": 21, "max_shift": 2.0}
    return StepSampler(bank, **{**options, **kw})


@pytest.mark.parametrize(("max_shift", "pairs"), [(2.0, 64), (8.0, 2048)])
def test_pairs_read_the_image_where_the_transformation_says(max_shift, pairs):
    # ±8 px with many pairs: the rare diagonal shifts turned onto an axis reach (10 + 8)·√2 px
    bank = ImageBank([coordinate_image(120, 150), coordinate_image(100, 100)])
    batch = sampler(bank, max_shift=max_shift, pairs=pairs)(7)
    P, Q, delta = batch["patches"] * 255, batch["transformed"] * 255, batch["delta"]
    h = 10
    offsets = torch.arange(-h, h + 1, dtype=torch.float32)
    cx, cy = P[:, 0, h, h], P[:, 1, h, h]  # the pair's centre, read from the untransformed patch
    torch.testing.assert_close(P[:, 0], cx[:, None, None] + offsets[None, None, :].expand(-1, 21, 21))
    torch.testing.assert_close(P[:, 1], cy[:, None, None] + offsets[None, :, None].expand(-1, 21, 21))
    # I'(q) = I(c + Aᵀ(q − t)), A the rotation of OpenCV's getRotationMatrix2D (see warp_grid)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    qx, qy = dx - delta[:, 0, None, None], dy - delta[:, 1, None, None]
    cos, sin = torch.cos(delta[:, 2])[:, None, None], torch.sin(delta[:, 2])[:, None, None]
    torch.testing.assert_close(Q[:, 0], cx[:, None, None] + cos * qx - sin * qy, atol=2e-3, rtol=0)
    torch.testing.assert_close(Q[:, 1], cy[:, None, None] + sin * qx + cos * qy, atol=2e-3, rtol=0)
    assert delta[:, :2].abs().max() <= max_shift and 0 <= delta[:, 2].min() and delta[:, 2].max() < 2 * math.pi
    assert delta[:, 2].std() > 1  # rotations cover the circle


def test_pair_windows_stay_inside_the_images():
    R = pair_margin(21, 2.0)
    bank = ImageBank([coordinate_image(2 * R + 1, 2 * R + 1)])  # the smallest allowed: one possible centre
    batch = sampler(bank, crop=2 * R + 1)(0)
    assert torch.all(batch["patches"][:, 0, 10, 10] * 255 == R) and torch.all(batch["patches"][:, 1, 10, 10] * 255 == R)
    with pytest.raises(ValueError, match="at least 37 pixels"):
        sampler(ImageBank([coordinate_image(36, 80)]))


def test_crops_are_rectangles_of_the_step_images():
    images = [torch.randint(0, 256, (3, 50 + 7 * i, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(3)]
    batch = sampler(ImageBank(images), batch=6)(11)
    crops = (batch["crops"] * 255).round().to(torch.uint8)
    assert crops.shape == (6, 3, 32, 32)
    for crop in crops:  # each crop is found in one of the images
        found = any(torch.equal(img[:, y:y + 32, x:x + 32], crop) for img in images
                    for y in range(img.shape[1] - 31) for x in range(img.shape[2] - 31))
        assert found


def test_each_step_is_a_pure_function_of_seed_rank_and_step():
    bank = ImageBank([torch.rand(3, 80, 90), torch.rand(3, 70, 100)])
    s = sampler(bank, colour_augment=0.5, chroma_gain=2.0)
    first = s(5)
    s(6), s(100)  # drawing other steps in between changes nothing
    again = s(5)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["delta"], s(6)["delta"])
    assert not torch.equal(first["delta"], sampler(bank, colour_augment=0.5, chroma_gain=2.0, rank=1)(5)["delta"])


def test_colour_augment_permutes_channels_and_chroma_gain_keeps_grey():
    image = torch.stack([torch.full((64, 64), 0.1), torch.full((64, 64), 0.5), torch.full((64, 64), 0.9)])
    bank = ImageBank([image])
    plain = sampler(bank)(0)["crops"][:, :, 0, 0]
    torch.testing.assert_close(plain, torch.tensor([[26, 128, 230]] * 4) / 255)
    permuted = sampler(bank, colour_augment=1.0, batch=16, images_per_step=16)(0)["crops"][:, :, 0, 0]
    assert all(sorted(p.tolist()) == sorted(plain[0].tolist()) for p in permuted)
    assert len({tuple(p.tolist()) for p in permuted}) > 2
    gained = sampler(bank, chroma_gain=3.0, batch=16, images_per_step=16)(0)["crops"][:, :, 0, 0]
    torch.testing.assert_close(gained.mean(1), plain[0].mean().expand(16))  # grey unchanged
    spread = (gained[:, 2] - gained[:, 0]) / (plain[0, 2] - plain[0, 0])  # the colour part scaled by [1, 3]
    assert spread.min() >= 1 - 1e-5 and spread.max() <= 3 + 1e-5 and spread.max() - spread.min() > 0.5


@pytest.mark.parametrize("max_shift", [2.0, 8.0])  # one window per pair / a window following the shift plus the patch
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_pairs_warped_in_chunks_equal_pairs_warped_at_once(monkeypatch, chunk, max_shift):
    # On the CPU the pairs are warped a chunk at a time (cache-sized); that must not change a bit.
    from training import image_bank

    bank = ImageBank([torch.rand(3, 90, 120), torch.rand(3, 100, 80)])
    options = {"colour_augment": 0.5, "chroma_gain": 2.0, "pairs": 50, "context_patch": 29, "max_shift": max_shift}
    monkeypatch.setattr(image_bank, "CPU_PAIR_CHUNK", 10_000)
    whole = sampler(bank, **options)(3)
    monkeypatch.setattr(image_bank, "CPU_PAIR_CHUNK", chunk)
    chunked = sampler(bank, **options)(3)
    assert chunked["patches"].shape == (50, 3, 29, 29) and chunked["transformed"].shape == (50, 3, 21, 21)
    assert all(torch.equal(whole[k], chunked[k]) for k in whole)


@pytest.mark.parametrize("context_patch", [21, 29])
def test_a_window_following_the_shift_cuts_the_same_pairs(context_patch):
    # For long shifts the warp reads a small window around −Aᵀt and the patch is cut on its own
    # (fewer pixels copied); the batch must be the one a single window around the point gives.
    g = torch.Generator().manual_seed(0)  # not the global stream: the other tests' draws must not change these images
    bank = ImageBank([torch.rand(3, 120, 150, generator=g), torch.rand(3, 100, 100, generator=g)])
    options = {"colour_augment": 0.5, "chroma_gain": 2.0, "pairs": 512, "max_shift": 8.0, "context_patch": context_patch}
    following, centred = sampler(bank, **options), sampler(bank, **options)
    centred.follow_shift = False
    assert following.follow_shift and not sampler(bank).follow_shift  # ±8 px follows the shift; ±2 px does not
    a, b = following(4), centred(4)
    assert all(torch.equal(a[k], b[k]) for k in ("crops", "patches", "delta"))
    torch.testing.assert_close(a["transformed"], b["transformed"], atol=1e-5, rtol=0)  # the grid's float rounding


def test_whole_crops_are_warped_where_the_transformation_says():
    bank = ImageBank([coordinate_image(120, 150), coordinate_image(100, 100)])
    s = sampler(bank, whole_crops=True, max_shift=5.0, batch=6)
    batch = s(3)
    crops, warped, delta = batch["crops"] * 255, batch["transformed"] * 255, batch["delta"]
    assert set(batch) == {"crops", "transformed", "delta", "cell_keys"} and warped.shape == crops.shape == (6, 3, 32, 32)
    assert batch["cell_keys"].shape == (6, 8, 8)  # one per code cell of a 32-px crop at stride 4
    assert delta.shape == (6, 3) and delta[:, :2].abs().max() <= 5
    offsets = torch.arange(32, dtype=torch.float32)
    cx, cy = crops[:, 0, 16, 16], crops[:, 1, 16, 16]  # the crop's pixel 16, the centre of its turn
    torch.testing.assert_close(crops[:, 0], cx[:, None, None] + (offsets - 16)[None, None, :].expand(-1, 32, 32))
    torch.testing.assert_close(crops[:, 1], cy[:, None, None] + (offsets - 16)[None, :, None].expand(-1, 32, 32))
    # I'(c + q) = I(c + Aᵀ(q − t)), as for a pair about its point
    dy, dx = torch.meshgrid(offsets - 16, offsets - 16, indexing="ij")
    qx, qy = dx - delta[:, 0, None, None], dy - delta[:, 1, None, None]
    cos, sin = torch.cos(delta[:, 2])[:, None, None], torch.sin(delta[:, 2])[:, None, None]
    torch.testing.assert_close(warped[:, 0], cx[:, None, None] + cos * qx - sin * qy, atol=2e-3, rtol=0)
    torch.testing.assert_close(warped[:, 1], cy[:, None, None] + sin * qx + cos * qy, atol=2e-3, rtol=0)
    again = s(3)
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_whole_crops_need_room_to_turn():
    with pytest.raises(ValueError, match="at least 55 pixels a side to warp whole 32-pixel crops"):
        sampler(ImageBank([coordinate_image(54, 80)]), whole_crops=True)


@pytest.mark.parametrize(("max_shift", "context_patch", "pairs"), [(2.0, None, 100), (8.0, 29, 102)])
def test_pairs_in_crops_sit_on_code_cells_and_read_the_crop_where_the_transformation_says(max_shift, context_patch, pairs):
    bank = ImageBank([coordinate_image(120, 150), coordinate_image(100, 100)])
    s = sampler(bank, crop=64, batch=3, pairs=pairs, max_shift=max_shift, context_patch=context_patch, pairs_in_crops=True)
    batch = s(2)
    crops, Q, delta, cells = batch["crops"] * 255, batch["transformed"] * 255, batch["delta"], batch["cells"]
    assert set(batch) == {"crops", "transformed", "delta", "cells"} and Q.shape == (pairs, 3, 21, 21)
    crop, row, column = cells.unbind(1)
    assert torch.equal(crop, torch.arange(pairs) % 3)  # 100 pairs: the last crop has one fewer
    R = pair_margin(21, max_shift, context_patch)  # every sample, and the context cells' patches, inside the crop
    assert (4 * row).min() >= R and (4 * row).max() <= 63 - R and (4 * column).min() >= R and (4 * column).max() <= 63 - R
    assert len(set(row.tolist())) > 1 and len(set(column.tolist())) > 1
    # the pair's point in the image: the crop's corner (read from the coordinate image) plus the cell's pixel
    cx = crops[crop, 0, 0, 0] + 4 * column
    cy = crops[crop, 1, 0, 0] + 4 * row
    offsets = torch.arange(-10, 11, dtype=torch.float32)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    qx, qy = dx - delta[:, 0, None, None], dy - delta[:, 1, None, None]
    cos, sin = torch.cos(delta[:, 2])[:, None, None], torch.sin(delta[:, 2])[:, None, None]
    torch.testing.assert_close(Q[:, 0], cx[:, None, None] + cos * qx - sin * qy, atol=2e-3, rtol=0)
    torch.testing.assert_close(Q[:, 1], cy[:, None, None] + sin * qx + cos * qy, atol=2e-3, rtol=0)
    assert delta[:, :2].abs().max() <= max_shift and delta[:, 2].std() > 1
    again = s(2)
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_pairs_in_crops_need_a_code_cell_far_enough_inside():
    with pytest.raises(ValueError, match="use crops of at least 39 pixels"):  # a cell at 20 px, 18 px from both edges
        sampler(ImageBank([coordinate_image(80, 80)]), crop=38, pairs_in_crops=True)
    assert sampler(ImageBank([coordinate_image(80, 80)]), crop=39, pairs_in_crops=True).cells == (5, 5)
