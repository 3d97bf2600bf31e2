"""Build the bundled default autoencoder and the evidence that it specialises.

    pip install -e ".[train]" && python -m training.build_default [--jobs 2]

1. gathers the photographs that scikit-image and scikit-learn ship (``training.gather_photos``);
2. for each seed trains the released configuration with the constraint (preset ``default_ae``:
   the paper's 40,000 steps, pairs shifted by up to ±8 px) and the same run with
   ``--ablate equ,sym`` (reconstruction only) — about 1.5–2 h per run on one CPU thread;
   ``-- --preset quick_ae`` trains the former 5,400-step setting (15–25 min a run) instead;
3. characterises every model on the held-out photo (``scg_core.tools.characterize``) and checks the
   acceptance criteria of the specialisation study;
4. writes ``docs/specialisation/`` (reports, pictures, ``study.json``, ``README.md``) and installs
   the first seed's constrained model, with its groups and phase-averaged hints
   (:attr:`scg_core.ModularAE.phase_average`), as ``scg_core/weights/default.safetensors``.

Every training runs on one CPU thread, which makes it bit-for-bit repeatable (with several threads
the order of float reductions varies between runs). ``--jobs N`` trains N runs side by side, each
in its own process (two on a 2-core machine; on a GPU, ``-- --device cuda``); ``--reuse`` characterises
models already in ``--work`` (for example those that finished before an interrupted or failed run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scg_core import DEFAULT_WEIGHTS, load, save
from scg_core.formats.images import load_image
from scg_core.model.groups import Group, validate_groups
from scg_core.tools.characterize import STRETCHED, characterize, write_report
from scg_core.tools.hint_range import calibrate_display, hint_range

from . import gather_photos, train_modular_ae

ROOT = Path(__file__).resolve().parent.parent


def criteria(c: dict, ablated: dict) -> dict[str, bool]:
    """The acceptance checks for one seed (constrained summary vs its ablation): those of the first
    specialisation study and the paper-like decomposition of issue 17."""
    centroids = sorted(c.get("bandpass_centroids", []))
    stability = c.get("hint_stability", {}).values()
    readable = c.get("hint_span_at_gain", {})
    return {
        "psnr >= 30 dB": c["psnr_db"] >= 30,
        "no collapsed module (norm >= 0.2x largest)": c["min_weight_norm_ratio"] >= 0.2,
        ">= 8 modules carry >= 1% of the energy": c["modules_carrying_energy"] >= 8,
        ">= 1 luminance low-pass": c["luminance_lowpass"] >= 1,
        ">= 2 colour-opponent": c["colour_opponent"] >= 2,
        ">= 2 luminance band-pass >= 1 octave apart": len(centroids) >= 2 and centroids[-1] >= 2 * centroids[0],
        "<= 1 mixed colour/luminance": c["mixed"] <= 1,
        "median OSI <= 0.10": c["median_orientation_selectivity"] <= 0.10,
        "median OSI <= 0.6x ablation": c["median_orientation_selectivity"] <= 0.6 * ablated["median_orientation_selectivity"],
        "equivariance error <= 0.5x ablation": c["relative_equivariance_error"] <= 0.5 * ablated["relative_equivariance_error"],
        "every hint r >= 0.9 under a 1-px shift and a 90° turn": bool(stability) and all(
            min(r.values()) >= 0.9 for r in stability),
        "every hint spans >= 50% with <= 1% clipped": bool(readable) and all(
            r["span"] >= 0.5 and r["clipped"] <= 0.01 for r in readable.values()),
    }


def train_argv(data: Path, out: Path, seed: int, ablate: bool, extra: list[str]) -> list[str]:
    """The ``train_modular_ae`` arguments of one run of the study."""
    argv = ["--preset", "default_ae", "--data", str(data), "--output", str(out), "--seed", str(seed), *extra]
    return argv + ["--ablate", "equ,sym"] if ablate else argv


def train(data: Path, out: Path, seed: int, ablate: bool, extra: list[str]) -> None:
    train_modular_ae.main(train_modular_ae.parse_args(train_argv(data, out, seed, ablate, extra)))


PROGRESS_EVERY = 60.0  # seconds between the progress lines of runs trained side by side


def progress(log: Path) -> str | None:
    """The last ``step/steps`` that the trainer's progress bar wrote to ``log`` (None: none yet)."""
    with log.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        tail = f.read().decode(errors="replace")
    steps = re.findall(r"train_modular_ae:[^\r\n]*?\| *(\d+/\d+) \[", tail)
    return steps[-1] if steps else None


