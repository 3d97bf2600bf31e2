import pytest
import torch
from PIL import Image

from training.build_default import criteria, render
from training.gather_photos import HELDOUT, SKIMAGE_TRAIN, SKLEARN_TRAIN, gather

GOOD = {"psnr_db": 31.0, "min_weight_norm_ratio": 0.4, "luminance_lowpass": 1, "colour_opponent": 2,
        "luminance_bandpass_fine": 1, "luminance_bandpass_coarse": 1, "mixed": 0, "median_orientation_selectivity": 0.05,
        "relative_equivariance_error": 0.05, "modules_carrying_energy": 9, "bandpass_centroids": [0.06, 0.13],
        "hint_stability": {"colour": {"shift_1px": 0.99, "rotate_90": 0.98}, "edges_fine": {"shift_1px": 0.93, "rotate_90": 0.91}},
        "hint_span_at_gain": {"colour": {"gain": 1.5, "span": 0.6, "clipped": 0.001}, "edges_fine": {"gain": 4.0, "span": 0.55, "clipped": 0.008}}}
ABLATED = dict(GOOD, median_orientation_selectivity=0.2, relative_equivariance_error=0.14, mixed=4)


def failing(summary, ablated=ABLATED):
    return [k for k, ok in criteria(summary, ablated).items() if not ok]


def test_criteria_pass_and_fail():
    assert failing(GOOD) == []
    assert failing(dict(GOOD, psnr_db=29.5, mixed=2, relative_equivariance_error=0.08)) == [
        "psnr >= 30 dB", "<= 1 mixed colour/luminance", "equivariance error <= 0.5x ablation"]
    # orientation selectivity must be low in absolute terms and relative to the ablation
    assert failing(dict(GOOD, median_orientation_selectivity=0.11)) == ["median OSI <= 0.10"]
    assert failing(dict(GOOD, median_orientation_selectivity=0.09), dict(ABLATED, median_orientation_selectivity=0.14)) == [
        "median OSI <= 0.6x ablation"]
    # the landed default's decomposition: 4 modules at work, one edge scale, a hint that aliases, faint hints
    landed = dict(GOOD, modules_carrying_energy=4, bandpass_centroids=[0.2],
                  hint_stability={"edges_fine": {"shift_1px": 0.82, "rotate_90": 0.72}},
                  hint_span_at_gain={"edges_fine": {"gain": 1.0, "span": 0.14, "clipped": 0.0}})
    assert failing(landed) == [">= 8 modules carry >= 1% of the energy", ">= 2 luminance band-pass >= 1 octave apart",
                               "every hint r >= 0.9 under a 1-px shift and a 90° turn", "every hint spans >= 50% with <= 1% clipped"]
    # two edge scales less than an octave apart are one scale; a hint that clips is not readable
    assert failing(dict(GOOD, bandpass_centroids=[0.1, 0.15])) == [">= 2 luminance band-pass >= 1 octave apart"]
    assert failing(dict(GOOD, hint_span_at_gain={"t": {"gain": 9.0, "span": 0.9, "clipped": 0.03}})) == [
        "every hint spans >= 50% with <= 1% clipped"]


def test_render_lists_every_seed_and_check():
    row = {"constrained": {"summary": GOOD, "groups": [{"name": "colour", "modules": [1], "label": "colour"}], "train_seconds": 10.0},
           "ablated": {"summary": ABLATED, "groups": [], "train_seconds": 9.0}, "checks": criteria(GOOD, ABLATED)}
    text = render({"heldout": "chelsea.png", "seeds": {"0": row, "1": row}})
    assert "| seed 0 constrained | seed 0 ablated | seed 1 constrained | seed 1 ablated |" in text
    assert "| psnr >= 30 dB | ✅ | ✅ |" in text and "**colour** (colour): modules [1]" in text


def test_gather_photos_writes_the_training_set_and_the_heldout_photo(tmp_path):
    paths = gather(tmp_path)
    assert len(paths) == len(SKIMAGE_TRAIN) + len(SKLEARN_TRAIN) + 1
    assert (tmp_path / "heldout" / f"{HELDOUT}.png").is_file()
    assert all(Image.open(p).mode == "RGB" and min(Image.open(p).size) >= 300 for p in paths)


def test_gather_photos_adds_the_mate_backgrounds_nature_photos_scaled_with_their_licence(tmp_path):
    from training.gather_photos import MATE_HELDOUT, SIDE

    folder = tmp_path / "nature"  # what `apt-get install mate-backgrounds` puts in /usr/share/backgrounds/mate/nature
    folder.mkdir()
    for n, name in enumerate(["Aqua", "Dune", MATE_HELDOUT[0]]):
        Image.new("RGB", (1600 + 100 * n, 1000), (40 * n, 90, 200)).save(folder / f"{name}.jpg", quality=90)
    paths = gather(tmp_path / "out", folder)
    mate = [p for p in paths if p.name.startswith("mate_")]
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in mate) == [
        "heldout/mate_LadyBird.png", "train/mate_Aqua.png", "train/mate_Dune.png"]
    assert all(min(Image.open(p).size) == SIDE for p in mate) and Image.open(mate[0]).size[0] > SIDE
    sources = (tmp_path / "out" / "SOURCES.md").read_text()
    assert "| train/mate_Aqua.png | Debian `mate-backgrounds` Aqua.jpg, GPL-2+ |" in sources
    assert "| heldout/chelsea.png | scikit-image" in sources
    with pytest.raises(SystemExit, match="apt-get install mate-backgrounds"):
        gather(tmp_path / "none", tmp_path / "empty")


