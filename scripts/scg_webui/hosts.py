"""The ControlNet of the host web UI: sd-webui-controlnet on A1111, the built-in one on Forge.

Everything host-specific sits here, behind :class:`ControlNetHost`. The host modules are passed in
(see :func:`detect_host`), so tests drive these classes with small fakes that record the calls.
Facts used (public source of both hosts):

* a unit's hint is an RGB uint8 image; both hosts divide it by 255 (our [0,1] hint contract);
* sd-webui-controlnet: ``ControlNetUnit(enabled=True, module="none", model=..., image=ndarray)``,
  preprocessors subclass ``scripts.supported_preprocessor.Preprocessor(name=...)`` and register
  with ``Preprocessor.add_supported_preprocessor`` (names must be unique);
* Forge: ``lib_controlnet.external_code.ControlNetUnit`` with ``module="None"`` (capital N), the
  image either an ndarray (+ ``image_fg`` layer, gradio-4 Forge) or ``{"image", "mask"}`` (older),
  string enums; preprocessors subclass ``modules_forge.supported_preprocessor.Preprocessor`` (no
  name argument) and register with ``modules_forge.shared.add_supported_preprocessor``;
* a preprocessor's ``slider_1`` receives the unit's ``threshold_a``. sd-webui-controlnet first
  replaces a value outside the slider's range (its API default -1 included) with the slider's
  ``value``; Forge replaces only negative values in txt2img/img2img, and its ``/controlnet/detect``
  passes its body default, 64, as it is (``webui_entry.slider_group`` maps that);
* both keep every ControlNet unit's UI in ``ControlNetUiGroup.all_ui_groups`` (sd-webui-controlnet:
  ``scripts.controlnet_ui.controlnet_ui_group``, Forge: ``lib_controlnet.controlnet_ui.
  controlnet_ui_group``) with the same attribute names: ``image`` (sd-webui-controlnet: a gradio
  ``Image`` with the sketch tool; Forge: a ``ForgeCanvas`` whose ``background`` holds the image),
  ``enabled``, ``module``, ``model``, ``is_img2img`` and, in img2img, ``upload_independent_img_in_img2img``
  (ticking it clears the unit's image, so it is ticked before the image is set);
* their "Control Type" filter lists the models whose names contain the type (sd-webui-controlnet:
  ``global_state.select_control_type``) or one of the filtered preprocessors'
  ``model_filename_filters`` (Forge): SCG ControlNets are found by their SCG metadata instead.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

PREPROCESSOR_NAME = "scg_hypercolumn"
CONTROL_TYPE = "SCG"  # the preprocessor's tag: the "Control Type" filter it appears under
RESIZE = "Just Resize"  # the tab's hint is made at the generation size already
BALANCED = "Balanced"


@dataclass(frozen=True)
class ModelChoices:
    """The host's ControlNet model names, the ``scg`` ones carrying SCG metadata first."""

    names: list[str]
    scg: int = 0  # how many of the first ``names`` carry SCG metadata

    @property
    def selected(self) -> str | None:
        """What the tab's picker starts on: the first name (an SCG ControlNet when there is one)."""
        return self.names[0] if self.names else None


@dataclass(frozen=True)
class SendTarget:
    """The first ControlNet unit of txt2img or img2img, as the host built its UI: the components
    *Send hint* sets from Python (the browser ticks its Enable), and the values they take."""

    image: object  # the component that holds the unit's image; set with the hint as uint8 [H,W,3]
    module: object
    model: object
    module_none: str  # the unit's "no preprocessor" choice ("none" / "None")
    independent: object | None = None  # img2img: "Upload independent control image" (ticked in the browser first)


@dataclass
class UnitRequest:
    """One ControlNet unit as the tab wants it: ``hint`` ``[H,W,3]`` uint8 at the generation size."""

    hint: np.ndarray
    model: str
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0


@dataclass
class GenerationRequest:
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    width: int
    height: int
    cfg_scale: float
    unit: UnitRequest
    sampler_name: str = "Euler a"


class ControlNetHost(ABC):
    """What the tab and the preprocessor need from a host's ControlNet."""

    name = "none"

    def problem(self) -> str:
        """Why the tab cannot generate here ("" when it can)."""
        return ""

    @abstractmethod
    def models(self) -> ModelChoices:
        """The host's ControlNet model names, SCG ones first."""

    @abstractmethod
    def generate(self, req: GenerationRequest) -> list[np.ndarray]:
        """txt2img with one ControlNet unit made from ``req.unit``; the images as uint8 RGB."""

    @abstractmethod
    def register_preprocessor(self, run: Callable, group_label: str, groups: int, default: int) -> bool:
        """Register :data:`PREPROCESSOR_NAME`; ``run(image, resolution, group_number)`` → uint8 hint.
        Its slider 1 goes from 0 (all modules) to ``groups`` and starts on ``default``.
        Returns False when it was registered before (scripts reloaded) or cannot be."""

    def send_target(self, tab: str) -> SendTarget | None:
        """The first ControlNet unit of ``tab`` ("txt2img" / "img2img") once the host built its UI;
        ``None`` when this host has none (then *Send hint* falls back to a file drop in the browser)."""
        return None


