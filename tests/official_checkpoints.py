"""Checkpoints in the official SCG release's formats, built the way its code writes them.

Written from reading BAAI-Brain-Inspired-Group/OPEN-Vis-ControlSD (commit d2fe323) — no code of
it is copied:

* **Autoencoder** (``hypercolumn/vit_pytorch/train_V1_sep_new.py``, ``V1_sep.py``): the file is
  ``{'arg': argparse.Namespace, 'state_dict': Column_trans_rot_lgn.state_dict()}``.
  ``Column_trans_rot_lgn`` loops over ``arg.n_vector`` and indexes ``arg.vector_length[i]`` and
  ``arg.rot_num[i]``, so those three are **lists**, one entry per hypercolumn set; set ``i`` is
  ``lgn_ende.i``, an ``Lgn_ende_multi`` whose ``conv`` is ``eval(arg.gonlin)(arg_i)`` with
  ``arg_i.n_vector = int(nv / rn)`` and ``arg_i.vector_length = int(vl * rn)``. ``Bipolar``
  registers ``eye`` (an identity ``nn.Parameter`` with ``requires_grad=False``) and then the convs
  ``c1_1``, ``c1_2_1``, ``c1_2_2``, ``c2``. Besides those lists the code reads ``arg.channel``,
  ``lgn_kernel_size``, ``lgn_stride``, ``lgn_padding``, ``activate_fn`` (``None``, ``'gelu'`` or
  ``'relu'``), ``gonlin`` (a class name), ``dataset`` and ``ensemble``.
* **ControlNet** (``cldm/cldm.py``, ``models/cldm_v15.yaml``, ``tutorial_train.py``): a
  PyTorch-Lightning 1.5 checkpoint (``ModelCheckpoint(save_weights_only=False)``) of
  ``ControlLDM``: ``state_dict`` holds ``model.diffusion_model.*`` (the SD1.5 UNet),
  ``control_model.*`` (``cldm.ControlNet``), ``first_stage_model.*`` (the VAE),
  ``cond_stage_model.transformer.*`` (CLIP's text model) and the diffusion schedule buffers. In
  ``ControlNet`` the ``HyperColumnLGN`` autoencoder is registered first as ``hypercolumn`` and again
  as element 0 of ``input_hint_block_new`` (both hold ``lgn_ende.conv.*``, ``lgn_ende`` being
  ``Column_trans_rot_lgn(arg).lgn_ende[0]``); elements 1, 3, …, 15 are the hint convolutions
  3→16→16→32→32→96→96→256→320, strides 2 at elements 5, 9 and 13.

The ldm names and shapes below are enumerated from the architecture the yaml configures;
tests/host/test_official_checkpoints_comfyui.py checks them against ComfyUI's ports of those
modules (which load official SD checkpoints as they are) and transformers' CLIP.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from devtools.official_reference import probe_kernel

NORM_MEAN = (0.50705882, 0.48666667, 0.44078431)
NORM_STD = (0.26745098, 0.25568627, 0.27607843)
# Bipolar's weights (after ``conv.``) → scg_core's parameter names
FACTOR_NAMES = {"c1_1.weight": "pathway_a", "c1_2_1.weight": "pathway_b", "c1_2_2.weight": "surround",
                "c2.weight": "module_kernels"}
HYPERCOLUMNS = [[0, 1, 4, 8, 9, 15], [2, 3], [5, 12], [10], [6, 7], [11, 13, 14]]  # HyperColumnLGN.groups[:6]

# ------------------------------------------------------------------------------------------ autoencoder

# What the official code reads of ``arg``, with the released model's values: the file name
# ``equ_nv16_vl4_rn1_Bipolar_norm.pth`` gives n_vector, vector_length, rot_num and gonlin; the
# composed 21×21 kernel is run with stride 4 and padding 10 (Lgn_ende_multi sets lgn_padding from it).
OFFICIAL_AE_ARG = dict(channel=3, n_vector=[16], vector_length=[4], rot_num=[1], lgn_kernel_size=21, lgn_stride=4,
                       lgn_padding=10, activate_fn=None, gonlin="Bipolar", dataset="imagenet", ensemble="single")


def official_ae_arg(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**{**OFFICIAL_AE_ARG, **overrides})


def bipolar_layer(channel: int, n_vector: int, vector_length: int) -> "OrderedDict[str, torch.Tensor]":
    """``Bipolar(arg).state_dict()``: ``eye`` then the four convs, with PyTorch's default init."""
    nv, vl = n_vector, vector_length
    convs = OrderedDict([
        ("c1_1", nn.Conv2d(channel, nv, 5, 2, 2, bias=False)),
        ("c1_2_1", nn.Conv2d(channel, nv, 5, 2, 2, bias=False)),
        ("c1_2_2", nn.Conv2d(nv, nv, 5, 1, 2, bias=False, groups=nv)),
        ("c2", nn.Conv2d(nv, nv * vl, 5, 2, 2, bias=False, groups=nv)),
    ])
    state = OrderedDict(eye=torch.eye(nv * vl).unsqueeze(2).unsqueeze(3))
    state.update((f"{name}.weight", conv.weight.detach()) for name, conv in convs.items())
    return state


