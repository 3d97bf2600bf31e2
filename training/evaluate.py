"""Evaluate an SCG ControlNet with the protocol of the paper's Table 1 (docs/evaluation.md).

    python -m training.evaluate --base models/stable-diffusion-v1-5 --controlnet scg_edges.safetensors \\
        --data coco/val2017 --captions coco/annotations/captions_val2017.json --num 500 \\
        --clip models/clip-vit-large-patch14 --inception models/pt_inception-2015-12-05-6726825d.pth --out eval/

For each of the first ``--num`` images and each selection of ``--groups``: the image is scaled to
cover ``--resolution``² and centre-cropped (the *original*), its hint is computed by the function
every host and the trainer use (``scg_core.hosts.hint.source_hint``), and SD1.5 + the ControlNet
generate an image from that hint and the image's first caption. The generated image is compared
with the original: PSNR and SSIM on grey and on colour images, CLIP (image–image cosine, the paper's
column, and the usual image–caption score) and FID. ``--canny-controlnet`` adds the paper's baseline
row: the same through OpenCV Canny edges and a Canny ControlNet.

Writes ``OUT/<group>/`` (``generated/``, ``hints/``, ``metrics.{md,csv,json}``, ``per_image.csv``,
``grid-NNN.png``: source | hint | generated) and ``OUT/summary.{md,csv,json}`` with every group. A
rerun with the same settings reuses the images already generated; other settings in the same
``--out`` are refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import torch
from torch import Tensor

from .caption_data import CaptionedImages
from .eval_metrics import MissingMetricWeights, Scores, clip_metric, fid_metric, load_clip
from .sd_base import BaseModelError, load_base, make_controlnet

METRICS = ("psnr", "ssim", "clip", "fid")
ROWS = [("psnr_gray", "PSNR gray ↑"), ("psnr_color", "PSNR color ↑"), ("ssim_gray", "SSIM gray ↑"),
        ("ssim_color", "SSIM color ↑"), ("fid", "FID ↓"), ("clip_image", "CLIP image ↑"), ("clip_text", "CLIP text ↑")]
GRID_ROWS = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("models")
    m.add_argument("--base", required=True, help="SD1.5: a diffusers folder, or a single file (+ --base-config)")
    m.add_argument("--base-config", help="for a single-file --base: a local diffusers SD1.5 folder (configs, tokenizer)")
    m.add_argument("--controlnet", required=True, help="the SCG ControlNet: .safetensors (ldm layout) or a diffusers folder")
    m.add_argument("--ae", help="modular autoencoder (.safetensors); default: the bundled one")
    m.add_argument("--groups", nargs="+", metavar="SELECTION",
                   help="one evaluation per selection, e.g. edges 'colour, brightness' (default: what the ControlNet "
                        "was trained on, from its metadata: its groups together, or each one for --random-groups)")
    m.add_argument("--gains", default="", help="per-group factors, e.g. 'colour=0.5'")
    m.add_argument("--canny-controlnet", help="also evaluate OpenCV Canny edges through this Canny ControlNet (baseline)")
    m.add_argument("--canny-thresholds", type=int, nargs=2, default=[100, 200], metavar=("LOW", "HIGH"))
    d = p.add_argument_group("data")
    d.add_argument("--data", type=Path, required=True, help="image folder (same-name .txt captions, or metadata.jsonl)")
    d.add_argument("--captions", type=Path, help="COCO captions JSON for the images in --data")
    d.add_argument("--caption-column", default="text", help="caption field of metadata.jsonl")
    d.add_argument("--num", type=int, default=100, help="images evaluated: the first N usable ones, in path order (COCO: in the captions file's order)")
    d.add_argument("--resolution", type=int, default=512)
    g = p.add_argument_group("generation")
    g.add_argument("--steps", type=int, default=20, help="sampling steps (UniPC)")
    g.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    g.add_argument("--conditioning-scale", type=float, default=1.0, help="ControlNet strength")
    g.add_argument("--seed", type=int, default=0, help="image i is generated with seed + i")
    g.add_argument("--batch", type=int, default=4, help="images generated together")
    g.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    e = p.add_argument_group("metrics (feature networks are read from local files, never downloaded)")
    e.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)}")
    e.add_argument("--clip", type=Path, help="a local CLIP model folder (transformers layout), for the CLIP metrics "
                                             "(default: openai/clip-vit-large-patch14 from the Hugging Face cache, if there)")
    e.add_argument("--inception", type=Path, help="torch-fidelity's FID Inception weights file, for FID (default: "
                                                  "torch-fidelity's copy in torch's hub cache, if there)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args(argv)
    args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if set(args.metrics) - set(METRICS):
        p.error(f"--metrics takes {', '.join(METRICS)}; got {', '.join(sorted(set(args.metrics) - set(METRICS)))}")
    for name in ("num", "steps", "batch", "resolution"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.resolution % 8:
        p.error(f"--resolution {args.resolution} must be a multiple of 8 (the latent is 1/8 of the image)")
    return args


def main(args: argparse.Namespace, *, clip=None, fid_features=None) -> dict:
    """Run the evaluation; returns ``{group: metrics}``. ``clip`` / ``fid_features`` replace the
    networks read from ``--clip`` / ``--inception`` (a CLIP loader, a feature module: for tests)."""
    import scg_core
    from scg_core.hosts.hint import source_hint
    from scg_core.hosts.selection import parse_gains, parse_groups

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(
        args.precision, torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        clip_score, fid = metric_networks(args, device, clip, fid_features)
        data = CaptionedImages(args.data, args.captions, caption_column=args.caption_column, min_size=64)
        ae = (scg_core.load(args.ae) if args.ae else scg_core.load_default()).to(device)
        gains = parse_gains(args.gains)
        selections = evaluation_groups(args)
        kept = {name: parse_groups(s) for name, s in selections.items() if s != "canny"}
        for groups in kept.values():
            ae.module_gains(groups, None, gains or None)  # unknown names fail here
        parts = load_base(args.base, args.base_config)
        controlnets = {"scg": load_controlnet(args.controlnet, parts.unet)}
        if args.canny_controlnet:
            controlnets["canny"] = load_controlnet(args.canny_controlnet, parts.unet)
    except (BaseModelError, MissingMetricWeights, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    items = data.items[: args.num]
    check_run(args, items, ae)
    pipe = pipeline(parts, device, dtype)
    results = {}
    for n, name in enumerate(selections):
        if name in kept:
            hint_fn = lambda x, groups=kept[name]: source_hint(ae, x, groups, gains).cpu()  # noqa: E731
        else:
            hint_fn = lambda x: canny_hint(x, *args.canny_thresholds)  # noqa: E731
        controlnet = controlnets["scg" if name in kept else "canny"]
        scores = Scores(clip_score, fid, score_real=n == 0)
        results[name] = evaluate_group(args, name, items, hint_fn, pipe, controlnet, scores, device, dtype)
    write_summary(args.out, results, args)
    return results


def metric_networks(args, device, clip, fid_features):
    """The CLIP score and FID metrics every group shares, built (so checked) before any image is generated."""
    clip_score = clip_metric(clip or load_clip(args.clip), device) if "clip" in args.metrics else None
    fid = None
    if "fid" in args.metrics:
        fid = fid_metric(fid_features if fid_features is not None else args.inception, device)
    return clip_score, fid


def evaluation_groups(args) -> dict[str, str]:
    """``{folder name: selection text}`` (``"canny"`` for the baseline)."""
    from scg_core.controlnet.metadata import read_controlnet_info

    selections = list(args.groups or [])
    if not selections:
        info = read_controlnet_info(args.controlnet) if Path(args.controlnet).is_file() else None
        if info is None:
            raise ValueError(f"--controlnet {args.controlnet} does not say which groups it was trained on (no SCG "
                             "metadata): pass --groups")
        names = [g.name for g in info.groups]
        selections = names if info.group_mode == "random" else [", ".join(names)]
    out = {slug(s): s for s in selections}
    if args.canny_controlnet:
        out["canny"] = "canny"
    return out


def slug(selection: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", selection).strip("_").lower() or "all"


def load_controlnet(path: str, unet):
    """A diffusers ControlNet from ``path``; converted official files get their hint border back."""
    from scg_core.controlnet.metadata import read_controlnet_info
    from scg_core.controlnet.official_hint import OfficialHintConv

    controlnet = make_controlnet(unet, path)
    info = read_controlnet_info(path) if Path(path).is_file() else None
    if info is not None and info.official_hint is not None:
        embedding = controlnet.controlnet_cond_embedding
        embedding.conv_in = OfficialHintConv(embedding.conv_in, info.official_hint)
    return controlnet.requires_grad_(False).eval()


def check_run(args, items, ae) -> None:
    """Write ``OUT/run.json``, or check that the one there describes the same generation."""
    from scg_core.controlnet.metadata import fingerprint

    settings = {"base": str(Path(args.base).resolve()), "controlnet": _file_id(args.controlnet),
                "canny_controlnet": _file_id(args.canny_controlnet) if args.canny_controlnet else None,
                "ae": fingerprint(ae), "gains": args.gains, "resolution": args.resolution, "steps": args.steps,
                "guidance": args.guidance, "conditioning_scale": args.conditioning_scale, "seed": args.seed,
                "canny_thresholds": list(args.canny_thresholds), "precision": args.precision,
                "images": [str(item.path) for item in items]}
    path = args.out / "run.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        common = min(len(saved["images"]), len(items))  # another --num is fine: the same list, longer or shorter
        same_images = saved["images"][:common] == settings["images"][:common]
        differ = [k for k in settings if k != "images" and saved.get(k) != settings[k]]
        if differ or not same_images:
            what = ", ".join(f"{k} ({saved.get(k)!r} there, {settings[k]!r} now)" for k in differ) or "the images"
            raise SystemExit(f"error: {args.out} holds an evaluation with other settings: {what}; pass another --out "
                             "(or delete that folder) to evaluate these")
        if len(settings["images"]) < len(saved["images"]):
            settings["images"] = saved["images"]
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def _file_id(path: str | Path) -> dict:
    path = Path(path)
    stat = path.stat() if path.is_file() else None
    return {"path": str(path.resolve()), "size": stat.st_size if stat else None}


def pipeline(parts, device, dtype):
    from diffusers import StableDiffusionControlNetPipeline, UniPCMultistepScheduler

    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.to(device, dtype)
    pipe = StableDiffusionControlNetPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet, controlnet=None,
        scheduler=UniPCMultistepScheduler.from_config(parts.noise_scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def original_of(path: Path, resolution: int) -> Tensor:
    """The image scaled to cover ``resolution``² and centre-cropped: ``[1,3,R,R]`` in [0,1]."""
    from scg_core.formats.images import fit_to_size, load_image

    return fit_to_size(load_image(path), (resolution, resolution))


def canny_hint(original: Tensor, low: int, high: int) -> Tensor:
    """OpenCV Canny edges of the grey image as a white-on-black RGB hint ``[1,3,H,W]`` in {0,1}."""
    try:
        import cv2
    except ImportError as e:
        raise SystemExit("error: --canny-controlnet needs OpenCV: pip install opencv-python-headless") from e
    import numpy as np

    grey = (original[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    edges = cv2.Canny(cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY), low, high)
    return torch.from_numpy(edges).float().div(255).expand(1, 3, *edges.shape).clone()


def evaluate_group(args, name, items, hint_fn, pipe, controlnet, scores: Scores, device, dtype) -> dict:
    """Generate what is missing, then score every image of one group; writes its files."""
    from tqdm.auto import tqdm

    from scg_core.formats.images import load_image, tensor_to_pil

    folder = args.out / name
    (folder / "generated").mkdir(parents=True, exist_ok=True)
    (folder / "hints").mkdir(parents=True, exist_ok=True)
    pipe.controlnet = controlnet.to(device, dtype)
    files = [f"{i:05d}_{item.path.stem}.png" for i, item in enumerate(items)]
    missing = {i for i, f in enumerate(files) if not (folder / "generated" / f).is_file()}
    # Batches are always the same slices of the list, so an image regenerated on resume sees the
    # same batch — hence the same float rounding — as in an uninterrupted run.
    chunks = [list(range(s, min(s + args.batch, len(items)))) for s in range(0, len(items), args.batch)]
    bar = tqdm(total=len(items), initial=len(items) - len(missing), desc=f"generating {name}", unit="img")
    for chunk in (c for c in chunks if missing.intersection(c)):
        originals = [original_of(items[i].path, args.resolution) for i in chunk]
        hints = torch.cat([hint_fn(o) for o in originals])
        prompts = [items[i].captions[0] if items[i].captions else "" for i in chunk]
        generators = [torch.Generator(device).manual_seed(args.seed + i) for i in chunk]
        with torch.no_grad():
            images = pipe(prompts, image=hints.to(device, dtype), height=args.resolution, width=args.resolution,
                          num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generators,
                          controlnet_conditioning_scale=args.conditioning_scale, output_type="pt").images
        for i, hint, image in zip(chunk, hints, images, strict=True):
            if i in missing:
                tensor_to_pil(hint).save(folder / "hints" / files[i])
                tensor_to_pil(image.float().cpu()).save(folder / "generated" / files[i])  # written last: marks it done
        bar.update(len(missing.intersection(chunk)))
    bar.close()

    rows, grid = [], []
    for start in range(0, len(items), args.batch):
        idx = range(start, min(start + args.batch, len(items)))
        originals = torch.cat([original_of(items[i].path, args.resolution) for i in idx])
        generated = torch.cat([load_image(folder / "generated" / files[i]) for i in idx])
        per = scores.update(generated.to(device), originals.to(device),
                            [items[i].captions[0] if items[i].captions else "" for i in idx])
        for j, i in enumerate(idx):
            rows.append({"image": str(items[i].path), "file": files[i], **{k: float(v[j]) for k, v in per.items()}})
            if len(grid) < GRID_ROWS * 4:
                grid.append(torch.cat([originals[j], load_image(folder / "hints" / files[i])[0], generated[j]], dim=-1))
    for n in range(0, len(grid), GRID_ROWS):
        tensor_to_pil(torch.cat(grid[n:n + GRID_ROWS], dim=-2)).save(folder / f"grid-{n // GRID_ROWS:03d}.png")
    with (folder / "per_image.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = scores.compute()
    write_tables(folder, {name: result}, args)
    return result


def write_summary(out: Path, results: dict[str, dict], args) -> None:
    """``OUT/summary.md``/``.csv``/``.json``: every group side by side, printed too."""
    print(write_tables(out, results, args, stem="summary"))


def write_tables(out: Path, results: dict[str, dict], args, stem: str = "metrics") -> str:
    """``STEM.md``/``.csv``/``.json``: one column per group, one row per metric (the paper's layout);
    returns the Markdown."""
    names = list(results)
    present = [(k, label) for k, label in ROWS if any(k in r for r in results.values())]
    fmt = lambda v: "" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    count = results[names[0]]["images"] if names else 0
    lines = [f"Evaluation of {args.controlnet} on {count} images of {args.data} ({args.resolution}², "
             f"{args.steps} steps, seed {args.seed})", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in present:
        lines.append(f"| {label} | " + " | ".join(fmt(results[n].get(key)) for n in names) + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    with (out / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *names])
        for key, _ in present + [("images", "images")]:
            writer.writerow([key, *[results[n].get(key, "") for n in names]])
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    return "\n".join(lines)


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