class NoControlNet(ControlNetHost):
    name = "not found"

    def problem(self) -> str:
        return ("No ControlNet found: on AUTOMATIC1111 install the sd-webui-controlnet extension (Extensions → "
                "Available) and restart; Forge has ControlNet built in. The hint preview works without it.")

    def models(self) -> ModelChoices:
        return ModelChoices([])

    def generate(self, req: GenerationRequest) -> list[np.ndarray]:
        raise RuntimeError(self.problem())

    def register_preprocessor(self, run, group_label, groups, default) -> bool:
        return False


class A1111ControlNet(ControlNetHost):
    """sd-webui-controlnet. ``external_code``: its ``internal_controlnet.external_code`` (or the
    legacy ``scripts.external_code``); ``preprocessors``: its ``scripts.supported_preprocessor``
    (``None`` on versions before that registry)."""

    name = "sd-webui-controlnet (A1111)"

    def __init__(self, external_code: ModuleType, preprocessors: ModuleType | None, webui: WebuiModules) -> None:
        self.cn, self.preprocessors, self.webui = external_code, preprocessors, webui

    def models(self) -> ModelChoices:
        names = [m for m in self.cn.get_models(update=True) if m != "None"]
        state = sys.modules.get("scripts.global_state")  # name → path, where sd-webui-controlnet keeps it
        paths = getattr(state, "cn_models", {}) or {}
        return scg_first(names, paths.get)

    def make_unit(self, req: UnitRequest):
        return self.cn.ControlNetUnit(
            enabled=True, module="none", model=req.model, weight=req.weight, image=_rgb_uint8(req.hint),
            resize_mode=RESIZE, guidance_start=req.guidance_start, guidance_end=req.guidance_end,
            pixel_perfect=False, control_mode=BALANCED, processor_res=512, threshold_a=0.5, threshold_b=0.5)

    def generate(self, req: GenerationRequest) -> list[np.ndarray]:
        return self.webui.txt2img(req, [self.make_unit(req.unit)], self.cn.find_cn_script)

    def send_target(self, tab: str) -> SendTarget | None:
        unit = _first_unit(sys.modules.get("scripts.controlnet_ui.controlnet_ui_group"), tab)
        if unit is None or unit.image is None:
            return None
        return SendTarget(unit.image, unit.module, unit.model, "none",
                          getattr(unit, "upload_independent_img_in_img2img", None))

    def find_scg_controlnets(self) -> None:
        """The "SCG" Control Type lists the SCG ControlNets whatever their names (by their metadata)."""
        state = sys.modules.get("scripts.global_state")
        original = getattr(state, "select_control_type", None)
        if original is None or getattr(original, "scg_wrapped", False):
            return

        def select_control_type(control_type, *args, **kwargs):
            found = original(control_type, *args, **kwargs)
            if str(control_type).lower() != CONTROL_TYPE.lower():
                return found
            preprocessors, models, default_preprocessor, default_model = found
            names = list(getattr(state, "cn_models", {}) or {})
            choices = scg_first([n for n in names if n != "None"], (getattr(state, "cn_models", {}) or {}).get)
            scg = choices.names[: choices.scg]
            models = ["None", *scg, *(m for m in models if m != "None" and m not in scg)]
            return preprocessors, models, default_preprocessor, (scg[0] if scg else default_model)

        select_control_type.scg_wrapped = True
        state.select_control_type = select_control_type

    def register_preprocessor(self, run, group_label, groups, default) -> bool:
        if self.preprocessors is None:
            return False
        Base, Param = self.preprocessors.Preprocessor, self.preprocessors.PreprocessorParameter
        if Base.get_preprocessor(PREPROCESSOR_NAME) is not None:
            return False

        self.find_scg_controlnets()

        class SCGHypercolumn(Base):
            def __init__(self):
                super().__init__(name=PREPROCESSOR_NAME)
                self.tags = [CONTROL_TYPE]
                self.slider_resolution = Param(label="Resolution", minimum=64, maximum=2048, value=512, step=8)
                # sd-webui-controlnet replaces a threshold_a outside [minimum, maximum] (its API's -1
                # included) with this value before calling us
                self.slider_1 = Param(label=group_label, minimum=0, maximum=groups, value=default, step=1)
                self.sorting_priority = 5

            __call__ = _preprocessor_call(run)

        Base.add_supported_preprocessor(SCGHypercolumn())
        return True


