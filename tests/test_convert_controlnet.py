import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from scg_core import OFFICIAL_GROUPS, WeightsError, load, load_default
from scg_core.controlnet.convert import convert_official_controlnet
from scg_core.controlnet.layout import fold_hint_normalization, ldm_to_diffusers
from scg_core.controlnet.metadata import fingerprint, read_controlnet_info
from scg_core.controlnet.official_hint import OfficialHintConv
from scg_core.convert import main
from scg_core.formats.images import fit_to_size, load_image
from scg_core.formats.official_ae import convert_official_ae

from .official_checkpoints import (
    NARROW,
    NORM_MEAN,
    NORM_STD,
    official_ae_arg,
    official_ae_state,
    official_ae_state_of,
    official_control_weights,
    official_controlnet_checkpoint,
    official_hypercolumn_hint,
    released_factors,
)
from .test_convert import OpensAFile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# diffusers' ControlNetModel with the structure of cldm_v15.yaml's ControlNet at NARROW widths
NARROW_DIFFUSERS = dict(block_out_channels=(32, 64, 128, 128), layers_per_block=2, cross_attention_dim=32,
                        attention_head_dim=8, norm_num_groups=32)


@pytest.fixture(scope="module")
def official():
    """An official SCG ControlNet checkpoint (ControlLDM, Lightning 1.5 fields), narrow widths."""
    return official_controlnet_checkpoint(official_ae_state(official_ae_arg(), seed=0), NARROW)


