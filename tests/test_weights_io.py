import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import scg_core
from scg_core import (
    NoDefaultWeightsError,
    WeightsError,
    load,
    read_metadata,
    save,
)
from scg_core.formats import weights as weights_io


def test_round_trip_keeps_weights_config_groups_and_provenance(released_ae, tmp_path):
    path = save(released_ae, tmp_path / "ae.safetensors", provenance={"trained_on": "test"})
    loaded = load(path)
    for name, p in released_ae.named_parameters():
        assert torch.equal(p, getattr(loaded, name)), name
    assert loaded.config == released_ae.config
    assert loaded.groups == released_ae.groups
    assert loaded.provenance == {"trained_on": "test"}
    x = torch.rand(1, 3, 40, 40)
    assert torch.equal(loaded.hint(x, groups=["HC3"]), released_ae.hint(x, groups=["HC3"]))
    meta = read_metadata(path)
    assert meta["format_version"] == 1 and meta["config"].num_modules == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae.safetensors"]  # no temp file left


def test_load_can_cast_dtype(released_ae, tmp_path):
    path = save(released_ae, tmp_path / "ae.safetensors")
    assert load(path, dtype=torch.float64).pathway_a.dtype == torch.float64


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="is a folder, not a Modular AE weight file"):
        load(tmp_path)


@pytest.mark.parametrize("loader", ["file", "default"])
def test_loaded_models_are_inference_ready(released_ae, tmp_path, loader):
    path = save(released_ae, tmp_path / "ae.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        model = load(path) if loader == "file" else scg_core.load_default()
        hint = model.hint(torch.rand(1, 3, 40, 40), groups=[model.groups[0].name])
        hint.numpy()  # raises for a tensor that requires grad
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert not hint.requires_grad and hint.grad_fn is None


def test_trainable_load_gives_gradients(released_ae, tmp_path):
    path = save(released_ae, tmp_path / "ae.safetensors")
    model = load(path, trainable=True)
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.hint(torch.rand(1, 3, 40, 40)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert scg_core.load_default(trainable=True).pathway_a.requires_grad


def test_truncated_file_is_named_as_unreadable(released_ae, tmp_path):
    path = save(released_ae, tmp_path / "ae.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load(path)


def test_not_safetensors(tmp_path):
    path = tmp_path / "photo.safetensors"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(WeightsError, match="official-ae"):
        load(path)


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    path = tmp_path / "controlnet.safetensors"
    save_file({"control_model.zero_convs.0.0.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsError, match="not a Modular AE"):
        load(path)


def _rewrite(path, tensors=None, **meta_changes):
    with open(path, "rb"):
        pass
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    tensors = tensors if tensors is not None else load_file(path)
    meta.update(meta_changes)
    save_file(tensors, path, metadata=meta)


def test_wrong_tensors_are_listed(released_ae, tmp_path):
    path = save(released_ae, tmp_path / "ae.safetensors")
    tensors = load_file(path)
    tensors["extra"] = tensors.pop("surround")
    _rewrite(path, tensors)
    with pytest.raises(WeightsError, match=r"missing tensors \['surround'\], unexpected tensors \['extra'\]"):
        load(path)


def test_wrong_shape_is_named(released_ae, tmp_path):
    path = save(released_ae, tmp_path / "ae.safetensors")
    tensors = load_file(path)
    tensors["module_kernels"] = torch.zeros(32, 1, 5, 5)
    _rewrite(path, tensors)
    with pytest.raises(WeightsError, match=r"'module_kernels' has shape \(32, 1, 5, 5\), expected \(64, 1, 5, 5\)"):
        load(path)


def test_non_finite_weights_are_refused(released_ae, tmp_path):
    path = save(released_ae, tmp_path / "ae.safetensors")
    tensors = load_file(path)
    tensors["pathway_a"][0, 0, 0, 0] = float("nan")
    _rewrite(path, tensors)
    with pytest.raises(WeightsError, match="NaN"):
        load(path)


def test_bad_metadata(released_ae, tmp_path):
    path = save(released_ae, tmp_path / "ae.safetensors")
    _rewrite(path, config="{not json")
    with pytest.raises(WeightsError, match="invalid Modular AE metadata"):
        load(path)
    path = save(released_ae, tmp_path / "ae.safetensors")
    _rewrite(path, scg_format_version="7")
    with pytest.raises(WeightsError, match="Upgrade scg_core"):
        load(path)
    path = save(released_ae, tmp_path / "ae.safetensors")
    _rewrite(path, groups=json.dumps([{"name": "X", "modules": [99]}]))
    with pytest.raises(WeightsError, match="modules \\[99\\]"):
        load(path)


def test_missing_default_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(weights_io, "DEFAULT_WEIGHTS", tmp_path / "default.safetensors")
    with pytest.raises(NoDefaultWeightsError, match="bundled default Modular AE is missing"):
        scg_core.load_default()


def test_default_is_loaded_when_present(monkeypatch, tmp_path, released_ae):
    monkeypatch.setattr(weights_io, "DEFAULT_WEIGHTS", save(released_ae, tmp_path / "default.safetensors"))
    assert scg_core.load_default().groups == released_ae.groups
