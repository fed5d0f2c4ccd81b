"""The package's import layers: every import (module-level or inside a function) goes
down the list below, never up, and no two modules import each other, directly or
around a loop. A new module joins a layer here; an import that would go up means the
code it needs lives in the wrong place (see docs/architecture.md)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom first. A unit is a top-level module or subpackage of nolabel.
LAYERS = [
    ["names", "atomic"],                            # no torch: the CLI's help reads these
    ["ops"],                                         # tensor operations, no nolabel state
    ["backbones", "losses", "views", "data", "metrics", "monitor", "optim"],
    ["heads", "view_presets"],                       # head builders; every method's view preset (on views)
    ["methods"],
    ["config"],                                      # dataclasses of every method's options
    ["presets", "dist_setup", "tensorboard_log", "checkpoint"],
    ["runs", "runlog", "knn_monitor"],               # the run folder; logs; in-training k-NN
    ["validation", "export_formats"],
    ["train_setup"],                                 # building a run: data, resolved config, method
    ["train"],                                       # the loop
    ["evaluate"],
    ["use"],
    ["cluster_collection", "demo_run", "report"],
    ["evaluate.commands", "use.commands"],           # command-line glue: run, print, write pages
    ["cli"],
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "nolabel").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The nolabel modules ``name`` imports anywhere in its text (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            while t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t.startswith("nolabel") and t in modules and t != name:
                found.add(t)
    return found


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if ".".join(parts[1:3]) in LAYER:                # a module with a layer of its own (the commands)
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 else None      # None: the package itself (nolabel/__init__.py)


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _modules()} - {None}
    assert units <= set(LAYER), f"add these to LAYERS in {__file__}: {sorted(units - set(LAYER))}"


def test_imports_go_down():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        unit = _unit(name)
        for target in _imports(name, path, modules):
            to = _unit(target)
            if unit is None or to is None or to == unit:   # the package root (lazy API, __version__); within a unit
                continue
            if LAYER.get(to, -1) >= LAYER.get(unit, -1):
                upward.append(f"{name} -> {target} (layer {LAYER.get(unit)} -> {LAYER.get(to)})")
    assert not upward, "imports that go up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of code: drop those edges.
    graph = {m: {t for t in ts if not (modules[m].name == "__init__.py" and t.startswith(m + "."))}
             for m, ts in graph.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):                                    # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule fails on a planted upward import (methods importing the training loop)."""
    modules = _modules()
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from nolabel.train import train\n")
    assert "nolabel.train" in _imports("nolabel.methods.fake", fake, modules)
    assert LAYER["train"] > LAYER["methods"]
