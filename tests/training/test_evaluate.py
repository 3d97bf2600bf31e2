import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import scg_core
from scg_core.controlnet.metadata import controlnet_metadata
from training.controlnet_export import export_controlnet
from training.eval_metrics import MissingMetricWeights, fid_metric, psnr_ssim
from training.evaluate import main, parse_args
from training.sd_base import load_base, make_controlnet

from .photos import write_photos
from .tiny_sd import build_tiny_sd, byte_vocabulary

# ---- the metric functions against known values


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The closed form ``‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½)``, by scipy (torchmetrics computes FID its own way)."""
    import scipy.linalg

    covmean = scipy.linalg.sqrtm(sigma1.double().numpy() @ sigma2.double().numpy()).real
    return float((mu1 - mu2).double().pow(2).sum() + torch.trace(sigma1.double() + sigma2.double())
                 - 2 * float(covmean.trace()))


def test_psnr_of_a_constant_offset_is_its_closed_form():
    original = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.8
    d = 0.05
    m = psnr_ssim(original + d, original)
    expected = 10 * math.log10(1 / d**2)  # MSE = d² in colour; the luma weights sum to 1, so in grey too
    torch.testing.assert_close(m["psnr_color"], torch.full((2,), expected), atol=1e-3, rtol=0)
    torch.testing.assert_close(m["psnr_gray"], torch.full((2,), expected), atol=1e-3, rtol=0)


def test_ssim_of_flat_images_is_the_luminance_term_and_of_equal_images_one():
    a, b = torch.full((1, 3, 24, 24), 0.5), torch.full((1, 3, 24, 24), 0.25)
    c1 = 0.01**2  # SSIM's (K1·L)², L = 1
    expected = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)  # no variance: the contrast term is 1
    m = psnr_ssim(a, b)
    assert float(m["ssim_color"][0]) == pytest.approx(expected, abs=1e-5)
    assert float(m["ssim_gray"][0]) == pytest.approx(expected, abs=1e-5)
    x = torch.rand(1, 3, 24, 24)
    assert float(psnr_ssim(x, x)["ssim_color"][0]) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        psnr_ssim(x, x[..., :20])


class Identity(nn.Module):
    """Stand-in feature network: the 'images' already are feature vectors."""

    num_features = 3  # torchmetrics sizes its statistics by this

    def forward(self, x):
        return x.double()


def test_fid_on_gaussian_features_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    n, mu1, mu2 = 40_000, torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.5, 2.0, 1.0])
    real = mu1 + s1 * torch.randn(n, 3, generator=g)
    fake = mu2 + s2 * torch.randn(n, 3, generator=g)
    fid = fid_metric(Identity())
    fid.update(real, real=True)
    fid.update(fake, real=False)
    # independent Gaussians with diagonal covariances: ‖μ1−μ2‖² + Σ(σ1−σ2)²
    population = float((mu1 - mu2).pow(2).sum() + (s1 - s2).pow(2).sum())
    assert float(fid.compute()) == pytest.approx(population, rel=0.03)
    # and exactly the Fréchet distance of the sample statistics
    sample = frechet_distance(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T))
    assert float(fid.compute()) == pytest.approx(sample, rel=1e-6)


# ---- the command on a tiny SD base


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    base = build_tiny_sd(root / "sd")
    photos = write_photos(root / "photos", caption=lambda n: f"pattern {n}")
    parts = load_base(base)
    torch.manual_seed(1)
    controlnet = make_controlnet(parts.unet)
    with torch.no_grad():  # a ControlNet whose hint matters: its zero-initialised convolutions made non-zero
        for name, p in controlnet.named_parameters():
            if any(z in name for z in ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                p.normal_(0, 0.05)
    ae = scg_core.load_default()
    meta = controlnet_metadata(ae, ["brightness", "edges"], random_groups=True, base_model=parts.family)
    cn = export_controlnet(controlnet, root / "scg.safetensors", meta, "fp32")
    return {"root": root, "base": base, "photos": photos, "controlnet": cn, "clip": tiny_clip(root / "clip")}


def tiny_clip(folder):
    """A CLIP model folder as transformers saves one, tiny and random (a stand-in for the real one)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    vocab = byte_vocabulary()
    config = CLIPConfig(text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37,
                                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77},
                        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    tok = folder.with_name("clip_tok")
    tok.mkdir(exist_ok=True)
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"), model_max_length=77)
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer)
    processor.save_pretrained(folder)
    return folder


