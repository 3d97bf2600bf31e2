"""training.train_controlnet on a tiny SD1-shaped model (CPU, seconds per run)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers", reason="train_controlnet needs diffusers (pip install -e '.[train]')")

import scg_core  # noqa: E402
from scg_core.controlnet.layout import ldm_to_diffusers  # noqa: E402
from scg_core.controlnet.metadata import fingerprint, read_controlnet_info  # noqa: E402
from training import train_controlnet  # noqa: E402
from training.train_controlnet import main, parse_args  # noqa: E402

from .photos import write_photos  # noqa: E402
from .tiny_sd import build_tiny_sd  # noqa: E402

FAST = ["--resolution", "64", "--batch", "2", "--device", "cpu", "--threads", "1", "--workers", "0", "--log-every", "1",
        "--lr", "1e-3", "--report-to", "none"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("base") / "sd")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Five images (one in a subfolder), four with captions, a broken file, a tiny one."""
    return write_photos(tmp_path_factory.mktemp("photos"), nested=lambda n: n == 1,
                        caption=lambda n: None if n == 4 else f"a pattern number {n}")


def run(tiny_sd, photos, out, *extra):
    return main(parse_args(["--base", str(tiny_sd), "--data", str(photos), "--output-dir", str(out), *FAST, *extra]))


def cli(args, stdout=subprocess.PIPE, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "training.train_controlnet", *args], stdout=stdout,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def checkpoint_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_training_changes_the_controlnet_only_and_exports_both_layouts(tiny_sd, photos, tmp_path, monkeypatch, capsys):
    from diffusers import ControlNetModel
    from safetensors import safe_open

    used = {}
    real_load_base = train_controlnet.load_base

    def spy(*a, **kw):
        used["parts"] = parts = real_load_base(*a, **kw)
        used["frozen"] = {name: {k: v.clone() for k, v in getattr(parts, name).state_dict().items()}
                          for name in ("unet", "vae", "text_encoder")}
        return parts

    monkeypatch.setattr(train_controlnet, "load_base", spy)
    out = tmp_path / "run"
    metrics = run(tiny_sd, photos, out, "--steps", "6", "--groups", "brightness")
    assert np.isfinite(metrics["loss"])
    for name, before in used["frozen"].items():  # the frozen SD parts are exactly as loaded
        after = getattr(used["parts"], name).state_dict()
        assert all(torch.equal(before[k], after[k].cpu()) for k in before), name
    text = capsys.readouterr().out
    assert "2 skipped" in text and "broken.jpg: unreadable" in text and "small.png: too small" in text

    initial = ControlNetModel.from_unet(used["parts"].unet)
    trained = ControlNetModel.from_pretrained(out / "scg_controlnet_diffusers")
    changed = [k for k, v in initial.state_dict().items() if not torch.equal(v, trained.state_dict()[k])]
    assert "controlnet_mid_block.weight" in changed and len(changed) > 0.5 * len(initial.state_dict())

    single = out / "scg_controlnet.safetensors"
    with safe_open(str(single), framework="pt") as f:
        ldm = {k: f.get_tensor(k) for k in f.keys()}
    assert {v.dtype for v in ldm.values()} == {torch.float16}
    as_diffusers = ldm_to_diffusers(ldm)
    assert set(as_diffusers) == set(trained.state_dict())
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(as_diffusers[k].float(), v.half().float(), rtol=0, atol=0)
    info = read_controlnet_info(single)
    assert [g.name for g in info.groups] == ["brightness"] and info.group_mode == "fixed"
    assert info.ae_fingerprint == fingerprint(scg_core.load_default()) and info.base_model == "custom"
    assert json.loads((out / "scg_controlnet_diffusers" / "scg_metadata.json").read_text())["scg_groups"]
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and all(r["samples_per_s"] > 0 for r in log)


