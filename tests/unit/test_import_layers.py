"""Imports inside skr_ray flow one way: no circles, and no module imports from a layer above its own.

Every ``skr_ray/**/*.py`` is parsed (never imported) and every import of an skr_ray module is an edge: module-level
ones and those inside functions alike, ``import a.b``, ``from a import b``, relative ``from . import x``, and
``importlib.import_module("skr_ray....")`` / ``__import__`` with a literal name, and a string that is nothing but
an skr_ray module or ``module:function`` (what a task registers as its stages and hooks, imported by name when
they run). The layers, from the ground up
(docs/pipeline.md draws them):

  0  config, artifacts, schema, memory, registry,   settings, the run folder, row schemas, the task registry,
     splits                                         the one train/validation split
  1  models/, corpus, pages, ray_utils, tracking    backbones, heads and checkpoints; input data; Ray; tracking
  2  annotate/, train/, evaluate/                   the runners every task shares
  3  tasks/                                         ir, ad, od: prompts, labels, stages, training hooks
  4  cli, serve/, plan, jobs_client, local_cluster, compare, tiny_vlm     what users run

A module may import from its own layer or the layers below. Task-specific behaviour reaches layers 0-2 only as
data: a :class:`skr_ray.registry.Task` handed down or looked up by name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "skr_ray"

LAYERS: dict[int, tuple[str, ...]] = {
    0: ("skr_ray", "skr_ray.config", "skr_ray.artifacts", "skr_ray.schema", "skr_ray.memory", "skr_ray.registry",
        "skr_ray.splits"),
    1: ("skr_ray.models", "skr_ray.corpus", "skr_ray.pages", "skr_ray.ray_utils", "skr_ray.tracking"),
    2: ("skr_ray.annotate", "skr_ray.train", "skr_ray.evaluate"),
    3: ("skr_ray.tasks",),
    4: ("skr_ray.cli", "skr_ray.serve", "skr_ray.plan", "skr_ray.jobs_client", "skr_ray.local_cluster",
        "skr_ray.compare", "skr_ray.tiny_vlm"),
}
"""Layer of a module: the longest entry that is the module or a package above it ('skr_ray' alone is the empty
package ``__init__``; every other module must be matched by a longer entry)."""

MODULE_STRING = re.compile(r"(skr_ray(?:\.\w+)+)(?::\w+)?")
"""A string constant naming an skr_ray module (``skr_ray.tasks.ir.training``) or a function in one
(``skr_ray.train.trainer:run_training``)."""


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (layer, len(prefix))
    if best is None or (best[1] == len("skr_ray") and module != "skr_ray"):
        return None
    return best[0]


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(dotted name, line) of everything ``tree`` imports, anywhere in the file; relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import name` imports pkg.name when that is a module, else pkg (resolved by the caller)
            out += [(f"{source}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out.append((node.args[0].value, node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            named = MODULE_STRING.fullmatch(node.value)
            if named:
                out.append((named.group(1), node.lineno))
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {skr_ray module it imports: first line}, for every module under ``root``."""
    known = modules(root)
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(), str(path))
        for name, line in imported_names(tree, module, path.name == "__init__.py"):
            if name.split(".")[0] != "skr_ray":
                continue
            while name not in known and "." in name:  # a name inside a module, or a module not in this tree
                name = name.rpartition(".")[0]
            if name != module and name in known:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself): Tarjan's
    algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, {}):
                    found.append(sorted(component))
    return found


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for module in sorted(graph):
        for target, line in sorted(graph[module].items()):
            if layer_of(module) is not None and layer_of(target) is not None and layer_of(target) > layer_of(module):
                out.append(f"{module.replace('.', '/')}.py:{line}: {module} (layer {layer_of(module)}) imports "
                           f"{target} (layer {layer_of(target)})")
    return out


def describe_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    members = set(component)
    edges = [f"{m} -> {t} (line {line})" for m in component for t, line in sorted(graph[m].items()) if t in members]
    return f"circle of {len(component)} modules: " + "; ".join(edges)


def test_every_module_has_a_layer():
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"modules outside the layer map (add them to LAYERS and docs/pipeline.md): {unplaced}"


def test_imports_form_no_circle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "imports inside skr_ray run in circles:\n" + "\n".join(describe_cycle(graph, c) for c in found)


def test_no_module_imports_from_a_higher_layer():
    found = upward_imports(import_graph())
    assert not found, "imports from a lower layer up to a higher one:\n" + "\n".join(found)


def test_the_checks_see_every_kind_of_import(tmp_path):
    """A back-import written in any of the forms the checks read is caught, as a circle and as an upward arrow."""
    root = tmp_path / "skr_ray"
    for sub in ("models", "tasks", "tasks/od"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "config.py").write_text("def check():\n    from skr_ray.tasks.od import probe\n")
    (root / "models" / "heads.py").write_text("import importlib\n\ndef f():\n"
                                              "    return importlib.import_module('skr_ray.tasks.od.probe')\n")
    (root / "tasks" / "od" / "probe.py").write_text("from .. import od\nfrom ...config import check\n"
                                                    "import skr_ray.models.heads\n")
    (root / "models" / "loading.py").write_text('HOOKS = {"train": "skr_ray.tasks.od.probe:fit"}\n')
    graph = import_graph(root)
    assert graph["skr_ray.config"] == {"skr_ray.tasks.od.probe": 2}
    assert graph["skr_ray.models.heads"] == {"skr_ray.tasks.od.probe": 4}
    assert graph["skr_ray.tasks.od.probe"] == {"skr_ray.tasks.od": 1, "skr_ray.config": 2, "skr_ray.models.heads": 3}
    assert graph["skr_ray.models.loading"] == {"skr_ray.tasks.od.probe": 1}
    assert cycles(graph) == [["skr_ray.config", "skr_ray.models.heads", "skr_ray.tasks.od.probe"]]
    assert [line.split(": ", 1)[1] for line in upward_imports(graph)] == [
        "skr_ray.config (layer 0) imports skr_ray.tasks.od.probe (layer 3)",
        "skr_ray.models.heads (layer 1) imports skr_ray.tasks.od.probe (layer 3)",
        "skr_ray.models.loading (layer 1) imports skr_ray.tasks.od.probe (layer 3)",
    ]
