import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scg_core import save
from scg_core.formats import weights as weights_io
from scg_core.formats.images import load_image, tensor_to_pil
from scg_core.hosts import cli
from scg_core.hosts.cli import main, progress_bar, resolve_device
from scg_core.hosts.selection import parse_groups
from scg_core.tools.sheet import legend_height

ROOT = Path(__file__).resolve().parent.parent


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
    assert sheet.size == (columns * tile_w, legend_height(columns * tile_w) + -(-tiles // columns) * (tile_h + 18))


def test_no_default_weights_says_so(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights_io, "DEFAULT_WEIGHTS", tmp_path / "none.safetensors")
    assert main(["hint", str(photo), "-o", str(tmp_path / "h.png")]) == 2
    assert "bundled default Modular AE is missing" in capsys.readouterr().err
    assert not (tmp_path / "h.png").exists()


@pytest.mark.parametrize(
    "args,text",
    [
        (["--groups", "HC9"], "unknown group 'HC9'"),
        (["--gain", "HC0"], "group=factor"),
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
                           "--weights", str(weights), "--groups", "edges"], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "modules [5, 10, 12]" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "scg_core", "info", "--weights", str(weights), "--device", "cpu"],
                          check=False, capture_output=True, text=True)
    assert proc.returncode == 0 and "HC1 (brightness): modules [2, 3]" in proc.stdout and "device: cpu" in proc.stdout


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "doc.txt").write_text("not an image")
    Image.new("RGB", (12, 40)).save(tmp_path / "tiny.png")
    (tmp_path / "folder").mkdir()
    return tmp_path


# Every failure of the real entry point: exactly one "error:" line on stderr, exit code 2, nothing written.
# {photo}, {weights} and {tmp} are filled in; OUT = {tmp}/out.png is the default output.
FAILURES = [
    ("hint {photo} -o OUT --device cuda:99", "--device cuda:99"),
    ("hint {photo} -o OUT --device mps", "Apple silicon"),
    ("hint {photo} -o OUT --device gpu", "use cpu, cuda, cuda:N, mps or auto"),
    ("hint {photo} -o OUT --device meta", "use cpu, cuda, cuda:N, mps or auto"),
    ("info --device gpu", "use cpu, cuda, cuda:N, mps or auto"),
    ("hint {photo} -o OUT --groups HC9", "unknown group 'HC9'"),
    ("hint {photo} -o OUT --gain HC0", "group=factor"),
    ("hint {photo} -o OUT --gain HC1=0", "leave it out of the groups"),
    ("hint {photo} -o OUT --gain HC1=-1", "would invert the group; factors must be > 0 and ≤ 10"),
    ("hint {photo} -o OUT --modules 99", "module index 99 is out of range"),
    ("hint {photo} -o {tmp}/noext", "has no file extension; end it with one of .png"),
    ("hint {photo} -o {tmp}/out.gif", "cannot write '.gif' images; use one of .png"),
    ("hint {photo} -o {tmp}/folder", "is a folder; give a file name"),
    ("hint {photo} -o {photo}/out.png", "is a file, not a folder"),
    ("hint {photo} -o OUT --short-side 0", "--short-side 0: must be at least 21 pixels"),
    ("hint {photo} -o OUT --short-side -5", "--short-side -5: must be at least 21 pixels"),
    ("decompose {photo} -o OUT --tile 0", "--tile 0: must be from 64 to 1024"),
    ("decompose {photo} -o OUT --tile abc", "invalid int value: 'abc'"),
    ("hint {tmp}/folder -o OUT", "is a folder, not an image"),
    ("hint {tmp}/missing.png -o OUT", "image not found"),
    ("hint {tmp}/doc.txt -o OUT", "not an image"),
    ("hint {tmp}/tiny.png -o OUT", "receptive field"),
    ("hint {photo} -o OUT --weights {tmp}/folder", "is a folder, not a Modular AE weight file"),
    ("hint {photo} -o OUT --weights {tmp}/missing.safetensors", "weight file not found"),
    ("hint {photo} -o OUT --weights {tmp}/doc.txt", "not a readable safetensors file"),
    ("hint {photo}", "required: -o/--output"),
    ("", "required: command"),
]


@pytest.mark.parametrize("command,text", FAILURES, ids=[c or "no command" for c, _ in FAILURES])
def test_every_failure_is_one_error_line_and_exit_code_2(weights, photo, bad_files, command, text):
    argv = command.replace("OUT", "{tmp}/out.png").format(photo=photo, tmp=bad_files).split()
    if argv and "--weights" not in argv:
        argv += ["--weights", str(weights)]
    proc = subprocess.run([sys.executable, "-m", "scg_core", *argv], check=False, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert text in lines[0]
    assert not (bad_files / "out.png").exists() and proc.stdout == ""


def fake_torch(monkeypatch, cuda_build=True, gpus=0, mps=False):
    monkeypatch.setattr(torch.version, "cuda", "12.4" if cuda_build else None)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_devices_say_why_they_are_unavailable(monkeypatch):
    fake_torch(monkeypatch, cuda_build=False)
    with pytest.raises(ValueError, match=r"this torch build has no CUDA \(torch "):
        resolve_device("cuda")
    fake_torch(monkeypatch, cuda_build=True, gpus=0)
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        resolve_device("cuda:0")
    fake_torch(monkeypatch, gpus=1)
    with pytest.raises(ValueError, match=r"cuda:3: only 1 CUDA device \(cuda:0 to cuda:0\)"):
        resolve_device("cuda:3")
    assert resolve_device("CUDA:0") == torch.device("cuda", 0) and resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="only available on Apple silicon"):
        resolve_device("mps")
    for bad in ("gpu", "meta", "cuda:x", "cuda:-1", ""):
        with pytest.raises(ValueError, match="use cpu, cuda, cuda:N, mps or auto"):
            resolve_device(bad)


