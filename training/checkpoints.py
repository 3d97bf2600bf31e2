"""The one checkpoint layout of both trainers, and the check that ``--resume`` continues the same run.

``CHECKPOINT_DIR/step-NNNNNNN/`` (written as ``.step-NNNNNNN.tmp/`` and renamed, so a kill never
leaves half of one):

* ``model.safetensors`` — the trained module's state dict, as trained (fp32);
* ``state.pt`` — ``{"step", "optimizer", "scheduler"}``, plus ``"scaler"`` under fp16;
* ``args.json`` — ``{"trainer", "processes", "args"}``: which trainer, on how many processes,
  with which resolved arguments.

A resume compares ``args.json`` with the new run: every argument must be equal except those in
``MAY_CHANGE``; the number of processes must be equal too (it decides which samples each rank
draws). Anything else stops with one line that names each difference and the fix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

STEP_DIR = re.compile(r"^step-(\d+)$")
OLD_AE_FILE = re.compile(r"^step-(\d+)\.pt$")
RESUME_HINT = ("to continue that run pass the checkpoint's values (all in {args_json}); to train with the new ones, "
               "leave out --resume and write to another folder")

# Arguments a resumed run may change, with the reason it still continues the same trajectory.
MAY_CHANGE: dict[str, str] = {
    "resume": "which checkpoint to continue from",
    "steps": "where the run stops (train_controlnet's lr is constant after warm-up; train_modular_ae checks it: "
             "its cosine schedule is as long as --steps)",
    "epochs": "where train_controlnet stops, like --steps",
    "checkpoint_every": "how often checkpoints are written",
    "keep_last": "how many checkpoints are kept",
    "log_every": "how often metrics are logged",
    "report_to": "where metrics are logged",
    "output": "where the final weights go",
    "output_dir": "where the run's files go (the checkpoint is named by --resume)",
    "checkpoint_dir": "where checkpoints go (the checkpoint is named by --resume)",
    "name": "the export's file name",
    "export_dtype": "the export's precision, not the training's",
    "cache_dir": "where cached latents live (the cache checks its own signature)",
    "no_cache": "whether decoded images stay in memory",
    "device": "where it runs (another device gives other float rounding, not another run)",
    "threads": "CPU threads",
    "compile": "torch.compile runs the same maths (other float rounding, like another device)",
    "channels_last": "a memory layout: the same maths",
    "tf32": "a matmul precision switch, like another device",
    "cudnn_benchmark": "which convolution algorithm: the same maths",
    "sdpa_backend": "which attention kernel: the same maths",
    "hint_dtype": "the hint's precision on entering the ControlNet, like another device",
    "workers": "dataloader processes: every batch is a pure function of (seed, rank, step)",
    "gradient_checkpointing": "recomputes activations instead of storing them: the same maths",
    "save_every_rank": "a diagnostic export",
    "validation_image": "validation only reads the model",
    "validation_prompt": "validation only reads the model",
    "validate_every": "validation only reads the model",
    "validation_steps": "validation only reads the model",
    "preset": "only supplies defaults; the values it set are compared one by one",
}


def jsonable(values: dict) -> dict:
    """``vars(args)`` as JSON gives it back (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(values, default=str))


# Arguments added after checkpoints of this layout were first written, with the value that does
# what the trainer did before them: a checkpoint without the argument resumes under that value.
ADDED: dict[str, object] = {"context": 1, "lambda_copies": 0.0, "warp": "pairs", "pair_source": "images",
                             "lambda_recon_pred": 0.0}


def differences(saved: dict, now: dict, checked: dict[str, str] | None = None) -> list[str]:
    """``--name A (checkpoint) vs B (now)`` for each argument of ``saved["args"]``/``now["args"]``
    that differs and is not in ``MAY_CHANGE`` (unless ``checked`` names it, with its reason)."""
    checked = checked or {}
    old, new = saved["args"], now["args"]
    out = []
    for name in sorted(set(old) | set(new)):
        if name in MAY_CHANGE and name not in checked:
            continue
        a, b = old.get(name, ADDED.get(name, "<absent>")), new.get(name, "<absent>")
        if a != b:
            why = f" [{checked[name]}]" if name in checked else ""
            out.append(f"--{name.replace('_', '-')} {json.dumps(a)} (checkpoint) vs {json.dumps(b)} (now){why}")
    if saved["processes"] != now["processes"]:
        out.append(f"number of processes {saved['processes']} (checkpoint) vs {now['processes']} (now) [each rank's samples depend on it]")
    return out


