"""Speed levers of the ControlNet training step, each a flag of ``train_controlnet`` and of
``benchmarks/bench_train_controlnet.py`` (docs/training_controlnet.md has what each one measured).

None changes the maths: every lever keeps the first steps' losses equal to the plain path within
the precision it runs in (``tests/training/test_speed.py``, on the CPU where the lever exists there).
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from dataclasses import dataclass

import torch

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("speed levers (the same maths; measured in docs/training_controlnet.md)")
    g.add_argument("--channels-last", action="store_true", help="UNet, ControlNet and their inputs in channels-last memory format")
    g.add_argument("--compile", choices=COMPILE_MODES, default="none",
                   help="torch.compile the frozen UNet and the ControlNet (reduce-overhead: CUDA graphs); minutes of start-up")
    g.add_argument("--tf32", action="store_true", help="TF32 for fp32 matmuls and convolutions (NVIDIA GPUs from Ampere)")
    g.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its convolution algorithms once per shape")
    g.add_argument("--sdpa-backend", choices=SDPA_BACKENDS, default="auto",
                   help="the attention kernel PyTorch's scaled_dot_product_attention uses (auto: PyTorch's choice)")
    g.add_argument("--hint-dtype", choices=["fp32", "mixed"], default="fp32",
                   help="mixed: the hint enters the ControlNet in the mixed-precision dtype instead of fp32")


@dataclass(frozen=True)
class Levers:
    channels_last: bool = False
    compile: str = "none"
    tf32: bool = False
    cudnn_benchmark: bool = False
    sdpa_backend: str = "auto"
    hint_dtype: str = "fp32"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Levers:
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)})

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def set_backends(self) -> None:
        """Process-wide switches (TF32, cuDNN autotuning); they only act on CUDA."""
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True

    def attention(self):
        """A context that pins scaled_dot_product_attention to ``sdpa_backend`` (or does nothing)."""
        if self.sdpa_backend == "auto":
            return nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                   "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[self.sdpa_backend]
        return sdpa_kernel(backend)

    def hint_cast(self, mixed_dtype: torch.dtype) -> torch.dtype:
        return mixed_dtype if self.hint_dtype == "mixed" else torch.float32

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module in the chosen memory format (in place) and, with ``compile``, its compiled
        wrapper (sharing its parameters; save and load the module itself)."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        if self.compile != "none":
            return torch.compile(module, mode=self.compile)
        return module