@pytest.mark.parametrize("gpus,mps,want", [(2, True, "cuda"), (0, True, "mps"), (0, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, gpus, mps, want):
    fake_torch(monkeypatch, gpus=gpus, mps=mps)
    assert resolve_device("auto").type == want and resolve_device(" cpu ") == torch.device("cpu")


def hint_pixels(path):
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("groups,same_as", [
    (["all"], "all"),
    (["colour,brightness"], "colour, brightness"),
    (["colour, brightness"], "colour, brightness"),
    (["colour", "brightness"], "colour, brightness"),
    (["colour,", "brightness"], "colour, brightness"),  # what the shell makes of: --groups colour, brightness
    (["colour", ",", "brightness"], "colour, brightness"),
])
def test_groups_take_the_nodes_grammar(released_ae, weights, photo, tmp_path, groups, same_as):
    out = main_hint(weights, photo, tmp_path, "--groups", *groups)
    expected = released_ae.hint(load_image(photo), groups=parse_groups(same_as))  # what the nodes compute
    assert np.array_equal(hint_pixels(out), np.asarray(tensor_to_pil(expected)))


def main_hint(weights, photo, tmp_path, *args):
    out = tmp_path / "h.png"
    assert main(["hint", str(photo), "-o", str(out), "--weights", str(weights), *args]) == 0
    return out


def test_repeated_and_comma_separated_gains_are_the_same(released_ae, weights, photo, tmp_path):
    a = hint_pixels(main_hint(weights, photo, tmp_path, "--gain", "HC0=1.5", "--gain", "HC1=2"))
    b = hint_pixels(main_hint(weights, photo, tmp_path, "--gain", "HC0=1.5, HC1=2"))
    expected = released_ae.hint(load_image(photo), gains={"HC0": 1.5, "HC1": 2.0})
    assert np.array_equal(a, b) and np.array_equal(a, np.asarray(tensor_to_pil(expected)))


def test_a_missing_output_folder_is_created_and_reported(weights, photo, tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "h.jpg"
    assert main(["hint", str(photo), "-o", str(out), "--weights", str(weights)]) == 0
    assert Image.open(out).format == "JPEG"
    assert f"; created folder {out.parent})" in capsys.readouterr().out
    assert main(["hint", str(photo), "-o", str(out), "--weights", str(weights)]) == 0
    assert "created folder" not in capsys.readouterr().out


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_shown_on_a_terminal_with_or_without_tqdm(monkeypatch):
    with progress_bar("decompose", io.StringIO()) as progress:
        assert progress is None  # a log file or a pipe gets no bar
    for tqdm_installed in (True, False):
        if not tqdm_installed:
            monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
        stream = Terminal()
        with progress_bar("decompose", stream) as progress:
            for done in range(1, 23):
                progress(done, 22)
        assert "decompose" in stream.getvalue() and "22/22" in stream.getvalue()


def test_decompose_drives_the_progress_bar(weights, photo, tmp_path, monkeypatch):
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    assert main(["decompose", str(photo), "-o", str(tmp_path / "s.png"), "--weights", str(weights), "--tile", "64"]) == 0
    assert "16/16" in stream.getvalue()  # one step per module of the released grouping


def test_interrupt_is_one_error_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    assert main(["info"]) == 2
    assert capsys.readouterr().err == "error: interrupted\n"


def test_every_example_in_the_help_runs(released_ae, tmp_path, monkeypatch, capsys):
    """The examples once used the official groups (HC3) without --weights, which the bundled default
    refuses; each one now runs as written (the official file: the released grouping, saved here)."""
    import shlex

    help_text = cli.build_parser().format_help()
    examples = [line.strip() for line in help_text.splitlines() if line.strip().startswith("python -m scg_core ")]
    assert len(examples) >= 3 and all(e in cli.__doc__ for e in examples)
    monkeypatch.chdir(tmp_path)
    a = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(a).save("photo.jpg")
    Image.fromarray(a).save("sketch.png")
    save(released_ae, "scg_official.safetensors")
    for example in examples:
        argv = shlex.split(example)[3:]
        assert main(argv) == 0, f"{example}: {capsys.readouterr().err}"
        assert Path(argv[argv.index("-o") + 1]).is_file()
