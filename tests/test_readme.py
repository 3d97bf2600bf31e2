"""Every code block of the README runs as written.

Each fenced ``bash``/``python`` block runs in a scratch copy of the repository (so outputs land
there), with this test's Python first on ``PATH``; a block that sets up its own venv uses that one.
A block may be preceded by an HTML comment that the README renders invisibly:

* ``<!-- readme-test: needs official -->`` — files the block names that a user brings are put in
  place first: the official autoencoder and ControlNet checkpoints (built the way the official code
  writes them, tests/official_checkpoints.py) and their conversions;
* ``<!-- readme-test: needs comfyui -->`` — a ``ComfyUI/custom_nodes`` folder, and
  ``<this repository>`` stands for this repository's path (what the user pastes);
* ``<!-- readme-test: skip: REASON -->`` — not run, for a reason CI really lacks (hours of training,
  Stable Diffusion weights, several GPUs) or because CI runs it itself (the test command); the first
  test checks that every such block gives its reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .repository import copy_repository

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
PLACEHOLDERS = {"<this repository>": str(REPO)}


@dataclass
class Block:
    line: int
    lang: str
    code: str
    directive: str

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks() -> list[Block]:
    text = (REPO / "README.md").read_text()
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        d = DIRECTIVE.search(before)
        blocks.append(Block(text[: m.start()].count("\n") + 1, m[1], m[2], d[1] if d else ""))
    return blocks


BLOCKS = readme_blocks()


def test_every_block_is_runnable_or_says_why_not():
    assert len(BLOCKS) >= 8
    for b in BLOCKS:
        assert b.lang in ("bash", "python", "text"), f"{b.id}: say which language the block is ({b.lang!r})"
        if b.directive.startswith("skip"):
            assert len(b.directive.split(":", 1)[-1].strip()) > 10, f"{b.id}: a skipped block needs its reason"
        unknown = [p for p in re.findall(r"<[a-z][a-z ]+>", b.code) if p not in PLACEHOLDERS]
        assert not unknown, f"{b.id}: placeholders {unknown} cannot run as written"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch copy of the repository's files (tracked and new, not ignored ones)."""
    return copy_repository(tmp_path_factory.mktemp("readme") / "scg-nodes")


def provide(needs: str, workdir: Path) -> None:
    if "official" in needs and not (workdir / "scg_official.safetensors").exists():
        from scg_core.convert import main as convert

        from .official_checkpoints import NARROW, official_ae_checkpoint, official_ae_state, official_ae_arg, official_controlnet_checkpoint

        torch.save(official_ae_checkpoint(), workdir / "equ_nv16_vl4_rn1_Bipolar_norm.pth")
        torch.save(official_controlnet_checkpoint(official_ae_state(official_ae_arg()), NARROW), workdir / "last.ckpt")
        assert convert(["official-ae", str(workdir / "equ_nv16_vl4_rn1_Bipolar_norm.pth"), str(workdir / "scg_official.safetensors")]) == 0
    if "comfyui" in needs:
        (workdir / "ComfyUI" / "custom_nodes").mkdir(parents=True, exist_ok=True)


def run(block: Block, workdir: Path) -> subprocess.CompletedProcess:
    provide(block.directive, workdir)
    code = block.code
    for placeholder, value in PLACEHOLDERS.items():
        code = code.replace(placeholder, value)
    quick_start_python = workdir / ".venv" / "bin" / "python"
    if (". .venv/bin/activate" in code or block.lang == "python") and QUICK_START.code != block.code \
            and not quick_start_python.exists():  # "in the quick start's venv"
        assert run(QUICK_START, workdir).returncode == 0
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    if block.lang == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [str(quick_start_python), "-c", code]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=1500)


QUICK_START = next(b for b in BLOCKS if "python3 -m venv .venv " in b.code)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in ("bash", "python") and not b.directive.startswith("skip")],
                         ids=lambda b: b.id)
def test_the_block_runs_as_written(block, workdir):
    proc = run(block, workdir)
    assert proc.returncode == 0, f"{block.id} failed:\n{block.code}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    # no traceback, and no Python warning (UserWarning, FutureWarning, …) reaches the user
    assert "Traceback" not in proc.stderr and not re.search(r"\w+Warning: ", proc.stderr), proc.stderr[-3000:]