class Checkpoints:
    """Saves and resumes ``folder/step-NNNNNNN/`` for one run.

    Args:
        folder: the run's checkpoint folder.
        trainer: the trainer's module name (recorded and checked).
        args: the resolved arguments (recorded and checked on resume).
        accelerator: the run's ``accelerate.Accelerator``; only its main process writes.
        model, optimizer: as returned by ``accelerator.prepare``; scheduler: the LR scheduler.
        keep_last: checkpoints kept (older ones deleted); ``None`` keeps all.
        checked: arguments of ``MAY_CHANGE`` this trainer must not change, with the reason.
    """

    def __init__(self, folder: Path, *, trainer: str, args, accelerator, model, optimizer, scheduler,
                 keep_last: int | None = None, checked: dict[str, str] | None = None) -> None:
        self.folder, self.trainer, self.args, self.accelerator = Path(folder), trainer, args, accelerator
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.keep_last, self.checked = keep_last, checked or {}

    def record(self) -> dict:
        return {"trainer": self.trainer, "processes": self.accelerator.num_processes, "args": jsonable(vars(self.args))}

    def found(self) -> list[tuple[int, Path]]:
        return sorted((int(m.group(1)), p) for p in self.folder.glob("step-*") if (m := STEP_DIR.match(p.name)) and p.is_dir())

    def save(self, step: int) -> Path | None:
        """Write ``step-NNNNNNN/`` (main process only; returns its path, ``None`` on other ranks)."""
        if not self.accelerator.is_main_process:
            return None
        from safetensors.torch import save_file

        final, tmp = self.folder / f"step-{step:07d}", self.folder / f".step-{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        weights = self.accelerator.unwrap_model(self.model).state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        state = {"step": step, "optimizer": _unwrap(self.optimizer).state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.accelerator.scaler is not None:
            state["scaler"] = self.accelerator.scaler.state_dict()
        torch.save(state, tmp / "state.pt")
        (tmp / "args.json").write_text(json.dumps(self.record(), indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if self.keep_last:
            for _, old in self.found()[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def latest(self) -> Path | None:
        """The newest checkpoint of ``folder`` (an old-format file when only those are there)."""
        found = self.found()
        if found:
            return found[-1][1]
        old = sorted((int(m.group(1)), p) for p in self.folder.glob("step-*.pt") if (m := OLD_AE_FILE.match(p.name)))
        return old[-1][1] if old else None

    def resume(self, spec: str | None) -> int:
        """Load ``spec`` (``'latest'`` or a checkpoint folder); returns the step to continue from
        (0 without ``spec``, or when ``'latest'`` finds nothing)."""
        if not spec:
            return 0
        path = self.latest() if spec == "latest" else Path(spec)
        if path is None:
            self.accelerator.print(f"no checkpoint in {self.folder}; starting from step 0")
            return 0
        saved = read_record(path)
        if saved["trainer"] != self.trainer:
            raise SystemExit(f"error: --resume {path} is a checkpoint of {saved['trainer']}, not of {self.trainer}")
        diff = differences(saved, self.record(), self.checked)
        if diff:
            raise SystemExit(f"error: --resume {path} was trained with other arguments: {'; '.join(diff)}. "
                             + RESUME_HINT.format(args_json=path / "args.json"))
        from safetensors.torch import load_file

        self.accelerator.unwrap_model(self.model).load_state_dict(load_file(str(path / "model.safetensors")))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        _unwrap(self.optimizer).load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.accelerator.scaler is not None and "scaler" in state:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.accelerator.print(f"resumed from {path} at step {state['step']}")
        return int(state["step"])


def read_record(path: Path) -> dict:
    """``args.json`` of a checkpoint folder; one clear error line for anything else."""
    fix = "continue it with the version of scg-nodes that wrote it, or start again without --resume"
    if path.is_file() and OLD_AE_FILE.match(path.name):
        raise SystemExit(f"error: --resume {path} is an old-format train_modular_ae checkpoint (a step-N.pt file, before "
                         f"checkpoints recorded their arguments in step-N/args.json); {fix}")
    if not path.is_dir():
        raise SystemExit(f"error: --resume {path} does not exist; give 'latest' or a step-NNNNNNN checkpoint folder")
    if not (path / "args.json").is_file():
        if (path / "state.pt").is_file() and (path / "controlnet.safetensors").is_file():
            raise SystemExit(f"error: --resume {path} is an old-format train_controlnet checkpoint (no args.json: its "
                             f"arguments were not recorded, so the resume cannot be checked); {fix}")
        raise SystemExit(f"error: --resume {path} is not a checkpoint folder (no args.json)")
    return json.loads((path / "args.json").read_text())


def _unwrap(optimizer):
    """The torch optimiser inside accelerate's wrapper (its own state dict, not the wrapper's)."""
    return getattr(optimizer, "optimizer", optimizer)
