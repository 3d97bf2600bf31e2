import numpy as np
import torch
from PIL import Image

from training.data import ImageFolder, PairBatches


def flat_folder(tmp_path):
    Image.fromarray(np.full((96, 96, 3), (25, 128, 230), np.uint8)).save(tmp_path / "flat.png")
    return ImageFolder(tmp_path, min_size=64)


def batches(folder, **kw):
    return PairBatches(folder, seed=0, rank=0, crop=32, batch=2, pairs=4, patch=21, max_shift=2.0, images_per_step=1, **kw)


def test_colour_augment_permutes_channels(tmp_path):
    folder = flat_folder(tmp_path)
    plain = batches(folder)[0]["crops"][0, :, 0, 0]
    torch.testing.assert_close(plain, torch.tensor([25, 128, 230]) / 255.0)
    orders = set()
    augmented = batches(folder, colour_augment=True)
    for step in range(12):
        b = augmented[step]
        values = b["crops"][0, :, 0, 0]
        assert sorted(values.tolist()) == sorted(plain.tolist())
        assert torch.equal(b["patches"][0, :, 0, 0], values)  # pairs come from the same permuted image
        orders.add(tuple(values.tolist()))
    assert len(orders) > 2


def test_batches_depend_only_on_seed_rank_and_step(tmp_path):
    folder = flat_folder(tmp_path)
    a, b = batches(folder)[5], batches(folder)[5]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other_rank = PairBatches(folder, seed=0, rank=1, crop=32, batch=2, pairs=4, patch=21, max_shift=2.0, images_per_step=1)[5]
    assert not torch.equal(a["delta"], other_rank["delta"])


def test_colour_augment_probability_permutes_a_share_of_the_images(tmp_path):
    folder = flat_folder(tmp_path)
    plain = tuple(batches(folder)[0]["crops"][0, :, 0, 0].tolist())
    half = batches(folder, colour_augment=0.5)
    kept = sum(tuple(half[s]["crops"][0, :, 0, 0].tolist()) == plain for s in range(60))
    assert 15 < kept < 45  # about half kept as is (plus the permutations that happen to be the identity)
    everything = batches(folder, colour_augment=1.0)
    same_as_true = batches(folder, colour_augment=True)
    assert all(torch.equal(everything[s]["crops"], same_as_true[s]["crops"]) for s in range(5))


def test_chroma_gain_scales_colour_around_grey_and_keeps_luminance(tmp_path):
    folder = flat_folder(tmp_path)
    plain = batches(folder)[0]["crops"][0, :, 0, 0]
    grey = plain.mean()
    strong = batches(folder, chroma_gain=3.0)
    factors = []
    for step in range(20):
        b = strong[step]
        values = b["crops"][0, :, 0, 0]
        torch.testing.assert_close(values.mean(), grey)  # luminance unchanged
        factor = float((values[2] - grey) / (plain[2] - grey))  # blue: the channel furthest from grey
        torch.testing.assert_close(values, grey + factor * (plain - grey))  # one factor for all channels
        assert torch.equal(b["patches"][0, :, 0, 0], values)  # pairs come from the same scaled image
        factors.append(factor)
    assert 1 <= min(factors) and max(factors) <= 3 and max(factors) - min(factors) > 1
    unit = batches(folder, chroma_gain=1.0)
    assert all(torch.equal(unit[s]["crops"], batches(folder)[s]["crops"]) for s in range(3))