def test_gather_photos_scale_pyramid_scales_training_photos_only(tmp_path):
    from training.gather_photos import MIN_SIDE

    paths = gather(tmp_path, scales=(1.0, 0.5, 0.25))
    train = {p.name: Image.open(p).size for p in paths if p.parent.name == "train"}
    for name in SKIMAGE_TRAIN + [n.removesuffix(".jpg") for n in SKLEARN_TRAIN]:
        w, h = train[f"{name}.png"]
        assert train[f"{name}_x0.50.png"] == (round(w * 0.5), round(h * 0.5))
        # a quarter of a 512-px photo is under the smallest side kept; the hubble field (872 px) is not
        assert (f"{name}_x0.25.png" in train) == (round(min(w, h) * 0.25) >= MIN_SIDE)
    assert [p.name for p in paths if p.parent.name == "heldout"] == [f"{HELDOUT}.png"]
    assert "| train/china_x0.50.png | scikit-learn `load_sample_image`, scaled by 0.5 |" in (tmp_path / "SOURCES.md").read_text()
    with pytest.raises(SystemExit, match="--scales"):
        gather(tmp_path / "bad", scales=(1.0, 2.0))


def test_build_trains_the_default_ae_preset_and_quick_ae_after_the_separator(monkeypatch, tmp_path):
    """The bundled default's setting (40,000 steps, ±8 px) by default; ``-- --preset quick_ae`` the
    former 5,400-step one. The arguments are those train_modular_ae parses, not re-stated here."""
    import training.build_default as build
    from training import train_modular_ae

    seen = []
    monkeypatch.setattr(train_modular_ae, "main", lambda args: seen.append(args))
    build.train(tmp_path, tmp_path / "a.safetensors", 0, False, [])
    build.train(tmp_path, tmp_path / "b.safetensors", 1, True, ["--preset", "quick_ae", "--threads", "1"])
    default, quick = seen
    assert (default.steps, default.max_shift, default.codebook_grid, default.weight_decay) == (40000, 8.0, [17, 17, 8], 0.0045)
    assert (quick.steps, quick.max_shift, quick.codebook_grid, quick.weight_decay) == (5400, 2.0, [5, 5, 8], 0.0333)
    assert quick.ablate and quick.seed == 1 and quick.threads == 1 and not default.ablate


def test_runs_trained_side_by_side_equal_those_trained_in_this_process(tmp_path):
    """``--jobs N``: each run in its own process gives the very weights the in-process run gives (one
    thread each), and the output lands in a log beside the weights."""
    import scg_core
    from training import train_modular_ae
    from training.build_default import progress, train_argv, train_side_by_side

    from .photos import write_photos
    from .test_train_modular_ae import TINY

    photos = write_photos(tmp_path / "photos")
    extra = ["--preset", "quick_ae", "--steps", "6", "--lr", "0.01", *TINY]
    runs = {tmp_path / f"s{seed}_{ablate}.safetensors": train_argv(photos, tmp_path / f"s{seed}_{ablate}.safetensors", seed, ablate, extra)
            for seed, ablate in ((0, False), (1, True), (2, False))}
    train_side_by_side(runs, jobs=2)
    here = tmp_path / "here.safetensors"
    train_modular_ae.main(train_modular_ae.parse_args(train_argv(photos, here, 1, True, extra)))
    apart = scg_core.load(tmp_path / "s1_True.safetensors").state_dict()
    assert all(torch.equal(apart[k], v) for k, v in scg_core.load(here).state_dict().items())
    other = scg_core.load(tmp_path / "s0_False.safetensors").state_dict()
    assert any(not torch.equal(other[k], v) for k, v in apart.items())  # the seeds and variants reached the runs
    # the progress shown while runs go on is read from the real trainer's log: the bar's last step
    log = tmp_path / "s0_False.log"
    text = log.read_text()
    assert progress(log) == "6/6" and "decoding images" in text
    assert text.count("train_modular_ae:") <= 3  # the bar in a file is drawn every few seconds, not every step
    log.write_text(text[:text.index("| 0/6 [") + 8])
    assert progress(log) == "0/6"
    log.write_text(text[:text.index("train_modular_ae:")])  # images decoded, no step yet
    assert progress(log) is None


def test_a_failed_run_is_named_with_its_log_and_the_others_are_kept(tmp_path):
    from training.build_default import train_argv, train_side_by_side

    from .photos import write_photos
    from .test_train_modular_ae import TINY

    photos = write_photos(tmp_path / "photos")
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    extra = ["--preset", "quick_ae", "--steps", "3", *TINY]
    runs = {bad: train_argv(tmp_path / "no_such_folder", bad, 0, False, extra), good: train_argv(photos, good, 0, False, extra)}
    with pytest.raises(SystemExit) as failure:
        train_side_by_side(runs, jobs=2)
    message = str(failure.value)
    assert "bad.safetensors failed with exit status" in message and str(tmp_path / "bad.log") in message
    assert "no_such_folder" in message and "--reuse" in message and "good.safetensors" not in message.split("\n")[0]
    assert good.is_file() and not bad.exists()
    from training.build_default import main

    with pytest.raises(SystemExit):
        main(["--jobs", "0", "--work", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists()  # refused before anything is gathered or trained
