import pytest
import torch

from scg_core import OFFICIAL_GROUPS, ModularAE, ModularAEConfig


@pytest.fixture
def released_ae():
    """The released architecture (16 × 4, bipolar, stride 4) with seeded random weights."""
    torch.manual_seed(0)
    return ModularAE(groups=OFFICIAL_GROUPS)


@pytest.fixture
def tiny_ae():
    torch.manual_seed(0)
    from scg_core import Group

    return ModularAE(ModularAEConfig(num_modules=3, module_channels=2, kernel_size=3, stride=4),
                     groups=[Group("lum", (0,), "brightness"), Group("E1", (1,), "edges"), Group("E2", (2,), "edges")])


@pytest.fixture
def attribute_dict(monkeypatch):
    """Lightning's ``AttributeDict`` (what it stores ``hyper_parameters`` as), under its real module
    name, without Lightning."""
    import sys
    import types

    name = "pytorch_lightning.utilities.parsing"
    cls = type("AttributeDict", (dict,), {"__module__": name})
    for part in ("pytorch_lightning", "pytorch_lightning.utilities", name):
        monkeypatch.setitem(sys.modules, part, types.ModuleType(part))
    sys.modules[name].AttributeDict = cls
    return cls


def factor_weights(config: ModularAEConfig, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g, dtype=dtype) for n, s in ModularAE(config).expected_shapes().items()}
