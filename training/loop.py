"""The training skeleton both trainers share: process setup, the step loop, logging, stopping.

One optimiser step, in the order of nanoGPT's ``train.py``::

    lr → eval / checkpoint → accumulate (grad_accum micro-batches) → clip → step → zero_grad → log

Every micro-batch is a pure function of its index (``batches``), so a run resumed from a
checkpoint (``training.checkpoints``) draws what an uninterrupted one would have drawn.
Ctrl-C (SIGINT) or SIGTERM lets the current step finish, saves a checkpoint and exits with
128 + the signal's number; under several processes every rank stops at the same step.
Metrics go to the progress bar, ``LOG_DIR/metrics.jsonl`` and, with ``report_to``, tensorboard.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import Checkpoints


def uses_cpu(device: str) -> bool:
    """``--device`` auto / cpu / cuda → whether the run stays on the CPU."""
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def flush_subnormals() -> None:
    """Compute float32 values below 1.2e-38 (subnormals) as zero on this process's CPU threads.

    x86 CPUs take a slow microcode path for each subnormal operand. A module that falls silent in
    training can reach that range through its composed kernel (its code is then a product of small
    factors): a CPU run of ``default_ae --lambda-copies 0.01`` slowed ~4x within 500 steps once it
    had (docs/training_modular_ae.md, "Subnormal numbers"). Only values that small change.
    Call it before the first parallel operation: CPU worker threads copy the setting from the
    thread that starts them.
    """
    torch.set_flush_denormal(True)


def start(args, *, log_dir: Path, mixed_precision: str = "no"):
    """Threads (``args.threads``), device (``args.device``) and the accelerator of this process,
    with tensorboard under ``log_dir`` when ``args.report_to`` asks for it (auto: when installed)."""
    from accelerate import Accelerator

    if uses_cpu(args.device):
        flush_subnormals()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = args.report_to
    if report == "auto":
        installed = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
        report = "tensorboard" if installed else "none"
    return Accelerator(cpu=uses_cpu(args.device), mixed_precision=mixed_precision,
                       log_with=None if report == "none" else report, project_dir=str(log_dir))


def track(accelerator, project: str, args) -> None:
    """Start the tensorboard log (when ``start`` asked for one) with the run's arguments."""
    accelerator.init_trackers(project, config={k: str(v) for k, v in vars(args).items()})


def batches(dataset, start: int, stop: int, workers: int) -> Iterator:
    """Items ``start … stop-1`` of ``dataset`` (item i: micro-batch i), loaded by ``workers`` processes."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(start, stop), num_workers=workers,
                                         persistent_workers=workers > 0, worker_init_fn=_ignore_sigint)
    return iter(loader)


def _ignore_sigint(_: int) -> None:
    # Ctrl-C reaches the whole process group; the main process finishes its step before it stops,
    # so its loader workers must outlive the signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """While active, SIGINT and SIGTERM only record that the run should stop (``signum``)."""

    def __enter__(self) -> StopRequest:
        self.signum = 0
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame) -> None:
        if not self.signum:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint", file=sys.stderr)
        self.signum = signum

    def agreed(self, accelerator) -> int:
        """The signal any rank received (0: none), the same on every rank."""
        if accelerator.num_processes == 1:
            return self.signum
        return int(accelerator.gather(torch.tensor([self.signum], device=accelerator.device)).max())

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


@dataclass(kw_only=True)
class Loop:
    """The optimiser steps ``start → total`` of one run.

    ``loss(batch, micro_step)`` returns a dict of 0-dim loss tensors; ``objective`` names the one
    minimised. ``derived(metrics)`` adds logged values computed from the losses (floats).
    ``evaluate(step)`` runs on the main process every ``eval_every`` steps.
    """

    accelerator: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    checkpoints: Checkpoints
    batches: Iterator
    loss: Callable[[object, int], dict[str, torch.Tensor]]
    objective: str
    total: int
    log_dir: Path
    name: str
    samples_per_step: int
    grad_accum: int = 1
    max_grad_norm: float = 0.0
    log_every: int = 10
    checkpoint_every: int = 500
    derived: Callable[[dict], dict] | None = None
    evaluate: Callable[[int], object] | None = None
    eval_every: int = 0

    def run(self, start: int) -> tuple[int, dict[str, float]]:
        """Train to ``total``; returns the step reached and the last logged metrics (+ ``seconds``).
        Ends with a checkpoint of the final step; a stop signal ends with one and ``SystemExit``."""
        from tqdm.auto import tqdm

        acc, step, metrics = self.accelerator, start, {}
        main_process, began = acc.is_main_process, time.perf_counter()
        self.window = (began, start)
        bar = tqdm(total=self.total, initial=start, disable=not main_process, desc=self.name, dynamic_ncols=True)
        try:
            with StopRequest() as stop:
                while step < self.total:
                    if signum := stop.agreed(acc):
                        self.stop(step, signum)
                    lr = self.scheduler.get_last_lr()[0]
                    if step > start and step % self.checkpoint_every == 0:
                        self.checkpoints.save(step)
                    if self.evaluate and main_process and step > start and step % self.eval_every == 0:
                        self.evaluate(step)
                    losses = self.accumulate(step)
                    if self.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    bar.update(1)
                    if step % self.log_every == 0 or step == self.total:
                        metrics = self.log(step, lr, losses, bar)
        finally:
            bar.close()
        acc.wait_for_everyone()
        self.checkpoints.save(step)
        return step, {**metrics, "seconds": time.perf_counter() - began}

    def accumulate(self, step: int) -> dict[str, torch.Tensor]:
        """Forward and backward of ``grad_accum`` micro-batches; their mean losses (detached)."""
        acc, n, sums = self.accelerator, self.grad_accum, {}
        for a in range(n):
            batch = next(self.batches)  # outside autocast: loading is no part of the model's maths
            # gradients are all-reduced once per step, on the last micro-batch
            with nullcontext() if a == n - 1 else acc.no_sync(self.model):
                with acc.autocast():
                    losses = self.loss(batch, step * n + a)
                loss = losses[self.objective]
                if not torch.isfinite(loss):
                    values = {k: float(v) for k, v in losses.items()}
                    raise FloatingPointError(f"non-finite loss at step {step}: {values}; lower --lr (under fp16: use bf16)")
                acc.backward(loss / n)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() / n
        return sums

    def log(self, step: int, lr: float, losses: dict[str, torch.Tensor], bar) -> dict[str, float]:
        """Metrics of this step (rank 0's losses) to the bar, tensorboard and ``metrics.jsonl``."""
        metrics = {k: float(v) for k, v in losses.items()}
        if self.derived:
            metrics.update(self.derived(metrics))
        now, (then, before) = time.perf_counter(), self.window
        metrics.update(lr=lr, samples_per_s=(step - before) * self.samples_per_step / max(now - then, 1e-9))
        self.window = (now, step)
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        self.accelerator.log(metrics, step=step)
        if self.accelerator.is_main_process:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
        return metrics

    def stop(self, step: int, signum: int) -> None:
        path = self.checkpoints.save(step)
        self.accelerator.wait_for_everyone()  # a launcher kills every rank once one exits
        if path is not None:
            print(f"\ninterrupted at step {step}: saved {path}; continue with --resume latest", file=sys.stderr)
        raise SystemExit(128 + signum)
