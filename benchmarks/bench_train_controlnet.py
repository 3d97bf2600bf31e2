"""ControlNet training step: ours (``training.train_controlnet``) vs the diffusers-example way.

    python benchmarks/bench_train_controlnet.py                        # CPU: tiny SD1-shaped model
    python benchmarks/bench_train_controlnet.py --shapes sd15 --device cuda --resolution 512 --batch 4 --precision bf16

*ours*: the step ``train_controlnet --cache-latents`` runs — stored VAE posteriors and text
features (the VAE and text encoder stay off the device), the hint computed on the device by the
frozen modular autoencoder, PyTorch SDPA attention, fused AdamW on CUDA.
*reference*: written the way diffusers' ``train_controlnet.py`` example does it — fp32 ControlNet,
frozen models in the mixed-precision dtype, VAE and text encoder run every step, a precomputed
conditioning image, default AdamW.
Both: same random-weight models, batch, resolution, mixed precision (ControlNet fp32 master
weights under autocast), gradient clipping. Each variant runs in its own child process (so peak
memory is its own) and the variants alternate for ``--rounds`` rounds; the table gives medians and
the ratio to the reference.

Speed levers (``training/speed.py``) are measured one by one with ``--variants``, e.g.

    python benchmarks/bench_train_controlnet.py --device cuda --shapes sd15 --resolution 512 --precision bf16 \
        --variants reference,ours,ours+channels_last,ours+compile,ours+tf32,ours+cudnn_benchmark,ours+sdpa_flash,ours+hint_mixed

and batch sizes with ``--batches 4,8,16``. The table also gives samples/s per GiB of peak memory
and, on a GPU whose bf16 peak is known (or ``--peak-tflops``), the model FLOPs utilisation: the
FLOPs of one step (``torch.utils.flop_counter``, forward and backward) × steps/s ÷ the peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_models(shapes: str):
    """Random-weight UNet, VAE, text encoder of SD1.5 shapes or a tiny SD1 shape."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    if shapes == "sd15":
        unet = UNet2DConditionModel(
            sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
            attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"))
    else:
        unet = UNet2DConditionModel(
            sample_size=16, layers_per_block=1, block_out_channels=(32, 64), cross_attention_dim=64, attention_head_dim=4,
            norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        vae = AutoencoderKL(block_out_channels=(32, 64, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu"))
    return unet, vae, text


def child(args) -> dict:
    """Time one variant; returns samples/s per round and peak memory."""
    from accelerate import Accelerator
    from diffusers import ControlNetModel, DDPMScheduler
    from diffusers.models.attention_processor import AttnProcessor2_0

    import scg_core
    from training.controlnet_step import ControlNetObjective, HintMaker, step_generator
    from training.sd_base import StableDiffusionParts

    torch.set_num_threads(args.threads)
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.precision)
    device = accelerator.device
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    unet, vae, text = build_models(args.shapes)
    controlnet = ControlNetModel.from_unet(unet)
    noise = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
    for m in (unet, vae, text):
        m.requires_grad_(False).eval()
    unet.to(device, dtype)
    controlnet.to(device).train()
    B, R = args.batch, args.resolution
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(B, 3, R, R, generator=g)
    ids = torch.randint(0, text.config.vocab_size, (B, 77), generator=g)
    ae = scg_core.load_default().to(device)
    ours = args.variant.startswith("ours")
    levers = variant_levers(args.variant)
    levers.set_backends()
    if ours:
        unet.set_attn_processor(AttnProcessor2_0())
        controlnet.set_attn_processor(AttnProcessor2_0())
        with torch.no_grad():  # what --cache-latents stores, computed once off the timed loop
            latent_dist = vae.encode(pixels * 2 - 1).latent_dist.parameters.half()
            features = text(ids)[0].half()
        batch = {"pixels": pixels, "latent_dist": latent_dist, "text": features}
        params = list(controlnet.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda" or None)
        parts = StableDiffusionParts(unet, vae, text, None, noise, "bench")
        objective = ControlNetObjective(parts, None, HintMaker(ae, ["brightness"]), device, dtype, levers)
    else:
        vae.to(device, dtype)
        text.to(device, dtype)
        with torch.no_grad():
            hint = ae.hint(pixels.to(device), groups=["brightness"])  # the dataset's conditioning image
        optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-5)
    model, optimizer = accelerator.prepare(controlnet, optimizer)

    def reference_step(gen):
        with torch.no_grad():
            latents = vae.encode((pixels.to(device) * 2 - 1).to(dtype)).latent_dist.sample(gen) * vae.config.scaling_factor
            features = text(ids.to(device))[0]
        eps = torch.randn(latents.shape, generator=gen, device=device, dtype=latents.dtype)
        t = torch.randint(0, 1000, (B,), generator=gen, device=device)
        noisy = noise.add_noise(latents, eps, t)
        down, mid = model(noisy, t, encoder_hidden_states=features, controlnet_cond=hint, return_dict=False)
        pred = unet(noisy, t, encoder_hidden_states=features, down_block_additional_residuals=[d.to(dtype) for d in down],
                    mid_block_additional_residual=mid.to(dtype), return_dict=False)[0]
        return torch.nn.functional.mse_loss(pred.float(), eps.float())

    if ours:
        objective.controlnet, objective.unet = levers.prepare(model), levers.prepare(unet)

    def one_step(n):
        gen = step_generator(device, 0, 0, n)
        with accelerator.autocast():
            loss = objective(batch, gen) if ours else reference_step(gen)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for n in range(args.warmup):
        one_step(n)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for n in range(args.steps):
        loss = one_step(args.warmup + n)
    sync()
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    flops = None
    if args.count_flops and levers.compile == "none":  # counted on the eager step (compiled graphs hide their ops)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            one_step(args.warmup + args.steps)
        flops = counter.get_total_flops()
    return {"samples_per_s": B * args.steps / elapsed, "peak_bytes": peak, "loss": float(loss), "flops_per_step": flops,
            "memory": "CUDA max allocated" if device.type == "cuda" else "peak RSS of the process"}


LEVER_NAMES = {"channels_last": {"channels_last": True}, "compile": {"compile": "default"},
               "compile_graphs": {"compile": "reduce-overhead"}, "tf32": {"tf32": True},
               "cudnn_benchmark": {"cudnn_benchmark": True}, "hint_mixed": {"hint_dtype": "mixed"},
               **{f"sdpa_{b}": {"sdpa_backend": b} for b in ("flash", "efficient", "cudnn", "math")}}
BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}


def variant_levers(variant: str):
    """``ours+channels_last+tf32`` → those :class:`training.speed.Levers`; the reference takes none."""
    from training.speed import Levers

    chosen = {}
    for name in variant.split("+")[1:]:
        if name not in LEVER_NAMES:
            sys.exit(f"unknown lever {name!r}; choose from {', '.join(LEVER_NAMES)}")
        chosen.update(LEVER_NAMES[name])
    return Levers(**chosen)


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if args.device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shapes", default="tiny", choices=["tiny", "sd15"])
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--batches", help="comma-separated batch sizes to sweep (each variant at each size)")
    p.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--variants", default="reference,ours",
                   help=f"comma-separated: reference, ours, ours+LEVER[+LEVER…] with LEVER in {', '.join(LEVER_NAMES)}")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for the FLOPs utilisation")
    p.add_argument("--no-flops", dest="count_flops", action="store_false", help="skip counting the FLOPs of a step")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        variant_levers(v)  # unknown levers fail before anything runs
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [args.batch]
    skip = ("json", "variant", "variants", "batches", "batch", "count_flops", "peak_tflops")
    base = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in skip]
    base += [] if args.count_flops else ["--no-flops"]
    runs: dict[tuple[str, int], list[dict]] = {(v, b): [] for b in batches for v in variants}
    for r in range(args.rounds):
        for (variant, batch), results in runs.items():
            out = subprocess.run([sys.executable, __file__, *base, f"--batch={batch}", "--variant", variant],
                                 capture_output=True, text=True, cwd=REPO)
            if out.returncode:
                sys.exit(f"{variant} (batch {batch}) failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {variant:28s} batch {batch:3d} {results[-1]['samples_per_s']:.3f} samples/s", file=sys.stderr)
    peak = peak_tflops(args)
    summary = {}
    for (variant, batch), rs in runs.items():
        sps = statistics.median(x["samples_per_s"] for x in rs)
        gib = statistics.median(x["peak_bytes"] for x in rs) / 2**30
        flops = next((x["flops_per_step"] for x in rs if x.get("flops_per_step")), None)
        mfu = flops * sps / batch / (peak * 1e12) if flops and peak else None
        summary[f"{variant} @ {batch}"] = {"variant": variant, "batch": batch, "samples_per_s": sps, "peak_GiB": gib,
                                           "samples_per_s_per_GiB": sps / gib, "gflops_per_step": flops and flops / 1e9,
                                           "mfu": mfu}
    memory = next(iter(runs.values()))[0]["memory"]
    print(f"\n{args.shapes} shapes, {args.resolution}², precision {args.precision}, {args.device}"
          f"{f' ({torch.cuda.get_device_name()})' if args.device == 'cuda' else f', {args.threads} threads'}; "
          f"median of {args.rounds} rounds × {args.steps} steps")
    print(f"| step | batch | samples/s | × reference | peak GiB ({memory}) | samples/s per GiB | GFLOP/step | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for s in summary.values():
        ref = summary.get(f"reference @ {s['batch']}")
        ratio = f"{s['samples_per_s'] / ref['samples_per_s']:.2f}×" if ref else ""
        tf = f"{s['gflops_per_step']:,.1f}" if s["gflops_per_step"] else ""
        mfu = f"{100 * s['mfu']:.1f}%" if s["mfu"] is not None else ""
        print(f"| {s['variant']} | {s['batch']} | {s['samples_per_s']:.3f} | {ratio} | {s['peak_GiB']:.2f} | "
              f"{s['samples_per_s_per_GiB']:.3f} | {tf} | {mfu} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                         "runs": {f"{v} @ {b}": rs for (v, b), rs in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