class ForgeControlNet(ControlNetHost):
    """Forge's built-in ControlNet: ``external_code`` / ``global_state`` from ``lib_controlnet``,
    ``supported`` = ``modules_forge.supported_preprocessor``, ``shared`` = ``modules_forge.shared``."""

    name = "Forge built-in ControlNet"

    def __init__(self, external_code, global_state, supported, forge_shared, webui: WebuiModules) -> None:
        self.cn, self.state, self.supported, self.shared, self.webui = external_code, global_state, supported, forge_shared, webui

    def models(self) -> ModelChoices:
        self.state.update_controlnet_filenames()
        names = [m for m in self.state.get_all_controlnet_names() if m != "None"]
        return scg_first(names, getattr(self.state, "get_controlnet_filename", lambda name: None))

    def make_unit(self, req: UnitRequest):
        hint = _rgb_uint8(req.hint)
        fields = {f.name for f in dataclasses.fields(self.cn.ControlNetUnit)}
        extra = ({"image": hint, "image_fg": np.zeros((*hint.shape[:2], 4), np.uint8)} if "image_fg" in fields
                 else {"image": {"image": hint, "mask": np.zeros_like(hint)}})
        return self.cn.ControlNetUnit(
            enabled=True, module="None", model=req.model, weight=req.weight, resize_mode=RESIZE,
            guidance_start=req.guidance_start, guidance_end=req.guidance_end, pixel_perfect=False,
            control_mode=BALANCED, processor_res=512, threshold_a=0.5, threshold_b=0.5, **extra)

    def generate(self, req: GenerationRequest) -> list[np.ndarray]:
        unit = self.make_unit(req.unit)
        return self.webui.on_main_thread(lambda: self.webui.txt2img(req, [unit], _find_by_title))

    def send_target(self, tab: str) -> SendTarget | None:
        unit = _first_unit(sys.modules.get("lib_controlnet.controlnet_ui.controlnet_ui_group"), tab)
        image = getattr(getattr(unit, "image", None), "background", None)  # ForgeCanvas: the image layer
        if image is None:
            return None
        return SendTarget(image, unit.module, unit.model, "None",
                          getattr(unit, "upload_independent_img_in_img2img", None))

    def scg_controlnet_names(self) -> list[str]:
        """The host's ControlNet names whose files carry SCG metadata (the "SCG" Control Type's models)."""
        choices = self.models()  # re-reads the ControlNet folder
        return choices.names[: choices.scg]

    def register_preprocessor(self, run, group_label, groups, default) -> bool:
        if PREPROCESSOR_NAME in self.shared.supported_preprocessors:
            return False
        Base, Param = self.supported.Preprocessor, self.supported.PreprocessorParameter

        scg_names = self.scg_controlnet_names

        class SCGHypercolumn(Base):
            # Forge's Control Type filter lists the models whose names contain one of these: the SCG
            # ControlNets of the moment, found by their metadata (read when the filter is used)
            model_filename_filters = property(lambda self: scg_names() or [CONTROL_TYPE.lower()],
                                              lambda self, value: None)

            def __init__(self):
                super().__init__()
                self.name = PREPROCESSOR_NAME
                self.tags = [CONTROL_TYPE]
                self.slider_resolution = Param(label="Resolution", minimum=64, maximum=2048, value=512, step=8, visible=True)
                # Forge replaces a negative threshold_a with this value in txt2img/img2img, but its
                # /controlnet/detect passes its own default (64) as is: ``run`` maps that
                self.slider_1 = Param(label=group_label, minimum=0, maximum=groups, value=default, step=1, visible=True)
                self.sorting_priority = 5

            __call__ = _preprocessor_call(run)

        self.shared.add_supported_preprocessor(SCGHypercolumn())
        return True


def _preprocessor_call(run: Callable):
    """The ``__call__`` both hosts' preprocessors share: slider 1 is the group number."""

    def call(self, input_image, resolution, slider_1=None, slider_2=None, slider_3=None, **kwargs):
        return run(input_image, resolution, slider_1)

    return call


def scg_first(names: list[str], path_of: Callable[[str], object]) -> ModelChoices:
    """The host's ControlNet names with SCG ControlNets (SCG metadata in the file) first."""
    from scg_core.controlnet.metadata import read_controlnet_info

    def is_scg(name: str) -> bool:
        try:
            path = path_of(name)
            return bool(path) and str(path).endswith(".safetensors") and read_controlnet_info(path) is not None
        except (KeyError, ValueError, OSError):
            return False

    flags = {name: is_scg(name) for name in names}
    scg = [n for n in names if flags[n]]
    return ModelChoices(scg + [n for n in names if not flags[n]], len(scg))