def train_side_by_side(runs: dict[Path, list[str]], jobs: int) -> None:
    """Train ``runs`` (output file → ``train_modular_ae`` arguments), each in its own process, at most
    ``jobs`` at a time; a run's output goes to its output file with the suffix ``.log``, and every
    minute a line shows each running run's step.

    A run that fails does not stop the others (their files are kept, and ``--reuse`` picks them up);
    afterwards ``SystemExit`` names every failed run, its exit status, log and last lines."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               TQDM_MININTERVAL="5")  # a progress bar in a file: a line every few seconds, not ten a second
    waiting, running, failed = list(runs.items()), {}, []
    shown = time.monotonic()
    try:
        while waiting or running:
            if time.monotonic() - shown >= PROGRESS_EVERY and running:
                print("progress: " + " · ".join(f"{out.stem} {progress(out.with_suffix('.log')) or 'starting'}"
                                                for out in running), flush=True)
                shown = time.monotonic()
            while waiting and len(running) < jobs:
                out, argv = waiting.pop(0)
                log = out.with_suffix(".log").open("w")
                command = [sys.executable, "-m", "training.train_modular_ae", *argv]
                running[out] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log, time.monotonic())
                print(f"training {out.name} (log: {out.with_suffix('.log').name})", flush=True)
            time.sleep(0.2)
            for out, (process, log, start) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[out]
                print(f"{out.name}: {'done' if process.returncode == 0 else f'FAILED (exit {process.returncode})'} "
                      f"after {time.monotonic() - start:.0f} s", flush=True)
                if process.returncode != 0:
                    failed.append((out, process.returncode))
    finally:  # interrupted: stop the runs still going (each keeps its checkpoints for --resume)
        for process, log, _ in running.values():
            process.terminate()
            process.wait()
            log.close()
    if failed:
        lines = []
        for out, code in failed:
            tail = out.with_suffix(".log").read_text(errors="replace").strip().splitlines()[-5:]
            lines += [f"{out.name} failed with exit status {code}; log {out.with_suffix('.log')}:", *("    " + t for t in tail)]
        raise SystemExit("\n".join(lines + ["the runs that finished are kept: fix the cause and run again with --reuse"]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.build_default", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=Path("build/default_ae"), help="photos, runs and checkpoints")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "specialisation")
    p.add_argument("--no-install", action="store_true", help="do not replace scg_core/weights/default.safetensors")
    p.add_argument("--energy-threshold", type=float, default=0.01)
    p.add_argument("--mate-backgrounds", type=Path, nargs="?", const=gather_photos.MATE_NATURE, metavar="DIR",
                   help="also train on Debian's mate-backgrounds nature photos (see training.gather_photos)")
    p.add_argument("--reuse", action="store_true", help="characterise the models already in --work instead of training them again")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at a time, each in its own process with one CPU thread (or on the "
                        "--device given after --); 1: one after another in this process")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: extra train_modular_ae arguments")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: give 1 or more runs at a time")
    extra = [a for a in args.train_args if a != "--"]

    photos = gather_photos.gather(args.work / "photos", args.mate_backgrounds)
    heldout = next(path for path in photos if path.parent.name == "heldout")
    image = load_image(heldout)
    training_photos = [load_image(path) for path in photos if path.parent.name == "train"]
    study = {"heldout": heldout.name, "seeds": {}, "train_args": extra}
    variants = (("constrained", False), ("ablated", True))
    runs = {}
    for seed in args.seeds:
        for variant, ablate in variants:
            out = args.work / f"seed{seed}_{variant}.safetensors"
            if not (args.reuse and out.is_file()):
                # One thread: multi-threaded float reductions differ in order between runs, and over
                # thousands of steps those ~1e-5 differences grow enough to move borderline modules.
                runs[out] = train_argv(args.work / "photos" / "train", out, seed, ablate, extra + ["--threads", "1"])
    if args.jobs > 1:
        train_side_by_side(runs, args.jobs)
    else:
        for argv in runs.values():
            train_modular_ae.main(train_modular_ae.parse_args(argv))
    for seed in args.seeds:
        row = {}
        for variant, _ in variants:
            out = args.work / f"seed{seed}_{variant}.safetensors"
            model = load(out)
            model.phase_average = True  # the default's hints move with the image pixel by pixel (docs/training_modular_ae.md)
            seconds = model.provenance["final_losses"]["seconds"]
            result = characterize(model, image, args.energy_threshold)
            report = args.docs / f"seed{seed}_{variant}"
            write_report(model, image, result, report)
            row[variant] = {"train_seconds": seconds, "summary": result["summary"], "groups": result["groups"],
                            "final_losses": model.provenance.get("final_losses", {})}
            if variant == "constrained":
                model.groups = validate_groups([Group.from_dict(g) for g in result["groups"]], model.config.num_modules)
                model.groups = calibrate_display(model, training_photos, STRETCHED)
                result["summary"]["hint_span_at_gain"] = {
                    g.name: {"gain": g.gain, "span": g.span, **{k: v[0] for k, v in hint_range(model, [image], g).items()}} for g in model.groups}
                row[variant]["groups"] = [g.to_dict() for g in model.groups]
                save(model, out, provenance={"characterize": result["summary"], "heldout": heldout.name})
        row["checks"] = criteria(row["constrained"]["summary"], row["ablated"]["summary"])
        study["seeds"][str(seed)] = row
        print(f"seed {seed}: " + ", ".join(f"{k}: {'ok' if v else 'FAIL'}" for k, v in row["checks"].items()))
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "study.json").write_text(json.dumps(study, indent=1))
    (args.docs / "README.md").write_text(render(study))
    if not args.no_install:
        DEFAULT_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.work / f"seed{args.seeds[0]}_constrained.safetensors", DEFAULT_WEIGHTS)
        print(f"installed {DEFAULT_WEIGHTS}")


def render(study: dict) -> str:
    seeds = list(study["seeds"])
    metrics = [("psnr_db", "PSNR on held-out photo (dB)", "{:.1f}"),
               ("relative_equivariance_error", "relative equivariance error (fitted codebook)", "{:.3f}"),
               ("median_orientation_selectivity", "median kernel orientation selectivity", "{:.3f}"),
               ("modules_carrying_energy", "modules carrying ≥1% of the energy", "{}"),
               ("min_weight_norm_ratio", "smallest module norm / largest", "{:.2f}"),
               ("luminance_lowpass", "luminance low-pass modules", "{}"),
               ("colour_opponent", "colour-opponent modules", "{}"),
               ("luminance_bandpass_fine", "luminance band-pass, centroid ≥ 0.1 c/px", "{}"),
               ("luminance_bandpass_coarse", "luminance band-pass, centroid < 0.1 c/px", "{}"),
               ("mixed", "mixed colour/luminance modules", "{}")]
    lines = ["# Does the equivariance constraint make modules specialise?", "",
             "Generated by `python -m training.build_default` (see `training/build_default.py`). Every model is the",
             "released configuration (16 modules × 4, bipolar, stride 4) trained on the photographs scikit-image and",
             f"scikit-learn ship, and characterised on the held-out photo `{study['heldout']}` by",
             "`python -m scg_core.characterize`. *Constrained*: `L_recon + L_equ + L_sym`; *ablated*: `--ablate equ,sym`.", "",
             "Definitions: a module *carries energy* with ≥1% of the photo's mean-removed reconstruction energy; *luminance*",
             "≤25% and *colour-opponent* ≥75% of its kernel energy along the colour axes; *low-pass* = response at frequency 0",
             "within 3 dB of its peak; OSI = |Σ A(θ)e^{2iθ}| / Σ A(θ) over 12 orientations, median over the kernels of the",
             "modules that carry energy; equivariance error = held-out residual of a codebook fitted to the frozen features.", "",
             "| metric | " + " | ".join(f"seed {s} constrained | seed {s} ablated" for s in seeds) + " |",
             "|---|" + "---|" * (2 * len(seeds))]
    derived = [("band-pass centroids (c/px)", lambda c: ", ".join(f"{x:.2f}" for x in c.get("bandpass_centroids", [])) or "–"),
               ("worst group's hint r, 1-px shift", lambda c: _worst(c, "shift_1px")),
               ("worst group's hint r, 90° turn", lambda c: _worst(c, "rotate_90"))]
    for key, label, fmt in metrics:
        cells = []
        for s in seeds:
            for v in ("constrained", "ablated"):
                cells.append(fmt.format(study["seeds"][s][v]["summary"][key]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, show in derived:
        lines.append(f"| {label} | " + " | ".join(show(study["seeds"][s][v]["summary"]) for s in seeds
                                                  for v in ("constrained", "ablated")) + " |")
    lines += ["", "## Acceptance checks", "", "| check | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for check in study["seeds"][seeds[0]]["checks"]:
        lines.append(f"| {check} | " + " | ".join("✅" if study["seeds"][s]["checks"][check] else "❌" for s in seeds) + " |")
    lines += ["", "## Groups proposed for the default (seed " + seeds[0] + ")", ""]
    for g in study["seeds"][seeds[0]]["constrained"]["groups"]:
        lines.append(f"- **{g['name']}** ({g['label']}): modules {g['modules']}")
    s0 = seeds[0]
    lines += ["", "## Pictures (seed " + s0 + ")", "",
              "Kernels, one module per row (label: class, share of the held-out photo's energy, frequency centroid):", "",
              "| constrained | ablated |", "|---|---|",
              f"| ![](seed{s0}_constrained/kernels.png) | ![](seed{s0}_ablated/kernels.png) |", "",
              "Per-module reconstructions of the held-out photo, constrained:", "", f"![](seed{s0}_constrained/modules.png)", "",
              "and ablated:", "", f"![](seed{s0}_ablated/modules.png)", "",
              "Tuning curves (left: amplitude vs spatial frequency 0–0.5 c/px; right: vs orientation at the measured frequency):", "",
              f"![](seed{s0}_constrained/tuning.png)", "", f"![](seed{s0}_ablated/tuning.png)", "",
              "Training time per run (s): " + ", ".join(f"seed {s}: {study['seeds'][s]['constrained']['train_seconds']:.0f} / {study['seeds'][s]['ablated']['train_seconds']:.0f}" for s in seeds) + " (constrained / ablated, one CPU thread each)."]
    return "\n".join(lines) + "\n"


def _worst(summary: dict, motion: str) -> str:
    values = [(r[motion], name) for name, r in summary.get("hint_stability", {}).items()]
    return f"{min(values)[0]:.2f} ({min(values)[1]})" if values else "–"


if __name__ == "__main__":
    main()
