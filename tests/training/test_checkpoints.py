"""The checkpoint layout and resume checks both trainers share (training.checkpoints, training.loop)."""

import json
import os
import signal
import time

import pytest
import torch

pytest.importorskip("diffusers", reason="train_controlnet needs diffusers (pip install -e '.[train]')")

from safetensors.torch import load_file  # noqa: E402

from training import train_controlnet, train_modular_ae  # noqa: E402
from training.checkpoints import ADDED, MAY_CHANGE, differences  # noqa: E402

from .photos import write_photos  # noqa: E402
from .test_train_controlnet import FAST  # noqa: E402
from .test_train_modular_ae import TINY, params, run_cli  # noqa: E402
from .tiny_sd import build_tiny_sd  # noqa: E402

LAYOUT = ["args.json", "model.safetensors", "state.pt"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"), caption=lambda n: f"pattern {n}")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("base") / "sd")


def ae(photos, out, *extra):
    argv = ["--data", str(photos), "--output", str(out / "ae.safetensors"), *TINY, "--report-to", "none", *extra]
    return train_modular_ae.main(train_modular_ae.parse_args(argv))


def controlnet(tiny_sd, photos, out, *extra):
    argv = ["--base", str(tiny_sd), "--data", str(photos), "--output-dir", str(out), *FAST, *extra]
    return train_controlnet.main(train_controlnet.parse_args(argv))


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert text.startswith("error: ") and "\n" not in text, text
    return text


def test_both_trainers_write_the_same_layout(photos, tiny_sd, tmp_path):
    ae(photos, tmp_path / "ae", "--steps", "4", "--checkpoint-every", "2")
    controlnet(tiny_sd, photos, tmp_path / "cn", "--steps", "2", "--checkpoint-every", "1", "--keep-last", "5")
    folders = {"training.train_modular_ae": tmp_path / "ae" / "ae_checkpoints",
               "training.train_controlnet": tmp_path / "cn" / "checkpoints"}
    for trainer, folder in folders.items():
        steps = sorted(p.name for p in folder.glob("step-*"))
        assert steps == (["step-0000002", "step-0000004"] if "modular" in trainer else ["step-0000001", "step-0000002"])
        last = folder / steps[-1]
        assert sorted(p.name for p in last.iterdir()) == LAYOUT, trainer
        record = json.loads((last / "args.json").read_text())
        assert record["trainer"] == trainer and record["processes"] == 1
        assert record["args"]["seed"] == 0 and record["args"]["steps"] in (2, 4)
        state = torch.load(last / "state.pt", weights_only=True)
        assert set(state) == {"step", "optimizer", "scheduler"} and state["step"] == int(steps[-1][5:])
        assert all(v.dtype == torch.float32 for v in load_file(str(last / "model.safetensors")).values())
    # the AE's checkpoint holds its exported weights exactly
    exported = params(tmp_path / "ae" / "ae.safetensors")
    saved = load_file(str(folders["training.train_modular_ae"] / "step-0000004" / "model.safetensors"))
    for name, value in exported.items():
        assert torch.equal(saved[f"ae.{name}"], value), name


def test_ae_resume_with_other_training_arguments_is_refused(photos, tmp_path):
    ae(photos, tmp_path, "--steps", "4", "--checkpoint-every", "2")
    with pytest.raises(SystemExit) as e:
        ae(photos, tmp_path, "--steps", "4", "--lr", "0.01", "--batch", "3", "--resume", "latest")
    text = one_line_error(e)
    assert "step-0000004" in text
    assert "--lr 0.005 (checkpoint) vs 0.01 (now)" in text and "--batch 2 (checkpoint) vs 3 (now)" in text
    assert "pass the checkpoint's values" in text and "leave out --resume" in text
    with pytest.raises(SystemExit) as e:  # --steps sets the length of this trainer's cosine schedule
        ae(photos, tmp_path, "--steps", "8", "--resume", "latest")
    assert "--steps 4 (checkpoint) vs 8 (now) [the cosine schedule's length]" in one_line_error(e)


def test_ae_resume_with_allowed_changes_continues_exactly(photos, tmp_path, capsys):
    ae(photos, tmp_path / "full", "--steps", "6")
    ae(photos, tmp_path / "cut", "--steps", "6", "--checkpoint-every", "3")
    resumed = tmp_path / "elsewhere"  # other output, log and checkpoint frequency, workers
    ae(photos, resumed, "--steps", "6", "--checkpoint-every", "5", "--log-every", "2", "--workers", "1",
       "--resume", str(tmp_path / "cut" / "ae_checkpoints" / "step-0000003"))
    assert "at step 3" in capsys.readouterr().out
    for (name, x), y in zip(params(tmp_path / "full" / "ae.safetensors").items(), params(resumed / "ae.safetensors").values()):
        assert torch.equal(x, y), name
    assert {"steps", "workers", "log_every", "checkpoint_every", "output", "resume"} <= set(MAY_CHANGE)


def test_controlnet_resume_with_another_lr_is_refused_and_more_steps_continue_exactly(tiny_sd, photos, tmp_path, capsys):
    common = ["--checkpoint-every", "2", "--grad-accum", "2", "--random-flip"]
    controlnet(tiny_sd, photos, tmp_path / "full", *common, "--steps", "4")
    cut = tmp_path / "cut"
    controlnet(tiny_sd, photos, cut, *common, "--steps", "2")
    with pytest.raises(SystemExit) as e:
        controlnet(tiny_sd, photos, cut, *common, "--steps", "4", "--lr", "2e-3", "--resume", "latest")
    text = one_line_error(e)
    assert "--lr 0.001 (checkpoint) vs 0.002 (now)" in text and "--steps" not in text
    capsys.readouterr()
    controlnet(tiny_sd, photos, cut, *common, "--steps", "4", "--resume", "latest")  # more steps: allowed
    assert "at step 2" in capsys.readouterr().out
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-0000004" / "model.safetensors"))
    b = load_file(str(cut / "checkpoints" / "step-0000004" / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_sigterm_saves_a_checkpoint_that_resumes_exactly_ae(photos, tmp_path):
    steps = ["--steps", "120", "--checkpoint-every", "100000"]  # the only checkpoint before the end: SIGTERM's
    full = tmp_path / "full" / "ae.safetensors"
    assert run_cli(["--data", str(photos), "--output", str(full), *steps, *TINY]).wait() == 0
    cut = tmp_path / "cut" / "ae.safetensors"
    console = tmp_path / "console.txt"
    with console.open("w") as sink:
        proc = run_cli(["--data", str(photos), "--output", str(cut), *steps, *TINY], stdout=sink)
        log = tmp_path / "cut" / "ae_checkpoints" / "metrics.jsonl"
        deadline = time.time() + 300
        while not (log.exists() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        finally:
            proc.kill()
    text = console.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, text
    assert "SIGTERM: stopping after this step" in text and "continue with --resume latest" in text
    saved = list((tmp_path / "cut" / "ae_checkpoints").glob("step-*"))
    assert len(saved) == 1 and sorted(p.name for p in saved[0].iterdir()) == LAYOUT
    stopped_at = torch.load(saved[0] / "state.pt", weights_only=True)["step"]
    assert 3 <= stopped_at < 120 and not cut.exists()
    resumed = run_cli(["--data", str(photos), "--output", str(cut), *steps, *TINY, "--resume", "latest"])
    out, _ = resumed.communicate()
    assert resumed.returncode == 0, out
    assert f"at step {stopped_at}" in out
    for (name, x), y in zip(params(full).items(), params(cut).values()):
        assert torch.equal(x, y), name


def test_sigterm_saves_a_checkpoint_that_resumes_exactly_controlnet(tiny_sd, photos, tmp_path, monkeypatch):
    common = ["--steps", "5", "--checkpoint-every", "100", "--grad-accum", "2"]
    controlnet(tiny_sd, photos, tmp_path / "full", *common)
    real = train_controlnet.step_generator

    def terminate_at_micro_step_5(device, seed, rank, micro):  # a SIGTERM arriving inside step 2
        if micro == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(device, seed, rank, micro)

    monkeypatch.setattr(train_controlnet, "step_generator", terminate_at_micro_step_5)
    handler = signal.getsignal(signal.SIGTERM)
    cut = tmp_path / "cut"
    with pytest.raises(SystemExit) as e:
        controlnet(tiny_sd, photos, cut, *common)
    assert e.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == handler  # the loop's handler is in place only while it runs
    assert [p.name for p in (cut / "checkpoints").glob("step-*")] == ["step-0000003"]  # step 2 finished first
    assert not (cut / "scg_controlnet.safetensors").exists()
    monkeypatch.setattr(train_controlnet, "step_generator", real)
    controlnet(tiny_sd, photos, cut, *common, "--resume", "latest")
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-0000005" / "model.safetensors"))
    b = load_file(str(cut / "checkpoints" / "step-0000005" / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_old_formats_and_foreign_checkpoints_are_named(photos, tiny_sd, tmp_path):
    ae_dir = tmp_path / "ae_checkpoints"
    ae_dir.mkdir()
    torch.save({"step": 10, "objective": {}, "args": {}}, ae_dir / "step-0000010.pt")  # the old AE format
    for spec in ("latest", str(ae_dir / "step-0000010.pt")):
        with pytest.raises(SystemExit) as e:
            ae(photos, tmp_path, "--steps", "20", "--resume", spec)
        assert "old-format train_modular_ae checkpoint (a step-N.pt file" in one_line_error(e)
        assert "start again without --resume" in str(e.value)
    old_cn = tmp_path / "cn" / "checkpoints" / "step-0000004"  # the old ControlNet format: no args.json
    old_cn.mkdir(parents=True)
    (old_cn / "state.pt").write_bytes(b"")
    (old_cn / "controlnet.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        controlnet(tiny_sd, photos, tmp_path / "cn", "--steps", "8", "--resume", "latest")
    assert "old-format train_controlnet checkpoint (no args.json" in one_line_error(e)
    ae(photos, tmp_path / "new", "--steps", "2")
    with pytest.raises(SystemExit) as e:
        controlnet(tiny_sd, photos, tmp_path / "cn2", "--steps", "8", "--resume",
                   str(tmp_path / "new" / "ae_checkpoints" / "step-0000002"))
    assert "is a checkpoint of training.train_modular_ae, not of training.train_controlnet" in one_line_error(e)
    with pytest.raises(SystemExit) as e:
        ae(photos, tmp_path, "--steps", "2", "--resume", str(tmp_path / "missing"))
    assert "does not exist" in one_line_error(e)


def test_differences_name_each_argument_and_the_process_count():
    saved = {"trainer": "t", "processes": 2, "args": {"lr": 0.1, "batch": 4, "steps": 10, "workers": 2, "old": 1}}
    now = {"trainer": "t", "processes": 1, "args": {"lr": 0.2, "batch": 4, "steps": 20, "workers": 0, "new": "x"}}
    assert differences(saved, now) == [
        '--lr 0.1 (checkpoint) vs 0.2 (now)',
        '--new "<absent>" (checkpoint) vs "x" (now)',
        '--old 1 (checkpoint) vs "<absent>" (now)',
        "number of processes 2 (checkpoint) vs 1 (now) [each rank's samples depend on it]",
    ]
    assert differences(saved, now, checked={"steps": "why"})[-2] == "--steps 10 (checkpoint) vs 20 (now) [why]"
    assert all(reason for reason in MAY_CHANGE.values())


def test_a_checkpoint_from_before_an_added_argument_resumes_under_its_old_behaviour(photos, tmp_path):
    # --context came after this layout: a checkpoint without it resumes at --context 1 (what the
    # trainer did then) and is refused at another value, like any other argument
    ae(photos, tmp_path / "full", "--steps", "4")
    ae(photos, tmp_path / "cut", "--steps", "4", "--checkpoint-every", "2")
    record = tmp_path / "cut" / "ae_checkpoints" / "step-0000002" / "args.json"
    saved = json.loads(record.read_text())
    del saved["args"]["context"]
    record.write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as e:
        ae(photos, tmp_path / "cut", "--steps", "4", "--context", "3", "--resume", str(record.parent))
    assert "--context 1 (checkpoint) vs 3 (now)" in one_line_error(e)
    ae(photos, tmp_path / "cut", "--steps", "4", "--resume", str(record.parent))
    for (name, x), y in zip(params(tmp_path / "full" / "ae.safetensors").items(), params(tmp_path / "cut" / "ae.safetensors").values()):
        assert torch.equal(x, y), name
    defaults = vars(train_modular_ae.parse_args(["--data", str(photos)]))
    changed = {"pair_source": "crops"}  # added with a new default: older checkpoints resume with the old value named
    assert all(defaults[name] == changed.get(name, value) for name, value in ADDED.items())  # else the old behaviour


def test_a_checkpoint_from_before_pairs_came_from_the_crops_resumes_with_pair_source_images(photos, tmp_path):
    # Before --pair-source the pairs were cut from the images: such a checkpoint is refused under the new
    # default, with the argument that differs named, and continues exactly with --pair-source images.
    ae(photos, tmp_path / "full", "--steps", "4", "--pair-source", "images")
    ae(photos, tmp_path / "cut", "--steps", "4", "--checkpoint-every", "2", "--pair-source", "images")
    record = tmp_path / "cut" / "ae_checkpoints" / "step-0000002" / "args.json"
    saved = json.loads(record.read_text())
    del saved["args"]["pair_source"]
    record.write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as e:
        ae(photos, tmp_path / "cut", "--steps", "4", "--resume", str(record.parent))
    assert '--pair-source "images" (checkpoint) vs "crops" (now)' in one_line_error(e)
    ae(photos, tmp_path / "cut", "--steps", "4", "--pair-source", "images", "--resume", str(record.parent))
    for (name, x), y in zip(params(tmp_path / "full" / "ae.safetensors").items(), params(tmp_path / "cut" / "ae.safetensors").values()):
        assert torch.equal(x, y), name
