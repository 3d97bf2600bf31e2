"""The bundled default autoencoder (issue: train_modular_ae + bundled default)."""

import re
import runpy

import numpy as np
from PIL import Image

import scg_core
from scg_core.hosts.cli import main
from scg_core.tools.characterize import LABELS

ROOT = scg_core.DEFAULT_WEIGHTS.parents[2]
EXAMPLE = ROOT / "photos" / "chelsea.jpg"


def test_default_loads_with_the_released_configuration_and_named_groups():
    ae = scg_core.load_default()
    c = ae.config
    assert (c.num_modules, c.module_channels, c.parameterization, c.stride) == (16, 4, "bipolar", 4)
    assert ae.groups and {g.name for g in ae.groups} <= set(LABELS)
    assert sorted(m for g in ae.groups for m in g.modules) == list(range(16))  # every module in one group
    assert ae.provenance["source"] == "training.train_modular_ae"
    assert ae.provenance["characterize"]["psnr_db"] > 29


def test_decompose_runs_on_the_default_without_weights_argument(tmp_path):
    assert main(["decompose", str(EXAMPLE), "-o", str(tmp_path / "sheet.png"), "--tile", "96"]) == 0
    assert main(["hint", str(EXAMPLE), "-o", str(tmp_path / "hint.png"), "--groups", "colour"]) == 0
    hint = np.asarray(Image.open(tmp_path / "hint.png"))
    assert hint.shape == (300, 451, 3) and hint.std() > 1  # a picture, not a flat field


def _modules(text: str) -> list[int]:
    """"0, 2–6, 8" → [0, 2, 3, 4, 5, 6, 8]."""
    out = []
    for part in text.split(","):
        first, _, last = part.strip().partition("–")
        out += list(range(int(first), int(last or first) + 1))
    return out


def test_the_weights_readme_lists_the_groups_the_file_has():
    readme = (scg_core.DEFAULT_WEIGHTS.parent / "README.md").read_text()
    rows = [line.strip("|").split("|") for line in readme.splitlines() if line.startswith("| ") and "---" not in line]
    span = lambda text: None if text.strip() == "–" else float(text.strip().rstrip("%")) / 100  # noqa: E731
    listed = {name.strip(): (_modules(modules), label.strip(), float(gain), span(shown))
              for name, modules, label, gain, shown in rows[1:]}
    assert listed == {g.name: (list(g.modules), g.label, g.gain, g.span) for g in scg_core.load_default().groups}


def test_modules_weak_on_a_photo_code_white_noise(capsys):
    """docs/module_census.py, as docs/training_modular_ae.md quotes it: the modules that carry < 1% of a
    photo's detail energy are not silent; on white noise at least 12 of the 16 carry ≥ 1%."""
    census = runpy.run_path(str(ROOT / "docs" / "module_census.py"))
    census["main"](str(scg_core.DEFAULT_WEIGHTS), str(EXAMPLE))
    photo, noise = map(int, re.search(r"photo (\d+), white noise (\d+)", capsys.readouterr().out).groups())
    assert noise >= 12 and photo < noise


def test_every_group_of_a_photo_is_readable_and_a_grey_photo_keeps_a_grey_colour_hint():
    """Issue 17's readable hints: on the example photos every group's hint spans ≥ 50% of the grey
    range (1st–99th percentile) with ≤ 1% of its values clipped — colour and brightness too, which
    are stretched per image about their hint of mid-grey; so a greyscale photo's colour hint stays grey
    (stretched about the warm dataset mean it would turn blue)."""
    import torch

    from scg_core.formats.images import load_image
    from scg_core.tools.hint_range import hint_range

    ae = scg_core.load_default()
    photos = [load_image(ROOT / "photos" / name) for name in ("chelsea.jpg", "astronaut.jpg")]
    for group in ae.groups:
        shown = hint_range(ae, photos, group)
        assert min(shown["span"]) >= 0.5 and max(shown["clipped"]) <= 0.01, (group.name, shown["span"], shown["clipped"])
    assert max(hint_range(ae, photos[:1], ae.find_groups("colour")[0], gain=1.0)["span"]) < 0.5  # faint as decoded
    grey = photos[0].mean(dim=-3, keepdim=True).expand_as(photos[0]).contiguous()
    with torch.inference_mode():
        colour = ae.hint(grey, ["colour"])
    assert float((colour.amax(dim=-3) - colour.amin(dim=-3)).mean()) < 0.01  # no tint
    assert float((ae.hint(photos[0], ["colour"]).amax(dim=-3) - ae.hint(photos[0], ["colour"]).amin(dim=-3)).mean()) > 0.1
