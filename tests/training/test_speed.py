"""Every speed lever of the ControlNet step keeps the first steps' losses equal to the plain path
(within the precision it runs in), checked on the CPU where the lever exists there."""

import pytest
import torch

import scg_core
from training.controlnet_step import ControlNetObjective, HintMaker, step_generator
from training.sd_base import load_base, make_controlnet
from training.speed import Levers
from training.train_controlnet import parse_args

from .tiny_sd import build_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("base") / "sd")


def first_losses(base, levers: Levers, dtype=torch.float32, steps=3) -> list[float]:
    parts = load_base(base)
    torch.manual_seed(0)
    controlnet = make_controlnet(parts.unet).train()
    with torch.no_grad():  # residuals that reach the UNet, so the UNet path matters too
        for name, p in controlnet.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.normal_(0, 0.02)
    parts.unet.to(dtype)
    objective = ControlNetObjective(parts, None, HintMaker(scg_core.load_default(), ["brightness"]),
                                    torch.device("cpu"), dtype, levers)
    objective.controlnet, objective.unet = levers.prepare(controlnet), levers.prepare(parts.unet)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    batch = {"pixels": torch.rand(2, 3, 64, 64, generator=g), "captions": ["a red square", ""]}
    losses = []
    for n in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = objective(batch, step_generator(torch.device("cpu"), 0, 0, n))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("levers", [Levers(channels_last=True), Levers(sdpa_backend="math"),
                                    Levers(sdpa_backend="flash"), Levers(compile="default")],
                         ids=["channels_last", "sdpa_math", "sdpa_flash", "compile"])
def test_fp32_levers_keep_the_losses(tiny_sd, levers):
    plain = first_losses(tiny_sd, Levers())
    assert first_losses(tiny_sd, levers) == pytest.approx(plain, rel=1e-4)


def test_hint_in_bf16_keeps_the_losses_within_bf16(tiny_sd):
    plain = first_losses(tiny_sd, Levers(), torch.bfloat16)
    assert first_losses(tiny_sd, Levers(hint_dtype="mixed"), torch.bfloat16) == pytest.approx(plain, rel=2e-2)


def test_the_flags_reach_the_levers(tiny_sd, tmp_path):
    args = parse_args(["--base", str(tiny_sd), "--data", str(tmp_path), "--output-dir", str(tmp_path / "o"),
                       "--channels-last", "--compile", "reduce-overhead", "--tf32", "--cudnn-benchmark",
                       "--sdpa-backend", "efficient", "--hint-dtype", "mixed"])
    assert Levers.from_args(args) == Levers(True, "reduce-overhead", True, True, "efficient", "mixed")
    assert Levers.from_args(parse_args(["--base", "b", "--data", "d", "--output-dir", "o"])) == Levers()
