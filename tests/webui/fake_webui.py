"""Small fakes of the A1111 / Forge modules the extension touches; they record what it asks for.

Shapes follow the hosts' public source (see scripts/scg_webui/hosts.py): sd-webui-controlnet's
``ControlNetUnit`` defaults ``enabled=False``/``module="none"``, its preprocessor registry refuses
a second registration of a name; Forge's unit defaults ``module="None"`` and newer ones carry
``image_fg``; its registry is a dict. Only behaviour the extension relies on is modelled.

How each host hands a unit's slider value to a preprocessor is copied from its source (functions
``a1111_*`` / ``forge_*`` below, each naming the file it mirrors): which defaults its API and its
units carry, which values it replaces, and the exact call it makes.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import sys
import threading
import types
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

CN_MODELS = ["control_v11p_sd15_canny [d14c016b]", "scg_brightness [0a1b2c3d]"]  # the host's order


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))

    def names(self):
        return [c[0] for c in self.calls]


def module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


class FakeScript:
    def __init__(self, title: str) -> None:
        self._title, self.args_from, self.args_to = title, 0, 0

    def title(self):
        return self._title


class FakeRunner:
    def __init__(self) -> None:
        self.alwayson_scripts = [FakeScript("Sampler"), FakeScript("ControlNet"), FakeScript("Seed")]
        self.alwayson_scripts[1].args_from, self.alwayson_scripts[1].args_to = 7, 10
        self.callback_map = {"shared": "cache"}


def webui_core(record: Recorder, models_path: str, main_thread: bool = False) -> dict[str, types.ModuleType]:
    """``modules.{shared,paths,script_callbacks,processing,scripts,call_queue}`` (+ Forge's main thread)."""

    class Opts:
        def __init__(self):
            self.data = {}
            self.labels = {}
            self.outdir_samples, self.outdir_txt2img_samples = "", "outputs/txt2img-images"
            self.outdir_grids, self.outdir_txt2img_grids = "", "outputs/txt2img-grids"

        def add_option(self, key, info):
            self.labels[key] = info
            self.data.setdefault(key, info.default)

    class OptionInfo:
        def __init__(self, default=None, label="", component=None, component_args=None, *, section=None, refresh=None, **kw):
            self.default, self.label, self.component, self.component_args = default, label, component, component_args
            self.section, self.refresh = section, refresh

    class State:
        def begin(self, job=""):
            record("state.begin", job=job)

        def end(self):
            record("state.end")

    class Txt2Img:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.is_api = False
            self.__dict__.update(kwargs)

        def close(self):
            record("p.close")

    @dataclass
    class Processed:
        images: list
        all_seeds: list
        index_of_first_image: int = 0

    lock = threading.Lock()

    def process_images(p):
        assert lock.locked(), "generation must hold the queue lock"
        record("process_images", p)
        image = Image.new("RGB", (p.width, p.height), (10, 20, 30))
        detected_map = Image.new("RGB", (p.width, p.height))
        return Processed(images=[image, detected_map], all_seeds=[p.seed])  # CN appends its map

    callbacks = module("modules.script_callbacks")
    for hook in ("on_ui_settings", "on_before_ui", "on_ui_tabs"):
        setattr(callbacks, hook, (lambda h: lambda fn, **kw: record(h, fn))(hook))
    mods = {
        "modules": module("modules"),
        # cmd_opts: modules/cmd_args.py, whose --loglevel defaults to None
        "modules.shared": module("modules.shared", opts=Opts(), OptionInfo=OptionInfo, state=State(),
                                 cmd_opts=argparse.Namespace(loglevel=None)),
        "modules.paths": module("modules.paths", models_path=models_path),
        "modules.script_callbacks": callbacks,
        "modules.processing": module("modules.processing", StableDiffusionProcessingTxt2Img=Txt2Img,
                                     process_images=process_images),
        "modules.scripts": module("modules.scripts", scripts_txt2img=FakeRunner()),
        "modules.call_queue": module("modules.call_queue", queue_lock=lock),
    }
    if main_thread:
        def run_and_wait_result(fn, *args):
            record("main_thread", fn)
            return fn(*args)

        mods["modules_forge"] = module("modules_forge")
        mods["modules_forge.main_thread"] = module("modules_forge.main_thread", run_and_wait_result=run_and_wait_result)
    return mods


def sd_webui_controlnet(record: Recorder, files: dict | None = None) -> dict[str, types.ModuleType]:
    """``internal_controlnet.external_code``, ``scripts.supported_preprocessor`` and
    ``scripts.global_state`` (``cn_models``: name → file, from ``files``) of sd-webui-controlnet."""

    class ControlNetUnit:
        def __init__(self, enabled=False, module="none", model="None", weight=1.0, image=None, processor_res=-1,
                     threshold_a=-1, threshold_b=-1, **kw):
            self.enabled, self.module, self.model, self.weight, self.image = enabled, module, model, weight, image
            self.processor_res, self.threshold_a, self.threshold_b = processor_res, threshold_a, threshold_b
            self.__dict__.update(kw)
            self.bound_check_params()

        def bound_check_params(self):
            """internal_controlnet/args.py, ControlNetUnit.bound_check_params (a pydantic root
            validator): an enabled unit's processor_res / threshold_a / threshold_b outside its
            preprocessor's slider range (-1, the default, included) become that slider's value.
            (The host's own preprocessors, "none" among them, are not in this fake registry.)"""
            preprocessor = Preprocessor.get_preprocessor(self.module)
            if not self.enabled or preprocessor is None:
                return
            for unit_param, param in (("processor_res", "slider_resolution"), ("threshold_a", "slider_1"),
                                      ("threshold_b", "slider_2")):
                value, cfg = getattr(self, unit_param), getattr(preprocessor, param)
                if value < cfg.minimum or value > cfg.maximum:
                    setattr(self, unit_param, cfg.value)

    @dataclass
    class PreprocessorParameter:
        label: str = "EMPTY_LABEL"
        minimum: float = 0.0
        maximum: float = 1.0
        step: float = 0.01
        value: float = 0.5
        visible: bool = True

    @dataclass
    class Preprocessor:
        name: str
        tags: list = field(default_factory=list)
        registry = {}
        # scripts/supported_preprocessor.py: class-level defaults a subclass may replace
        slider_resolution = PreprocessorParameter(label="Resolution", minimum=64, maximum=2048, value=512, step=8)
        slider_1 = PreprocessorParameter(visible=False)
        slider_2 = PreprocessorParameter(visible=False)
        returns_image = True

        @property
        def label(self):
            return self.name

        def cached_call(self, input_image, *args, **kwargs):
            """supported_preprocessor.py: the call every caller makes; a plain result is wrapped."""
            result = self(input_image, *args, **kwargs)
            return types.SimpleNamespace(value=result, display_images=[result if self.returns_image else input_image])

        @classmethod
        def add_supported_preprocessor(cls, p):
            assert p.name not in cls.registry, f"{p.name} already registered!"
            cls.registry[p.name] = p

        @classmethod
        def get_preprocessor(cls, name):
            return cls.registry.get(name)

    def get_models(update=False):
        record("cn.get_models", update=update)
        return list(CN_MODELS)

    def find_cn_script(runner):
        return next((s for s in runner.alwayson_scripts if s.title().lower() == "controlnet"), None)

    return {
        "internal_controlnet": module("internal_controlnet"),
        "internal_controlnet.external_code": module("internal_controlnet.external_code", ControlNetUnit=ControlNetUnit,
                                                    get_models=get_models, find_cn_script=find_cn_script),
        "scripts": module("scripts"),
        "scripts.supported_preprocessor": module("scripts.supported_preprocessor", Preprocessor=Preprocessor,
                                                 PreprocessorParameter=PreprocessorParameter),
        "scripts.global_state": module("scripts.global_state", cn_models={"None": None, **(files or {})}),
    }


def forge_controlnet(record: Recorder, image_fg: bool = True, files: dict | None = None) -> dict[str, types.ModuleType]:
    """``lib_controlnet.{external_code,global_state}`` and ``modules_forge.{shared,supported_preprocessor}``."""
    fields = [("enabled", bool, True), ("module", str, "None"), ("model", str, "None"), ("weight", float, 1.0),
              ("image", object, None), ("resize_mode", object, "Crop and Resize"), ("processor_res", int, -1),
              ("threshold_a", float, -1), ("threshold_b", float, -1), ("guidance_start", float, 0.0),
              ("guidance_end", float, 1.0), ("pixel_perfect", bool, False), ("control_mode", object, "Balanced")]
    if image_fg:
        fields.append(("image_fg", object, None))
    ControlNetUnit = dataclasses.make_dataclass("ControlNetUnit", [(n, t, field(default=d)) for n, t, d in fields])

    class PreprocessorParameter:
        def __init__(self, minimum=0.0, maximum=1.0, step=0.01, label="Parameter 1", value=0.5, visible=False, **kw):
            self.gradio_update_kwargs = dict(minimum=minimum, maximum=maximum, step=step, label=label, value=value,
                                             visible=visible, **kw)

    class Preprocessor:
        def __init__(self):
            self.name = "PreprocessorBase"
            self.tags = []
            self.slider_resolution = PreprocessorParameter(label="Resolution", minimum=128, maximum=2048, value=512,
                                                           step=8, visible=True)
            self.slider_1 = self.slider_2 = self.slider_3 = PreprocessorParameter()
            self.sorting_priority = 0

    supported: dict = {}

    def add_supported_preprocessor(p):
        supported[p.name] = p

    names = ["None", "control_v11p_sd15_canny [d14c016b]", "scg_edges [1234abcd]"]
    files = files or {}

    def get_controlnet_filename(name):
        return files[name]  # Forge: a plain lookup, KeyError for unknown names
    return {
        "lib_controlnet": module("lib_controlnet"),
        "lib_controlnet.external_code": module("lib_controlnet.external_code", ControlNetUnit=ControlNetUnit),
        "lib_controlnet.global_state": module("lib_controlnet.global_state", get_all_controlnet_names=lambda: list(names),
                                              get_preprocessor=lambda name: supported.get(name, None),
                                              update_controlnet_filenames=lambda: record("forge.update_filenames"),
                                              get_controlnet_filename=get_controlnet_filename),
        "modules_forge": module("modules_forge"),
        "modules_forge.shared": module("modules_forge.shared", supported_preprocessors=supported,
                                       add_supported_preprocessor=add_supported_preprocessor),
        "modules_forge.supported_preprocessor": module("modules_forge.supported_preprocessor", Preprocessor=Preprocessor,
                                                       PreprocessorParameter=PreprocessorParameter),
    }


def install(monkeypatch, mods: dict[str, types.ModuleType]) -> None:
    """Put the fakes in ``sys.modules`` (undone after the test)."""
    for name, m in mods.items():
        monkeypatch.setitem(sys.modules, name, m)
    for name, m in mods.items():  # ``from modules import shared`` reads the package's attribute
        parent, _, child = name.rpartition(".")
        if parent in mods:
            setattr(mods[parent], child, m)


def test_image(h: int = 90, w: int = 120) -> np.ndarray:
    """A structured RGB uint8 image: a gradient, a bright disc, a dark bar."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)
    img[(yy - h // 2) ** 2 + (xx - w // 3) ** 2 < (h // 5) ** 2] = (240, 230, 200)
    img[h // 4 : h // 4 + 6, w // 2 :] = (20, 20, 20)
    return img


def controlnet_files(folder, names: dict[str, bool]) -> dict:
    """Write a small safetensors file per name (with SCG metadata when ``names[name]``); name → path."""
    import torch
    from safetensors.torch import save_file

    import scg_core
    from scg_core.controlnet.metadata import controlnet_metadata

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, scg in names.items():
        path = folder / (name.split(" [")[0] + ".safetensors")
        meta = controlnet_metadata(scg_core.load_default(), ["brightness"]) if scg else {}
        save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "pt", **meta})
        out[name] = str(path)
    return out


def b64_png(image: np.ndarray) -> str:
    """An image as API callers send it: base64 of a PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _decode(encoding: str) -> np.ndarray:
    """modules/api/api.py decode_base64_to_image, then ``np.array(...).astype("uint8")`` (both hosts)."""
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    return np.array(Image.open(io.BytesIO(base64.b64decode(encoding)))).astype("uint8")


def a1111_detect(cn: dict[str, types.ModuleType], controlnet_module="none", controlnet_input_images=(),
                 controlnet_processor_res=-1, controlnet_threshold_a=-1, controlnet_threshold_b=-1, low_vram=False):
    """sd-webui-controlnet scripts/api.py, POST /controlnet/detect (its Body defaults): a unit built
    from the body (so out-of-range values become the sliders' values), then ``cached_call``."""
    Preprocessor = cn["scripts.supported_preprocessor"].Preprocessor
    preprocessor = Preprocessor.get_preprocessor(controlnet_module)
    unit = cn["internal_controlnet.external_code"].ControlNetUnit(
        enabled=True, module=preprocessor.label, processor_res=controlnet_processor_res,
        threshold_a=controlnet_threshold_a, threshold_b=controlnet_threshold_b)
    images = []
    for encoded in controlnet_input_images:
        result = preprocessor.cached_call(_decode(encoded), resolution=unit.processor_res, slider_1=unit.threshold_a,
                                          slider_2=unit.threshold_b, json_pose_callback=lambda pose: None,
                                          low_vram=low_vram)
        images.append(result.display_images[0])
    return images


def a1111_unit_hint(cn: dict[str, types.ModuleType], image: np.ndarray, **unit_fields) -> np.ndarray:
    """sd-webui-controlnet scripts/controlnet.py, preprocess_input_image: a txt2img unit (API
    ``alwayson_scripts`` args or the UI) through the unit's validation, then ``cached_call``."""
    unit = cn["internal_controlnet.external_code"].ControlNetUnit(enabled=True, **unit_fields)
    preprocessor = cn["scripts.supported_preprocessor"].Preprocessor.get_preprocessor(unit.module)
    return preprocessor.cached_call(image, resolution=unit.processor_res, slider_1=unit.threshold_a,
                                    slider_2=unit.threshold_b, low_vram=False, model=unit.model).value


def forge_detect(forge: dict[str, types.ModuleType], controlnet_module="none", controlnet_input_images=(),
                 controlnet_processor_res=512, controlnet_threshold_a=64, controlnet_threshold_b=64):
    """Forge lib_controlnet/api.py, POST /controlnet/detect (its Body defaults: 512, 64, 64): the
    values go to the preprocessor as they are."""
    preprocessor = forge["lib_controlnet.global_state"].get_preprocessor(controlnet_module)
    return [preprocessor(_decode(encoded), resolution=controlnet_processor_res, slider_1=controlnet_threshold_a,
                         slider_2=controlnet_threshold_b, json_pose_callback=lambda pose: None)
            for encoded in controlnet_input_images]


def forge_unit_hint(forge: dict[str, types.ModuleType], image: np.ndarray, **unit_fields) -> np.ndarray:
    """Forge scripts/controlnet.py: ``bound_check_params`` (negative values become the sliders'
    values, as ints), then the preprocessor call of ``process_unit_after_click_generate``."""
    unit = forge["lib_controlnet.external_code"].ControlNetUnit(**unit_fields)
    preprocessor = forge["lib_controlnet.global_state"].get_preprocessor(unit.module)
    if unit.processor_res < 0:
        unit.processor_res = int(preprocessor.slider_resolution.gradio_update_kwargs.get("value", 512))
    if unit.threshold_a < 0:
        unit.threshold_a = int(preprocessor.slider_1.gradio_update_kwargs.get("value", 1.0))
    if unit.threshold_b < 0:
        unit.threshold_b = int(preprocessor.slider_2.gradio_update_kwargs.get("value", 1.0))
    return preprocessor(input_image=image, input_mask=None, resolution=unit.processor_res, slider_1=unit.threshold_a,
                        slider_2=unit.threshold_b)
