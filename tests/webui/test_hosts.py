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
    ModelChoices,
    NoControlNet,
    detect_host,
)
from scg_webui.service import DEFAULT_NAME, HintService, Settings, default_group_number
from scg_webui.ui import TabCallbacks, model_note
from scg_webui.webui_entry import (
    SECTION,
    preprocessor_run,
    read_settings,
    register,
    setup_logging,
    slider_group,
)

import scg_core

from . import fake_webui as fake


@pytest.fixture
def record():
    return fake.Recorder()


def a1111(monkeypatch, record, tmp_path, scg=True):
    files = fake.controlnet_files(tmp_path / "ControlNet", {n: scg and n.startswith("scg") for n in fake.CN_MODELS})
    mods = {**fake.webui_core(record, str(tmp_path)), **fake.sd_webui_controlnet(record, files)}
    fake.install(monkeypatch, mods)
    return mods


def forge(monkeypatch, record, tmp_path, image_fg=True, scg=True):
    files = fake.controlnet_files(tmp_path / "ControlNet", {"control_v11p_sd15_canny [d14c016b]": False,
                                                            "scg_edges [1234abcd]": scg})
    mods = {**fake.webui_core(record, str(tmp_path), main_thread=True),
            **fake.forge_controlnet(record, image_fg=image_fg, files=files)}
    fake.install(monkeypatch, mods)
    return mods


def registered(record):
    """Run ``register`` as the host does (scripts loaded, then before-UI); the hooks it added."""
    from modules import paths, script_callbacks, shared

    register(script_callbacks, shared, paths)
    hooks = {name: args[0] for name, args, _ in record.calls if name.startswith("on_")}
    hooks["on_before_ui"]()
    return hooks


def callbacks(host, **settings):
    return TabCallbacks(HintService(), host, lambda: Settings(**settings))


def generate(cb, groups=("brightness",), width=96, height=64):
    model = cb.host.models().selected or "some model"
    return cb.generate(fake.test_image(), list(groups), "", model, "a cat", "blurry", 42, 12, width, height,
                       6.5, 0.8, 0.1, 0.9)


def processing_call(record):
    return next(args[0] for name, args, _ in record.calls if name == "process_images")


def test_a1111_generation_builds_the_unit_the_extension_needs(monkeypatch, record, tmp_path):
    a1111(monkeypatch, record, tmp_path)
    host = detect_host()
    assert isinstance(host, A1111ControlNet)
    models = host.models()  # SCG ControlNets (SCG metadata in the file) first
    assert models.names == fake.CN_MODELS[::-1] and models.scg == 1 and models.selected == "scg_brightness [0a1b2c3d]"
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
    assert host.models().names == ["scg_edges [1234abcd]", "control_v11p_sd15_canny [d14c016b]"]
    assert host.models().scg == 1
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
        assert host.register_preprocessor(run, "group", len(model.groups), 2) is True
        assert host.register_preprocessor(run, "group", len(model.groups), 2) is False  # scripts reloaded: no error
        if isinstance(host, A1111ControlNet):
            p = host.preprocessors.Preprocessor.get_preprocessor(PREPROCESSOR_NAME)
            assert p.slider_1.maximum == len(model.groups) and p.slider_1.step == 1 and p.slider_1.value == 2
        else:
            p = host.shared.supported_preprocessors[PREPROCESSOR_NAME]
            assert p.name == PREPROCESSOR_NAME and p.slider_1.gradio_update_kwargs["visible"]
            assert p.slider_1.gradio_update_kwargs["value"] == 2
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


def registered_preprocessor(mods):
    if "scripts.supported_preprocessor" in mods:
        p = mods["scripts.supported_preprocessor"].Preprocessor.get_preprocessor(PREPROCESSOR_NAME)
        return p, p.slider_1.value
    p = mods["modules_forge.shared"].supported_preprocessors[PREPROCESSOR_NAME]
    return p, p.slider_1.gradio_update_kwargs["value"]


@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_tab_and_preprocessor_start_on_the_same_group_brightness(monkeypatch, record, tmp_path, host):
    mods = {"a1111": a1111, "forge": forge}[host](monkeypatch, record, tmp_path)
    registered(record)
    p, start = registered_preprocessor(mods)
    groups = scg_core.load_default().groups
    assert groups[start - 1].name == "brightness"  # what the ComfyUI nodes start on too
    assert HintService().default_choice(Settings()) == [groups[start - 1].title] == ["brightness"]  # the tab's start
    label = p.slider_1.label if hasattr(p.slider_1, "label") else p.slider_1.gradio_update_kwargs["label"]
    assert label == ("SCG group: 0 = all modules, 1 colour, 2 brightness, 3 edges_coarse (edges), "
                     "4 edges_fine (edges), 5 texture (weak, high frequency) (other values: 2)")


