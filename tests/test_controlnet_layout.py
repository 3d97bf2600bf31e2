import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from scg_core import WeightsError
from scg_core.controlnet.layout import (
    LDM_PREFIX,
    diffusers_to_ldm,
    fold_hint_normalization,
    ldm_to_diffusers,
    save_controlnet,
)

TINY = {"block_out_channels": (32, 64), "layers_per_block": 1, "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "cross_attention_dim": 32, "attention_head_dim": 2, "norm_num_groups": 8,
        "conditioning_embedding_out_channels": (8, 16)}


def diffusers_style_state(channels=(8, 16), layers=1, attention=(True, False), mid_attention=True, hint=(4, 8),
                          linear_proj=False, cross=8, seed=0):
    """A diffusers ``ControlNetModel`` state dict built by hand (keys and shapes as diffusers
    writes them), so that layout tests run without diffusers."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def param(name, *shape, bias=True):
        sd[f"{name}.weight"] = torch.randn(*shape, generator=g) * 0.1
        if bias:
            sd[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.1

    temb = 4 * channels[0]

    def resnet(name, cin, cout):
        param(f"{name}.norm1", cin)
        param(f"{name}.conv1", cout, cin, 3, 3)
        param(f"{name}.time_emb_proj", cout, temb)
        param(f"{name}.norm2", cout)
        param(f"{name}.conv2", cout, cout, 3, 3)
        if cin != cout:
            param(f"{name}.conv_shortcut", cout, cin, 1, 1)

    def transformer(name, c):
        param(f"{name}.norm", c)
        param(f"{name}.proj_in", *((c, c) if linear_proj else (c, c, 1, 1)))
        block = f"{name}.transformer_blocks.0"
        for attn, context in (("attn1", c), ("attn2", cross)):
            param(f"{block}.norm{attn[-1]}", c)
            param(f"{block}.{attn}.to_q", c, c, bias=False)
            param(f"{block}.{attn}.to_k", c, context, bias=False)
            param(f"{block}.{attn}.to_v", c, context, bias=False)
            param(f"{block}.{attn}.to_out.0", c, c)
        param(f"{block}.norm3", c)
        param(f"{block}.ff.net.0.proj", 8 * c, c)
        param(f"{block}.ff.net.2", c, 4 * c)
        param(f"{name}.proj_out", *((c, c) if linear_proj else (c, c, 1, 1)))

    param("conv_in", channels[0], 4, 3, 3)
    param("time_embedding.linear_1", temb, channels[0])
    param("time_embedding.linear_2", temb, temb)
    param("controlnet_cond_embedding.conv_in", hint[0], 3, 3, 3)
    for j in range(len(hint) - 1):
        param(f"controlnet_cond_embedding.blocks.{2 * j}", hint[j], hint[j], 3, 3)
        param(f"controlnet_cond_embedding.blocks.{2 * j + 1}", hint[j + 1], hint[j], 3, 3)
    param("controlnet_cond_embedding.conv_out", channels[0], hint[-1], 3, 3)
    zero, ch = 0, channels[0]
    param(f"controlnet_down_blocks.{zero}", ch, ch, 1, 1)
    for level, c in enumerate(channels):
        for i in range(layers):
            resnet(f"down_blocks.{level}.resnets.{i}", ch, c)
            ch = c
            if attention[level]:
                transformer(f"down_blocks.{level}.attentions.{i}", c)
            zero += 1
            param(f"controlnet_down_blocks.{zero}", c, c, 1, 1)
        if level < len(channels) - 1:
            param(f"down_blocks.{level}.downsamplers.0.conv", c, c, 3, 3)
            zero += 1
            param(f"controlnet_down_blocks.{zero}", c, c, 1, 1)
    resnet("mid_block.resnets.0", ch, ch)
    if mid_attention:
        transformer("mid_block.attentions.0", ch)
    resnet("mid_block.resnets.1", ch, ch)
    param("controlnet_mid_block", ch, ch, 1, 1)
    return sd


STRUCTURES = {
    "sd15-like": {},
    "three levels, two layers, linear proj": {"channels": (8, 8, 16), "layers": 2, "attention": (False, True, True),
                                              "linear_proj": True, "hint": (4, 8, 8, 16)},
    "no attention anywhere": {"attention": (False, False), "mid_attention": False, "hint": (4,)},
}


@pytest.mark.parametrize("structure", STRUCTURES)
def test_round_trips_are_the_identity(structure):
    sd = diffusers_style_state(**STRUCTURES[structure])
    ldm = diffusers_to_ldm(sd)
    assert all(k.startswith(LDM_PREFIX) for k in ldm) and len(ldm) == len(sd)
    back = ldm_to_diffusers(ldm)
    assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)
    # ldm → diffusers → ldm, with and without the prefix
    plain = {k.removeprefix(LDM_PREFIX): v for k, v in ldm.items()}
    assert diffusers_to_ldm(ldm_to_diffusers(plain)).keys() == ldm.keys()


def test_the_sd15_numbering():
    ldm = diffusers_to_ldm(diffusers_style_state(channels=(8, 8, 16, 16), layers=2, attention=(True, True, True, False),
                                                 hint=(4, 4, 8, 8)))
    keys = {k.removeprefix(LDM_PREFIX) for k in ldm}
    # SD1.5: input_blocks 1,2 | 3 down | 4,5 | 6 down | 7,8 | 9 down | 10,11; attention in 1,2,4,5,7,8
    assert {"input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight", "input_blocks.9.0.op.weight"} <= keys
    assert "input_blocks.8.1.proj_in.weight" in keys and "input_blocks.10.1.proj_in.weight" not in keys
    assert "input_blocks.11.0.out_layers.3.weight" in keys and "input_blocks.12.0.in_layers.0.weight" not in keys
    assert "input_blocks.7.0.skip_connection.weight" in keys and "input_blocks.4.0.skip_connection.weight" not in keys
    assert {f"zero_convs.{k}.0.weight" for k in range(12)} <= keys and "zero_convs.12.0.weight" not in keys
    assert {f"input_hint_block.{i}.weight" for i in range(0, 15, 2)} <= keys and "input_hint_block.16.weight" not in keys
    assert {"middle_block.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.2.emb_layers.1.bias",
            "middle_block_out.0.weight", "time_embed.2.weight", "input_blocks.0.0.bias"} <= keys


def test_unknown_keys_are_named_not_dropped():
    sd = diffusers_style_state()
    sd["down_blocks.0.resnets.0.mystery.weight"] = torch.zeros(1)
    sd["add_embedding.linear_1.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"2 key\(s\).*add_embedding.linear_1.weight, down_blocks.0.resnets.0.mystery"):
        diffusers_to_ldm(sd)
    ldm = diffusers_to_ldm(diffusers_style_state())
    ldm["control_model.input_hint_block.1.weight"] = torch.zeros(1)  # a SiLU has no tensors
    with pytest.raises(WeightsError, match="input_hint_block.1.weight"):
        ldm_to_diffusers(ldm)
    with pytest.raises(WeightsError, match="diffusers layout.*use the other converter"):
        diffusers_to_ldm(diffusers_to_ldm(diffusers_style_state()))
    both = diffusers_to_ldm(diffusers_style_state())
    both["time_embed.0.weight"] = both[LDM_PREFIX + "time_embed.0.weight"]
    with pytest.raises(WeightsError, match="both with and without"):
        ldm_to_diffusers(both)


def test_folding_the_normalisation_is_exact_inside_and_only_the_border_differs():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(16, 3, 3, 3, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    mean = torch.tensor([0.507, 0.487, 0.441], dtype=torch.float64)
    std = torch.tensor([0.267, 0.256, 0.276], dtype=torch.float64)
    h = torch.rand(2, 3, 20, 24, generator=g, dtype=torch.float64)
    official = F.conv2d((h - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), w, b, padding=1)
    w2, b2 = fold_hint_normalization(w, b, mean, std)
    folded = F.conv2d(h, w2, b2, padding=1)
    diff = (folded - official).abs()
    assert diff[..., 1:-1, 1:-1].max() < 1e-12
    border = diff.clone()
    border[..., 1:-1, 1:-1] = 0
    assert (border.amax(dim=(0, 1)) > 1e-3).sum() == 2 * (20 + 24) - 4  # every border pixel differs
    # float32 in, float32 out; no bias = zero bias
    w32, b32 = fold_hint_normalization(w.float(), None, mean.tolist(), std.tolist())
    assert w32.dtype == b32.dtype == torch.float32
    no_bias = F.conv2d((h - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), w, padding=1)
    assert torch.allclose(F.conv2d(h.float(), w32, b32, padding=1)[..., 1:-1, 1:-1], no_bias[..., 1:-1, 1:-1].float(), atol=1e-5)
    with pytest.raises(ValueError, match="one value per input channel"):
        fold_hint_normalization(w, b, mean[:2], std)


def test_save_is_atomic_fp16_and_carries_metadata(tmp_path):
    state = {"control_model.a.weight": torch.randn(3, 3), "control_model.steps": torch.tensor([1, 2])}
    state["control_model.b.weight"] = state["control_model.a.weight"]  # shared memory: safetensors would refuse it
    path = save_controlnet(tmp_path / "sub" / "cn.safetensors", state, {"scg_format": "scg.controlnet"})
    assert sorted(os.listdir(path.parent)) == ["cn.safetensors"]  # no temporary file left
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "scg_format": "scg.controlnet"}
        assert f.get_tensor("control_model.a.weight").dtype == torch.float16
        assert f.get_tensor("control_model.steps").dtype == torch.int64
    save_controlnet(path, state, {}, dtype=torch.float32)  # replaces the file
    with safe_open(str(path), framework="pt") as f:
        assert torch.equal(f.get_tensor("control_model.b.weight"), state["control_model.a.weight"])
    with pytest.raises(TypeError, match="strings to strings"):
        save_controlnet(path, state, {"steps": 3})


def test_an_unwritable_folder_is_refused_clearly(tmp_path, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: answer as the OS does for a user
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(folder))
        monkeypatch.setattr(tempfile, "mkstemp", denied)
    try:
        with pytest.raises(PermissionError, match=r"read-only is not writable .*choose another output path"):
            save_controlnet(folder / "cn.safetensors", {"w": torch.zeros(1)}, {})
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


# ---------------------------------------------------------------- against diffusers itself


def _tiny_controlnet(**overrides):
    diffusers = pytest.importorskip("diffusers", reason="diffusers (host venv) builds the reference ControlNetModel")
    torch.manual_seed(0)
    cn = diffusers.ControlNetModel(**{**TINY, **overrides}).eval()
    with torch.no_grad():  # zero-initialised outputs would hide a wrong mapping
        for p in cn.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return diffusers, cn


@pytest.mark.parametrize("overrides", [{}, {"use_linear_projection": True, "layers_per_block": 2},
                                       {"down_block_types": ("DownBlock2D", "DownBlock2D"), "mid_block_type": "UNetMidBlock2D"}],
                         ids=["tiny", "linear-proj-2-layers", "no-attention"])
def test_a_diffusers_controlnet_survives_the_round_trip(overrides):
    diffusers, cn = _tiny_controlnet(**overrides)
    sd = cn.state_dict()
    ldm = diffusers_to_ldm(sd)
    assert ldm_to_diffusers(diffusers_to_ldm(ldm_to_diffusers(ldm))).keys() == sd.keys()
    again = diffusers.ControlNetModel(**{**TINY, **overrides}).eval()
    again.load_state_dict(ldm_to_diffusers(ldm), strict=True)
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(1, 4, 16, 16, generator=g), torch.tensor([10]), torch.randn(1, 5, 32, generator=g),
            torch.rand(1, 3, 32, 32, generator=g))
    with torch.no_grad():
        down, mid = cn(*args, return_dict=False)
        down2, mid2 = again(*args, return_dict=False)
    assert len(down) == len(down2) and all(torch.equal(a, b) for a, b in zip(down, down2)) and torch.equal(mid, mid2)
    assert mid.abs().max() > 0


def test_the_hand_built_state_dict_matches_diffusers():
    # guards the diffusers-free tests above: their input must be what diffusers really writes
    _, cn = _tiny_controlnet()
    fake = diffusers_style_state(channels=(32, 64), attention=(True, False), hint=(8, 16), cross=32)
    assert {k: tuple(v.shape) for k, v in fake.items()} == {k: tuple(v.shape) for k, v in cn.state_dict().items()}
