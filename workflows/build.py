"""Write the shareable workflows in this folder (ComfyUI UI format, v0.4), so that every node,
link and widget agrees with the node definitions, with their template-browser thumbnails
(``<name>.jpg`` next to ``<name>.json``) and example inputs (``images/``). Run from the repository root:

    python workflows/build.py

Core node definitions come from ``devtools/data/comfyui_core_object_info.json`` (a snapshot of a real
ComfyUI's ``/object_info``); ours from the node classes. Node positions leave room for the title bar
ComfyUI draws above each node (``TITLE_HEIGHT``) and a gap, so no two nodes overlap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.workflow_format import (
    definition_of,
    inputs_of,
    is_widget,
    validate,
    widget_slots,
)
from nodes import NODE_CLASS_MAPPINGS

TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's pos
THUMBNAIL_SIZE = 448  # the template browser shows a square card (object-cover), 256 px wide
JPEG_QUALITY = 85  # the edges hint is fine line work: at 70 JPEG moves it by ~8 grey levels
ICON = ROOT / "docs" / "images" / "comfyui_icon.png"
ICON_SIZE = 256  # the registry asks for a square icon of at most 400 × 400


def all_definitions() -> dict:
    defs = json.loads((ROOT / "devtools" / "data" / "comfyui_core_object_info.json").read_text())
    defs.update({name: definition_of(cls) for name, cls in NODE_CLASS_MAPPINGS.items()})
    return defs


class Graph:
    """A UI-format workflow under construction."""

    def __init__(self, defs: dict):
        self.defs, self.nodes, self.links = defs, [], []

    def add(self, kind: str, pos: tuple[int, int], size=(320, 120), title: str | None = None, **values) -> int:
        defn = self.defs[kind]
        widgets = []
        for name, role in widget_slots(defn):
            spec = {n: s for n, s, _ in inputs_of(defn)}[name]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            default = options.get("default", spec[0][0] if isinstance(spec[0], list) and spec[0] else "")
            widgets.append({"value": values.pop(name, default), "control_after_generate": "fixed", "upload": "image"}[role])
        if values:
            raise KeyError(f"{kind} has no widgets {sorted(values)}")
        node = {
            "id": len(self.nodes) + 1, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
            "order": len(self.nodes), "mode": 0,
            "inputs": [{"name": n, "type": "COMBO" if isinstance(s[0], list) else s[0], "link": None}
                       for n, s, _ in inputs_of(defn) if not is_widget(s)],
            "outputs": [{"name": on, "type": ot, "links": [], "slot_index": i}
                        for i, (ot, on) in enumerate(zip(defn["output"], defn.get("output_name", defn["output"])))],
            "properties": {"Node name for S&R": kind},
            "widgets_values": widgets,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node["id"]

    def note(self, text: str, pos: tuple[int, int], size=(420, 260)) -> int:
        self.nodes.append({"id": len(self.nodes) + 1, "type": "Note", "pos": list(pos), "size": list(size), "flags": {},
                           "order": len(self.nodes), "mode": 0, "properties": {"text": ""}, "widgets_values": [text],
                           "color": "#432", "bgcolor": "#653"})
        return self.nodes[-1]["id"]

    def link(self, src: int, output: str, dst: int, input: str) -> None:
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        slot = next(i for i, o in enumerate(s["outputs"]) if o["name"] == output)
        dslot = next(i for i, o in enumerate(d["inputs"]) if o["name"] == input)
        link_id = len(self.links) + 1
        kind = s["outputs"][slot]["type"]
        self.links.append([link_id, src, slot, dst, dslot, kind])
        s["outputs"][slot]["links"].append(link_id)
        d["inputs"][dslot]["link"] = link_id

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def hint_gallery(defs) -> dict:
    g = Graph(defs)
    g.note("SCG hint gallery — no Stable Diffusion model needed.\n\n"
           "Load any image: each 'Modular AE Encode (hypercolumn)' keeps some groups of the modular "
           "autoencoder and decodes them back to an image — the SCG hint a ControlNet sees. "
           "The decomposition sheet shows every group and every module.\n\n"
           "Groups of the bundled default: colour, brightness, "
           "edges (edges_coarse + edges_fine: luminance edges at two scales), texture "
           "('all' = the full reconstruction). "
           "Load the official SCG autoencoder (converted with `python -m scg_core.convert official-ae`) "
           "for HC0–HC5. After a run each encode node shows which modules it kept.", (20, 40), (340, 320))
    image = g.add("LoadImage", (20, 430), (340, 380), image="chelsea.jpg")
    ae = g.add("SCGLoadModularAE", (20, 880), (340, 60))
    for i, groups in enumerate(["brightness", "colour", "edges", "all"]):
        enc = g.add("SCGModularAEEncode", (400, 40 + 250 * i), (340, 190), groups=groups)
        g.link(image, "IMAGE", enc, "image")
        g.link(ae, "modular_ae", enc, "modular_ae")
        save = g.add("SaveImage", (780 + 350 * (i % 2), 40 + 360 * (i // 2)), (320, 300), filename_prefix=f"scg_gallery/{groups}")
        g.link(enc, "hint", save, "images")
    sheet = g.add("SCGDecompositionSheet", (400, 1040), (340, 110))
    g.link(image, "IMAGE", sheet, "image")
    g.link(ae, "modular_ae", sheet, "modular_ae")
    save = g.add("SaveImage", (780, 760), (670, 430), filename_prefix="scg_gallery/sheet")
    g.link(sheet, "sheet", save, "images")
    return g.to_json()


def generation(defs, note: str, image: str, groups: str, prompt: str, size=(512, 512)) -> dict:
    """Source image → SCG ControlNet Apply → SD1.5 → image, with the hint previewed."""
    g = Graph(defs)
    g.note(note, (20, 40), (340, 360))
    ckpt = g.add("CheckpointLoaderSimple", (20, 470), (340, 100), ckpt_name="v1-5-pruned-emaonly.safetensors")
    pos = g.add("CLIPTextEncode", (400, 40), (400, 160), title="Positive prompt", text=prompt)
    neg = g.add("CLIPTextEncode", (400, 270), (400, 160), title="Negative prompt",
                text="lowres, blurry, deformed, watermark, text")
    g.link(ckpt, "CLIP", pos, "clip")
    g.link(ckpt, "CLIP", neg, "clip")
    src = g.add("LoadImage", (20, 640), (340, 380), image=image)
    cn = g.add("ControlNetLoader", (400, 500), (400, 60), control_net_name="scg_controlnet_sd15.safetensors")
    ae = g.add("SCGLoadModularAE", (400, 630), (400, 60))
    latent = g.add("EmptyLatentImage", (400, 760), (400, 110), width=size[0], height=size[1], batch_size=1)
    apply = g.add("SCGControlNetApply", (840, 40), (380, 380), groups=groups)
    for src_node, out, inp in [(pos, "CONDITIONING", "positive"), (neg, "CONDITIONING", "negative"), (cn, "CONTROL_NET", "control_net"),
                               (src, "IMAGE", "image"), (ae, "modular_ae", "modular_ae"), (latent, "LATENT", "latent")]:
        g.link(src_node, out, apply, inp)
    sampler = g.add("KSampler", (1260, 40), (320, 270), seed=42, steps=20, cfg=7.0, sampler_name="euler_ancestral")
    g.link(ckpt, "MODEL", sampler, "model")
    g.link(apply, "positive", sampler, "positive")
    g.link(apply, "negative", sampler, "negative")
    g.link(latent, "LATENT", sampler, "latent_image")
    decode = g.add("VAEDecode", (1260, 380), (200, 50))
    g.link(sampler, "LATENT", decode, "samples")
    g.link(ckpt, "VAE", decode, "vae")
    save = g.add("SaveImage", (1620, 40), (420, 460), filename_prefix="scg")
    g.link(decode, "IMAGE", save, "images")
    preview = g.add("PreviewImage", (840, 490), (380, 400), title="Hint (source centre-cropped to the latent)")
    g.link(apply, "hint", preview, "images")
    return g.to_json()


CONTROLNET_NOTE = ("\n\nNeeds: an SD1.5 checkpoint in models/checkpoints and an SCG ControlNet "
                   "(trained with `python -m training.train_controlnet`, or an official one converted with "
                   "`python -m scg_core.convert official-controlnet`) in models/controlnet. The hint is computed at the "
                   "latent's size: the source is scaled to cover it and centre-cropped. After a run, SCG ControlNet "
                   "Apply shows on the node (and in the console) whether the groups match those the ControlNet was "
                   "trained on.")


def workflows(defs) -> dict[str, dict]:
    return {
        "scg_hint_gallery.json": hint_gallery(defs),
        "scg_sketch_to_photo.json": generation(
            defs, "Sketch → photo.\n\nThe edges group keeps the strokes of a line drawing and nothing of its paper or "
            "shading ('edges' selects both edge scales of the bundled default, and HC2 + HC3 of the "
            "official autoencoder). Add 'brightness' to keep "
            "the drawing's dark and light areas too." + CONTROLNET_NOTE,
            "scg_sketch.png", "edges", "a photo of a cat, detailed fur, natural light"),
        "scg_painting_to_photo.json": generation(
            defs, "Ink or oil painting → photo.\n\nThe brightness group keeps the painting's shapes and shading and drops "
            "its colours and brush texture, so the ControlNet renders a photograph of the same scene." + CONTROLNET_NOTE,
            "scg_painting.png", "brightness", "a photograph of an astronaut, studio portrait, sharp focus"),
        "scg_super_resolution.json": generation(
            defs, "Super-resolution.\n\nA small image is scaled to the latent's size, then colour and brightness "
            "(its coarse content) guide a detailed re-rendering at full resolution." + CONTROLNET_NOTE,
            "scg_lowres.png", "colour, brightness", "a high resolution photograph, sharp details"),
        "scg_dehazing.json": generation(
            defs, "Dehazing.\n\nHaze lifts the darks and washes out colour. The bundled default shows each image's colour "
            "and brightness at a readable contrast (stretched per image, up to the point where its values would clip), "
            "which gives back much of what the haze took; the 'gains' widget adds more (e.g. 'brightness=1.2', "
            "at the cost of some clipping)." + CONTROLNET_NOTE,
            "scg_hazy.png", "colour, brightness", "a clear photograph, vivid colours, high contrast"),
    }


def example_images(out: Path) -> None:
    """Inputs for the workflows (copy them into ComfyUI/input), made from ``photos/``."""
    from PIL import Image, ImageChops, ImageFilter, ImageOps

    out.mkdir(exist_ok=True)
    cat = Image.open(ROOT / "photos" / "chelsea.jpg").convert("RGB")
    astronaut = Image.open(ROOT / "photos" / "astronaut.jpg").convert("RGB")
    cat.save(out / "chelsea.jpg", quality=92)
    edges = ImageOps.grayscale(cat).filter(ImageFilter.GaussianBlur(1.2)).filter(ImageFilter.FIND_EDGES)
    sketch = ImageOps.invert(edges.point(lambda v: 255 if v > 10 else v * 12))  # dark strokes on white
    sketch.convert("RGB").save(out / "scg_sketch.png")
    ink = ImageOps.posterize(ImageOps.grayscale(astronaut).filter(ImageFilter.ModeFilter(7)), 3)
    ImageChops.multiply(ink.convert("RGB"), Image.new("RGB", ink.size, (236, 226, 204))).save(out / "scg_painting.png")
    astronaut.resize((128, 128), Image.Resampling.LANCZOS).save(out / "scg_lowres.png")
    Image.blend(cat, Image.new("RGB", cat.size, (205, 210, 215)), 0.55).save(out / "scg_hazy.png")


def _nodes(wf: dict, kind: str) -> list[dict]:
    return [n for n in wf["nodes"] if n["type"] == kind]


def _groups(text: str) -> list[str] | None:
    from scg_core.hosts.selection import parse_groups

    return parse_groups(text)


def _label(img, text: str):
    """``img`` with ``text`` on a dark strip along its bottom edge."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    h = 18
    draw.rectangle([0, img.height - h, img.width, img.height], fill=(24, 24, 24))
    draw.text((6, img.height - h + 3), text, fill=(235, 235, 235), font=font)
    return img


