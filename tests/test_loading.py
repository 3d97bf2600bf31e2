"""scg_core.hosts.loading: the one cached loader every host uses, and the bundled default's name."""

import os
from pathlib import Path

import pytest

from scg_core import NoDefaultWeightsError, load_default, save
from scg_core.formats import weights
from scg_core.hosts.loading import DEFAULT_NAME, ModelCache, file_key, is_default


def test_the_bundled_default_is_loaded_once_ready_for_inference():
    cache = ModelCache()
    model = cache.load()
    assert cache.load(None) is model and cache.load(weights.DEFAULT_WEIGHTS) is model
    assert model in cache and not any(p.requires_grad for p in model.parameters()) and not model.training


def test_a_replaced_file_is_loaded_again_and_its_old_version_dropped(tmp_path):
    path = save(load_default(), tmp_path / "mine.safetensors")
    cache = ModelCache()
    first = cache.load(path)
    assert cache.load(str(path)) is first
    os.utime(path, ns=(1, 1))  # the file was replaced
    second = cache.load(path)
    assert second is not first and second in cache and first not in cache


def test_the_key_is_path_mtime_and_size(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    os.utime(path, ns=(5, 7))
    assert file_key(path) == (str(path), 7, 3)
    with pytest.raises(OSError):
        file_key(tmp_path / "gone")


def test_errors_name_the_file_and_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        ModelCache().load(tmp_path / "gone.safetensors")
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", tmp_path / "none.safetensors")
    with pytest.raises(NoDefaultWeightsError, match="bundled default Modular AE is missing.*reinstall"):
        ModelCache().load()


def test_the_default_choice_has_one_name_in_every_host(monkeypatch):
    import nodes.models

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "scripts"))  # as A1111 imports it
    from scg_webui import service

    assert DEFAULT_NAME == "default (bundled)"  # saved in workflows and host settings: permanent
    assert nodes.models.DEFAULT_NAME is DEFAULT_NAME and service.DEFAULT_NAME is DEFAULT_NAME
    assert nodes.models.list_autoencoders()[0] == DEFAULT_NAME and service.list_autoencoders("")[0] == DEFAULT_NAME
    assert is_default(DEFAULT_NAME) and is_default("") and is_default(None) and not is_default("mine.safetensors")