def test_kill_and_resume_equals_an_uninterrupted_run(tiny_sd, photos, tmp_path):
    common = ["--base", str(tiny_sd), "--data", str(photos), *FAST, "--steps", "40", "--checkpoint-every", "4",
              "--keep-last", "2", "--grad-accum", "2", "--random-flip"]
    full = tmp_path / "full"
    proc = cli([*common, "--output-dir", str(full)])
    out, _ = proc.communicate()
    assert proc.returncode == 0, out

    cut = tmp_path / "cut"
    proc = cli([*common, "--output-dir", str(cut)], stdout=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not list((cut / "checkpoints").glob("step-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (cut / "scg_controlnet.safetensors").exists()
    resumed = cli([*common, "--output-dir", str(cut), "--resume", "latest"])
    out, _ = resumed.communicate()
    assert resumed.returncode == 0, out
    assert "resumed from" in out and "at step 40" not in out
    kept = sorted(p.name for p in (cut / "checkpoints").glob("step-*"))
    assert len(kept) == 2 and kept[-1] == "step-0000040"  # keep-last 2
    a = checkpoint_weights(full / "checkpoints" / "step-0000040")
    b = checkpoint_weights(cut / "checkpoints" / "step-0000040")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_two_processes_keep_identical_weights(tiny_sd, photos, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "training.train_controlnet", "--base", str(tiny_sd), "--data", str(photos), "--output-dir", str(out),
           *FAST, "--steps", "4", "--save-every-rank"]
    # torch.distributed.run keeps its log folders in TMPDIR and leaves them behind
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout + proc.stderr
    from safetensors.torch import load_file

    r0, r1 = (load_file(str(out / f"rank{r}_controlnet.safetensors")) for r in (0, 1))
    assert r0.keys() == r1.keys()
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    assert "4 samples/step" in proc.stdout + proc.stderr


def test_random_groups_hint_each_sample_with_its_group(tiny_sd, photos, tmp_path):
    from training.controlnet_step import HintMaker

    ae = scg_core.load_default()
    hints = HintMaker(ae, None, random_groups=True)
    assert [c[0] for c in hints.choices] == [g.name for g in ae.groups]
    x = torch.rand(3, 3, 64, 64)
    group = torch.tensor([1, 0, 1])
    out = hints(x, group)
    for i, g in enumerate(group.tolist()):  # the very function the nodes call, per sample (batching: float rounding)
        torch.testing.assert_close(out[i : i + 1], ae.hint(x[i : i + 1], groups=[ae.groups[g].name]), rtol=0, atol=1e-6)
    fixed = HintMaker(ae, ["edges"])
    assert torch.equal(fixed(x), ae.hint(x, groups=["edges"]))
    with pytest.raises(ValueError, match="nonsense"):
        HintMaker(ae, ["nonsense"])

    out = tmp_path / "random"
    run(tiny_sd, photos, out, "--steps", "2", "--random-groups", "--workers", "1", "--validation-image", str(photos / "img0.png"),
        "--validation-prompt", "a pattern", "--validate-every", "1", "--validation-steps", "2")
    info = read_controlnet_info(out / "scg_controlnet.safetensors")
    assert info.group_mode == "random" and len(info.groups) == len(ae.groups)
    grid = Image.open(out / "validation" / "step-0000002.png")
    assert grid.size == (3 * 64, 64 * len(ae.groups))  # source | hint | generated, one row per group


def test_cached_latents_train_and_a_foreign_cache_is_refused(tiny_sd, photos, tmp_path):
    out = tmp_path / "cached"
    # bf16 in a process of its own: accelerate fixes the precision once per process
    proc = cli(["--base", str(tiny_sd), "--data", str(photos), "--output-dir", str(out), *FAST, "--steps", "3",
                "--cache-latents", "--report-to", "tensorboard", "--mixed-precision", "bf16", "--gradient-checkpointing"])
    text, _ = proc.communicate()
    assert proc.returncode == 0, text
    assert "· bf16 ·" in text
    assert np.isfinite(json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["loss"])
    entries = sorted((out / "cache").glob("0*.safetensors"))
    assert len(entries) == 5
    from safetensors.torch import load_file

    entry = load_file(str(entries[0]))
    assert entry["latent_dist"].shape == (8, 8, 8) and entry["text"].shape[1:] == (77, 32)
    assert list((out / "scg_controlnet").rglob("events.out.tfevents.*")), "no tensorboard log"
    with pytest.raises(SystemExit, match="another setup"):
        run(tiny_sd, photos, out, "--steps", "1", "--cache-latents", "--resolution", "32", "--report-to", "none")


def test_caption_layouts(photos, tmp_path):
    from training.caption_data import CaptionedImages, TrainingSamples

    folder = CaptionedImages(photos)
    assert folder.layout == "folder" and len(folder) == 5 and folder.captioned == 4 and len(folder.skipped) == 2

    coco_dir = tmp_path / "coco"
    coco_dir.mkdir()
    for n in range(3):
        Image.open(next(photos.rglob(f"img{n}.png"))).save(coco_dir / f"{n:012d}.jpg")
    captions = {"images": [{"id": n, "file_name": f"{n:012d}.jpg"} for n in range(3)] + [{"id": 9, "file_name": "gone.jpg"}],
                "annotations": [{"image_id": 0, "caption": "one"}, {"image_id": 0, "caption": "two"},
                                {"image_id": 1, "caption": "three"}]}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    coco = CaptionedImages(coco_dir, tmp_path / "captions.json")
    assert coco.layout == "coco" and len(coco) == 3 and coco.skipped == {str(coco_dir / "gone.jpg"): "missing"}
    assert coco.items[0].captions == ("one", "two") and coco.items[2].captions == ()
    samples = TrainingSamples(coco, resolution=32, batch=1, seed=0, rank=0, world=1)
    drawn = {samples.sample(p)[1] for p in range(0, 60, 3)}  # position ≡ 0 mod 3 … varied items
    assert {"one", "two"} <= drawn | {"one", "two"} and drawn <= {"one", "two", "three", ""}
    seen_for_0 = {samples.sample(p)[1] for p in range(60) if samples.item_index(p) == 0}
    assert seen_for_0 == {"one", "two"}  # several captions per image: one drawn per step

    jsonl_dir = tmp_path / "hf"
    jsonl_dir.mkdir()
    Image.open(photos / "img0.png").save(jsonl_dir / "a.png")
    (jsonl_dir / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "caption": "hello"}) + "\n")
    hf = CaptionedImages(jsonl_dir, caption_column="caption")
    assert hf.layout == "metadata.jsonl" and hf.items[0].captions == ("hello",)

    empty = TrainingSamples(folder, resolution=32, batch=4, seed=0, rank=0, world=1, proportion_empty_prompts=1.0)
    assert empty[0]["captions"] == [""] * 4
    a = TrainingSamples(folder, resolution=32, batch=2, seed=5, rank=1, world=2)
    b = TrainingSamples(folder, resolution=32, batch=2, seed=5, rank=1, world=2)
    assert torch.equal(a[7]["pixels"], b[7]["pixels"]) and a[7]["pixels"].shape == (2, 3, 32, 32)
    other_rank = TrainingSamples(folder, resolution=32, batch=2, seed=5, rank=0, world=2)
    assert a.positions(7) != other_rank.positions(7)


def test_bad_inputs_are_named(tiny_sd, photos, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no usable images"):
        run(tiny_sd, empty, tmp_path / "o1", "--steps", "1")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="not writable"):
        run(tiny_sd, photos, blocker / "out", "--steps", "1")
    with pytest.raises(SystemExit, match="model_index.json"):
        run(empty, photos, tmp_path / "o2", "--steps", "1")
    sd2 = build_tiny_sd(tmp_path / "sd_wide", cross_attention_dim=1024)
    with pytest.raises(SystemExit, match="SD2.x"):
        run(sd2, photos, tmp_path / "o3", "--steps", "1")
    other = build_tiny_sd(tmp_path / "sd_other", cross_attention_dim=48)
    run(other, photos, tmp_path / "o4", "--steps", "1", "--export-dtype", "fp32")
    with pytest.raises(SystemExit, match="does not fit the base UNet"):
        run(tiny_sd, photos, tmp_path / "o5", "--steps", "1", "--controlnet", str(tmp_path / "o4" / "scg_controlnet.safetensors"))
    with pytest.raises(SystemExit):
        parse_args(["--base", "x", "--data", "y", "--output-dir", "z", "--resolution", "60"])
    with pytest.raises(SystemExit, match="single file"):
        run(tmp_path / "o4" / "scg_controlnet.safetensors", photos, tmp_path / "o6", "--steps", "1")
