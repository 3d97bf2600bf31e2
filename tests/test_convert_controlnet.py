import copy
import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from scg_core import OFFICIAL_GROUPS, ModularAE, WeightsError, load
from scg_core.controlnet_layout import diffusers_to_ldm, ldm_to_diffusers
from scg_core.controlnet_meta import fingerprint, read_controlnet_info
from scg_core.convert import main
from scg_core.convert_controlnet import convert_official_controlnet

from .test_controlnet_layout import TINY, diffusers_style_state

AE_TENSORS = {"conv.c1_1.weight": "pathway_a", "conv.c1_2_1.weight": "pathway_b", "conv.c1_2_2.weight": "surround",
              "conv.c2.weight": "module_kernels"}


@pytest.fixture
def released_ae():
    torch.manual_seed(0)
    return ModularAE(groups=OFFICIAL_GROUPS)


@pytest.fixture
def attribute_dict(monkeypatch):
    """Lightning's ``AttributeDict`` (its ``hyper_parameters``), under its real module name, without Lightning."""
    name = "pytorch_lightning.utilities.parsing"
    cls = type("AttributeDict", (dict,), {"__module__": name})
    for part in ("pytorch_lightning", "pytorch_lightning.utilities", name):
        monkeypatch.setitem(sys.modules, part, types.ModuleType(part))
    sys.modules[name].AttributeDict = cls
    return cls


def official_checkpoint(diffusers_state, ae, ae_prefix="lgn_ende.", **extra):
    """The official SCG ControlNet layout (SCG_NOTES §5) in a Lightning checkpoint: the autoencoder as
    hint-block element 0 (and again as ``control_model.hypercolumn``, as the official module registers
    it twice), the standard hint block shifted by one, SD weights and diffusion buffers beside it."""
    state = {}
    for key, value in diffusers_to_ldm(diffusers_state).items():
        if key.startswith("control_model.input_hint_block."):
            index, rest = key.removeprefix("control_model.input_hint_block.").split(".", 1)
            key = f"control_model.input_hint_block_new.{int(index) + 1}.{rest}"
        state[key] = value.detach().clone()
    ae_tensors = {suffix: getattr(ae, name).detach().clone() for suffix, name in AE_TENSORS.items()}
    ae_tensors["conv.eye"] = torch.eye(64).view(64, 64, 1, 1)
    for suffix, value in ae_tensors.items():
        state[f"control_model.input_hint_block_new.0.{ae_prefix}{suffix}"] = value
        state[f"control_model.hypercolumn.{ae_prefix}{suffix}"] = value.clone()
    g = torch.Generator().manual_seed(5)
    for key in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.bias",
                "first_stage_model.decoder.conv_out.weight", "cond_stage_model.transformer.text_model.final_layer_norm.bias",
                "betas", "alphas_cumprod", "model_ema.decay"):
        state[key] = torch.randn(4, 3, generator=g)
    return {"epoch": 4, "global_step": 147_860, "pytorch-lightning_version": "1.5.0", "state_dict": state,
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None, "dirpath": "ckpt/"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "params": [0]}]}],
            "lr_schedulers": [], "loops": {"fit_loop": {"state_dict": {}}}, **extra}


def write(tmp_path, ckpt, name="scg_hc3.ckpt"):
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