class PooledFeatures(nn.Module):
    """Stand-in for Inception: uint8 [B,3,H,W] → 6 pooled colour features (float64)."""

    def forward(self, images):
        x = images.double() / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)


def evaluate(setup, out, *extra, fid=PooledFeatures()):
    args = parse_args(["--base", str(setup["base"]), "--controlnet", str(setup["controlnet"]), "--data",
                       str(setup["photos"]), "--num", "3", "--resolution", "64", "--steps", "2", "--batch", "2",
                       "--clip", str(setup["clip"]), "--device", "cpu", "--out", str(out), *extra])
    return main(args, fid_features=fid)


def test_tables_grids_and_groups_from_the_controlnet(setup, tmp_path):
    out = tmp_path / "eval"
    results = evaluate(setup, out, "--canny-controlnet", str(setup["controlnet"]))
    # no --groups: the ControlNet was trained on one group at a time → one evaluation per group, + Canny
    # the group names the metadata records: "edges" is the default's two edge scales
    assert list(results) == ["brightness", "edges_coarse", "edges_fine", "canny"]
    for name in results:
        assert sorted(p.name for p in (out / name / "generated").iterdir()) == [  # the first 3 usable, in path order
            "00000_img0.png", "00001_img2.png", "00002_img4.png"]
        with (out / name / "per_image.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 3 and {"psnr_gray", "psnr_color", "ssim_gray", "ssim_color", "clip_image"} <= set(rows[0])
        r = results[name]
        assert r["images"] == 3 and 0 < r["psnr_gray"] < 60 and -1 <= r["ssim_color"] <= 1
        assert 0 <= r["clip_image"] <= 1 and 0 <= r["clip_text"] <= 100 and r["fid"] >= 0
        grid = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / name / "grid-000.png"))
        assert grid.shape == (3 * 64, 3 * 64, 3)  # rows source | hint | generated
    # the hints are the hosts' hint of the cropped original (brightness) and Canny edges (binary)
    canny = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "canny" / "hints" / "00000_img0.png"))
    assert set(np.unique(canny)) <= {0, 255}
    summary = (out / "summary.md").read_text().splitlines()
    assert summary[2] == "| metric | brightness | edges_coarse | edges_fine | canny |"
    assert [line.split(" |")[0] for line in summary[4:]] == [
        "| PSNR gray ↑", "| PSNR color ↑", "| SSIM gray ↑", "| SSIM color ↑", "| FID ↓", "| CLIP image ↑", "| CLIP text ↑"]
    data = json.loads((out / "summary.json").read_text())
    assert data["edges_fine"]["psnr_color"] == pytest.approx(results["edges_fine"]["psnr_color"])


def test_deterministic_and_resumable(setup, tmp_path):
    from PIL import Image

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    first = evaluate(setup, a, "--groups", "brightness", "--metrics", "psnr,ssim")
    evaluate(setup, b, "--groups", "brightness", "--metrics", "psnr,ssim")
    evaluate(setup, c, "--groups", "brightness", "--metrics", "psnr,ssim", "--batch", "3")
    for f in sorted((a / "brightness" / "generated").iterdir()):
        assert f.read_bytes() == (b / "brightness" / "generated" / f.name).read_bytes(), f.name
        # each image has its own generator (seed + index): another batching changes only float rounding
        other = np.asarray(Image.open(c / "brightness" / "generated" / f.name), dtype=int)
        assert np.abs(np.asarray(Image.open(f), dtype=int) - other).max() <= 3, f.name
    # resume: an image removed is generated again, the others are reused as they are
    kept = a / "brightness" / "generated" / "00000_img0.png"
    removed = a / "brightness" / "generated" / "00001_img2.png"
    stamp, removed_bytes = kept.stat().st_mtime_ns, removed.read_bytes()
    removed.unlink()
    again = evaluate(setup, a, "--groups", "brightness", "--metrics", "psnr,ssim")
    assert kept.stat().st_mtime_ns == stamp and removed.read_bytes() == removed_bytes
    assert again == first
    with pytest.raises(SystemExit, match="other settings: steps"):
        evaluate(setup, a, "--groups", "brightness", "--metrics", "psnr,ssim", "--steps", "3")


