import os
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from safetensors import safe_open

from scg_core import OFFICIAL_GROUPS, WeightsError, load
from scg_core.convert import main
from scg_core.formats.official_ae import convert_official_ae

from .official_checkpoints import (
    official_ae_arg,
    official_ae_checkpoint,
    official_ae_state,
    official_hypercolumn_hint,
    released_factors,
)


def save(tmp_path, obj, name="equ_nv16_vl4_rn1_Bipolar_norm.pth"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def file_contents(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_the_official_form_converts_and_every_hypercolumn_hint_is_the_official_one(tmp_path):
    ckpt = official_ae_checkpoint()
    assert type(ckpt["arg"].n_vector) is list and list(ckpt["state_dict"]) == [
        "lgn_ende.0.conv.eye", "lgn_ende.0.conv.c1_1.weight", "lgn_ende.0.conv.c1_2_1.weight",
        "lgn_ende.0.conv.c1_2_2.weight", "lgn_ende.0.conv.c2.weight"]  # the fixture is what Column_trans_rot_lgn saves
    dst = tmp_path / "ae.safetensors"
    assert main(["official-ae", str(save(tmp_path, ckpt)), str(dst)]) == 0
    ae = load(dst)
    assert ae.groups == OFFICIAL_GROUPS
    assert ae.provenance["source"] == "official-ae" and len(ae.provenance["original_sha256"]) == 64
    assert ae.provenance["official_arg"] == {"activate_fn": None, "channel": 3, "dataset": "imagenet", "ensemble": "single",
                                             "gonlin": "Bipolar", "lgn_kernel_size": 21, "lgn_padding": 10, "lgn_stride": 4,
                                             "n_vector": 16, "rot_num": 1, "vector_length": 4}
    assert ae.provenance["ignored_tensors"] == ["lgn_ende.0.conv.eye"]

    # HyperColumnLGN's computation (devtools/official_reference.py kernel, 509×509) for each of HC0..HC5
    torch.manual_seed(0)
    x = torch.rand(1, 3, 512, 512)
    factors = released_factors(ckpt["state_dict"])
    for g in range(6):
        official = official_hypercolumn_hint(x, factors, [g])
        assert official.shape[-2:] == (509, 509) and official.std() > 0
        ours = ae.raw_hint(x, groups=[f"HC{g}"])[..., :509, :509]
        assert (ours - official).abs().max() < 1e-5 * official.abs().max(), g
        image = ae.hint(x, groups=[f"HC{g}"])[..., :509, :509]
        assert (image - ae.denormalize(official).clamp(0, 1)).abs().max() < 1e-5, g


def test_list_and_scalar_arg_give_identical_weight_files(tmp_path):
    listed = official_ae_checkpoint(seed=3)
    # the same weights with the per-set fields spelt as plain numbers (hand-written args do that)
    scalar = {"arg": official_ae_arg(n_vector=16, vector_length=4, rot_num=1), "state_dict": listed["state_dict"]}
    a = save(tmp_path / "list", listed)
    b = save(tmp_path / "scalar", scalar)
    convert_official_ae(a, tmp_path / "a.safetensors")
    convert_official_ae(b, tmp_path / "b.safetensors")
    (ta, ma), (tb, mb) = file_contents(tmp_path / "a.safetensors"), file_contents(tmp_path / "b.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    # only the source file's hash differs: the two pickles differ in how they spell arg
    strip = lambda m: m["provenance"].split('"original_sha256"')[0]  # noqa: E731
    assert {k: v for k, v in ma.items() if k != "provenance"} == {k: v for k, v in mb.items() if k != "provenance"}
    assert strip(ma) == strip(mb)


def test_the_other_forms_users_have_convert_to_the_same_weights(tmp_path, attribute_dict):
    ckpt = official_ae_checkpoint(seed=1)
    state = ckpt["state_dict"]
    forms = {
        "bare state dict": OrderedDict(state),
        "DataParallel": {"arg": ckpt["arg"], "state_dict": OrderedDict(("module." + k, v) for k, v in state.items())},
        "Lightning": {"epoch": 39, "global_step": 40000, "pytorch-lightning_version": "1.9.0",
                      "state_dict": OrderedDict(("model." + k, v) for k, v in state.items()),
                      "hyper_parameters": attribute_dict(lr=0.005, batch_size=64), "optimizer_states": [], "lr_schedulers": []},
        "extra entries": {"arg": ckpt["arg"], "epoch": 39, "optimizer": {"state": {}, "param_groups": []},
                          "state_dict": OrderedDict([*state.items(), ("equ.codebook", torch.randn(16, 5, 5, 8, 4, 4))])},
        "args as a dict": {"args": vars(ckpt["arg"]), "state_dict": state},
    }
    reference = convert_official_ae(save(tmp_path, ckpt), tmp_path / "ref.safetensors")
    for i, (form, obj) in enumerate(forms.items()):
        model = convert_official_ae(save(tmp_path, obj, f"{i}.pth"), tmp_path / f"{i}.safetensors")
        for name, p in reference.named_parameters():
            assert torch.equal(getattr(model, name), p), form
        assert model.groups == OFFICIAL_GROUPS, form
    assert "equ.codebook" in load(tmp_path / "3.safetensors").provenance["ignored_tensors"]


def test_several_hypercolumn_sets_are_refused_with_what_is_supported_and_why(tmp_path, capsys):
    arg = official_ae_arg(n_vector=[16, 8], vector_length=[4, 2], rot_num=[1, 1])
    src = save(tmp_path, {"arg": arg, "state_dict": official_ae_state(arg)})
    with pytest.raises(WeightsError, match=r"2 hypercolumn sets \(arg.n_vector = \[16, 8\]\).*one set.*lgn_ende\[0\]"):
        convert_official_ae(src, tmp_path / "out.safetensors")
    assert main(["official-ae", str(src), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out.safetensors").exists()


def test_rot_num_groups_the_kernels_as_the_official_code_does(tmp_path):
    # Column_trans_rot_lgn: n_vector / rot_num LGN channels of vector_length · rot_num kernels
    arg = official_ae_arg(n_vector=[16], vector_length=[4], rot_num=[4])
    ckpt = {"arg": arg, "state_dict": official_ae_state(arg)}
    assert ckpt["state_dict"]["lgn_ende.0.conv.c1_1.weight"].shape[0] == 4
    model = convert_official_ae(save(tmp_path, ckpt), tmp_path / "ae.safetensors")
    assert (model.config.num_modules, model.config.module_channels) == (4, 16)
    assert model.groups == ()  # the official hypercolumns belong to the released 16 × 4 model
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    from devtools.official_reference import official_raw_hint, probe_kernel

    kernel = probe_kernel({k: v.double() for k, v in released_factors(ckpt["state_dict"]).items()}).float()
    official = official_raw_hint(model.normalize(x), kernel, torch.ones(64))
    assert (model.raw_hint(x, modules=range(4))[..., :61, :61] - official).abs().max() < 1e-5 * official.abs().max()


@pytest.mark.parametrize("change, message", [
    (dict(n_vector=[8]), r"arg.n_vector = \[8\].*describe 8/1 LGN channels of 4·1 kernels, but the weights have 16 of 4"),
    (dict(channel=1), r"arg.channel = 1 disagrees with the weights \(3 input channels\)"),
    (dict(activate_fn="gelu"), r"arg.activate_fn = 'gelu'.*nonlinearity"),
    (dict(lgn_stride=2), r"arg.lgn_stride = 2"),
    (dict(gonlin="Bipolar_ks3"), r"arg.gonlin = 'Bipolar_ks3'"),
    (dict(n_vector=[16], vector_length=[4, 4]), r"one entry per hypercolumn set; they have"),
    (dict(n_vector=["16"]), r"arg.n_vector = \['16'\]; the official code needs a list of positive integers"),
])
def test_an_arg_that_does_not_describe_the_weights_is_named(tmp_path, change, message):
    ckpt = official_ae_checkpoint()
    for key, value in change.items():
        setattr(ckpt["arg"], key, value)
    with pytest.raises(WeightsError, match=message):
        convert_official_ae(save(tmp_path, ckpt), tmp_path / "out.safetensors")


def test_wrong_layouts_are_named(tmp_path):
    ckpt = official_ae_checkpoint()
    del ckpt["state_dict"]["lgn_ende.0.conv.c2.weight"]
    with pytest.raises(WeightsError, match="missing 'lgn_ende.0.conv.c2.weight'"):
        convert_official_ae(save(tmp_path, ckpt, "a.pth"), tmp_path / "a.safetensors")
    ckpt = official_ae_checkpoint()
    ckpt["state_dict"]["lgn_ende.0.conv.eye"] = ckpt["state_dict"]["lgn_ende.0.conv.eye"] * 2
    with pytest.raises(WeightsError, match="eye is not the 64×64 identity"):
        convert_official_ae(save(tmp_path, ckpt, "b.pth"), tmp_path / "b.safetensors")
    ckpt = official_ae_checkpoint()
    ckpt["state_dict"] = OrderedDict(("lgn_ende.0.conv.c1.weight" if "c1_1" in k else k, v) for k, v in ckpt["state_dict"].items())
    with pytest.raises(WeightsError, match="is a 'Vanilla' layer; scg_core converts the released 'Bipolar' layer"):
        convert_official_ae(save(tmp_path, ckpt, "c.pth"), tmp_path / "c.safetensors")
    (tmp_path / "d.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        convert_official_ae(tmp_path / "d.pth", tmp_path / "d.safetensors")
    with pytest.raises(WeightsError, match="no official autoencoder in it"):
        convert_official_ae(save(tmp_path, {"model": {"fc.weight": torch.zeros(2)}}, "e.pth"), tmp_path / "e.safetensors")
    official_cn = {"state_dict": {f"control_model.{p}lgn_ende.conv.c1_1.weight": torch.zeros(16, 3, 5, 5)
                                  for p in ("hypercolumn.", "input_hint_block_new.0.")}}
    with pytest.raises(WeightsError, match="official SCG ControlNet.*official-controlnet"):
        convert_official_ae(save(tmp_path, official_cn, "f.ckpt"), tmp_path / "f.safetensors")
    with pytest.raises(FileNotFoundError, match="it is a folder"):
        convert_official_ae(tmp_path, tmp_path / "g.safetensors")
    assert not list(tmp_path.glob("*.safetensors"))


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class OpensAFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("payload, named", [(RunsAShellCommand, "posix.system"), (OpensAFile, "io.open")])
def test_a_pickle_carrying_code_is_refused_in_one_line_and_nothing_runs(tmp_path, capsys, payload, named):
    marker = tmp_path / "pwned"
    src = save(tmp_path, official_ae_checkpoint(extra=payload(marker)))
    with pytest.raises(WeightsError, match=rf"refused to load .*asks for {named}, which is outside the allow-list.*nothing in the file was run"):
        convert_official_ae(src, tmp_path / "out.safetensors")
    assert main(["official-ae", str(src), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refused to load") and err.count("\n") == 1 and "Weights only load failed" not in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_the_module_entry_point_runs(tmp_path):
    src, dst = save(tmp_path, official_ae_checkpoint()), tmp_path / "ae.safetensors"
    proc = subprocess.run([sys.executable, "-m", "scg_core.convert", "official-ae", str(src), str(dst)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HC3 (edges)" in proc.stdout and dst.is_file()
