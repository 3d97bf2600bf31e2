import pytest
import torch
from safetensors.torch import save_file

from scg_core import Group, ModularAE, ModularAEConfig
from scg_core.controlnet.metadata import (
    controlnet_metadata,
    fingerprint,
    parse_controlnet_metadata,
    read_controlnet_info,
    selection_mismatch,
)


def test_round_trip_through_a_file_and_matching_selection(tiny_ae, tmp_path):
    path = tmp_path / "cn.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata=controlnet_metadata(tiny_ae, ["brightness"]))
    info = read_controlnet_info(path)
    assert [g.name for g in info.groups] == ["lum"] and info.modules == (0,)
    assert info.ae_fingerprint == fingerprint(tiny_ae)
    assert selection_mismatch(info, tiny_ae, ["lum"]) == []
    assert selection_mismatch(info, tiny_ae, ["brightness"]) == []  # a label of the same group


def test_other_groups_are_reported(tiny_ae):
    info = parse_controlnet_metadata(controlnet_metadata(tiny_ae, ["edges"]))
    problems = selection_mismatch(info, tiny_ae, ["lum"])
    assert len(problems) == 1 and "[E1, E2]" in problems[0] and "[lum]" in problems[0]


def test_another_autoencoder_is_reported(tiny_ae):
    info = parse_controlnet_metadata(controlnet_metadata(tiny_ae, ["lum"]))
    torch.manual_seed(1)
    other = ModularAE(tiny_ae.config, groups=tiny_ae.groups)
    problems = selection_mismatch(info, other, ["lum"])
    assert len(problems) == 1 and "another modular autoencoder" in problems[0]
    assert len(selection_mismatch(info, other, ["E1"])) == 2


def test_plain_controlnets_have_no_info_and_damaged_metadata_is_an_error(tmp_path):
    assert parse_controlnet_metadata({"format": "pt"}) is None
    assert parse_controlnet_metadata(None) is None
    with pytest.raises(ValueError, match="damaged"):
        parse_controlnet_metadata({"scg_format": "scg.controlnet", "scg_groups": "[{"})
    with pytest.raises(ValueError, match="newer"):
        parse_controlnet_metadata({"scg_format": "scg.controlnet", "scg_format_version": "99", "scg_groups": "[]"})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="bad.safetensors"):
        read_controlnet_info(bad)


def test_fingerprint_tells_weights_apart():
    cfg = ModularAEConfig(num_modules=2, module_channels=2, kernel_size=3)
    torch.manual_seed(0)
    a = ModularAE(cfg, groups=[Group("g", (0, 1))])
    assert fingerprint(a) == fingerprint(a)
    with torch.no_grad():
        next(a.parameters()).add_(1e-3)
    b_print = fingerprint(a)
    torch.manual_seed(0)
    assert fingerprint(ModularAE(cfg, groups=[Group("g", (0, 1))])) != b_print


def test_random_group_mode_accepts_any_single_trained_group(tiny_ae):
    info = parse_controlnet_metadata(controlnet_metadata(tiny_ae, ["lum", "E1"], random_groups=True, base_model="sd15"))
    assert info.group_mode == "random" and info.base_model == "sd15"
    assert selection_mismatch(info, tiny_ae, ["lum"]) == []
    assert selection_mismatch(info, tiny_ae, ["E1"]) == []
    assert "one group at a time" in selection_mismatch(info, tiny_ae, ["lum", "E1"])[0]
    assert "one group at a time" in selection_mismatch(info, tiny_ae, ["E2"])[0]
    with pytest.raises(ValueError, match="scg_group_mode"):
        parse_controlnet_metadata({**controlnet_metadata(tiny_ae, ["lum"]), "scg_group_mode": "sometimes"})


def test_the_official_hint_geometry_round_trips_and_is_absent_from_trained_controlnets(tiny_ae):
    from scg_core.controlnet.official_hint import OfficialHint

    assert parse_controlnet_metadata(controlnet_metadata(tiny_ae, ["lum"])).official_hint is None
    official = OfficialHint((0.5, 0.25, 0.75))
    info = parse_controlnet_metadata({**controlnet_metadata(tiny_ae, ["lum"]), "scg_official_hint": official.to_json()})
    assert info.official_hint == official
    assert [official.size(n) for n in (512, 768, 510, 64)] == [509, 765, 509, 61]  # (ceil(n/4) − 1)·4 − 20 + 21
    with pytest.raises(ValueError, match="damaged"):
        parse_controlnet_metadata({**controlnet_metadata(tiny_ae, ["lum"]), "scg_official_hint": "{not json"})
    with pytest.raises(ValueError, match="pad_value"):
        parse_controlnet_metadata({**controlnet_metadata(tiny_ae, ["lum"]), "scg_official_hint": "[1, 2]"})