def test_default_group_follows_the_autoencoders_groups():
    from scg_core.model.groups import OFFICIAL_GROUPS, Group

    assert default_group_number(OFFICIAL_GROUPS) == 2  # HC1, labelled brightness
    assert default_group_number([Group("A", (0,), "edges"), Group("B", (1,), "colour")]) == 1  # none: the first
    assert default_group_number([]) == 0  # no groups: all modules


def test_slider_values_map_to_groups_and_out_of_range_ones_say_so():
    groups = scg_core.load_default().groups
    assert slider_group(3, groups) == (3, "") and slider_group(3.0, groups) == (3, "") and slider_group(0, groups) == (0, "")
    assert slider_group(-1, groups) == (2, "") and slider_group(None, groups) == (2, "")  # the hosts' "not set"
    for bad, shown in ((64, "64"), (64.0, "64"), (6, "6"), (2.5, "2.5"), (-3, "-3"), (float("nan"), "nan"), ("x", "'x'")):
        n, warning = slider_group(bad, groups)
        assert n == 2, bad
        assert f"group {shown} is neither 0 (all modules) nor a group number 1–5" in warning
        assert "using the default group, 2 = brightness" in warning and "threshold_a" in warning and "0–5" in warning


@pytest.fixture
def hints():
    """The image API callers send (shorter side 512, the hosts' default processor resolution: no
    resize) and the bundled default's hints of it: brightness (group 2), coarse edges (3), all modules."""
    service, settings = HintService(), Settings()
    image = fake.test_image(512, 544)
    return image, {"brightness": service.hint(settings, image, ["brightness"]),
                   "edges": service.hint(settings, image, ["edges_coarse"]), "all": service.hint(settings, image, None)}


def test_forge_detect_with_the_api_default_threshold_gets_the_default_group_and_a_warning(
        monkeypatch, record, tmp_path, capsys, hints):
    image, want = hints
    mods = forge(monkeypatch, record, tmp_path)
    registered(record)
    capsys.readouterr()
    body = {"controlnet_module": PREPROCESSOR_NAME, "controlnet_input_images": [fake.b64_png(image)]}
    [out] = fake.forge_detect(mods, **body)  # threshold_a: Forge's API default, 64, reaches the preprocessor
    np.testing.assert_array_equal(out, want["brightness"])
    printed = capsys.readouterr().out
    assert "SCG: scg_hypercolumn: group 64 is neither 0 (all modules) nor a group number 1–5; using the default " \
           "group, 2 = brightness. Set threshold_a" in printed
    for value, group in ((3, "edges"), (0, "all"), (2, "brightness")):
        [out] = fake.forge_detect(mods, **body, controlnet_threshold_a=value)
        np.testing.assert_array_equal(out, want[group])
    assert capsys.readouterr().out == ""  # in-range values: no warning
    np.testing.assert_array_equal(fake.forge_unit_hint(mods, image, module=PREPROCESSOR_NAME), want["brightness"])
    np.testing.assert_array_equal(fake.forge_unit_hint(mods, image, module=PREPROCESSOR_NAME, threshold_a=3), want["edges"])
    assert capsys.readouterr().out == ""  # a unit's unset threshold_a (-1) becomes the slider's default: no warning
    [out] = fake.forge_detect(mods, **body, controlnet_threshold_a=7)
    np.testing.assert_array_equal(out, want["brightness"])
    assert "group 7 is neither" in capsys.readouterr().out


def test_a1111_detect_and_units_give_the_default_group_for_unset_or_out_of_range_thresholds(
        monkeypatch, record, tmp_path, capsys, hints):
    image, want = hints
    mods = a1111(monkeypatch, record, tmp_path)
    registered(record)
    capsys.readouterr()
    body = {"controlnet_module": PREPROCESSOR_NAME, "controlnet_input_images": [fake.b64_png(image)]}
    for threshold, group in ((None, "brightness"), (64, "brightness"), (3, "edges"), (0, "all")):
        extra = {} if threshold is None else {"controlnet_threshold_a": threshold}
        [out] = fake.a1111_detect(mods, **body, **extra)  # sd-webui-controlnet replaces -1 and 64 with the slider's value
        np.testing.assert_array_equal(out, want[group])
    np.testing.assert_array_equal(fake.a1111_unit_hint(mods, image, module=PREPROCESSOR_NAME), want["brightness"])
    np.testing.assert_array_equal(fake.a1111_unit_hint(mods, image, module=PREPROCESSOR_NAME, threshold_a=3), want["edges"])
    assert capsys.readouterr().out == ""
    out = fake.a1111_unit_hint(mods, image, module=PREPROCESSOR_NAME, threshold_a=1.5)  # in the host's range, not a group
    np.testing.assert_array_equal(out, want["brightness"])
    assert "group 1.5 is neither" in capsys.readouterr().out