def official_ae_state(arg: argparse.Namespace, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """``Column_trans_rot_lgn(arg).state_dict()`` for list-valued ``arg`` fields."""
    torch.manual_seed(seed)
    state = OrderedDict()
    for i, (nv, vl, rn) in enumerate(zip(arg.n_vector, arg.vector_length, arg.rot_num)):
        for key, value in bipolar_layer(arg.channel, int(nv / rn), int(vl * rn)).items():
            state[f"lgn_ende.{i}.conv.{key}"] = value
    return state


def official_ae_checkpoint(seed: int = 0, arg: argparse.Namespace | None = None, **extra) -> dict:
    """What the official training script saves: ``{'arg': Namespace, 'state_dict': ...}``."""
    arg = arg or official_ae_arg()
    return {"arg": arg, "state_dict": official_ae_state(arg, seed), **extra}


def official_ae_state_of(model) -> "OrderedDict[str, torch.Tensor]":
    """A trained scg_core bipolar autoencoder's weights in the official layout (one set): realistic
    values where random ones would make hints far outside [0,1]."""
    kl = model.config.feature_channels
    state = OrderedDict([("lgn_ende.0.conv.eye", torch.eye(kl).unsqueeze(2).unsqueeze(3))])
    state.update((f"lgn_ende.0.conv.{theirs}", getattr(model, ours).detach().clone()) for theirs, ours in FACTOR_NAMES.items())
    return state


def released_factors(state) -> dict[str, torch.Tensor]:
    """The four weights of set 0 (or of the ControlNet's ``lgn_ende.conv``) by scg_core's names."""
    prefix = "lgn_ende.0.conv." if "lgn_ende.0.conv.c1_1.weight" in state else "lgn_ende.conv."
    return {ours: state[prefix + theirs] for theirs, ours in FACTOR_NAMES.items()}


def official_hypercolumn_hint(image: torch.Tensor, factors, groups, size: int | None = 512) -> torch.Tensor:
    """``HyperColumnLGN.forward``: resize the shorter side to ``size``, normalise, encode with the
    composed kernel (stride 4, padding 10), keep the modules of ``groups`` (indices into the
    official hypercolumn list), decode with no output padding (509×509 from 512×512). ``image``:
    ``[B,3,H,W]`` in [0,1]. Returns the raw hint in normalised units."""
    if size is not None and min(image.shape[-2:]) != size:
        h, w = image.shape[-2:]
        # transforms.Resize(512) of torchvision 0.13 (the official environment): the long side is
        # truncated, tensors are resized bilinearly without antialiasing
        new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        image = F.interpolate(image, size=new, mode="bilinear", antialias=False)
    with torch.enable_grad():  # the kernel is probed with autograd
        kernel = probe_kernel({k: v.detach().double() for k, v in factors.items()}).detach().to(image.dtype)
    x = (image - torch.tensor(NORM_MEAN).view(1, 3, 1, 1)) / torch.tensor(NORM_STD).view(1, 3, 1, 1)
    l = kernel.shape[0] // 16
    mask = torch.zeros(16)
    for g in groups:
        mask[HYPERCOLUMNS[g]] = 1
    f = F.conv2d(x, kernel, stride=4, padding=10) * mask.repeat_interleave(l).view(1, -1, 1, 1)
    return F.conv_transpose2d(f, kernel, stride=4, padding=10)


# ------------------------------------------------------------------------------------------ ControlLDM


@dataclass(frozen=True)
class Architecture:
    """The widths of ``models/cldm_v15.yaml`` (``SD15``) or a narrow copy with the same structure."""

    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_heads: int = 8
    context_dim: int = 768
    vae_ch: int = 128
    vae_ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    clip: dict = field(default_factory=lambda: dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                    num_attention_heads=12, max_position_embeddings=77, vocab_size=49408))


