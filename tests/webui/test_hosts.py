"""The A1111 / Forge adapter against fakes of the host modules (tests/webui/fake_webui.py).

What runs real here: scg_core, the adapter's code. What is faked: the hosts' modules (they are
not installable here); the fakes record the calls, and these tests check what was asked for.
"""

import sys

import numpy as np
import pytest
from scg_webui.hosts import (
    PREPROCESSOR_NAME,
    A1111ControlNet,
    ForgeControlNet,
    NoControlNet,
    detect_host,
)
from scg_webui.service import DEFAULT_NAME, HintService, Settings
from scg_webui.ui import TabCallbacks
from scg_webui.webui_entry import SECTION, preprocessor_run, read_settings, register

import scg_core

from . import fake_webui as fake


@pytest.fixture
def record():
    return fake.Recorder()


def a1111(monkeypatch, record, tmp_path):
    files = fake.controlnet_files(tmp_path / "ControlNet", {n: n.startswith("scg") for n in fake.CN_MODELS})
    fake.install(monkeypatch, {**fake.webui_core(record, str(tmp_path)), **fake.sd_webui_controlnet(record, files)})


def forge(monkeypatch, record, tmp_path, image_fg=True):
    files = fake.controlnet_files(tmp_path / "ControlNet", {"control_v11p_sd15_canny [d14c016b]": False,
                                                            "scg_edges [1234abcd]": True})
    fake.install(monkeypatch, {**fake.webui_core(record, str(tmp_path), main_thread=True),
                               **fake.forge_controlnet(record, image_fg=image_fg, files=files)})


def callbacks(host, **settings):
    return TabCallbacks(HintService(), host, lambda: Settings(**settings))


def generate(cb, groups=("brightness",), width=96, height=64):
    model = (cb.host.models() or ["some model"])[0]
    return cb.generate(fake.test_image(), list(groups), "", model, "a cat", "blurry", 42, 12, width, height,
                       6.5, 0.8, 0.1, 0.9)


def processing_call(record):
    return next(args[0] for name, args, _ in record.calls if name == "process_images")


def test_a1111_generation_builds_the_unit_the_extension_needs(monkeypatch, record, tmp_path):
    a1111(monkeypatch, record, tmp_path)
    host = detect_host()
    assert isinstance(host, A1111ControlNet)
    assert host.models() == fake.CN_MODELS[::-1]  # SCG ControlNets (SCG metadata in the file) first
    cb = callbacks(host)
    images, info = generate(cb)
    assert "Generated 1 image" in info, info
    p = processing_call(record)
    assert (p.prompt, p.negative_prompt, p.seed, p.steps, p.width, p.height, p.cfg_scale) == ("a cat", "blurry", 42, 12, 96, 64, 6.5)
    assert p.is_api and p.sampler_name == "Euler a" and p.batch_size == 1
    [cn] = p.scripts.alwayson_scripts  # only a copy of the ControlNet script runs, carrying our one unit
    assert cn.title() == "ControlNet" and (cn.args_from, cn.args_to) == (0, 1)
    [unit] = p.script_args_value
    assert unit.enabled is True and unit.module == "none" and unit.model == "scg_brightness [0a1b2c3d]"
    assert unit.weight == 0.8 and (unit.guidance_start, unit.guidance_end) == (0.1, 0.9)
    assert unit.resize_mode == "Just Resize" and unit.control_mode == "Balanced"
    assert unit.image.dtype == np.uint8 and unit.image.shape == (64, 96, 3)  # RGB at the generation size
    np.testing.assert_array_equal(unit.image, cb.generation_hint(fake.test_image(), ["brightness"], "", 96, 64))
    from modules import scripts

    runner = scripts.scripts_txt2img  # the host's own runner is untouched
    assert len(runner.alwayson_scripts) == 3 and runner.alwayson_scripts[1].args_from == 7 and runner.callback_map
    assert record.names().count("state.begin") == 1 and record.names()[-2:] == ["state.end", "p.close"]
    assert len(images) == 2 and images[0].shape == (64, 96, 3)  # the hint, then the image (not CN's detected map)


@pytest.mark.parametrize("image_fg", [True, False])
def test_forge_generation_uses_its_unit_format_and_main_thread(monkeypatch, record, tmp_path, image_fg):
    forge(monkeypatch, record, tmp_path, image_fg=image_fg)
    host = detect_host()
    assert isinstance(host, ForgeControlNet)
    assert host.models() == ["scg_edges [1234abcd]", "control_v11p_sd15_canny [d14c016b]"]
    cb = callbacks(host)
    images, info = generate(cb, groups=["edges_fine (edges)"], width=64, height=80)
    assert "Generated 1 image" in info, info
    assert "main_thread" in record.names()
    [unit] = processing_call(record).script_args_value
    assert unit.enabled and unit.module == "None" and unit.model == "scg_edges [1234abcd]"
    assert unit.control_mode == "Balanced" and unit.resize_mode == "Just Resize"  # strings, as Forge compares them
    assert (unit.processor_res, unit.threshold_a, unit.threshold_b) == (512, 0.5, 0.5)  # never negative
    want = cb.generation_hint(fake.test_image(), ["edges_fine"], "", 64, 80)
    if image_fg:  # gradio-4 Forge: the image itself, plus an empty foreground layer
        np.testing.assert_array_equal(unit.image, want)
        assert unit.image_fg.shape == (80, 64, 4) and not unit.image_fg.any()
    else:  # older Forge: {"image", "mask"}
        np.testing.assert_array_equal(unit.image["image"], want)
        assert unit.image["mask"].shape == (80, 64, 3) and not unit.image["mask"].any()


