"""Wiring into A1111 / Forge: settings, the SCG tab and the ``scg_hypercolumn`` preprocessor.

``register`` is called by ``scripts/scg_tab.py`` when the host loads the extension's scripts; the
host modules are passed in, so tests use fakes that record what is registered.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from .hosts import ControlNetHost, detect_host
from .service import DEFAULT_NAME, HintService, Settings, list_autoencoders
from .ui import ELEM, TAB_TITLE, TabCallbacks, build_tab

log = logging.getLogger("scg")
SECTION = ("scg", "SCG")
MODELS_SUBDIR = "SCG"  # models/SCG: extra autoencoders


def read_settings(opts_data: dict, models_path: str) -> Settings:
    return Settings(autoencoder=str(opts_data.get("scg_autoencoder", DEFAULT_NAME) or DEFAULT_NAME),
                    device=str(opts_data.get("scg_device", "auto") or "auto"),
                    keep_on_cpu=bool(opts_data.get("scg_keep_on_cpu", True)),
                    models_dir=os.path.join(models_path, MODELS_SUBDIR))


def add_settings(shared, models_dir: str) -> None:
    """Settings → SCG: autoencoder file, device, keep on CPU after use."""
    import gradio as gr

    opts, info = shared.opts, shared.OptionInfo
    opts.add_option("scg_autoencoder", info(
        DEFAULT_NAME, f"Modular autoencoder (extra files: {models_dir})", gr.Dropdown,
        lambda: {"choices": list_autoencoders(models_dir)}, refresh=lambda: None, section=SECTION))
    opts.add_option("scg_device", info("auto", "Device for SCG hints (auto, cpu, cuda, cuda:1 …)", gr.Textbox, section=SECTION))
    opts.add_option("scg_keep_on_cpu", info(True, "Move the autoencoder back to the CPU after each use (frees GPU memory)",
                                            gr.Checkbox, section=SECTION))


def preprocessor_run(service: HintService, settings: Callable[[], Settings]):
    """The preprocessor's work: ``image`` uint8 ``[H,W,C]``, ``resolution`` (shorter side to compute
    at; ≤0 keeps the size), ``group_number`` (0 = all modules, n = the n-th group) → uint8 hint."""

    def run(image: np.ndarray, resolution, group_number) -> np.ndarray:
        s = settings()
        groups = service.model(s).groups
        n = int(round(float(group_number or 0)))
        chosen = [groups[n - 1].name] if 1 <= n <= len(groups) else None
        if resolution and int(resolution) > 0 and min(image.shape[:2]) != int(resolution):
            h, w = image.shape[:2]
            scale = int(resolution) / min(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
        return service.hint(s, image, chosen)

    return run


def group_slider_label(service: HintService, settings: Settings) -> tuple[str, int]:
    try:
        groups = service.model(settings).groups
    except (ValueError, FileNotFoundError) as e:
        log.warning("SCG: %s", e)
        return "SCG group: 0 = all modules", 0
    names = ", ".join(f"{i} {g.title}" for i, g in enumerate(groups, 1))
    return f"SCG group: 0 = all modules, {names}", len(groups)


def register(script_callbacks, shared, paths, host_factory: Callable[[], ControlNetHost] = detect_host) -> HintService:
    """Register settings, the tab and (once every extension has loaded) the preprocessor."""
    service = HintService()
    models_dir = os.path.join(paths.models_path, MODELS_SUBDIR)

    def settings() -> Settings:
        return read_settings(shared.opts.data, paths.models_path)

    state: dict[str, ControlNetHost] = {}

    def host() -> ControlNetHost:
        if "host" not in state:  # detected lazily: the ControlNet extension may load after this one
            state["host"] = host_factory()
        return state["host"]

    def before_ui() -> None:
        label, count = group_slider_label(service, settings())
        try:
            if host().register_preprocessor(preprocessor_run(service, settings), label, count):
                log.info("SCG: registered the %s preprocessor in %s", "scg_hypercolumn", host().name)
        except Exception as e:  # a host API we do not know: the tab still works
            log.warning("SCG: could not register the preprocessor with %s: %s", host().name, e)

    def ui_tabs():
        return [(build_tab(TabCallbacks(service, host(), settings)), TAB_TITLE, ELEM)]

    script_callbacks.on_ui_settings(lambda: add_settings(shared, models_dir))
    script_callbacks.on_before_ui(before_ui)
    script_callbacks.on_ui_tabs(ui_tabs)
    return service