SD15 = Architecture()
NARROW = replace(SD15, model_channels=32, context_dim=32, vae_ch=32,
                 clip=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=12, num_attention_heads=4,
                           max_position_embeddings=77, vocab_size=100))
HINT_CHANNELS = (16, 16, 32, 32, 96, 96, 256)  # input_hint_block_new convs 1..13; 15 goes to model_channels


def _resblock(out, p, cin, cout, temb):
    out[f"{p}.in_layers.0.weight"] = out[f"{p}.in_layers.0.bias"] = (cin,)
    out[f"{p}.in_layers.2.weight"], out[f"{p}.in_layers.2.bias"] = (cout, cin, 3, 3), (cout,)
    out[f"{p}.emb_layers.1.weight"], out[f"{p}.emb_layers.1.bias"] = (cout, temb), (cout,)
    out[f"{p}.out_layers.0.weight"] = out[f"{p}.out_layers.0.bias"] = (cout,)
    out[f"{p}.out_layers.3.weight"], out[f"{p}.out_layers.3.bias"] = (cout, cout, 3, 3), (cout,)
    if cin != cout:
        out[f"{p}.skip_connection.weight"], out[f"{p}.skip_connection.bias"] = (cout, cin, 1, 1), (cout,)


def _transformer(out, p, c, context):
    """``SpatialTransformer`` (conv proj_in/out, depth 1): inner dim = c."""
    out[f"{p}.norm.weight"] = out[f"{p}.norm.bias"] = (c,)
    out[f"{p}.proj_in.weight"], out[f"{p}.proj_in.bias"] = (c, c, 1, 1), (c,)
    b = f"{p}.transformer_blocks.0"
    for attn, kv in (("attn1", c), ("ff", None), ("attn2", context)):
        if attn == "ff":
            out[f"{b}.ff.net.0.proj.weight"], out[f"{b}.ff.net.0.proj.bias"] = (8 * c, c), (8 * c,)
            out[f"{b}.ff.net.2.weight"], out[f"{b}.ff.net.2.bias"] = (c, 4 * c), (c,)
            continue
        out[f"{b}.{attn}.to_q.weight"], out[f"{b}.{attn}.to_k.weight"], out[f"{b}.{attn}.to_v.weight"] = (c, c), (c, kv), (c, kv)
        out[f"{b}.{attn}.to_out.0.weight"], out[f"{b}.{attn}.to_out.0.bias"] = (c, c), (c,)
    for n in (1, 2, 3):
        out[f"{b}.norm{n}.weight"] = out[f"{b}.norm{n}.bias"] = (c,)
    out[f"{p}.proj_out.weight"], out[f"{p}.proj_out.bias"] = (c, c, 1, 1), (c,)