def _first_unit(ui_module: ModuleType | None, tab: str):
    """The first of the host's ControlNet unit UIs in ``tab`` (``ControlNetUiGroup.all_ui_groups``)."""
    groups = getattr(getattr(ui_module, "ControlNetUiGroup", None), "all_ui_groups", None) or []
    return next((g for g in groups if bool(getattr(g, "is_img2img", False)) == (tab == "img2img")), None)


def _find_by_title(runner):
    return next((s for s in runner.alwayson_scripts if s.title().lower() == "controlnet"), None)


def _rgb_uint8(hint: np.ndarray) -> np.ndarray:
    if hint.dtype != np.uint8 or hint.ndim != 3 or hint.shape[2] != 3:
        raise ValueError(f"a ControlNet unit takes an [H,W,3] uint8 RGB hint; got {hint.dtype} {hint.shape}")
    return np.ascontiguousarray(hint)


class WebuiModules:
    """The A1111/Forge core modules generation needs (``modules.processing``, ``modules.scripts``,
    ``modules.shared``, ``modules.call_queue``; Forge: ``modules_forge.main_thread``)."""

    def __init__(self, processing, scripts, shared, call_queue, main_thread=None) -> None:
        self.processing, self.scripts, self.shared, self.call_queue, self.main_thread = processing, scripts, shared, call_queue, main_thread

    def on_main_thread(self, fn):
        return self.main_thread.run_and_wait_result(fn) if self.main_thread is not None else fn()

    def txt2img(self, req: GenerationRequest, units: list, find_controlnet) -> list[np.ndarray]:
        """Run txt2img with only the host's ControlNet script, carrying ``units`` (the pattern other
        extensions use: a copy of the txt2img script runner holding a copy of the ControlNet script)."""
        runner = copy.copy(self.scripts.scripts_txt2img)
        controlnet = find_controlnet(runner)
        if controlnet is None:
            raise RuntimeError("the ControlNet script is not loaded; is the ControlNet extension enabled?")
        controlnet = copy.copy(controlnet)
        controlnet.args_from, controlnet.args_to = 0, len(units)
        runner.alwayson_scripts = [controlnet]
        if hasattr(runner, "callback_map"):
            runner.callback_map = {}
        opts = self.shared.opts
        p = self.processing.StableDiffusionProcessingTxt2Img(
            outpath_samples=opts.outdir_samples or opts.outdir_txt2img_samples,
            outpath_grids=opts.outdir_grids or opts.outdir_txt2img_grids,
            prompt=req.prompt, negative_prompt=req.negative_prompt, seed=req.seed, sampler_name=req.sampler_name,
            steps=req.steps, cfg_scale=req.cfg_scale, width=req.width, height=req.height, batch_size=1, n_iter=1,
            do_not_save_grid=True)
        p.is_api = True  # the host's own sampler/seed scripts must not overwrite these fields
        p.scripts = runner
        p.script_args_value = list(units)
        with self.call_queue.queue_lock:
            self.shared.state.begin(job="scg_txt2img")
            try:
                processed = self.processing.process_images(p)
            finally:
                self.shared.state.end()
                close = getattr(p, "close", None)
                if close:
                    close()
        first = processed.index_of_first_image
        return [np.asarray(img.convert("RGB")) for img in processed.images[first : first + len(processed.all_seeds)]]


def _module(name: str) -> ModuleType | None:
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def detect_host() -> ControlNetHost:
    """The ControlNet present in this web UI (call after all extensions' scripts are loaded)."""
    webui = WebuiModules(*(_module(f"modules.{m}") for m in ("processing", "scripts", "shared", "call_queue")),
                         main_thread=_module("modules_forge.main_thread"))
    forge_cn = _module("lib_controlnet.external_code")
    if _module("modules_forge.shared") is not None and forge_cn is not None:
        return ForgeControlNet(forge_cn, _module("lib_controlnet.global_state"),
                               _module("modules_forge.supported_preprocessor"), _module("modules_forge.shared"), webui)
    # sd-webui-controlnet's modules are in sys.modules once its scripts have loaded (names relative to its folder)
    cn = sys.modules.get("internal_controlnet.external_code") or sys.modules.get("scripts.external_code")
    if cn is not None and hasattr(cn, "ControlNetUnit"):
        return A1111ControlNet(cn, sys.modules.get("scripts.supported_preprocessor"), webui)
    return NoControlNet()