@pytest.fixture(scope="module")
def official_file(official, tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "epoch=4-step=147860.ckpt"
    torch.save(official, path)
    return path


def write(tmp_path, ckpt, name="scg_hc3.ckpt"):
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


def test_the_fixture_has_the_form_the_official_training_writes(official):
    assert set(official) == {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "callbacks",
                             "optimizer_states", "lr_schedulers"}  # no 'arg'
    state = official["state_dict"]
    assert 1400 < len(state) < 1600
    assert {k.split(".")[0] for k in state if "." in k} == {"model", "control_model", "first_stage_model", "cond_stage_model"}
    for name in ("eye", "c1_1.weight", "c1_2_1.weight", "c1_2_2.weight", "c2.weight"):
        a, b = (state[f"control_model.{p}lgn_ende.conv.{name}"] for p in ("hypercolumn.", "input_hint_block_new.0."))
        assert a is b  # one module registered twice: one tensor under two names
    assert state["control_model.input_hint_block_new.1.weight"].shape == (16, 3, 3, 3)
    assert official["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-5


def test_converts_with_metadata_autoencoder_and_no_sd_weights(tmp_path, official, attribute_dict, capsys):
    ckpt = {**official, "hparams_name": "kwargs", "hyper_parameters": attribute_dict(sd_locked=True, learning_rate=1e-5)}
    src, dst = write(tmp_path, ckpt), tmp_path / "out" / "scg_hc3.safetensors"
    assert main(["official-controlnet", str(src), str(dst), "--groups", "hc3"]) == 0
    assert "trained on hints of HC3" in capsys.readouterr().out
    ae = load(tmp_path / "out" / "scg_hc3_modular_ae.safetensors")  # the default --ae-out
    assert ae.groups == OFFICIAL_GROUPS and ae.provenance["source"] == "official-controlnet"
    for name, value in released_factors({k.split("input_hint_block_new.0.", 1)[1]: v for k, v in official["state_dict"].items()
                                         if "input_hint_block_new.0." in k}).items():
        assert torch.equal(getattr(ae, name), value)
    info = read_controlnet_info(dst)
    assert [g.name for g in info.groups] == ["HC3"] and info.group_mode == "fixed" and info.base_model == "sd15"
    assert info.ae_fingerprint == fingerprint(ae)
    # the official hint geometry: the decoder's size (509 of 512), zero padding in normalised units = the mean colour
    assert info.official_hint.pad_value == pytest.approx(NORM_MEAN) and info.official_hint.size(512) == 509
    with safe_open(str(dst), framework="pt") as f:
        converted, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    assert all(v.dtype == torch.float16 for v in converted.values())
    provenance = json.loads(meta["scg_provenance"])
    assert provenance["source"] == "official-controlnet" and provenance["lightning"]["global_step"] == 147_860
    assert set(provenance["dropped"]) == {"model", "first_stage_model", "cond_stage_model", *(
        k for k in official["state_dict"] if "." not in k)}
    # exactly lllyasviel's ControlNet: hint block renumbered, SD weights and both autoencoder copies gone,
    # every tensor unchanged but the first hint convolution, which takes the image instead of the raw hint
    plain = official_control_weights(official)
    assert set(converted) == {"control_model." + k for k in plain}
    first = "input_hint_block.0."
    folded = fold_hint_normalization(plain[first + "weight"], plain[first + "bias"], NORM_MEAN, NORM_STD)
    for key, value in plain.items():
        expected = {first + "weight": folded[0], first + "bias": folded[1]}.get(key, value)
        assert torch.equal(converted["control_model." + key], expected.half()), key
    # and diffusers loads it strictly
    diffusers = pytest.importorskip("diffusers")
    diffusers.ControlNetModel(**NARROW_DIFFUSERS).load_state_dict(ldm_to_diffusers(converted), strict=True)


def test_random_group_mode(tmp_path, official_file):
    done = convert_official_controlnet(official_file, tmp_path / "cn.safetensors", random_groups=True,
                                       ae_out=tmp_path / "ae.safetensors", dtype=torch.float32)
    info = read_controlnet_info(done.path)
    assert info.group_mode == "random" and [g.name for g in info.groups] == [g.name for g in OFFICIAL_GROUPS]
    assert load(tmp_path / "ae.safetensors").groups == OFFICIAL_GROUPS


def test_groups_must_be_named(tmp_path, official_file, capsys):
    assert main(["official-controlnet", str(official_file), str(tmp_path / "cn.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "one ControlNet per hypercolumn" in err and "--groups HC3" in err and "--random-groups" in err
    with pytest.raises(ValueError, match=r"unknown group\(s\) \['edges'\]; the official hypercolumns are HC0, HC1"):
        convert_official_controlnet(official_file, tmp_path / "cn.safetensors", groups=["edges"])
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_plain_controlnet_is_not_an_scg_one(tmp_path, official):
    plain = {"control_model." + k: v for k, v in official_control_weights(official).items()}
    src = write(tmp_path, {"state_dict": plain}, "control_sd15_canny.pth")
    with pytest.raises(WeightsError, match="not an SCG ControlNet.*plain ControlNet \\(lllyasviel layout\\), which hosts load as it is"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])
    src = write(tmp_path, ldm_to_diffusers(plain), "diffusion_pytorch_model.bin")
    with pytest.raises(WeightsError, match="plain ControlNet \\(diffusers layout\\)"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])
    with pytest.raises(WeightsError, match="this is an official SCG ControlNet.*official-controlnet"):
        convert_official_ae(write(tmp_path, official, "scg.ckpt"), tmp_path / "ae.safetensors")


def test_missing_or_altered_tensors_are_named(tmp_path, official):
    def altered(change):
        ckpt = {**official, "state_dict": dict(official["state_dict"])}
        change(ckpt["state_dict"])
        return write(tmp_path, ckpt)

    src = altered(lambda s: s.pop("control_model.input_hint_block_new.0.lgn_ende.conv.c2.weight"))
    with pytest.raises(WeightsError, match=r"lacks \['lgn_ende.conv.c2.weight'\]"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])
    src = altered(lambda s: s.pop("control_model.middle_block_out.0.weight"))
    with pytest.raises(WeightsError, match=r"missing ControlNet tensors \['control_model.middle_block_out.0.weight'\]"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])
    src = altered(lambda s: s.__setitem__("control_model.hypercolumn.lgn_ende.conv.c2.weight",
                                          s["control_model.hypercolumn.lgn_ende.conv.c2.weight"] + 1))
    with pytest.raises(WeightsError, match="is not a copy of the autoencoder"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])
    zeros = torch.zeros(64, 64, 1, 1)
    src = altered(lambda s: s.update({f"control_model.{p}lgn_ende.conv.eye": zeros for p in ("hypercolumn.", "input_hint_block_new.0.")}))
    with pytest.raises(WeightsError, match="eye is not the 64×64 identity"):
        convert_official_controlnet(src, tmp_path / "cn.safetensors", groups=["HC3"])
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_pickle_carrying_code_is_refused(tmp_path, official, capsys):
    marker = tmp_path / "pwned"
    src = write(tmp_path, {**official, "hyper_parameters": OpensAFile(marker)})
    assert main(["official-controlnet", str(src), str(tmp_path / "cn.safetensors"), "--groups", "HC3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refused to load") and "io.open" in err and "nothing in the file was run" in err
    assert err.count("\n") == 1
    assert not marker.exists() and not list(tmp_path.glob("*.safetensors"))


# ---------------------------------------------------------------- the converted ControlNet computes the official one


def relative_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def trained_official(tmp_path_factory):
    """An official checkpoint whose autoencoder has trained values (the bundled default's, in the
    official layout), so hints of a photo stay in [0,1] as with the real one; converted with fp32
    tensors (for the exact comparison) and with the default fp16."""
    ae_state = official_ae_state_of(load_default())
    ckpt = official_controlnet_checkpoint(ae_state, NARROW, seed=1)
    folder = tmp_path_factory.mktemp("trained")
    src = write(folder, ckpt)
    done = {dtype: convert_official_controlnet(src, folder / f"cn_{str(dtype)[6:]}.safetensors", groups=["HC0"], dtype=dtype)
            for dtype in (torch.float32, torch.float16)}
    return ckpt, ae_state, {dtype: d.path for dtype, d in done.items()}, load(done[torch.float16].ae_path)


def test_fed_as_the_official_block_was_the_converted_controlnet_is_the_official_one(trained_official):
    """The official computation (HyperColumnLGN's 509×509 raw hint into the ControlNet, zero padding)
    against the converted file given the project's hint of the same photo at 512² — with the first
    hint convolution fed the official way (OfficialHintConv, as SCG ControlNet Apply does in ComfyUI),
    and as hosts that cannot do that feed it (A1111/Forge units: zero padding, the whole image, 8 bits)."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers runs the ControlNetModel forward")
    ckpt, ae_state, files, ae = trained_official
    official = diffusers.ControlNetModel(**NARROW_DIFFUSERS).eval()
    official.load_state_dict(ldm_to_diffusers(official_control_weights(ckpt)), strict=True)

    def converted(path, fed_officially):
        model = diffusers.ControlNetModel(**NARROW_DIFFUSERS).eval()
        model.load_state_dict(ldm_to_diffusers(load_file(path)), strict=True)
        model.float()
        if fed_officially:
            embedding = model.controlnet_cond_embedding
            embedding.conv_in = OfficialHintConv(embedding.conv_in, read_controlnet_info(path).official_hint)
        return model

    def residuals(model, hint):
        down, mid = model(*args, controlnet_cond=hint, return_dict=False)
        return [*down, mid]

    photo = fit_to_size(load_image(os.path.join(REPO, "photos", "chelsea.jpg")), (512, 512))
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 4, 64, 64, generator=g), torch.tensor([500]), torch.randn(1, 7, 32, generator=g))
    mean, std = torch.tensor(NORM_MEAN).view(1, 3, 1, 1), torch.tensor(NORM_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = official_hypercolumn_hint(photo, released_factors(ae_state), [0])  # [1,3,509,509], HC0
        reference = residuals(official, raw)
        assert len(reference) == 13

        # the official raw hint in image units (unclamped), fp32 file: the same computation
        for a, b in zip(residuals(converted(files[torch.float32], True), raw * std + mean), reference):
            assert (a - b).abs().max() < 1e-4 * b.abs().max()

        hint = ae.hint(photo, groups=["HC0"])  # what every host passes: [1,3,512,512] in [0,1], the default fp16 file
        figures = {
            "fed officially": [relative_l2(a, b) for a, b in zip(residuals(converted(files[torch.float16], True), hint), reference)],
            "zero padding": [relative_l2(a, b) for a, b in zip(residuals(converted(files[torch.float16], False), hint), reference)],
            "zero padding, 8-bit hint": [relative_l2(a, b) for a, b in zip(
                residuals(converted(files[torch.float16], False), (hint * 255).round() / 255), reference)],
            "another photo (flipped)": [relative_l2(a, b) for a, b in zip(
                residuals(converted(files[torch.float16], True), hint.flip(-1)), reference)],
        }
    print("\nrelative L2 of the 13 residuals vs the official ControlNet (narrow widths): " +
          "; ".join(f"{k} {min(v):.4f}–{max(v):.4f}" for k, v in figures.items()))
    assert max(figures["fed officially"]) <= 0.01, figures["fed officially"]  # fp16 weights: the only difference
    assert min(figures["zero padding"]) > 10 * max(figures["fed officially"])
    assert min(figures["another photo (flipped)"]) > 10 * max(figures["fed officially"])