def test_preprocessor_registers_under_both_registries_and_computes_the_hint(monkeypatch, record, tmp_path):
    service, settings = HintService(), Settings()
    model = service.model(settings)
    run = preprocessor_run(service, lambda: settings)
    image = fake.test_image(100, 150)
    for install in (a1111, forge):
        install(monkeypatch, record, tmp_path)
        host = detect_host()
        assert host.register_preprocessor(run, "group", len(model.groups)) is True
        assert host.register_preprocessor(run, "group", len(model.groups)) is False  # scripts reloaded: no error
        if isinstance(host, A1111ControlNet):
            p = host.preprocessors.Preprocessor.get_preprocessor(PREPROCESSOR_NAME)
            assert p.slider_1.maximum == len(model.groups) and p.slider_1.step == 1
        else:
            p = host.shared.supported_preprocessors[PREPROCESSOR_NAME]
            assert p.name == PREPROCESSOR_NAME and p.slider_1.gradio_update_kwargs["visible"]
        out = p(image, 100, slider_1=2, slider_2=0.5, low_vram=False)  # group 2, at its own size
        want = service.hint(settings, image, [model.groups[1].name])
        np.testing.assert_array_equal(out, want)
        assert out.dtype == np.uint8 and out.shape == (100, 150, 3)
        smaller = p(image, 50, slider_1=0)  # resolution = shorter side; 0 = every module
        assert smaller.shape == (50, 75, 3)


def test_without_a_controlnet_the_tab_says_so_and_generation_refuses(monkeypatch, record, tmp_path):
    fake.install(monkeypatch, fake.webui_core(record, str(tmp_path)))
    host = detect_host()
    assert isinstance(host, NoControlNet) and "sd-webui-controlnet" in host.problem()
    cb = callbacks(host)
    images, info = generate(cb)
    assert images == [] and "No ControlNet found" in info
    hint, sheet, text = cb.preview(fake.test_image(), ["brightness"], "")  # the preview still works
    assert hint.shape == (90, 120, 3) and sheet.ndim == 3 and "brightness" in text


def test_register_adds_settings_tab_and_preprocessor_hooks(monkeypatch, record, tmp_path):
    a1111(monkeypatch, record, tmp_path)
    from modules import paths, script_callbacks, shared

    register(script_callbacks, shared, paths)
    hooks = {name: args[0] for name, args, _ in record.calls if name.startswith("on_")}
    assert set(hooks) == {"on_ui_settings", "on_before_ui", "on_ui_tabs"}
    hooks["on_before_ui"]()  # after every extension has loaded: the preprocessor joins CN's registry
    assert sys.modules["scripts.supported_preprocessor"].Preprocessor.get_preprocessor(PREPROCESSOR_NAME) is not None
    # on_ui_settings and on_ui_tabs build gradio components: run under real gradio in test_gradio_tab.py


def test_settings_choose_the_autoencoder_and_errors_are_shown(tmp_path):
    (tmp_path / "SCG").mkdir()
    other = tmp_path / "SCG" / "mine.safetensors"
    torch_model = scg_core.load_default()
    scg_core.save(torch_model, other)
    s = read_settings({"scg_autoencoder": "mine.safetensors", "scg_device": "cpu", "scg_keep_on_cpu": False}, str(tmp_path))
    assert s == Settings("mine.safetensors", "cpu", False, str(tmp_path / "SCG"))
    service = HintService()
    assert service.resolve(s) == other
    assert read_settings({}, str(tmp_path)).autoencoder == DEFAULT_NAME
    cb = TabCallbacks(service, NoControlNet(), lambda: Settings("gone.safetensors", models_dir=str(tmp_path / "SCG")))
    hint, sheet, text = cb.preview(fake.test_image(), [], "")
    assert hint is None and "gone.safetensors" in text and "Settings → SCG" in text
    cb = callbacks(NoControlNet())
    assert "nonsense" in cb.reselect(fake.test_image(), ["nonsense"], "")[1]
    assert "gains" in cb.reselect(fake.test_image(), ["brightness"], "colour=lots")[1]
    assert "CUDA is not available" in callbacks(NoControlNet(), device="cuda:0").preview(fake.test_image(), [], "")[2] \
        or __import__("torch").cuda.is_available()
    assert SECTION == ("scg", "SCG")


def test_install_py_installs_only_missing_light_packages(monkeypatch):
    import importlib.util
    import runpy
    from pathlib import Path

    install = runpy.run_path(str(Path(__file__).resolve().parents[2] / "install.py"))
    assert install["missing"]() == []  # this environment has them all
    requested = []
    monkeypatch.setitem(__import__("sys").modules, "launch", fake.module("launch", run_pip=lambda cmd, desc: requested.append(cmd)))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "safetensors" else real(name, *a))
    todo = install["missing"]()
    install["install"](todo)
    assert requested == ['install "safetensors>=0.4"']
    assert not any(word in " ".join(install["NEEDED"].values()) for word in ("torch", "gradio"))
