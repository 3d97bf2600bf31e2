import argparse
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch

from scg_core import OFFICIAL_GROUPS, WeightsError, load
from scg_core.convert import convert_official_ae, main

from .official_reference import official_raw_hint, probe_kernel


def official_checkpoint(seed=0, **extra):
    """A file with exactly the official autoencoder layout (SCG_NOTES §2), random weights."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict(
        [
            ("lgn_ende.0.conv.c1_1.weight", torch.randn(16, 3, 5, 5, generator=g) * 0.1),
            ("lgn_ende.0.conv.c1_2_1.weight", torch.randn(16, 3, 5, 5, generator=g) * 0.1),
            ("lgn_ende.0.conv.c1_2_2.weight", torch.randn(16, 1, 5, 5, generator=g) * 0.1),
            ("lgn_ende.0.conv.c2.weight", torch.randn(64, 1, 5, 5, generator=g) * 0.1),
            ("lgn_ende.0.conv.eye", torch.eye(64).view(64, 64, 1, 1)),
        ]
    )
    arg = argparse.Namespace(channel=3, n_vector=16, vector_length=4, rot_num=1, lgn_kernel_size=5,
                             lgn_stride=2, lgn_padding=2, activate_fn="none", gonlin=False)
    return {"arg": arg, "state_dict": state, **extra}


def test_official_ae_converts_and_computes_the_official_hint(tmp_path):
    src, dst = tmp_path / "equ_nv16_vl4_rn1_Bipolar_norm.pth", tmp_path / "ae.safetensors"
    ckpt = official_checkpoint()
    torch.save(ckpt, src)
    assert main(["official-ae", str(src), str(dst)]) == 0
    ae = load(dst)
    assert ae.groups == OFFICIAL_GROUPS
    assert ae.provenance["source"] == "official-ae" and len(ae.provenance["original_sha256"]) == 64
    assert ae.provenance["official_arg"]["n_vector"] == 16
    # The converted model computes what the official code computes: composed kernel of the
    # official layers, stride 4, padding 10, no output padding, on the 509×509 overlap.
    w = {
        "pathway_a": ckpt["state_dict"]["lgn_ende.0.conv.c1_1.weight"],
        "pathway_b": ckpt["state_dict"]["lgn_ende.0.conv.c1_2_1.weight"],
        "surround": ckpt["state_dict"]["lgn_ende.0.conv.c1_2_2.weight"],
        "module_kernels": ckpt["state_dict"]["lgn_ende.0.conv.c2.weight"],
    }
    kernel = probe_kernel({k: v.double() for k, v in w.items()}).float()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 512, 512)
    mask = torch.zeros(64)
    mask[40:44] = 1  # HC3 = module 10
    official = official_raw_hint(ae.normalize(x), kernel, mask)
    ours = ae.raw_hint(x, groups=["HC3"])
    err = (ours[..., :509, :509] - official).abs().max().item()
    assert err < 1e-5 * official.abs().max().item()


def test_the_module_entry_point_runs(tmp_path):
    src, dst = tmp_path / "official.pth", tmp_path / "ae.safetensors"
    torch.save(official_checkpoint(), src)
    proc = subprocess.run([sys.executable, "-m", "scg_core.convert", "official-ae", str(src), str(dst)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HC3 (edges)" in proc.stdout and dst.is_file()


class Payload:
    """Unpickling this would create a file: the converter must refuse before that happens."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_carrying_anything_else_is_refused(tmp_path):
    src, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save(official_checkpoint(extra=Payload(marker)), src)
    with pytest.raises(WeightsError, match="refused to load"):
        convert_official_ae(src, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    assert main(["official-ae", str(src), str(tmp_path / "out.safetensors")]) == 2


def test_wrong_layouts_are_named(tmp_path):
    ckpt = official_checkpoint()
    del ckpt["state_dict"]["lgn_ende.0.conv.c2.weight"]
    torch.save(ckpt, tmp_path / "a.pth")
    with pytest.raises(WeightsError, match="missing 'lgn_ende.0.conv.c2.weight'"):
        convert_official_ae(tmp_path / "a.pth", tmp_path / "a.safetensors")
    ckpt = official_checkpoint()
    ckpt["arg"].n_vector = 8
    torch.save(ckpt, tmp_path / "b.pth")
    with pytest.raises(WeightsError, match="arg.n_vector = 8 disagrees"):
        convert_official_ae(tmp_path / "b.pth", tmp_path / "b.safetensors")
    (tmp_path / "c.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        convert_official_ae(tmp_path / "c.pth", tmp_path / "c.safetensors")
    torch.save({"model": {}}, tmp_path / "d.pth")
    with pytest.raises(WeightsError, match="expected an official autoencoder checkpoint"):
        convert_official_ae(tmp_path / "d.pth", tmp_path / "d.safetensors")


def test_data_parallel_prefix_is_accepted(tmp_path):
    ckpt = official_checkpoint()
    ckpt["state_dict"] = OrderedDict(("module." + k, v) for k, v in ckpt["state_dict"].items())
    torch.save(ckpt, tmp_path / "dp.pth")
    assert convert_official_ae(tmp_path / "dp.pth", tmp_path / "dp.safetensors").config.num_modules == 16