def _encoder_part(out, p, a: Architecture, zero_convs: bool) -> list[int]:
    """time_embed, input_blocks (and zero_convs), middle_block of the UNet / ControlNet."""
    mc, temb = a.model_channels, 4 * a.model_channels
    out[f"{p}time_embed.0.weight"], out[f"{p}time_embed.0.bias"] = (temb, mc), (temb,)
    out[f"{p}time_embed.2.weight"], out[f"{p}time_embed.2.bias"] = (temb, temb), (temb,)
    blocks: list[tuple[str, tuple]] = []  # input block index → what it holds, in order
    chans, ch, ds = [mc], mc, 1
    layout = [("conv", (mc,))]
    for level, mult in enumerate(a.channel_mult):
        for _ in range(a.num_res_blocks):
            layout.append(("res", (ch, mult * mc, ds in a.attention_resolutions)))
            ch = mult * mc
            chans.append(ch)
        if level != len(a.channel_mult) - 1:
            layout.append(("down", (ch,)))
            chans.append(ch)
            ds *= 2
    for n, (kind, args) in enumerate(layout):
        q = f"{p}input_blocks.{n}"
        if kind == "conv":
            out[f"{q}.0.weight"], out[f"{q}.0.bias"] = (mc, 4, 3, 3), (mc,)
        elif kind == "res":
            cin, cout, attention = args
            _resblock(out, f"{q}.0", cin, cout, temb)
            if attention:
                _transformer(out, f"{q}.1", cout, a.context_dim)
        else:
            out[f"{q}.0.op.weight"], out[f"{q}.0.op.bias"] = (args[0], args[0], 3, 3), (args[0],)
        blocks.append((kind, args))
    if zero_convs:
        for n, c in enumerate(chans):
            out[f"{p}zero_convs.{n}.0.weight"], out[f"{p}zero_convs.{n}.0.bias"] = (c, c, 1, 1), (c,)
    return chans


def _middle(out, p, a: Architecture, ch: int):
    temb = 4 * a.model_channels
    _resblock(out, f"{p}middle_block.0", ch, ch, temb)
    _transformer(out, f"{p}middle_block.1", ch, a.context_dim)
    _resblock(out, f"{p}middle_block.2", ch, ch, temb)


def unet_shapes(a: Architecture, p: str = "model.diffusion_model.") -> "OrderedDict[str, tuple]":
    """``ControlledUnetModel`` (ldm ``UNetModel``) with the yaml's ``unet_config``."""
    out: OrderedDict[str, tuple] = OrderedDict()
    chans = _encoder_part(out, p, a, zero_convs=False)
    ch = chans[-1]
    _middle(out, p, a, ch)
    mc, temb, n = a.model_channels, 4 * a.model_channels, 0
    ds = 2 ** (len(a.channel_mult) - 1)
    for level, mult in list(enumerate(a.channel_mult))[::-1]:
        for i in range(a.num_res_blocks + 1):
            q = f"{p}output_blocks.{n}"
            _resblock(out, f"{q}.0", ch + chans.pop(), mult * mc, temb)
            ch, layer = mult * mc, 1
            if ds in a.attention_resolutions:
                _transformer(out, f"{q}.1", ch, a.context_dim)
                layer = 2
            if level and i == a.num_res_blocks:
                out[f"{q}.{layer}.conv.weight"], out[f"{q}.{layer}.conv.bias"] = (ch, ch, 3, 3), (ch,)
                ds //= 2
            n += 1
    out[f"{p}out.0.weight"] = out[f"{p}out.0.bias"] = (mc,)
    out[f"{p}out.2.weight"], out[f"{p}out.2.bias"] = (4, mc, 3, 3), (4,)
    return out


