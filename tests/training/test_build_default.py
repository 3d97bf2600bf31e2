from PIL import Image

from training.build_default import criteria, render
from training.gather_photos import HELDOUT, SKIMAGE_TRAIN, SKLEARN_TRAIN, gather

GOOD = {"psnr_db": 31.0, "min_weight_norm_ratio": 0.4, "luminance_lowpass": 1, "colour_opponent": 2,
        "luminance_bandpass_fine": 1, "luminance_bandpass_coarse": 0, "mixed": 0, "median_orientation_selectivity": 0.05,
        "relative_equivariance_error": 0.05, "modules_carrying_energy": 4}
ABLATED = dict(GOOD, median_orientation_selectivity=0.2, relative_equivariance_error=0.14, mixed=4)


def test_criteria_pass_and_fail():
    assert all(criteria(GOOD, ABLATED).values())
    failed = criteria(dict(GOOD, psnr_db=28.0, mixed=2, relative_equivariance_error=0.08), ABLATED)
    assert [k for k, ok in failed.items() if not ok] == ["psnr >= 29 dB", "<= 1 mixed colour/luminance", "equivariance error <= 0.5x ablation"]
    # orientation selectivity must be low in absolute terms and relative to the ablation
    assert not criteria(dict(GOOD, median_orientation_selectivity=0.15), dict(ABLATED, median_orientation_selectivity=0.16))["median OSI <= 0.7x ablation"]


def test_render_lists_every_seed_and_check():
    row = {"constrained": {"summary": GOOD, "groups": [{"name": "colour", "modules": [1], "label": "colour"}], "train_seconds": 10.0},
           "ablated": {"summary": ABLATED, "groups": [], "train_seconds": 9.0}, "checks": criteria(GOOD, ABLATED)}
    text = render({"heldout": "chelsea.png", "seeds": {"0": row, "1": row}})
    assert "| seed 0 constrained | seed 0 ablated | seed 1 constrained | seed 1 ablated |" in text
    assert "| psnr >= 29 dB | ✅ | ✅ |" in text and "**colour** (colour): modules [1]" in text


def test_gather_photos_writes_the_training_set_and_the_heldout_photo(tmp_path):
    paths = gather(tmp_path)
    assert len(paths) == len(SKIMAGE_TRAIN) + len(SKLEARN_TRAIN) + 1
    assert (tmp_path / "heldout" / f"{HELDOUT}.png").is_file()
    assert all(Image.open(p).mode == "RGB" and min(Image.open(p).size) >= 300 for p in paths)
