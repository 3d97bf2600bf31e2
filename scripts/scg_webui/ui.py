"""The "SCG" tab: gradio Blocks that run under gradio 3.41.2 (A1111 1.10) and 4.40 (Forge) alike.

Only components and arguments both versions share are used (no ``source=``/``sources=`` on
images, no ``.style()``, ``gr.update`` for choice lists). The callbacks are plain functions of
values (:class:`TabCallbacks`), so tests call them without a browser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scg_core.hosts.selection import display_gain_note

from .hosts import ControlNetHost, GenerationRequest, ModelChoices, UnitRequest
from .service import HintService, Settings

TAB_TITLE = "SCG"
ELEM = "scg"  # prefix of every elem_id (the send-to JavaScript and the browser test find them by it)


def error_text(e: Exception) -> str:
    return f"**SCG:** {e}"


def model_note(models: ModelChoices) -> str:
    """What the tab says next to its ControlNet picker about the list it shows."""
    if not models.names:
        return ("No ControlNet models found: put an SCG ControlNet in the ControlNet models folder "
                "(`models/ControlNet`), then **Refresh models**.")
    if not models.scg:
        return (f"⚠️ **No SCG ControlNet found**: none of these {len(models.names)} models carries SCG metadata, so "
                f"the first one, *{models.selected}*, is selected — it was not trained on SCG hints. Train one "
                "(`python -m training.train_controlnet`) or convert an official one (`python -m scg_core.convert "
                "official-controlnet`), put it in `models/ControlNet`, then **Refresh models**.")
    return f"{models.scg} SCG ControlNet(s) found (SCG metadata in the file), listed first."


@dataclass
class TabCallbacks:
    """What the tab's events do; ``settings`` reads the host's current options."""

    service: HintService
    host: ControlNetHost
    settings: Callable[[], Settings]

    def preview(self, image, groups, gains):
        """New image: (hint, decomposition sheet, info)."""
        if image is None:
            return None, None, "Upload an image to see its SCG hint and modules."
        try:
            s = self.settings()
            return self.service.hint(s, image, groups, gains), self.service.sheet(s, image), self.describe(image, groups)
        except (ValueError, TypeError, FileNotFoundError) as e:
            return None, None, error_text(e)

    def reselect(self, image, groups, gains):
        """Other groups or gains: (hint, info) — the sheet does not depend on them."""
        if image is None:
            return None, "Upload an image to see its SCG hint and modules."
        try:
            return self.service.hint(self.settings(), image, groups, gains), self.describe(image, groups)
        except (ValueError, TypeError, FileNotFoundError) as e:
            return None, error_text(e)

    def describe(self, image, groups) -> str:
        settings = self.settings()
        names = self.service.group_names(settings, groups)
        kept = ", ".join(names) if names else "all modules"
        shown = display_gain_note(self.service.model(settings), names)
        gains = f" · display: {shown}" if shown else ""
        return f"Hint of **{kept}**{gains} · {image.shape[1]}×{image.shape[0]} · autoencoder: {settings.autoencoder}"

    def generation_hint(self, image, groups, gains, width: int, height: int) -> np.ndarray:
        """The hint at the generation size (source scaled to cover it and centre-cropped), uint8."""
        return self.service.hint(self.settings(), image, groups, gains, size=(int(height), int(width)))

    def generate(self, image, groups, gains, model, prompt, negative, seed, steps, width, height, cfg, weight, start, end):
        """Generate: (gallery images, info)."""
        if problem := self.host.problem():
            return [], error_text(problem)
        if image is None:
            return [], error_text("upload an image first: its hint is the control")
        if not model:
            return [], error_text("choose an SCG ControlNet model (put it in the ControlNet models folder, then refresh)")
        try:
            hint = self.generation_hint(image, groups, gains, width, height)
            unit = UnitRequest(hint=hint, model=model, weight=float(weight), guidance_start=float(start),
                               guidance_end=float(end))
            request = GenerationRequest(prompt=prompt or "", negative_prompt=negative or "", seed=int(seed), steps=int(steps),
                                        width=int(width), height=int(height), cfg_scale=float(cfg), unit=unit)
            images = self.host.generate(request)
        except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
            return [], error_text(e)
        return [hint, *images], f"Generated {len(images)} image(s) with **{model}** (first: the hint it was given)."

    def send(self, tab: str, module_none: str):
        """The Python side of *Send hint to {tab} ControlNet*: ``(hint, model)`` → the first unit's
        image, preprocessor, model, and this tab's info line (the browser has already opened that
        unit and ticked its Enable: javascript/scg.js)."""
        import gradio as gr

        def fn(hint, model):
            if hint is None:
                keep = gr.update()
                return keep, keep, keep, "Upload an image first: its hint is what gets sent."
            model_update = gr.update(value=model) if model else gr.update()
            what = f"with **{model}**" if model else "with no model chosen (pick an SCG ControlNet there)"
            return (np.ascontiguousarray(hint[..., :3]), gr.update(value=module_none), model_update,
                    f"Sent the hint to {tab}'s ControlNet Unit 0 (enabled, preprocessor *{module_none}*, {what}). "
                    f"Write a prompt there and press Generate.")

        return fn

    def refresh_models(self, current: str | None = None) -> tuple[ModelChoices, str | None, str]:
        """The host's models now: (choices, the picker's value, the note beside it). The value stays
        when it is an SCG ControlNet, or when there is none and it is still listed; else the first."""
        models = self.host.models()
        keep = current in models.names[: models.scg] or (not models.scg and current in models.names)
        return models, current if keep else models.selected, model_note(models)


def build_tab(callbacks: TabCallbacks):
    """The tab's ``gr.Blocks`` (A1111's ``on_ui_tabs`` wants ``(blocks, title, elem_id)``)."""
    import gradio as gr

    settings = callbacks.settings()
    try:
        choices, start = callbacks.service.choices(settings), callbacks.service.default_choice(settings)
    except (ValueError, FileNotFoundError) as e:
        choices, start, startup_problem = [], [], str(e)
    else:
        startup_problem = ""
    problem = callbacks.host.problem()
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown(
            f"**SCG** — self-supervised control: the hint keeps only the chosen groups of the modular autoencoder's "
            f"modules. ControlNet: {callbacks.host.name}." + (f"\n\n⚠️ {problem}" if problem else "")
            + (f"\n\n⚠️ {startup_problem}" if startup_problem else ""), elem_id=f"{ELEM}_status")
        with gr.Row():
            with gr.Column():
                source = gr.Image(label="Image", type="numpy", elem_id=f"{ELEM}_source")
                # the same group the scg_hypercolumn preprocessor starts on (service.default_group_number)
                groups = gr.CheckboxGroup(choices=choices, value=start, label="Groups (what each carries)",
                                          elem_id=f"{ELEM}_groups")
                gains = gr.Textbox(label="Gains (optional)", placeholder="colour=0.5, edges=2", elem_id=f"{ELEM}_gains")
            with gr.Column():
                hint = gr.Image(label="Hint", type="numpy", interactive=False, elem_id=f"{ELEM}_hint")
                info = gr.Markdown("Upload an image to see its SCG hint and modules.", elem_id=f"{ELEM}_info")
        sheet = gr.Image(label="Decomposition: input, each group's hint, each module", type="numpy", interactive=False,
                         elem_id=f"{ELEM}_sheet")
        with gr.Row():
            send_txt = gr.Button("Send hint to txt2img ControlNet", elem_id=f"{ELEM}_send_txt2img")
            send_img = gr.Button("Send hint to img2img ControlNet", elem_id=f"{ELEM}_send_img2img")
        with gr.Row():
            with gr.Column():
                models, selected, note = callbacks.refresh_models()
                with gr.Row():
                    model = gr.Dropdown(choices=models.names, value=selected, label="SCG ControlNet",
                                        elem_id=f"{ELEM}_model")
                    refresh = gr.Button("Refresh models", elem_id=f"{ELEM}_refresh")
                model_info = gr.Markdown(note, elem_id=f"{ELEM}_model_note")
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id=f"{ELEM}_prompt")
                negative = gr.Textbox(label="Negative prompt", lines=1, elem_id=f"{ELEM}_negative")
                with gr.Row():
                    seed = gr.Number(label="Seed (-1: random)", value=-1, precision=0, elem_id=f"{ELEM}_seed")
                    steps = gr.Slider(1, 150, value=20, step=1, label="Steps", elem_id=f"{ELEM}_steps")
                    cfg = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG scale", elem_id=f"{ELEM}_cfg")
                with gr.Row():
                    width = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id=f"{ELEM}_width")
                    height = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id=f"{ELEM}_height")
                with gr.Row():
                    weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control weight", elem_id=f"{ELEM}_weight")
                    start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Guidance start", elem_id=f"{ELEM}_start")
                    end = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Guidance end", elem_id=f"{ELEM}_end")
                generate = gr.Button("Generate", variant="primary", elem_id=f"{ELEM}_generate")
            gallery = gr.Gallery(label="Results", columns=2, elem_id=f"{ELEM}_gallery")

        selection = [source, groups, gains]
        source.change(callbacks.preview, inputs=selection, outputs=[hint, sheet, info])
        groups.change(callbacks.reselect, inputs=selection, outputs=[hint, info])
        gains.change(callbacks.reselect, inputs=selection, outputs=[hint, info])
        refresh.click(lambda current: _refreshed(callbacks, current), inputs=[model], outputs=[model, model_info])
        generate.click(callbacks.generate, inputs=[*selection, model, prompt, negative, seed, steps, width, height, cfg,
                                                   weight, start, end], outputs=[gallery, info])
        # Send: the browser opens the target unit (javascript/scg.js), then Python sets its image,
        # Enable, preprocessor and model — the unit components the host built (hosts.send_target).
        # A host UI we do not know gets the hint dropped on its upload input instead.
        for button, tab_name in ((send_txt, "txt2img"), (send_img, "img2img")):
            target = callbacks.host.send_target(tab_name)
            if target is None:
                _on_click_js(button, f"() => scgSendHintToControlNet('{tab_name}')")
            else:
                _on_click(button, callbacks.send(tab_name, target.module_none), inputs=[hint, model],
                          outputs=[target.image, target.module, target.model, info],
                          js=f"(...inputs) => scgSendToControlNet('{tab_name}', ...inputs)")
    return tab


def _refreshed(callbacks: TabCallbacks, current):
    import gradio as gr

    models, value, note = callbacks.refresh_models(current)
    return gr.update(choices=models.names, value=value), gr.update(value=note)


def _on_click(button, fn, inputs, outputs, js: str) -> None:
    """A click that runs ``js`` in the browser first (its return value becomes the inputs), then ``fn``."""
    import gradio as gr

    key = "js" if int(gr.__version__.split(".")[0]) >= 4 else "_js"
    button.click(fn, inputs=inputs, outputs=outputs, **{key: js})


def _on_click_js(button, js: str) -> None:
    """A click that runs only JavaScript: ``_js=`` in gradio 3, ``js=`` in gradio 4."""
    import gradio as gr

    if int(gr.__version__.split(".")[0]) >= 4:
        button.click(None, inputs=[], outputs=[], js=js)
    else:
        button.click(None, inputs=[], outputs=[], _js=js)
