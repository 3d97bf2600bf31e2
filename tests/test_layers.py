"""scg_core is layered: model → formats → controlnet → tools → hosts → the commands. Each module
imports only from its own layer or those before it, and no import — at module level or inside a
function — closes a cycle (two cycles used to be patched with late imports)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "scg_core"
LAYERS = ["model", "formats", "controlnet", "tools", "hosts", None]  # None: the package's own files
HOST_PACKAGES = {"comfy", "comfy_extras", "folder_paths", "nodes", "gradio", "modules", "accelerate", "diffusers",
                 "transformers", "scripts", "training"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(scg_core modules, other top-level packages) that ``path`` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                # `from ..formats import weights` imports the module scg_core.formats.weights
                targets = [f"{target}.{a.name}" for a in node.names] + ([target] if node.module else [])
            elif node.module.split(".")[0] == "scg_core":
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                targets = []
                if not targets:
                    outer.add(node.module.split(".")[0])
            inner.update(targets)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                (inner if alias.name.split(".")[0] == "scg_core" else outer).add(alias.name.split(".")[0]
                                                                                 if alias.name.split(".")[0] != "scg_core"
                                                                                 else alias.name)
    return inner, outer


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(target: str) -> str:
    """``scg_core.model.modular_ae.ModularAE`` → the module that defines it."""
    while target not in MODULES and "." in target:
        target = target.rpartition(".")[0]
    return target


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else LAYERS.index(None)


def test_every_module_sits_in_a_layer():
    stray = [m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in LAYERS
             and m not in ("scg_core.__main__", "scg_core.convert", "scg_core.characterize")]
    assert not stray, f"modules outside the layers: {stray}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_from_its_layer_or_earlier(module):
    inner, outer = imports_of(MODULES[module])
    later = sorted(t for t in map(resolve, inner) if layer_of(t) > layer_of(module))
    assert not later, f"{module} (layer {LAYERS[layer_of(module)]}) imports from later layers: {later}"
    assert not outer & HOST_PACKAGES, f"{module} imports host or training packages: {sorted(outer & HOST_PACKAGES)}"


def test_no_import_cycles():
    graph = {m: {resolve(t) for t in imports_of(p)[0]} - {m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(t):] + [t]) if t in path
                                     else f"import cycle through {t}")
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_public_api_is_unchanged():
    import scg_core

    for name in ["DEFAULT_WEIGHTS", "Group", "HINT_CONTRACT_VERSION", "ModularAE", "ModularAEConfig",
                 "NoDefaultWeightsError", "OFFICIAL_GROUPS", "WeightsError", "load", "load_default",
                 "read_metadata", "save"]:
        assert hasattr(scg_core, name), name


REPO = ROOT.parent


def top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found


@pytest.mark.parametrize("folder", ["devtools", "docs", "benchmarks", "workflows", "training", "nodes", "scripts"])
def test_tooling_never_imports_the_tests(folder):
    # tests may import tooling, never the other way round (benchmarks and docs used to import tests/)
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / folder).rglob("*.py"))
                 if "tests" in top_level_imports(p)]
    assert not offenders, f"import from tests/: {offenders}"


@pytest.mark.parametrize("folder", ["nodes", "scripts", "scg_core", "training"])
def test_what_runs_for_users_never_imports_build_tools(folder):
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / folder).rglob("*.py"))
                 if top_level_imports(p) & {"devtools", "tests", "workflows", "benchmarks"}]
    assert not offenders, f"run-time code imports build or test tools: {offenders}"
