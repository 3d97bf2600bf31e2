import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import scg_core
from scg_core.model.pairs import cell_correspondences, crop_margin, warp_grid
from training.train_modular_ae import Objective, main, parse_args

from .photos import write_photos

TINY = ["--num-modules", "4", "--module-channels", "2", "--kernel-size", "3", "--crop", "32", "--border", "4",
        "--batch", "2", "--pairs", "64", "--codebook-grid", "3", "3", "4", "--device", "cpu", "--threads", "1", "--log-every", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"))


def run_cli(args, stdout=subprocess.PIPE, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "training.train_modular_ae", *args], stdout=stdout,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def params(path):
    return {k: v for k, v in scg_core.load(path).state_dict().items()}


def test_losses_fall_and_bad_images_are_skipped(photos, tmp_path, capsys):
    out = tmp_path / "ae.safetensors"
    metrics = main(parse_args(["--data", str(photos), "--output", str(out), "--steps", "60", "--lr", "0.01", *TINY]))
    log = [json.loads(line) for line in (tmp_path / "ae_checkpoints" / "metrics.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    assert last["step"] == 60 and np.isfinite(metrics["total"])
    assert last["recon"] < 0.5 * first["recon"]
    assert np.mean([r["total"] for r in log[-10:]]) < np.mean([r["total"] for r in log[:10]])
    text = capsys.readouterr().out
    assert "skipped images: 2" in text and "broken.jpg: unreadable" in text and "small.png: too small" in text
    ae = scg_core.load(out)
    assert ae.config.num_modules == 4 and ae.provenance["step"] == 60
    assert ae.provenance["source"] == "training.train_modular_ae"


def test_runs_are_repeatable_and_ablation_switches_terms_off(photos, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for out in (a, b):
        main(parse_args(["--data", str(photos), "--output", str(out), "--steps", "8", "--seed", "3", *TINY]))
    assert all(torch.equal(x, y) for x, y in zip(params(a).values(), params(b).values()))
    m = main(parse_args(["--data", str(photos), "--output", str(tmp_path / "c.safetensors"), "--steps", "4", "--ablate", "equ,sym", *TINY]))
    assert "equ" not in m and "sym" not in m and "recon" in m


def test_kill_and_resume_equals_an_uninterrupted_run(photos, tmp_path):
    steps = ["--steps", "150", "--checkpoint-every", "10"]
    full = tmp_path / "full" / "ae.safetensors"
    assert run_cli(["--data", str(photos), "--output", str(full), *steps, *TINY]).wait() == 0

    cut = tmp_path / "cut" / "ae.safetensors"
    proc = run_cli(["--data", str(photos), "--output", str(cut), *steps, *TINY])
    ckpt_dir = tmp_path / "cut" / "ae_checkpoints"
    deadline = time.time() + 120
    while not list(ckpt_dir.glob("step-*")) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not cut.exists()
    resumed = run_cli(["--data", str(photos), "--output", str(cut), *steps, *TINY, "--resume", "latest"])
    out, _ = resumed.communicate()
    assert resumed.returncode == 0, out
    assert "resumed from" in out
    for (name, x), y in zip(params(full).items(), params(cut).values()):
        assert torch.equal(x, y), name


def test_ctrl_c_saves_a_checkpoint(photos, tmp_path):
    out = tmp_path / "ae.safetensors"
    console = tmp_path / "console.txt"  # a file, not a pipe: a full pipe must not stall the trainer
    with console.open("w") as sink:
        # A shell starts background jobs with SIGINT ignored, and children inherit that; a user's
        # terminal does not, so the trainer starts with the default disposition, as it would there.
        proc = run_cli(["--data", str(photos), "--output", str(out), "--steps", "100000", "--checkpoint-every", "100000", *TINY],
                       stdout=sink, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        log = tmp_path / "ae_checkpoints" / "metrics.jsonl"
        deadline = time.time() + 300
        while not (log.exists() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert log.exists() and len(log.read_text().splitlines()) >= 3, console.read_text()[-3000:]
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        finally:
            proc.kill()
    text = console.read_text()
    assert proc.returncode == 130, text
    assert "continue with --resume latest" in text
    saved = list((tmp_path / "ae_checkpoints").glob("step-*"))
    assert len(saved) == 1
    state = torch.load(saved[0] / "state.pt", weights_only=True)
    assert state["step"] >= 3


def test_two_processes_keep_identical_weights(photos, tmp_path):
    out = tmp_path / "ae.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "training.train_modular_ae", "--data", str(photos), "--output", str(out), "--steps", "12",
           "--save-every-rank", *TINY]
    # torch.distributed.run keeps its log folders in TMPDIR and leaves them behind
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 process(es)" in proc.stdout + proc.stderr
    r0, r1 = params(tmp_path / "ae.rank0.safetensors"), params(tmp_path / "ae.rank1.safetensors")
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    single = tmp_path / "single.safetensors"
    main(parse_args(["--data", str(photos), "--output", str(single), "--steps", "12", *TINY]))
    # the ranks saw different data (seeded by rank), so they differ from one process alone
    assert any(not torch.equal(x, y) for x, y in zip(r0.values(), params(single).values()))


def test_context_prediction_trains_and_keeps_every_option(photos, tmp_path):
    # --context 3 predicts each transformed feature from the 3×3 code cells around its point
    # (another objective than the centre cell alone); repeatable, and the host path draws the same kind of data
    runs = {"centre": [], "context": ["--context", "3"], "again": ["--context", "3"],
            "host": ["--context", "3", "--no-cache"]}
    for name, extra in runs.items():
        main(parse_args(["--data", str(photos), "--output", str(tmp_path / f"{name}.safetensors"), "--steps", "30",
                         "--lr", "0.01", "--seed", "2", *TINY, *extra]))
    centre, context, host = (logged(tmp_path / f"{name}_checkpoints") for name in ("centre", "context", "host"))
    assert all(torch.equal(x, y) for x, y in zip(params(tmp_path / "context.safetensors").values(),
                                                 params(tmp_path / "again.safetensors").values()))
    assert context[0]["equ"] != centre[0]["equ"]
    assert context[-1]["recon"] < 0.5 * context[0]["recon"] and np.isfinite(host[-1]["total"])
    assert context[0]["recon"] == pytest.approx(centre[0]["recon"], rel=1e-6)  # same crops and start


def test_kernel_copy_term_is_logged_and_pulls_module_kernels_together(photos, tmp_path):
    runs = {"off": [], "on": ["--lambda-copies", "1"]}
    for name, extra in runs.items():
        main(parse_args(["--data", str(photos), "--output", str(tmp_path / f"{name}.safetensors"), "--steps", "60",
                         "--lr", "0.01", "--seed", "4", *TINY, *extra]))
    off, on = (logged(tmp_path / f"{name}_checkpoints") for name in runs)
    assert "copies" not in off[0] and on[0]["copies"] > 0
    # the best transformations move with the codebook, so the term falls slowly (1.44 → 1.1 here)
    assert np.mean([r["copies"] for r in on[-5:]]) < 0.85 * on[0]["copies"]
    m = main(parse_args(["--data", str(photos), "--output", str(tmp_path / "abl.safetensors"), "--steps", "2",
                         "--ablate", "equ,sym", "--lambda-copies", "1", *TINY]))
    assert "copies" not in m  # no codebook, no best transformations


def test_bad_arguments_are_refused(photos):
    with pytest.raises(SystemExit):
        parse_args(["--data", str(photos), "--context", "2"])
    with pytest.raises(SystemExit):
        parse_args(["--data", str(photos), "--ablate", "recon"])
    with pytest.raises(SystemExit):
        parse_args(["--data", str(photos), "--crop", "20", "--border", "10"])
    with pytest.raises(SystemExit):
        parse_args(["--data", str(photos), "--warp", "crops", "--no-cache"])
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        main(parse_args(["--data", str(photos / "missing"), "--steps", "1", *TINY]))


def logged(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_no_cache_path_and_compile_train_the_same_objective(photos, tmp_path):
    # --no-cache draws the batches on the host (another random stream): same objective, similar losses;
    # --compile runs the same maths as the eager path: the same losses up to float rounding
    runs = {"plain": [], "compiled": ["--compile", "default"], "no_cache": ["--no-cache", "--workers", "1"]}
    for name, extra in runs.items():
        main(parse_args(["--data", str(photos), "--output", str(tmp_path / f"{name}.safetensors"), "--steps", "3",
                         "--seed", "5", *TINY, *extra]))
    plain, compiled, no_cache = (logged(tmp_path / f"{name}_checkpoints") for name in runs)
    for a, b in zip(plain, compiled, strict=True):
        for term in ("recon", "equ", "sym", "total"):
            assert b[term] == pytest.approx(a[term], rel=1e-4, abs=1e-6), (a["step"], term)
    assert no_cache[0]["recon"] == pytest.approx(plain[0]["recon"], rel=0.5)  # same images, other crops
    assert no_cache[0]["sym"] == plain[0]["sym"]  # the codebook term does not see the data


def test_whole_crop_warps_compare_each_cell_with_the_cell_it_moved_from(photos, tmp_path):
    # At the start the codebook is the identity: a crop moved by whole code cells has, at every valid cell,
    # exactly the features of the cell it came from (L_equ ≈ 0); a quarter turn does not (the kernels are
    # not yet turned copies of one another), so the term has something to learn.
    args = parse_args(["--data", str(photos), "--warp", "crops", *TINY])
    objective = Objective(args)
    R = crop_margin(32, 8.0)
    window = torch.rand(2, 3, 2 * R + 1, 2 * R + 1, generator=torch.Generator().manual_seed(0))
    crops = window[..., R - 16:R + 16, R - 16:R + 16]

    n = (32 - 1) // objective.ae.config.stride + 1

    def equ(delta, keys=torch.rand(2, n, n, generator=torch.Generator().manual_seed(1)), pairs=args.pairs):
        warped = torch.nn.functional.grid_sample(window, warp_grid(delta, 32, R), mode="bilinear", align_corners=True)
        objective.args.pairs = pairs
        with torch.no_grad():
            return float(objective({"crops": crops, "transformed": warped, "delta": delta, "cell_keys": keys})["equ"])

    assert equ(torch.tensor([[4.0, -8.0, 0.0], [-4.0, 0.0, 0.0]])) < 1e-9
    turned = torch.tensor([[0.0, 0.0, math.pi / 2], [4.0, 0.0, math.pi / 2]])
    assert equ(turned) > 1e-3
    # --pairs caps the cells compared: all of them whatever the keys, or the one with the smallest key
    other = torch.rand(2, n, n, generator=torch.Generator().manual_seed(2))
    assert equ(turned, other) == pytest.approx(equ(turned), rel=1e-6)
    assert equ(turned, other, pairs=1) != pytest.approx(equ(turned, pairs=1), rel=1e-3)
    runs = {"a": [], "b": [], "context": ["--context", "3", "--crop", "48"]}
    for name, extra in runs.items():
        main(parse_args(["--data", str(photos), "--output", str(tmp_path / f"{name}.safetensors"), "--steps", "60",
                         "--lr", "0.01", "--seed", "6", "--warp", "crops", *TINY, *extra]))
    a, context = logged(tmp_path / "a_checkpoints"), logged(tmp_path / "context_checkpoints")
    assert all(torch.equal(x, y) for x, y in zip(params(tmp_path / "a.safetensors").values(),
                                                 params(tmp_path / "b.safetensors").values()))
    mean = lambda rows, term: np.mean([r[term] for r in rows])
    assert mean(a[-10:], "recon") < 0.6 * mean(a[:5], "recon") and mean(a[-10:], "equ") < 0.5 * a[0]["equ"]
    assert np.isfinite(context[-1]["total"]) and context[-1]["equ"] < context[0]["equ"]


@pytest.mark.parametrize("context", [1, 3])
def test_reconstruction_from_predicted_features(photos, tmp_path, context):
    # With the identity codebook, a crop moved by whole code cells is predicted exactly at every valid cell,
    # so decoding the prediction gives the warped crop's own reconstruction wherever only valid cells reach
    # (and a zero codebook gives a zero image there). Then it trains, and needs --warp crops.
    args = parse_args(["--data", str(photos), "--warp", "crops", "--lambda-recon-pred", "1", "--context", str(context),
                       *TINY, "--crop", "48", "--codebook-grid", "17", "17", "4"])
    objective = Objective(args)
    if context > 1:  # predict from the centre cell alone: the identity at δ = 0, zero a cell away (grid ~1 px apart)
        with torch.no_grad():
            objective.codebook.matrices.zero_()[:, 8, 8] = torch.eye(2)
    R = crop_margin(48, 8.0)
    window = torch.rand(2, 3, 2 * R + 1, 2 * R + 1, generator=torch.Generator().manual_seed(0))
    crops = window[..., R - 24:R + 24, R - 24:R + 24]
    ae, cfg = objective.ae, objective.ae.config
    n = (48 - 1) // cfg.stride + 1

    def terms(delta):
        warped = torch.nn.functional.grid_sample(window, warp_grid(delta, 48, R), mode="bilinear", align_corners=True)
        batch = {"crops": crops, "transformed": warped, "delta": delta, "cell_keys": torch.rand(2, n, n)}
        with torch.no_grad():
            losses = objective(batch)
            own = ae.decode(ae.encode(warped), (48, 48))
        return losses, own, ae.normalize(warped)

    shift = torch.tensor([[4.0, -8.0, 0.0], [-4.0, 0.0, 0.0]])
    losses, own, target = terms(shift)
    # the pixels only valid cells reach: rows/columns of cells whose predicting cells lie inside both crops
    _, _, valid = cell_correspondences(shift, 48, cfg.stride, cfg.padding, context)
    cells = valid.view(2, n, n)
    expected, targets = [], []
    for b in range(2):
        rows, cols = cells[b].any(1).nonzero().squeeze(1), cells[b].any(0).nonzero().squeeze(1)
        # pixel x is reached by the cells j with |stride·j − x| ≤ padding
        first = lambda j: (int(j) - 1) * cfg.stride + cfg.padding + 1
        last = lambda j: (int(j) + 1) * cfg.stride - cfg.padding - 1
        top, bottom, left, right = first(rows[0]), last(rows[-1]), first(cols[0]), last(cols[-1])
        assert cells[b, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and bottom >= top and right >= left
        expected.append((own[b] - target[b])[:, top:bottom + 1, left:right + 1].pow(2).flatten())
        targets.append(target[b, :, top:bottom + 1, left:right + 1].pow(2).flatten())
    assert float(losses["recon_pred"]) == pytest.approx(float(torch.cat(expected).mean()), rel=1e-5)
    with torch.no_grad():  # the prediction goes through the codebook: a zero codebook predicts a zero code
        objective.codebook.matrices.zero_()
    assert float(terms(shift)[0]["recon_pred"]) == pytest.approx(float(torch.cat(targets).mean()), rel=1e-5)
    if context == 1:
        main(parse_args(["--data", str(photos), "--output", str(tmp_path / "pred.safetensors"), "--steps", "40",
                         "--lr", "0.01", "--seed", "6", "--warp", "crops", "--lambda-recon-pred", "1", *TINY]))
        rows = logged(tmp_path / "pred_checkpoints")
        assert np.mean([r["recon_pred"] for r in rows[-10:]]) < 0.6 * rows[0]["recon_pred"]
        for bad in (["--lambda-recon-pred", "1"], ["--warp", "crops", "--lambda-recon-pred", "1", "--ablate", "equ,sym"]):
            with pytest.raises(SystemExit):
                parse_args(["--data", str(photos), *bad])


@pytest.mark.parametrize("context", [1, 3])
def test_pairs_in_crops_read_the_features_their_patches_give(photos, context):
    # --pair-source crops reads a pair's untransformed feature from the crops' code: it must be the composed
    # kernel's response to the patch around that code cell (what --pair-source images computes from the patch)
    from scg_core.model import functional as Fn
    from training.train_modular_ae import cell_features

    args = parse_args(["--data", str(photos), *TINY, "--context", str(context)])
    objective = Objective(args)
    with torch.no_grad():
        for p in objective.ae.parameters():  # away from the initial weights, so that every channel differs
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ae, cfg = objective.ae, objective.ae.config
    crops = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cells = torch.tensor([[0, 3, 3], [1, 5, 3], [1, 4, 5]])
    with torch.no_grad():
        code = Fn.encode_factorised(ae.normalize(crops), ae.factor_weights(), cfg)
        f = cell_features(code, cells, context)
        kernel = Fn.compose_kernel(ae.factor_weights(), cfg)
        side, S = cfg.receptive_field + cfg.stride * (context - 1), cfg.stride
        h = (side - 1) // 2
        patches = torch.stack([crops[b, :, S * i - h:S * i + h + 1, S * j - h:S * j + h + 1] for b, i, j in cells.tolist()])
        expected = Fn.context_features(kernel, patches, ae.mean, ae.std, S)
    assert f.shape == (3, context ** 2, cfg.num_modules * cfg.module_channels)
    torch.testing.assert_close(f, expected, atol=1e-5, rtol=1e-5)


def test_module_dropout_reconstructs_each_crop_from_its_kept_modules(photos):
    args = parse_args(["--data", str(photos), "--module-dropout", "0.5", "--ablate", "equ,sym", *TINY])
    objective = Objective(args)
    crops = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([[2.0, 0, 2, 2], [0, 0, 0, 0], [2, 2, 2, 2]])
    loss = objective({"crops": crops, "module_keep": keep})["recon"]
    with torch.no_grad():
        parts = objective.ae.module_reconstructions(crops)  # [B,k,3,H,W], the model's own per-module decode
        target = objective.ae.normalize(crops)
        expected = (keep[:, :, None, None, None] * parts).sum(1)
    border = args.border
    inner = (slice(None), slice(None), slice(border, -border), slice(border, -border))
    assert loss.item() == pytest.approx((expected - target)[inner].pow(2).mean().item(), rel=1e-4)
    full = objective({"crops": crops})["recon"]  # without a mask every module counts, unscaled
    assert full.item() == pytest.approx((parts.sum(1) - target)[inner].pow(2).mean().item(), rel=1e-4)
    assert loss.item() > full.item()


def test_module_dropout_masks_are_drawn_per_step_and_resume_with_the_run(photos):
    from training.train_modular_ae import with_module_keep

    args = parse_args(["--data", str(photos), "--module-dropout", "0.25", "--num-modules", "16", "--batch", "64"])
    batches = [{"step": torch.tensor(s)} for s in range(6)]
    full = list(with_module_keep(iter(batches), args, 0, 0))
    resumed = list(with_module_keep(iter(batches[4:]), args, 0, 4))
    assert all(torch.equal(a["module_keep"], b["module_keep"]) for a, b in zip(full[4:], resumed, strict=True))
    masks = torch.stack([b["module_keep"] for b in full])  # [steps, B, k]
    assert masks.shape == (6, 64, 16) and torch.equal(masks.unique(), torch.tensor([0.0, 4 / 3]))
    assert (masks == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert not torch.equal(masks[0], masks[1])  # a new draw every step
    other_rank = next(with_module_keep(iter(batches), args, 1, 0))["module_keep"]
    assert not torch.equal(other_rank, masks[0])
    off = parse_args(["--data", str(photos)])
    assert list(with_module_keep(iter(batches), off, 0, 0)) == batches  # off: the batches untouched
    with pytest.raises(SystemExit):
        parse_args(["--data", str(photos), "--module-dropout", "1"])


def test_module_dropout_trains_and_resumes_to_the_same_weights(photos, tmp_path):
    steps = ["--steps", "12", "--seed", "2", "--module-dropout", "0.3", *TINY]
    full = tmp_path / "full.safetensors"
    main(parse_args(["--data", str(photos), "--output", str(full), "--checkpoint-every", "6", *steps]))
    resumed = tmp_path / "resumed.safetensors"  # from step 6 of the first run: the masks of steps 6-11 drawn again
    main(parse_args(["--data", str(photos), "--output", str(resumed), *steps,
                     "--resume", str(tmp_path / "full_checkpoints" / "step-0000006")]))
    assert all(torch.equal(x, y) for x, y in zip(params(full).values(), params(resumed).values()))
    plain = tmp_path / "plain.safetensors"
    main(parse_args(["--data", str(photos), "--output", str(plain), "--steps", "12", "--seed", "2", *TINY]))
    assert not all(torch.equal(x, y) for x, y in zip(params(full).values(), params(plain).values()))