def controlnet_shapes(a: Architecture, p: str = "control_model.", ae_channels: tuple[int, int] = (16, 4)) -> "OrderedDict[str, tuple]":
    """``cldm.ControlNet`` with the yaml's ``control_stage_config`` (hypercolumn first, as registered)."""
    out: OrderedDict[str, tuple] = OrderedDict()
    nv, vl = ae_channels
    ae = OrderedDict([("eye", (nv * vl, nv * vl, 1, 1)), ("c1_1.weight", (nv, 3, 5, 5)), ("c1_2_1.weight", (nv, 3, 5, 5)),
                      ("c1_2_2.weight", (nv, 1, 5, 5)), ("c2.weight", (nv * vl, 1, 5, 5))])
    for name, shape in ae.items():
        out[f"{p}hypercolumn.lgn_ende.conv.{name}"] = shape
    encoder: OrderedDict[str, tuple] = OrderedDict()
    chans = _encoder_part(encoder, p, a, zero_convs=True)
    hint = OrderedDict((f"{p}input_hint_block_new.0.lgn_ende.conv.{name}", shape) for name, shape in ae.items())
    cin = 3
    for i, c in enumerate([*HINT_CHANNELS, a.model_channels]):
        hint[f"{p}input_hint_block_new.{2 * i + 1}.weight"], hint[f"{p}input_hint_block_new.{2 * i + 1}.bias"] = (c, cin, 3, 3), (c,)
        cin = c
    # registration order: time_embed, input_blocks, zero_convs, input_hint_block_new, middle_block, middle_block_out
    out.update((k, v) for k, v in encoder.items() if not k.startswith(f"{p}zero_convs."))
    out.update((k, v) for k, v in encoder.items() if k.startswith(f"{p}zero_convs."))
    out.update(hint)
    _middle(out, p, a, chans[-1])
    out[f"{p}middle_block_out.0.weight"], out[f"{p}middle_block_out.0.bias"] = (chans[-1], chans[-1], 1, 1), (chans[-1],)
    return out


def vae_shapes(a: Architecture, p: str = "first_stage_model.") -> "OrderedDict[str, tuple]":
    """ldm ``AutoencoderKL`` with the yaml's ``ddconfig`` (no attention in the levels, z = 4, double_z)."""
    out: OrderedDict[str, tuple] = OrderedDict()

    def res(q, cin, cout):
        out[f"{q}.norm1.weight"] = out[f"{q}.norm1.bias"] = (cin,)
        out[f"{q}.conv1.weight"], out[f"{q}.conv1.bias"] = (cout, cin, 3, 3), (cout,)
        out[f"{q}.norm2.weight"] = out[f"{q}.norm2.bias"] = (cout,)
        out[f"{q}.conv2.weight"], out[f"{q}.conv2.bias"] = (cout, cout, 3, 3), (cout,)
        if cin != cout:
            out[f"{q}.nin_shortcut.weight"], out[f"{q}.nin_shortcut.bias"] = (cout, cin, 1, 1), (cout,)

    def mid(q, c):
        res(f"{q}.mid.block_1", c, c)
        out[f"{q}.mid.attn_1.norm.weight"] = out[f"{q}.mid.attn_1.norm.bias"] = (c,)
        for name in ("q", "k", "v", "proj_out"):
            out[f"{q}.mid.attn_1.{name}.weight"], out[f"{q}.mid.attn_1.{name}.bias"] = (c, c, 1, 1), (c,)
        res(f"{q}.mid.block_2", c, c)

    ch, mult, z = a.vae_ch, a.vae_ch_mult, 4
    e = f"{p}encoder"
    out[f"{e}.conv_in.weight"], out[f"{e}.conv_in.bias"] = (ch, 3, 3, 3), (ch,)
    cin = ch
    for i, m in enumerate(mult):
        for j in range(a.num_res_blocks):
            res(f"{e}.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
        if i != len(mult) - 1:
            out[f"{e}.down.{i}.downsample.conv.weight"], out[f"{e}.down.{i}.downsample.conv.bias"] = (cin, cin, 3, 3), (cin,)
    mid(e, cin)
    out[f"{e}.norm_out.weight"] = out[f"{e}.norm_out.bias"] = (cin,)
    out[f"{e}.conv_out.weight"], out[f"{e}.conv_out.bias"] = (2 * z, cin, 3, 3), (2 * z,)
    d = f"{p}decoder"
    cin = ch * mult[-1]
    out[f"{d}.conv_in.weight"], out[f"{d}.conv_in.bias"] = (cin, z, 3, 3), (cin,)
    mid(d, cin)
    ups: dict[int, OrderedDict] = {}
    for i in reversed(range(len(mult))):  # built from the deepest level, stored by level index
        before = OrderedDict(out)
        for j in range(a.num_res_blocks + 1):
            res(f"{d}.up.{i}.block.{j}", cin, ch * mult[i])
            cin = ch * mult[i]
        if i != 0:
            out[f"{d}.up.{i}.upsample.conv.weight"], out[f"{d}.up.{i}.upsample.conv.bias"] = (cin, cin, 3, 3), (cin,)
        ups[i] = OrderedDict((k, v) for k, v in out.items() if k not in before)
        for k in ups[i]:
            del out[k]
    for i in range(len(mult)):
        out.update(ups[i])
    out[f"{d}.norm_out.weight"] = out[f"{d}.norm_out.bias"] = (ch * mult[0],)
    out[f"{d}.conv_out.weight"], out[f"{d}.conv_out.bias"] = (3, ch * mult[0], 3, 3), (3,)
    out[f"{p}quant_conv.weight"], out[f"{p}quant_conv.bias"] = (2 * z, 2 * z, 1, 1), (2 * z,)
    out[f"{p}post_quant_conv.weight"], out[f"{p}post_quant_conv.bias"] = (z, z, 1, 1), (z,)
    return out


def clip_state(a: Architecture, p: str = "cond_stage_model.transformer.") -> "OrderedDict[str, torch.Tensor]":
    """``FrozenCLIPEmbedder.transformer``: transformers' ``CLIPTextModel``. The transformers of the
    official environment (4.19) also saved ``embeddings.position_ids``; newer ones do not."""
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig(**a.clip, hidden_act="quick_gelu"))
    out = OrderedDict()
    for key, value in model.state_dict().items():
        out[p + key] = value
        if key.endswith("embeddings.position_embedding.weight"):
            out[p + "text_model.embeddings.position_ids"] = torch.arange(a.clip["max_position_embeddings"]).expand(1, -1).clone()
    return out


SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
                    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")


def schedule_buffers() -> "OrderedDict[str, torch.Tensor]":
    """DDPM.register_schedule for the yaml's linear_start/linear_end (persistent buffers only)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.0120 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas[:-1]])
    post = betas * (1 - prev) / (1 - alphas)
    values = [betas, alphas, prev, alphas.sqrt(), (1 - alphas).sqrt(), (1 - alphas).log(), (1 / alphas).sqrt(),
              (1 / alphas - 1).sqrt(), post, post.clamp(min=1e-20).log(), betas * prev.sqrt() / (1 - alphas),
              (1 - prev) * (1 - betas).sqrt() / (1 - alphas)]
    return OrderedDict((name, v.float()) for name, v in zip(SCHEDULE_BUFFERS, values))


def _fill(shape, g, name) -> torch.Tensor:
    """Random values on the scale PyTorch's default init gives (norm weights near 1)."""
    if len(shape) == 1:
        base = 1.0 if name.endswith("weight") and ("norm" in name or "layers.0" in name or name.endswith("out.0.weight")) else 0.0
        return base + 0.05 * torch.randn(shape, generator=g)
    fan_in = 1
    for n in shape[1:]:
        fan_in *= n
    return torch.randn(shape, generator=g) / fan_in ** 0.5


