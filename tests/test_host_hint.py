"""One hint in every host: the same image, groups, gains and size give the same hint through the
ComfyUI nodes, the A1111/Forge tab and preprocessor, and the CLI — each called through its own entry
function, all resting on :func:`scg_core.hosts.hint.source_hint`."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import nodes as node_pack
from nodes import NODE_CLASS_MAPPINGS
from scg_core import load_default
from scg_core.formats.images import tensor_to_pil
from scg_core.hosts.cli import main
from scg_core.hosts.hint import source_hint

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from scg_webui.hosts import NoControlNet  # scripts/ is on sys.path only from here
from scg_webui.service import HintService, Settings
from scg_webui.ui import TabCallbacks
from scg_webui.webui_entry import preprocessor_run

H, W = 128, 160  # shorter side 64 gives 64×80: a whole latent (8×10) for the ControlNet node


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """``[H,W,3]`` uint8 with smooth and sharp structure and noise (rounding differences would show)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:H, 0:W]
    a = np.stack([xx * 1.5, yy * 2.0, 128 + 100 * np.sin(xx / 5.0)], -1) + rng.normal(0, 12, (H, W, 3))
    a[40:48, 30:130] = 15
    return np.clip(a, 0, 255).astype(np.uint8)


def to_uint8(hint: torch.Tensor) -> np.ndarray:
    """``[1,3,H,W]`` or a ComfyUI ``[1,H,W,3]`` in [0,1] → uint8 ``[H,W,3]``, rounded as the CLI and A1111 do."""
    return np.asarray(tensor_to_pil(hint if hint.shape[1] == 3 else hint.movedim(-1, 1)))


class _ApplyAdvanced:
    """ComfyUI's ControlNetApplyAdvanced, which SCGControlNetApply ends with: here it only passes through."""

    def apply_controlnet(self, positive, negative, **kwargs):
        return positive, negative


def sd15_controlnet():
    """The parts of an SD1.5 ControlNet the apply node checks: 3-channel hint block, 320 channels."""
    model = nn.Module()
    model.input_hint_block = nn.Sequential(nn.Conv2d(3, 16, 3))
    return type("ControlNet", (), {"control_model": model})()


def comfyui(photo, groups, gains, short_side, monkeypatch) -> torch.Tensor:
    image = torch.from_numpy(photo)[None].float() / 255  # LoadImage's IMAGE: [1,H,W,3] float
    if short_side is None:
        return NODE_CLASS_MAPPINGS["SCGModularAEEncode"]().encode(image, groups, gains=gains)["result"][0]
    monkeypatch.setattr(node_pack, "ControlNetApplyAdvanced", _ApplyAdvanced, raising=False)  # `import nodes` = ComfyUI's
    h, w = short_side, round(W * short_side / H)
    latent = {"samples": torch.zeros(1, 4, h // 8, w // 8)}
    out = NODE_CLASS_MAPPINGS["SCGControlNetApply"]().apply([], [], sd15_controlnet(), image, groups, 1.0, 0.0, 1.0,
                                                           gains=gains, latent=latent)
    return out["result"][2]


def a1111_tab(photo, groups, gains, short_side) -> np.ndarray:
    tab = TabCallbacks(HintService(), NoControlNet(), lambda: Settings(device="cpu"))
    if short_side is None:
        return tab.reselect(photo, groups, gains)[0]
    return tab.generation_hint(photo, groups, gains, width=round(W * short_side / H), height=short_side)


def cli(photo, groups, gains, short_side, tmp_path) -> np.ndarray:
    source, out = tmp_path / "photo.png", tmp_path / "hint.png"
    Image.fromarray(photo).save(source)
    argv = ["hint", str(source), "-o", str(out), "--groups", groups]
    argv += ["--gain", gains] if gains else []
    argv += ["--short-side", str(short_side)] if short_side else []
    assert main(argv) == 0
    return np.asarray(Image.open(out).convert("RGB"))


@pytest.mark.parametrize("short_side", [None, 64], ids=["own-size", "resized"])
@pytest.mark.parametrize("groups, gains, group_number", [
    ("brightness", "", 2),  # what the A1111/Forge preprocessor's slider can pick
    ("colour, edges", "edges=1.5", None),  # several groups and a gain: the tab, the nodes, the CLI
])
def test_every_host_gives_the_same_hint(photo, tmp_path, monkeypatch, groups, gains, group_number, short_side):
    model = load_default()
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    names = [g.strip() for g in groups.split(",")]
    gain = {k: float(v) for k, v in (g.split("=") for g in gains.split(",") if g)}
    want = source_hint(model, x, names, gain, short_side=short_side)

    node = comfyui(photo, groups, gains, short_side, monkeypatch)
    assert torch.equal(node.movedim(-1, 1), want)  # exactly, not merely close
    expected = to_uint8(want)
    hosts = {"ComfyUI": to_uint8(node), "A1111 tab": a1111_tab(photo, groups, gains, short_side),
             "CLI": cli(photo, groups, gains, short_side, tmp_path)}
    if group_number is not None:
        run = preprocessor_run(HintService(), lambda: Settings(device="cpu"))
        hosts["A1111/Forge preprocessor"] = run(photo, short_side or H, group_number)
    size = (short_side or H, round(W * (short_side or H) / H))
    for host, hint in hosts.items():
        assert hint.shape == (*size, 3) and hint.dtype == np.uint8, host
        assert np.array_equal(hint, expected), f"{host}: {np.abs(hint.astype(int) - expected).max()} levels off"


def test_a_float_source_is_never_rounded_to_8_bits_before_the_hint():
    """The A1111 tab used to round its source to uint8 after resizing (array → tensor → resize →
    uint8 → array → tensor); a float source now reaches the hint as it is."""
    rng = np.random.default_rng(0)
    source = rng.random((64, 80, 3)).astype(np.float32)
    tab = TabCallbacks(HintService(), NoControlNet(), lambda: Settings(device="cpu"))
    got = tab.generation_hint(source, ["brightness"], "", width=40, height=32)
    want = source_hint(load_default(), torch.from_numpy(source).permute(2, 0, 1)[None], ["brightness"], size=(32, 40))
    assert np.array_equal(got, to_uint8(want))


def test_source_hint_resizes_once_then_hints():
    model = load_default()
    x = torch.rand(2, 3, 96, 120)
    assert source_hint(model, x, ["colour"]).shape == (2, 3, 96, 120)
    resized = source_hint(model, x, ["colour"], short_side=48)
    from scg_core.formats.images import fit_to_size, resize_short_side

    assert torch.equal(resized, model.hint(resize_short_side(x, 48), ["colour"]))
    assert torch.equal(source_hint(model, x, size=(40, 40)), model.hint(fit_to_size(x, (40, 40))))
    channels_last = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # how ComfyUI's IMAGE arrives
    assert torch.equal(source_hint(model, channels_last, ["colour"]), source_hint(model, x, ["colour"]))
    with pytest.raises(ValueError, match="short_side or size, not both"):
        source_hint(model, x, short_side=48, size=(40, 40))
