"""The ComfyUI nodes outside ComfyUI: IMAGE handling, errors, the ControlNet checks, and the
pack's import (as ComfyUI performs it). The same nodes run in a real ComfyUI in tests/host/."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from nodes import NODE_CLASS_MAPPINGS
from nodes.controlnet_nodes import sd15_problem
from scg_core import load_default

ROOT = Path(__file__).resolve().parent.parent
Encode = NODE_CLASS_MAPPINGS["SCGModularAEEncode"]


def encode(image, groups="brightness", gains=""):
    return Encode().encode(image, groups, gains=gains)["result"]


def test_encode_matches_scg_core_for_a_batch_channels_last():
    images = torch.rand(3, 40, 56, 3)
    hint, info = encode(images, "brightness, colour")
    want = load_default().hint(images.movedim(-1, 1), ["brightness", "colour"]).movedim(1, -1)
    assert hint.shape == (3, 40, 56, 3) and hint.dtype == torch.float32 and hint.is_contiguous()
    assert torch.allclose(hint, want, atol=1e-6)
    assert "3 image(s) 56×40" in info and "[brightness, colour]" in info


def test_gray_rgba_and_uint8_inputs_become_rgb():
    gray = torch.rand(1, 32, 32, 1)
    assert torch.allclose(encode(gray)[0], encode(gray.expand(-1, -1, -1, 3))[0])
    rgba = torch.cat([torch.rand(1, 32, 32, 3), torch.zeros(1, 32, 32, 1)], -1)  # fully transparent
    assert torch.allclose(encode(rgba)[0], encode(torch.ones(1, 32, 32, 3))[0])  # = white
    u8 = (torch.rand(1, 32, 32, 3) * 255).to(torch.uint8)
    assert torch.allclose(encode(u8)[0], encode(u8.float() / 255)[0])


@pytest.mark.parametrize("image, message", [
    (torch.rand(1, 32, 32, 5), "1–4 channels"),
    (torch.rand(2, 3, 32, 32, 3), "1–4 channels"),
    (torch.randint(0, 9, (1, 32, 32, 3), dtype=torch.int32), "float values"),
    (torch.rand(1, 8, 8, 3), "at least 21×21"),
])
def test_bad_images_are_named(image, message):
    with pytest.raises((ValueError, TypeError), match=message):
        encode(image)


def test_bad_groups_list_the_available_ones():
    with pytest.raises(ValueError, match="unknown group 'edgez'.*brightness"):
        encode(torch.rand(1, 32, 32, 3), "brightness, edgez")


def test_gains_scale_a_group_as_scg_core_does():
    x = torch.rand(2, 32, 40, 3)
    source = x.movedim(-1, 1).contiguous()
    gained, _ = encode(x, "brightness, colour", "brightness=0.5")
    model = load_default()
    want = torch.cat([model.hint(source[i : i + 1], ["brightness", "colour"], gains={"brightness": 0.5}) for i in range(2)])
    assert torch.equal(gained.movedim(-1, 1), want)  # the node works image by image
    assert not torch.allclose(gained, encode(x, "brightness, colour")[0])  # the gain did something


def test_decomposition_sheet_node_is_scg_cores_sheet_per_image():
    from scg_core.formats.images import pil_to_tensor
    from scg_core.tools.sheet import decomposition_sheet

    x = torch.rand(2, 48, 64, 3)
    sheet = NODE_CLASS_MAPPINGS["SCGDecompositionSheet"]().sheet(x, 128)[0]
    model = load_default()
    want = torch.cat([pil_to_tensor(decomposition_sheet(model, x[i : i + 1].movedim(-1, 1), tile=128)) for i in range(2)])
    assert sheet.shape[0] == 2 and sheet.shape[2] == 6 * 128
    assert torch.equal(sheet, want.movedim(1, -1))


def test_node_classes_are_named_as_registered():
    """Class name = registration key (keys are permanent: workflows refer to them), so a traceback
    or a search for the key finds the class."""
    import nodes

    for key, cls in NODE_CLASS_MAPPINGS.items():
        assert cls.__name__ == key and getattr(nodes, key, cls) is cls, key
    assert set(NODE_CLASS_MAPPINGS) == {"SCGLoadModularAE", "SCGModularAEEncode", "SCGControlNetApply",
                                        "SCGDecompositionSheet"}


def test_loader_node_gives_the_cached_autoencoder_of_its_choice():
    from nodes import models

    model = NODE_CLASS_MAPPINGS["SCGLoadModularAE"]().load(models.DEFAULT_NAME)[0]
    assert model is models.load(models.DEFAULT_NAME) and model.source_name == "default (bundled)"
    x = torch.rand(1, 32, 32, 3)
    other = load_default()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.2 * p.std() * torch.randn_like(p))  # a different autoencoder, same groups
    hint, info = Encode().encode(x, "brightness", modular_ae=other)["result"]
    assert torch.equal(hint.movedim(-1, 1), other.hint(x.movedim(-1, 1).contiguous(), ["brightness"]))
    assert not torch.allclose(hint, encode(x)[0]) and "of the autoencoder" in info


class _Attention(nn.Module):
    def __init__(self, context):
        super().__init__()
        self.to_k = nn.Linear(context, 8)


def fake_controlnet(context=768, channels=320, hint_channels=3):
    model = nn.Module()
    model.model_channels = channels
    model.input_hint_block = nn.Sequential(nn.Conv2d(hint_channels, 16, 3))
    model.block = nn.Module()
    model.block.attn2 = _Attention(context)
    cn = type("ControlNet", (), {})()
    cn.control_model = model
    return cn


def test_sd15_check_names_what_it_found():
    assert sd15_problem(fake_controlnet()) is None
    assert "SD2.x" in sd15_problem(fake_controlnet(context=1024))
    assert "SDXL" in sd15_problem(fake_controlnet(context=2048))
    assert "320" in sd15_problem(fake_controlnet(channels=192))
    assert "1-channel hints" in sd15_problem(fake_controlnet(hint_channels=1))
    t2i = sd15_problem(type("T2IAdapter", (), {})())
    assert "T2I-Adapter, which cannot take the SCG hint" in t2i
    assert "SD1.5 ControlNet trained on SCG hints" in t2i
    assert "python -m training.train_controlnet" in t2i and "python -m scg_core.convert official-controlnet" in t2i


def validate_like_comfyui(cls, inputs: dict):
    """Call ``cls.VALIDATE_INPUTS`` as ComfyUI's execution.validate_inputs does: only the arguments it
    declares, a linked input (``[node_id, slot]``) as ``None``, an input absent from the prompt left out."""
    import inspect

    declared = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
    wanted = inspect.getfullargspec(cls.VALIDATE_INPUTS).args
    values = {k: (None if isinstance(v, list) else v) for k, v in inputs.items() if k in declared}
    return cls.VALIDATE_INPUTS(**{k: v for k, v in values.items() if k in wanted})


@pytest.mark.parametrize("kind", ["SCGModularAEEncode", "SCGControlNetApply"])
def test_groups_and_gains_are_checked_before_the_run(kind):
    cls = NODE_CLASS_MAPPINGS[kind]
    ok = validate_like_comfyui
    assert ok(cls, {"groups": "brightness, colour", "gains": "colour=0.5", "image": ["1", 0]}) is True
    assert ok(cls, {"groups": "all", "gains": ""}) is True
    unknown = ok(cls, {"groups": "brightness, edgez", "gains": ""})
    assert unknown.startswith("unknown group 'edgez'; this autoencoder's groups are: colour, brightness")
    assert "bundled default autoencoder" in unknown and "modular_ae is not connected" in unknown
    assert "unknown group 'colourz'" in ok(cls, {"groups": "brightness", "gains": "colourz=2"})
    assert ok(cls, {"groups": "brightness", "gains": "colour=abc"}).startswith("gains: cannot read 'colour=abc'")
    assert "empty name between commas" in ok(cls, {"groups": "brightness,,colour", "gains": ""})
    # a connected autoencoder is known only at run time: its names are not checked, the syntax is
    assert ok(cls, {"groups": "HC2, HC3", "gains": "HC0=2", "modular_ae": ["4", 0]}) is True
    assert "cannot read" in ok(cls, {"groups": "HC2", "gains": "HC0", "modular_ae": ["4", 0]})
    # groups fed through a link: unknown before the run
    assert ok(cls, {"groups": ["9", 0], "gains": ""}) is True


def test_nodes_sit_where_controlnet_users_look_and_say_they_output_a_hint():
    from devtools.workflow_format import definition_of

    expected = {"SCGLoadModularAE": "loaders", "SCGModularAEEncode": "ControlNet Preprocessors/SCG",
                "SCGDecompositionSheet": "ControlNet Preprocessors/SCG", "SCGControlNetApply": "conditioning/controlnet"}
    assert {name: definition_of(cls)["category"] for name, cls in NODE_CLASS_MAPPINGS.items()} == expected
    encode = NODE_CLASS_MAPPINGS["SCGModularAEEncode"]
    assert "outputs an image hint" in encode.DESCRIPTION.lower() and encode.RETURN_NAMES[0] == "hint"
    for cls in NODE_CLASS_MAPPINGS.values():
        assert "SCG" in cls.SEARCH_ALIASES and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    for name in ("SCGModularAEEncode", "SCGControlNetApply", "SCGDecompositionSheet"):
        aliases = {a.lower() for a in NODE_CLASS_MAPPINGS[name].SEARCH_ALIASES}
        assert {"hint", "preprocessor"} <= aliases, name


def test_the_apply_node_says_the_hint_is_a_centre_crop_to_the_latent():
    apply = NODE_CLASS_MAPPINGS["SCGControlNetApply"]
    latent = apply.INPUT_TYPES()["optional"]["latent"][1]["tooltip"]
    hint = apply.OUTPUT_TOOLTIPS[apply.RETURN_NAMES.index("hint")]
    for text in (latent, hint):
        assert "size × 8" in text and "centre-cropped" in text and "cut off" in text


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd="/", check=False)


def test_pack_imports_like_comfyui_loads_it_without_heavy_modules():
    result = run_python(f"""
        import importlib.util, sys, time
        t = time.perf_counter()
        spec = importlib.util.spec_from_file_location("scg-nodes", {str(ROOT / '__init__.py')!r})
        module = importlib.util.module_from_spec(spec); sys.modules["scg-nodes"] = module
        spec.loader.exec_module(module)
        print(sorted(module.NODE_DISPLAY_NAME_MAPPINGS.values()))
        print("kornia" in sys.modules, "scg_core.model.modular_ae" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr
    names, heavy = result.stdout.strip().splitlines()
    assert "Modular AE Encode (hypercolumn)" in names and "SCG ControlNet Apply" in names
    assert heavy == "False False"


def test_missing_package_is_named_at_run_time_not_a_start_up_traceback():
    result = run_python(f"""
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "safetensors" else real(name, *a)
        spec = importlib.util.spec_from_file_location("scg-nodes", {str(ROOT / '__init__.py')!r})
        module = importlib.util.module_from_spec(spec); sys.modules["scg-nodes"] = module
        spec.loader.exec_module(module)
        import torch
        try:
            module.NODE_CLASS_MAPPINGS["SCGModularAEEncode"]().encode(torch.rand(1, 32, 32, 3), "brightness")
        except RuntimeError as e:
            print("RUNTIME:", e)
    """)
    assert result.returncode == 0, result.stderr
    assert "missing Python package(s) safetensors" in result.stderr  # the start-up log line
    assert "RUNTIME: SCG nodes need the Python package(s) safetensors: run `pip install safetensors`" in result.stdout
    assert "Traceback" not in result.stderr


def test_autoencoder_is_cached_and_reloaded_when_the_file_changes(tmp_path, monkeypatch):
    from nodes import models
    from scg_core import save

    assert models.load(models.DEFAULT_NAME) is models.load(models.DEFAULT_NAME)
    path = tmp_path / "mine.safetensors"
    save(load_default(), path)
    fake = type("folder_paths", (), {"get_full_path": staticmethod(lambda folder, name: str(tmp_path / name)),
                                     "get_filename_list": staticmethod(lambda folder: ["mine.safetensors"]),
                                     "get_folder_paths": staticmethod(lambda folder: [str(tmp_path)])})
    monkeypatch.setattr(models, "_folder_paths", lambda: fake)
    assert models.list_autoencoders() == [models.DEFAULT_NAME, "mine.safetensors"]
    first = models.load("mine.safetensors")
    assert models.load("mine.safetensors") is first
    import os
    os.utime(path, ns=(1, 1))  # the file was replaced
    assert models.load("mine.safetensors") is not first
    with pytest.raises(FileNotFoundError, match="'gone.safetensors' not found in"):
        models.load("gone.safetensors")


def test_comfyui_hooks_progress_interruption_and_devices(monkeypatch):
    """With ComfyUI's model_management/utils present, a batch reports progress per image, stops at
    the cancel button and leaves its result on the intermediate device."""
    import types

    calls = {"updates": 0, "checks": 0}

    class Interrupted(Exception):
        pass

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("meta")

    def check():
        calls["checks"] += 1
        if calls.get("cancel_at") == calls["checks"]:
            raise Interrupted()
    mm.throw_exception_if_processing_interrupted = check
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total):
            calls["total"] = total

        def update(self, n):
            calls["updates"] += n
    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils = mm, utils
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)

    hint, _ = encode(torch.rand(4, 32, 32, 3))
    assert hint.device.type == "meta" and calls["total"] == 4 and calls["updates"] == 4
    calls.update(updates=0, checks=0, cancel_at=3)
    with pytest.raises(Interrupted):
        encode(torch.rand(4, 32, 32, 3))
    assert calls["updates"] == 2  # two images done, stopped before the third


def test_a_dangling_file_in_the_controlnet_folder_is_skipped_when_looking_for_scg_metadata(tmp_path, caplog):
    from nodes import controlnet_nodes

    broken = tmp_path / "gone.safetensors"
    broken.symlink_to(tmp_path / "deleted.safetensors")  # a model removed behind ComfyUI's back
    assert controlnet_nodes._scg_header(str(broken)) == (None, None)
    assert "gone.safetensors" in caplog.text


def test_the_info_line_says_when_a_group_is_shown_at_a_display_gain():
    from nodes.hint_nodes import compute_hint
    from scg_core.model.groups import Group

    ae = load_default()
    ae.groups = tuple(Group(g.name, g.modules, g.label, 3.5 if g.label == "edges" else 1.0) for g in ae.groups)
    edges = [g.name for g in ae.groups if g.label == "edges"]  # the default's two edge scales
    image = torch.rand(1, 40, 48, 3)
    _, info = compute_hint(ae, image, "edges", "")
    assert f"(display: {', '.join(f'{name} ×3.5' for name in edges)})" in info
    _, info = compute_hint(ae, image, "brightness", "")
    assert "display:" not in info