def test_bad_inputs_are_named(setup, tmp_path, monkeypatch):
    monkeypatch.setattr("training.eval_metrics.cached_clip", lambda: None)  # whatever this machine's caches hold
    monkeypatch.setattr("training.eval_metrics.cached_inception", lambda: None)
    common = ["--base", str(setup["base"]), "--controlnet", str(setup["controlnet"]), "--data", str(setup["photos"]),
              "--out", str(tmp_path / "o"), "--device", "cpu", "--resolution", "64"]
    with pytest.raises(SystemExit, match="CLIP weights not found.*--clip DIR.*huggingface-cli download"):
        main(parse_args([*common, "--metrics", "clip"]))
    with pytest.raises(SystemExit, match="Inception weights for FID not found.*--inception FILE.*pt_inception"):
        main(parse_args([*common, "--metrics", "fid"]))
    with pytest.raises(MissingMetricWeights):
        fid_metric(tmp_path / "nothing.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no usable images"):
        main(parse_args([*common[:4], "--data", str(empty), *common[6:], "--metrics", "psnr"]))
    other = build_tiny_sd(tmp_path / "sd_other", cross_attention_dim=48)
    with pytest.raises(SystemExit, match="another base model"):
        main(parse_args(["--base", str(other), *common[2:], "--metrics", "psnr"]))
    with pytest.raises(SystemExit, match="unknown group|not a group|no group"):
        main(parse_args([*common, "--metrics", "psnr", "--groups", "sparkles"]))
    with pytest.raises(SystemExit):
        parse_args([*common, "--metrics", "psnr,bleu"])


def test_feature_networks_are_found_in_the_libraries_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from training import eval_metrics

    # the Hugging Face cache layout: models--ORG--NAME/refs/main → snapshots/<commit>/
    repo = tmp_path / "hub" / "models--openai--clip-vit-large-patch14"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert eval_metrics.cached_clip() == repo / "snapshots" / "abc123"
    assert callable(eval_metrics.load_clip(None))  # found there: no error, nothing downloaded
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    try:
        assert eval_metrics.cached_inception() is None
        weights = tmp_path / "torch" / "checkpoints" / eval_metrics.INCEPTION_FILE
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"")
        assert eval_metrics.cached_inception() == weights
    finally:
        torch.hub.set_dir(previous)


def test_converted_official_controlnets_get_their_hint_border(setup, tmp_path):
    # a converted official ControlNet records scg_official_hint; evaluate feeds it as SCG ControlNet Apply does
    from safetensors import safe_open

    from scg_core.controlnet.official_hint import OfficialHint, OfficialHintConv
    from training.evaluate import load_controlnet

    with safe_open(str(setup["controlnet"]), framework="pt") as f:
        meta = dict(f.metadata())
    official = OfficialHint((0.4, 0.45, 0.5))
    parts = load_base(setup["base"])
    plain = load_controlnet(str(setup["controlnet"]), parts.unet)
    export_controlnet(plain, tmp_path / "official.safetensors", {**meta, "scg_official_hint": official.to_json()}, "fp32")
    wrapped = load_controlnet(str(tmp_path / "official.safetensors"), parts.unet)
    assert isinstance(wrapped.controlnet_cond_embedding.conv_in, OfficialHintConv)
    assert not isinstance(plain.controlnet_cond_embedding.conv_in, OfficialHintConv)
    g = torch.Generator().manual_seed(0)
    latents, hint = torch.randn(1, 4, 8, 8, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    text = torch.randn(1, 77, parts.unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        a = plain(latents, 10, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)[0]
        b = wrapped(latents, 10, encoder_hidden_states=text, controlnet_cond=hint, return_dict=False)[0]
    assert [x.shape for x in a] == [x.shape for x in b]  # the crop and pad keep the latent's size
    assert any(not torch.allclose(x, y) for x, y in zip(a, b, strict=True))  # and the border is the official one