def thumbnail(wf: dict, images: Path, model=None):
    """The template-browser card of a workflow (a square PIL image): what its SCG nodes compute
    from its example input, with the bundled autoencoder.

    A generation workflow: the source as SCG ControlNet Apply sees it (scaled to cover the latent's
    size and centre-cropped) on the left, the hint it computes on the right, split down the middle
    so that both halves line up. The hint gallery: the source and three of its hints, 2 × 2.
    """
    import torch
    from PIL import Image

    from scg_core import load_default
    from scg_core.formats.images import fit_to_size, pil_to_tensor, tensor_to_pil

    model = model or load_default()
    source = images / _nodes(wf, "LoadImage")[0]["widgets_values"][0]
    x = pil_to_tensor(Image.open(source))
    side = THUMBNAIL_SIZE
    with torch.inference_mode():
        if _nodes(wf, "SCGControlNetApply"):
            groups = _nodes(wf, "SCGControlNetApply")[0]["widgets_values"][0]
            latent = _nodes(wf, "EmptyLatentImage")[0]["widgets_values"]
            seen = fit_to_size(x, (latent[1], latent[0]))  # (H, W): what the node computes the hint of
            hint = model.hint(seen, _groups(groups)).clamp(0, 1)
            left, right = (tensor_to_pil(fit_to_size(t, (side, side))) for t in (seen, hint))
            card = left.copy()
            card.paste(right.crop((side // 2, 0, side, side)), (side // 2, 0))
            card.paste(Image.new("RGB", (2, side), (255, 255, 255)), (side // 2 - 1, 0))
            return _label(card, f"input  |  SCG hint: {groups}")
        tile = side // 2
        seen = fit_to_size(x, (tile, tile))
        card = Image.new("RGB", (side, side))
        shown = [("input", seen)]
        for node in _nodes(wf, "SCGModularAEEncode"):
            groups = node["widgets_values"][0]
            if groups != "all" and len(shown) < 4:
                shown.append((f"hint: {groups}", model.hint(seen, _groups(groups)).clamp(0, 1)))
        for i, (text, t) in enumerate(shown):
            card.paste(_label(tensor_to_pil(t), text), ((i % 2) * tile, (i // 2) * tile))
        return card


def main() -> None:
    here = Path(__file__).parent
    example_images(here / "images")
    defs = all_definitions()
    for name, wf in workflows(defs).items():
        problems = validate(wf, defs)
        if problems:
            raise SystemExit(f"{name}: " + "; ".join(problems))
        (here / name).write_text(json.dumps(wf, indent=1, ensure_ascii=False) + "\n")
        jpg = (here / name).with_suffix(".jpg")
        card = thumbnail(wf, here / "images")
        card.save(jpg, quality=JPEG_QUALITY, optimize=True)
        print("wrote", name, "and", jpg.name, f"({jpg.stat().st_size // 1024} KB)")
        if name == "scg_hint_gallery.json":  # the pack's icon for the ComfyUI Registry / Manager ([tool.comfy] Icon)
            from PIL import Image

            card.resize((ICON_SIZE, ICON_SIZE), Image.Resampling.LANCZOS).quantize(256).save(ICON, optimize=True)
            print("wrote", ICON.relative_to(ROOT))


if __name__ == "__main__":
    main()
