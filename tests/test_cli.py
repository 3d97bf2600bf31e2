import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from scg_core import save, weights_io
from scg_core.cli import main
from scg_core.images import load_image


@pytest.fixture
def weights(released_ae, tmp_path):
    return save(released_ae, tmp_path / "ae.safetensors")


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:120]
    a = np.stack([xx * 2, yy * 2, (xx + yy)], -1) % 256 + rng.integers(0, 20, (96, 120, 3))
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(tmp_path / "photo.png")
    return tmp_path / "photo.png"


def test_hint_writes_exactly_the_library_hint(released_ae, weights, photo, tmp_path):
    out = tmp_path / "hint.png"
    assert main(["hint", str(photo), "-o", str(out), "--weights", str(weights), "--groups", "HC3", "HC1", "--gain", "HC1=1.5"]) == 0
    expected = released_ae.hint(load_image(photo), groups=["HC3", "HC1"], gains={"HC1": 1.5})
    written = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1).float() / 255
    assert written.shape == (3, 96, 120)
    assert (written - expected[0]).abs().max() <= 0.5 / 255 + 1e-6


def test_decompose_writes_a_labelled_sheet(weights, photo, tmp_path):
    out = tmp_path / "sheet.png"
    assert main(["decompose", str(photo), "-o", str(out), "--weights", str(weights), "--tile", "64"]) == 0
    sheet = Image.open(out)
    tiles = 1 + 6 + 16  # input, six groups, sixteen modules
    columns, tile_w, tile_h = 6, 64, round(96 * 64 / 120)
    assert sheet.size == (columns * tile_w, -(-tiles // columns) * (tile_h + 18))


def test_no_default_weights_says_so(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights_io, "DEFAULT_WEIGHTS", tmp_path / "none.safetensors")
    assert main(["hint", str(photo), "-o", str(tmp_path / "h.png")]) == 2
    assert "no default Modular AE is installed yet" in capsys.readouterr().err
    assert not (tmp_path / "h.png").exists()


@pytest.mark.parametrize(
    "args,text",
    [
        (["--groups", "HC9"], "unknown group 'HC9'"),
        (["--gain", "HC0"], "NAME=FACTOR"),
        (["--gain", "HC0=nan"], "finite"),
    ],
)
def test_bad_options_are_explained(weights, photo, tmp_path, capsys, args, text):
    assert main(["hint", str(photo), "-o", str(tmp_path / "h.png"), "--weights", str(weights), *args]) == 2
    assert text in capsys.readouterr().err


def test_bad_images_are_explained(weights, tmp_path, capsys):
    (tmp_path / "doc.txt").write_text("not an image")
    assert main(["hint", str(tmp_path / "doc.txt"), "-o", str(tmp_path / "h.png"), "--weights", str(weights)]) == 2
    assert "not an image" in capsys.readouterr().err
    Image.new("RGB", (12, 40)).save(tmp_path / "tiny.png")
    assert main(["hint", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "h.png"), "--weights", str(weights)]) == 2
    assert "receptive field" in capsys.readouterr().err


def test_gray_rgba_and_16_bit_inputs_are_accepted(weights, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, (50, 40), dtype=np.uint16)).save(tmp_path / "d16.png")
    Image.new("RGBA", (40, 50), (10, 20, 30, 128)).save(tmp_path / "rgba.png")
    Image.new("L", (40, 50), 77).save(tmp_path / "gray.png")
    for name in ("d16.png", "rgba.png", "gray.png"):
        assert main(["hint", str(tmp_path / name), "-o", str(tmp_path / f"h_{name}"), "--weights", str(weights)]) == 0
        assert Image.open(tmp_path / f"h_{name}").size == (40, 50)


def test_short_side_resizes_first(weights, photo, tmp_path):
    out = tmp_path / "h.png"
    assert main(["hint", str(photo), "-o", str(out), "--weights", str(weights), "--short-side", "48"]) == 0
    assert Image.open(out).size == (60, 48)


def test_module_entry_point_and_info(weights, photo, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scg_core", "hint", str(photo), "-o", str(tmp_path / "h.png"),
                           "--weights", str(weights), "--groups", "edges"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "modules [5, 10, 12]" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "scg_core", "info", "--weights", str(weights)], capture_output=True, text=True)
    assert proc.returncode == 0 and "HC1 (brightness): modules [2, 3]" in proc.stdout