def test_converts_with_metadata_autoencoder_and_no_sd_weights(tmp_path, released_ae, attribute_dict, capsys):
    ckpt = official_checkpoint(diffusers_style_state(), released_ae, hparams_name="kwargs",
                               hyper_parameters=attribute_dict(sd_locked=True, learning_rate=1e-5))
    src, dst = write(tmp_path, ckpt), tmp_path / "out" / "scg_hc3.safetensors"
    assert main(["official-controlnet", str(src), str(dst), "--groups", "hc3"]) == 0
    assert "trained on hints of HC3" in capsys.readouterr().out
    ae = load(tmp_path / "out" / "scg_hc3_modular_ae.safetensors")  # the default --ae-out
    assert ae.groups == OFFICIAL_GROUPS and ae.provenance["source"] == "official-controlnet"
    for name, value in released_ae.named_parameters():
        assert torch.equal(getattr(ae, name), value)
    info = read_controlnet_info(dst)
    assert [g.name for g in info.groups] == ["HC3"] and info.group_mode == "fixed" and info.base_model == "sd15"
    assert info.ae_fingerprint == fingerprint(ae)
    with safe_open(str(dst), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    provenance = json.loads(meta["scg_provenance"])
    assert provenance["source"] == "official-controlnet" and provenance["lightning"]["global_step"] == 147_860
    assert set(provenance["dropped"]) == {"model", "first_stage_model", "cond_stage_model", "betas", "alphas_cumprod", "model_ema"}
    # exactly the standard ControlNet: SD weights, the autoencoder and its copy are gone
    expected = diffusers_to_ldm(diffusers_style_state())
    assert keys == set(expected)
    assert ldm_to_diffusers(load_file(dst)).keys() == diffusers_style_state().keys()


def test_random_group_mode_and_the_other_ae_prefix(tmp_path, released_ae):
    src = write(tmp_path, official_checkpoint(diffusers_style_state(), released_ae, ae_prefix="lgn_ende.0."))
    done = convert_official_controlnet(src, tmp_path / "cn.safetensors", random_groups=True, ae_out=tmp_path / "ae.safetensors",
                                       dtype=torch.float32)
    info = read_controlnet_info(done.path)
    assert info.group_mode == "random" and [g.name for g in info.groups] == [g.name for g in OFFICIAL_GROUPS]
    assert load(tmp_path / "ae.safetensors").groups == OFFICIAL_GROUPS


def test_groups_must_be_named(tmp_path, released_ae, capsys):
    src = write(tmp_path, official_checkpoint(diffusers_style_state(), released_ae))
    assert main(["official-controlnet", str(src), str(tmp_path / "cn.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "one ControlNet per hypercolumn" in err and "--groups HC3" in err and "--random-groups" in err
    with pytest.raises(ValueError, match=r"unknown group\(s\) \['edges'\]; the official hypercolumns are HC0, HC1"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["edges"])
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_plain_controlnet_is_not_an_scg_one(tmp_path):
    src = write(tmp_path, {"state_dict": diffusers_to_ldm(diffusers_style_state())}, "control_sd15_canny.pth")
    with pytest.raises(WeightsError, match="not an SCG ControlNet.*plain ControlNet \\(lllyasviel layout\\), which hosts load as it is"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])
    src = write(tmp_path, diffusers_style_state(), "diffusion_pytorch_model.bin")
    with pytest.raises(WeightsError, match="plain ControlNet \\(diffusers layout\\)"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])


def test_missing_tensors_are_named(tmp_path, released_ae):
    ckpt = official_checkpoint(diffusers_style_state(), released_ae)
    del ckpt["state_dict"]["control_model.input_hint_block_new.0.lgn_ende.conv.c2.weight"]
    with pytest.raises(WeightsError, match=r"lacks \['lgn_ende.conv.c2.weight'\]"):
        convert_official_controlnet(write(tmp_path, ckpt), tmp_path / "cn.safetensors", groups=["HC3"])
    ckpt = official_checkpoint(diffusers_style_state(), released_ae)
    del ckpt["state_dict"]["control_model.middle_block_out.0.weight"]
    with pytest.raises(WeightsError, match=r"missing ControlNet tensors \['control_model.middle_block_out.0.weight'\]"):
        convert_official_controlnet(write(tmp_path, ckpt), tmp_path / "cn.safetensors", groups=["HC3"])
    ckpt = official_checkpoint(diffusers_style_state(), released_ae)
    ckpt["state_dict"]["control_model.hypercolumn.lgn_ende.conv.c2.weight"] += 1
    with pytest.raises(WeightsError, match="is not a copy of the autoencoder"):
        convert_official_controlnet(write(tmp_path, ckpt), tmp_path / "cn.safetensors", groups=["HC3"])


class Payload:
    """Unpickling this would create a file: the converter must refuse before that happens."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_carrying_code_is_refused(tmp_path, released_ae):
    marker = tmp_path / "pwned"
    src = write(tmp_path, official_checkpoint(diffusers_style_state(), released_ae, hyper_parameters=Payload(marker)))
    with pytest.raises(WeightsError, match="refused to load.*Lightning AttributeDict"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])
    assert not marker.exists() and not list(tmp_path.glob("*.safetensors"))


# ---------------------------------------------------------------- the converted ControlNet computes the official one


def test_on_our_hint_it_computes_what_the_official_controlnet_computes_on_the_raw_hint(tmp_path, released_ae):
    diffusers = pytest.importorskip("diffusers", reason="diffusers (host venv) runs the ControlNetModel forward")
    torch.manual_seed(0)
    official = diffusers.ControlNetModel(**TINY).eval()
    with torch.no_grad():  # zero-initialised outputs would hide any difference
        for p in official.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    src = write(tmp_path, official_checkpoint(official.state_dict(), released_ae))
    dst = tmp_path / "cn.safetensors"
    assert main(["official-controlnet", str(src), str(dst), "--groups", "HC3", "--dtype", "fp32"]) == 0
    converted = diffusers.ControlNetModel(**TINY).eval()
    converted.load_state_dict(ldm_to_diffusers(load_file(dst)), strict=True)
    ae = load(tmp_path / "cn_modular_ae.safetensors")

    # A low-contrast image keeps the raw hint inside the [0,1] the project hint is clamped to.
    g = torch.Generator().manual_seed(1)
    image = released_ae.mean + 0.1 * (torch.rand(1, 3, 64, 64, generator=g) - 0.5)
    args = (torch.randn(1, 4, 32, 32, generator=g), torch.tensor([500]), torch.randn(1, 7, 32, generator=g))
    with torch.no_grad():
        raw = released_ae.raw_hint(image, groups=["HC3"])  # official: unclamped, normalised units
        hint = ae.hint(image, groups=["HC3"])  # ours: an image in [0,1]
        unclamped = ae.denormalize(raw)
        assert ((unclamped < 0) | (unclamped > 1)).sum() == 0
        assert raw.std() > 0.05  # a real hint, not a constant

        # 1. The hint embedding, (1, 32, 32, 32) at stride 2: the folded conv differs only where it
        # reads the zero padding; three more convs (one of stride 2) widen that to 3 pixels.
        emb_official = official.controlnet_cond_embedding(raw)
        emb_ours = converted.controlnet_cond_embedding(hint)
        diff = (emb_ours - emb_official).abs().amax(dim=(0, 1)) / emb_official.abs().max()
        assert diff[3:-3, 3:-3].max() < 1e-5
        band = torch.ones_like(diff, dtype=torch.bool)
        band[3:-3, 3:-3] = False
        assert (diff > 1e-4).any() and not ((diff > 1e-4) & ~band).any()

        # 2. The whole ControlNet equals the official one exactly once the official first conv pads the
        # raw hint with -mean/std (what h = 0 means) instead of 0: that padding is the only difference.
        fill = -released_ae.mean / released_ae.std
        padded = copy.deepcopy(official)
        padded.controlnet_cond_embedding.conv_in.padding = (0, 0)
        down, mid = padded(*args, controlnet_cond=F.pad(raw - fill, (1, 1, 1, 1)) + fill, return_dict=False)
        down2, mid2 = converted(*args, controlnet_cond=hint, return_dict=False)
        for a, b in zip([*down, mid], [*down2, mid2]):
            assert (a - b).abs().max() < 1e-5 * a.abs().max()

        # 3. Against the official zero padding, GroupNorm statistics and attention carry that border
        # to every position of the later residuals: bounded, not equal (about 1% here).
        down, mid = official(*args, controlnet_cond=raw, return_dict=False)
    for a, b in zip([*down, mid], [*down2, mid2]):
        assert (a - b).abs().max() < 0.03 * a.abs().max()