def official_controlnet_checkpoint(ae_state, a: Architecture = NARROW, seed: int = 0, hint_gain: float = 3.0,
                                   frozen: str = "random") -> dict:
    """What ``tutorial_train.py``'s ModelCheckpoint writes for ``ControlLDM`` (PL 1.5).

    Args:
        ae_state: the official autoencoder's ``lgn_ende.0.conv.*`` tensors (``official_ae_state``).
        hint_gain: the hint convolutions (elements 1..15) are drawn ``hint_gain`` × the default
            scale, so that the residuals depend on the hint; output ("zero") convolutions are
            non-zero, as after training.
        frozen: ``"random"`` or ``"zeros"`` for the SD weights the converter drops (zeros keep a
            full-size fixture cheap to make; they are written all the same).
    """
    g = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    frozen_value = (lambda shape, name: _fill(shape, g, name)) if frozen == "random" else (lambda shape, name: torch.zeros(shape))
    for name, shape in unet_shapes(a).items():
        state[name] = frozen_value(shape, name)
    state.update(schedule_buffers())
    for name, shape in vae_shapes(a).items():
        state[name] = frozen_value(shape, name)
    clip = clip_state(a)
    state.update(clip if frozen == "random" else {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in clip.items()})
    ae = OrderedDict((key.split("conv.", 1)[1], value) for key, value in ae_state.items() if key.startswith("lgn_ende.0.conv."))
    control = controlnet_shapes(a, ae_channels=(ae["c1_1.weight"].shape[0], ae["c2.weight"].shape[0] // ae["c1_1.weight"].shape[0]))
    for name, shape in control.items():
        if ".lgn_ende.conv." in name:
            state[name] = ae[name.split(".lgn_ende.conv.", 1)[1]]  # one tensor, registered twice
        else:
            value = _fill(shape, g, name)
            if ".input_hint_block_new." in name:
                value = value * hint_gain
            state[name] = value
    # AdamW over control_model.parameters(): the shared autoencoder once (frozen: no state), then the rest
    params = [n for n in control if n.startswith("control_model.hypercolumn.")] + [n for n in control if ".lgn_ende." not in n]
    optimizer = {
        "state": {i: {"step": torch.tensor(147860.0), "exp_avg": torch.zeros(control[n]), "exp_avg_sq": torch.zeros(control[n])}
                  for i, n in enumerate(params) if ".lgn_ende." not in n},
        "param_groups": [{"lr": 1e-05, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01, "amsgrad": False,
                          "maximize": False, "foreach": None, "capturable": False, "params": list(range(len(params)))}],
    }
    monitor = ("ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
               "'train_time_interval': None, 'save_on_train_epoch_end': True}")
    callbacks = {monitor: {"monitor": None, "best_model_score": None, "best_model_path": "image_log/checkpoint_down2_0/epoch=4-step=147860.ckpt",
                           "current_score": None, "dirpath": "image_log/checkpoint_down2_0/", "best_k_models": {},
                           "kth_best_model_path": "", "kth_value": torch.tensor(float("inf")),
                           "last_model_path": "image_log/checkpoint_down2_0/last.ckpt"}}
    return {"epoch": 4, "global_step": 147860, "pytorch-lightning_version": "1.5.0", "state_dict": state,
            "callbacks": callbacks, "optimizer_states": [optimizer], "lr_schedulers": []}


def plain_controlnet_name(key: str) -> str | None:
    """An official ``control_model.*`` key under the names of lllyasviel's plain ``cldm.ControlNet``
    (``input_hint_block_new.{i}`` → ``input_hint_block.{i-1}``); ``None`` for the autoencoder and
    anything outside the ControlNet."""
    if not key.startswith("control_model.") or ".lgn_ende." in key:
        return None
    key = key.removeprefix("control_model.")
    if key.startswith("input_hint_block_new."):
        index, rest = key.removeprefix("input_hint_block_new.").split(".", 1)
        key = f"input_hint_block.{int(index) - 1}.{rest}"
    return key


def official_control_weights(ckpt: dict) -> "OrderedDict[str, torch.Tensor]":
    """The official ControlNet's own weights under plain ``cldm.ControlNet`` names, for running the
    official computation with a host's port of that class on the official raw hint."""
    return OrderedDict((plain_controlnet_name(k), v) for k, v in ckpt["state_dict"].items() if plain_controlnet_name(k))
