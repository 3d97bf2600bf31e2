"""Wiring into A1111 / Forge: settings, the SCG tab and the ``scg_hypercolumn`` preprocessor.

``register`` is called by ``scripts/scg_tab.py`` when the host loads the extension's scripts; the
host modules are passed in, so tests use fakes that record what is registered.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import scg_core

from .hosts import PREPROCESSOR_NAME, ControlNetHost, detect_host
from .service import (
    DEFAULT_NAME,
    HintService,
    Settings,
    default_group_number,
    list_autoencoders,
)
from .ui import ELEM, TAB_TITLE, TabCallbacks, build_tab

log = logging.getLogger("scg")
SECTION = ("scg", "SCG")
MODELS_SUBDIR = "SCG"  # models/SCG: extra autoencoders
CONSOLE = "scg console"  # the name of the scg logger's handler
UNSET = -1  # what both hosts' ControlNet units hold in threshold_a when the caller set none


class _Stdout(logging.StreamHandler):
    """A stream handler on whatever ``sys.stdout`` is when a record comes (the hosts' console)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(shared) -> logging.Logger:
    """The ``scg`` logger, printed to the console at INFO the way the hosts' ControlNet prints its own
    (its logger has a stdout handler and does not propagate): neither A1111 1.10 nor Forge configures
    logging unless started with ``--loglevel`` (or ``SD_WEBUI_LOG_LEVEL``), so an INFO record of a
    logger without a handler is never shown. ``--loglevel`` sets this logger's level too."""
    level_name = getattr(getattr(shared, "cmd_opts", None), "loglevel", None) or os.environ.get("SD_WEBUI_LOG_LEVEL")
    level = getattr(logging, str(level_name).upper(), None) if level_name else None
    log.setLevel(level if isinstance(level, int) else logging.INFO)
    if not any(h.get_name() == CONSOLE for h in log.handlers):  # by name: scripts may be reloaded
        handler = _Stdout()
        handler.set_name(CONSOLE)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.propagate = False
    return log


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


def slider_group(value, groups: Sequence[scg_core.Group]) -> tuple[int, str]:
    """The preprocessor's slider 1 → a group number (0 = all modules, n = the n-th of ``groups``) and
    a warning ("" when none is due).

    A whole number in ``0..len(groups)`` is that group. Anything else — Forge's ``/controlnet/detect``
    passes its API default 64 as is, or a number too large for this autoencoder — means the default
    group (:func:`~scg_webui.service.default_group_number`, the slider's start; sd-webui-controlnet
    replaces out-of-range values with it before calling us, so both hosts behave alike) and a
    warning naming the value, the range and the group used. The hosts' "not set" (``None``, -1)
    means the default group without a warning."""
    count, default = len(groups), default_group_number(groups)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if value is None or number == UNSET:
        return default, ""
    if math.isfinite(number) and number == round(number) and 0 <= number <= count:
        return int(number), ""
    shown = f"{number:g}" if math.isfinite(number) else repr(value)
    used = f"{default} = {groups[default - 1].title}" if default else "0 = all modules"
    allowed = f"neither 0 (all modules) nor a group number 1–{count}" if count else "not 0 (all modules; no groups here)"
    return default, (f"{PREPROCESSOR_NAME}: group {shown} is {allowed}; using the default group, {used}. "
                     f"Set threshold_a (the preprocessor's slider; controlnet_threshold_a in /controlnet/detect) "
                     f"to a whole number 0–{count}.")


def preprocessor_run(service: HintService, settings: Callable[[], Settings]):
    """The preprocessor's work: ``image`` ``[H,W,C]`` (uint8 from the hosts), ``resolution`` (shorter
    side to compute at, resized as every host does; ≤0 keeps the size), ``group_number`` (see
    :func:`slider_group`) → the hint, ``[H',W',3]`` uint8."""

    def run(image: np.ndarray, resolution, group_number) -> np.ndarray:
        s = settings()
        groups = service.model(s).groups
        n, warning = slider_group(group_number, groups)
        if warning:
            log.warning("SCG: %s", warning)
        chosen = [groups[n - 1].name] if n else None
        short_side = int(resolution) if resolution and int(resolution) > 0 else None
        return service.hint(s, image, chosen, short_side=short_side)

    return run


@dataclass(frozen=True)
class GroupSlider:
    """The preprocessor's slider 1: its label, the number of groups (its maximum), the group it starts
    on (also what out-of-range values mean) and that group's title."""

    label: str
    groups: int
    default: int
    default_title: str


def group_slider(service: HintService, settings: Settings) -> GroupSlider:
    try:
        groups = service.model(settings).groups
    except (ValueError, FileNotFoundError) as e:
        log.warning("SCG: %s", e)
        return GroupSlider("SCG group: 0 = all modules", 0, 0, "all modules")
    default = default_group_number(groups)
    title = groups[default - 1].title if default else "all modules"
    names = ", ".join(f"{i} {g.title}" for i, g in enumerate(groups, 1))
    return GroupSlider(f"SCG group: 0 = all modules, {names} (other values: {default})", len(groups), default, title)


def register(script_callbacks, shared, paths, host_factory: Callable[[], ControlNetHost] = detect_host) -> HintService:
    """Register settings, the tab and (once every extension has loaded) the preprocessor."""
    setup_logging(shared)
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
        slider = group_slider(service, settings())
        if problem := host().problem():
            log.warning("SCG: %s", problem)
            return
        try:
            if host().register_preprocessor(preprocessor_run(service, settings), slider.label, slider.groups, slider.default):
                log.info("SCG: added the %s preprocessor to %s; its slider picks the group (0 = all modules, "
                         "1–%d the groups), starting on %d = %s", PREPROCESSOR_NAME, host().name, slider.groups,
                         slider.default, slider.default_title)
        except Exception as e:  # a host API we do not know: the tab still works
            log.warning("SCG: could not add the %s preprocessor to %s: %s", PREPROCESSOR_NAME, host().name, e)

    def ui_tabs():
        return [(build_tab(TabCallbacks(service, host(), settings)), TAB_TITLE, ELEM)]

    script_callbacks.on_ui_settings(lambda: add_settings(shared, models_dir))
    script_callbacks.on_before_ui(before_ui)
    script_callbacks.on_ui_tabs(ui_tabs)
    return service
