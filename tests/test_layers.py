"""Layers only point down: the package's import graph, function-level imports included, has no cycle; an import
inside a function is there only for a heavy or optional dependency named below (so what a module needs shows at
its top); and `import rsdemo` / `rsdemo --help` load none of the heavy libraries.

The graph is read from the source with ast (nothing is imported), over every module of the package folder.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rsdemo

PKG = Path(rsdemo.__file__).resolve().parent

# A third-party module that may be imported inside a function, and why (the top-level name is what counts).
LAZY = {
    "torch": "modules that need it in a few functions only (files' hashes, evaluate's model scores) stay torch-free",
    "safetensors": "read or written only when a checkpoint or cache file is, and needs torch",
    "open_clip": "only the CLIP family of models uses it (slow to import)",
    "transformers": "only the MiniLM text encoder uses it (slow to import)",
    "timm": "only the EfficientNet-Lite0 backbone uses it",
    "torchvision": "only the ResNet-18 backbone and a few resizes use it",
    "huggingface_hub": "only when a hub repo or hub model is named (RSDEMO_HF_REPO, hf-hub:)",
    "plotly": "only the page's figures",
    "pandas": "only the page's tables",
    "gradio": "only the page",
    "tqdm": "progress bars, only when shown",
    "fcntl": "POSIX-only file locks",
}
# Modules whose function-level imports of the package are their point.
LAZY_MODULES = {
    "rsdemo": "the facade resolves public names on first use, so `import rsdemo` stays cheap",
    "rsdemo.cli": "each command imports what it runs, so `rsdemo --help` answers at once",
}
# Package-internal lazy imports that stand for a heavy dependency: (importer, imported) -> why.
LAZY_INTERNAL = {
    ("rsdemo.evaluate", "rsdemo.features"): "features loads torch and the backbones; recall() stays numpy-only",
    ("rsdemo.drift", "rsdemo.checkpoint"): "checkpoint loads torch, which must start after a worker process has set "
                                          "the kernel variables (MKL_CBWR, ...) it measures",
}
HEAVY = ("torch", "gradio", "faiss", "plotly", "open_clip", "transformers", "timm", "torchvision", "pandas")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODULES = _modules()


def _targets(mod: str, node) -> list[str]:
    """The modules an import statement names (for `from X import name`: X.name when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        pkg = mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]
        base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def _owner(name: str) -> str | None:
    """The package module `name` lies in (the longest module prefix), or None outside the package."""
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rpartition(".")[0]
    return name


def _imports():
    """(importer, imported module, line, inside a function?) for every import statement of the package."""
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        for stmt in tree.body:   # `if TYPE_CHECKING:` / try-except blocks at module level still run at import
            if isinstance(stmt, (ast.If, ast.Try)):
                top |= {id(n) for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(mod, node):
                    yield mod, t, node.lineno, id(node) not in top


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, target, _, _ in _imports():
        dep = _owner(target)
        if dep is not None and dep != mod and not mod.startswith(dep + "."):  # a package's __init__ runs first anyway
            g[mod].add(dep)
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a closed path."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(g)))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_package():
    g = _graph()
    assert {"rsdemo.checkpoint", "rsdemo.models.registry", "rsdemo.data.dataset"} <= set(g)
    assert "rsdemo.models.factory" in g["rsdemo.checkpoint"]            # a module-level import
    assert "rsdemo.checkpoint" in g["rsdemo.cli"]                        # a function-level one
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, ("import cycles (function-level imports included); make the lower module stop importing "
                        "the higher one: " + "; ".join(" <-> ".join(c) for c in cycles))


def test_registry_and_file_helpers_are_leaves():
    g = _graph()
    for leaf in ("rsdemo.models.registry", "rsdemo.files", "rsdemo.version", "rsdemo.data.errors"):
        assert not g[leaf], f"{leaf} must import nothing of the package, imports {sorted(g[leaf])}"
    assert not {d for d in g["rsdemo.models.factory"] if d != "rsdemo.models.registry"} - {
        "rsdemo.models.options"}, "the factory builds on the registry (and the options) only"


# The bottom layers, lowest first: a module in one imports only from its own layer or those below. Everything else
# (checkpoint, features, evaluate, explain, training, index, demo, ui, page, cli) sits above them.
LAYERS = [("rsdemo.files", "rsdemo.version"), ("rsdemo.data",), ("rsdemo.losses", "rsdemo.models")]


def _layer(mod: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if any(mod == n or mod.startswith(n + ".") for n in names):
            return i
    return None


def test_bottom_layers_import_only_downwards():
    bad = [f"{mod} -> {dep}" for mod, deps in _graph().items() if _layer(mod) is not None
           for dep in deps if _layer(dep) is None or _layer(dep) > _layer(mod)]
    assert not bad, "a lower layer imports a higher one: " + "; ".join(sorted(bad))


def test_function_level_imports_only_for_heavy_or_optional_dependencies():
    bad = []
    for mod, target, line, inner in _imports():
        if not inner or mod in LAZY_MODULES:
            continue
        dep = _owner(target)
        if dep is not None:
            if (mod, dep) not in LAZY_INTERNAL:
                bad.append(f"{MODULES[mod].relative_to(PKG.parent)}:{line}: {target} (import it at the top)")
        elif target.split(".")[0] not in LAZY:
            bad.append(f"{MODULES[mod].relative_to(PKG.parent)}:{line}: {target} (not a heavy or optional "
                       f"dependency: import it at the top, or add it to LAZY with the reason)")
    assert not bad, "function-level imports:\n" + "\n".join(bad)


def _loaded(*args: str) -> set[str]:
    """Top-level names of the modules `python -X importtime ARGS` imported."""
    r = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                       cwd=PKG.parent, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    names = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("args", [("-c", "import rsdemo"), ("-m", "rsdemo", "--help")], ids=" ".join)
def test_package_import_and_help_load_no_heavy_library(args):
    heavy = _loaded(*args) & set(HEAVY)
    assert not heavy, f"python {' '.join(args)} imports {sorted(heavy)}: keep them behind the function that needs them"


def test_every_module_is_in_the_module_map():
    """docs/MODULES.md says what each module owns; a new module gets its line there."""
    doc = PKG.parent / "docs" / "MODULES.md"
    if not doc.is_file():
        pytest.skip("no docs/ beside the package (an installed copy)")
    lines = doc.read_text().splitlines()
    missing = []
    for path in MODULES.values():
        rel = path.relative_to(PKG.parent).as_posix()
        folder = rel.rpartition("/")[0] + "/"
        if not any(f"`{rel}`" in ln or (f"`{folder}" in ln and (f"`{path.name}`" in ln or f", {path.name}" in ln
                                                              or f"`{folder}{path.name}`" in ln)) for ln in lines):
            missing.append(rel)
    assert not missing, f"not in docs/MODULES.md (one line: what it owns): {missing}"
