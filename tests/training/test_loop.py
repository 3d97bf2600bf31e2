"""The shared training skeleton's process setup (training/loop.py)."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# In a fresh process, as a trainer starts: set up the process, then count the subnormal results of
# multiplying 2^22 subnormal values by one on two threads (each thread computes part of them).
PROBE = """
import argparse, sys, torch
from pathlib import Path
if sys.argv[1] == "start":
    from training import loop
    loop.start(argparse.Namespace(threads=2, device="cpu", report_to="none"), log_dir=Path(sys.argv[2]))
else:
    torch.set_num_threads(2)
x = torch.full((1 << 22,), 1e-39)
print(int(((x * 1.0) != 0).sum()))
"""


def subnormal_results(setup: str, tmp_path) -> int:
    proc = subprocess.run([sys.executable, "-c", PROBE, setup, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"),
                    reason="torch flushes subnormals only on x86 (SSE3) and AArch64 CPUs")
def test_a_cpu_run_computes_subnormals_as_zero_on_every_thread(tmp_path):
    assert subnormal_results("plain", tmp_path) == 1 << 22  # without the setup they survive
    assert subnormal_results("start", tmp_path) == 0