def without_logging_config(monkeypatch):
    """The root logger as A1111 1.10 / Forge leave it without --loglevel (modules/logging_config.py
    returns before configuring anything): no handlers, level WARNING."""
    import logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)


@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_start_up_line_is_printed_at_the_hosts_default_log_level(monkeypatch, record, tmp_path, capsys, host):
    import logging

    without_logging_config(monkeypatch)
    {"a1111": a1111, "forge": forge}[host](monkeypatch, record, tmp_path)
    registered(record)
    logging.getLogger("some_extension").info("an INFO line of a logger without a handler")
    out, err = capsys.readouterr()
    name = {"a1111": "sd-webui-controlnet (A1111)", "forge": "Forge built-in ControlNet"}[host]
    assert out.splitlines() == [(f"SCG: added the scg_hypercolumn preprocessor to {name}; its slider picks the group "
                                 "(0 = all modules, 1–5 the groups), starting on 2 = brightness")]
    assert "an INFO line" not in out + err  # what happened to the extension's line before


def test_loglevel_option_quiets_info_and_no_controlnet_is_a_visible_warning(monkeypatch, record, tmp_path, capsys):
    without_logging_config(monkeypatch)
    fake.install(monkeypatch, fake.webui_core(record, str(tmp_path)))  # A1111 without sd-webui-controlnet
    registered(record)
    out = capsys.readouterr().out
    assert out.startswith("SCG: No ControlNet found: on AUTOMATIC1111 install the sd-webui-controlnet extension")
    record.calls.clear()
    mods = forge(monkeypatch, record, tmp_path)
    mods["modules.shared"].cmd_opts.loglevel = "WARNING"  # the host's --loglevel WARNING
    registered(record)
    assert capsys.readouterr().out == ""
    preprocessor_run(HintService(), Settings)(fake.test_image(), 0, 64)
    assert "group 64 is neither" in capsys.readouterr().out  # warnings still show
    mods["modules.shared"].cmd_opts.loglevel = None
    setup_logging(mods["modules.shared"])
    import logging

    scg = logging.getLogger("scg")  # registered three times here: still one console handler
    assert scg.level == logging.INFO and [h.get_name() for h in scg.handlers].count("scg console") == 1


def test_model_note_says_when_no_controlnet_carries_scg_metadata(monkeypatch, record, tmp_path):
    for install in (a1111, forge):
        install(monkeypatch, record, tmp_path / install.__name__ / "none", scg=False)
        cb = callbacks(detect_host())
        models, value, note = cb.refresh_models()
        assert models.scg == 0 and value == models.names[0] == models.selected
        assert note.startswith(f"⚠️ **No SCG ControlNet found**: none of these 2 models carries SCG metadata, so the "
                               f"first one, *{value}*, is selected")
        assert "train_controlnet" in note and "scg_core.convert official-controlnet" in note and "Refresh models" in note
        install(monkeypatch, record, tmp_path / install.__name__ / "scg")  # an SCG ControlNet added, then Refresh
        models, value, note = cb.__class__(cb.service, detect_host(), cb.settings).refresh_models(current=value)
        assert models.scg == 1 and value == models.names[0] and value.startswith("scg_")
        assert note == "1 SCG ControlNet(s) found (SCG metadata in the file), listed first."
    assert model_note(ModelChoices([])).startswith("No ControlNet models found")
    cb = callbacks(detect_host())  # the user's choice of a listed SCG ControlNet stays after a refresh
    assert cb.refresh_models(current="scg_edges [1234abcd]")[1] == "scg_edges [1234abcd]"


def test_hints_survive_a1111_replacing_module_to_while_it_builds_a_model(monkeypatch):
    """A1111's InitializeOnMeta replaces ``torch.nn.Module.to`` with a no-op returning None for every
    thread while it creates an SD model; a /controlnet/detect request arriving then must still work
    (seen in a real A1111 1.10.1: AttributeError 'NoneType' object has no attribute 'hint')."""
    import torch

    service, settings = HintService(), Settings()
    image = fake.test_image()
    expected = service.hint(settings, image, ["brightness"])
    monkeypatch.setattr(torch.nn.Module, "to", lambda *args, **kwargs: None)
    assert np.array_equal(service.hint(settings, image, ["brightness"]), expected)
    assert service.sheet(settings, image, tile=64).shape[2] == 3
