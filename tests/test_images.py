import numpy as np
import pytest
import torch
from PIL import Image

from scg_core.formats.images import ImageError, load_image, save_image, to_rgb


def test_rgb_round_trip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    x = load_image(tmp_path / "x.png")
    assert x.shape == (1, 3, 20, 30) and x.dtype == torch.float32
    save_image(x, tmp_path / "y.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "y.png")), a)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.full((8, 9), 51, np.uint8), "L").save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    assert x.shape == (1, 3, 8, 9) and torch.allclose(x, torch.full_like(x, 0.2))


def test_sixteen_bit_grayscale_uses_the_full_range(tmp_path):
    a = np.array([[0, 32768], [65535, 16384]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    x = load_image(tmp_path / "d.png")
    torch.testing.assert_close(x[0, 0], torch.tensor([[0.0, 32768 / 65535], [1.0, 16384 / 65535]]))


def test_transparency_is_composited_over_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent …
    a[1, 1] = (0, 0, 0, 255)  # … except one opaque black pixel
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    x = load_image(tmp_path / "t.png")
    assert x[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and x[0, :, 1, 1].tolist() == [0.0, 0.0, 0.0]
    Image.fromarray(a[..., [0, 3]], "LA").save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png")[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_palette_and_cmyk(tmp_path):
    Image.new("P", (5, 5), 3).save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (1, 3, 5, 5)
    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    x = load_image(tmp_path / "c.jpg")
    assert x[0, 0].mean() > 0.9 and x[0, 1].mean() < 0.1  # red


def test_not_an_image_and_damaged_image(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "notes.txt")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError):
        load_image(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_to_rgb_for_tensors():
    assert to_rgb(torch.rand(2, 1, 4, 4)).shape == (2, 3, 4, 4)
    rgba = torch.zeros(1, 4, 2, 2)  # transparent black
    assert torch.equal(to_rgb(rgba), torch.ones(1, 3, 2, 2))
    with pytest.raises(ImageError, match="5 channels"):
        to_rgb(torch.rand(1, 5, 2, 2))


def test_resize_is_antialiased_bicubic_clamped_and_keeps_an_image_of_that_size():
    from scg_core.formats.images import resize, resize_short_side

    x = torch.rand(1, 3, 96, 120)
    assert resize(x, (96, 120)) is x and resize_short_side(x, 96) is x
    want = torch.nn.functional.interpolate(x, size=(48, 60), mode="bicubic", align_corners=False, antialias=True)
    assert torch.equal(resize_short_side(x, 48), want.clamp(0, 1))
    assert resize_short_side(torch.rand(1, 3, 50, 30), 21).shape == (1, 3, 35, 21)
    up = resize(torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]]), (8, 8))
    assert up.min() >= 0 and up.max() <= 1  # bicubic overshoot is clamped
    with pytest.raises(ValueError, match="short side 0: must be at least 1 pixel"):
        resize_short_side(x, 0)


def test_arrays_from_hosts_become_float_tensors_without_rounding(tmp_path):
    from scg_core.formats.images import array_to_tensor, pil_to_tensor

    a = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert torch.equal(array_to_tensor(a), pil_to_tensor(Image.fromarray(a)))  # the CLI reads PNGs the same way
    f = np.random.default_rng(2).random((20, 30, 3)).astype(np.float32)
    assert torch.equal(array_to_tensor(f), torch.from_numpy(f).permute(2, 0, 1)[None])  # no 8-bit detour
    gray = array_to_tensor(np.full((4, 5), 51, np.uint8))
    assert gray.shape == (1, 3, 4, 5) and gray.is_contiguous() and torch.allclose(gray, torch.full_like(gray, 0.2))
    rgba = np.zeros((2, 2, 4), np.uint8)  # transparent black: white
    assert torch.equal(array_to_tensor(rgba), torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="C in 1…4"):
        array_to_tensor(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="uint8 or float pixels"):
        array_to_tensor(np.zeros((2, 2, 3), np.int32))
