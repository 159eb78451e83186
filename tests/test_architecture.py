"""The package's import graph follows ARCHITECTURE.md: imports only go downward through the
layers and there are no import circles, counting module-level and function-level (lazy)
imports alike; OpenUnlearning's modules are imported only by the OpenUnlearning host.

Layers, top to bottom (imports within one layer are fine, circles are not):
    cli > leaderboard > hosts > tasks > zoo > trainers > evals > data > weighting > losses > bottom
bottom: registry, tokens, utils, configs, the package ``__init__`` and ``plugins`` (the
registry's feed: entry points and ``--plugins`` modules; pure Python, imports only registry).
"""

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

PACKAGE = "atwu_plugin"
ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("cli", "leaderboard", "hosts", "tasks", "zoo", "trainers", "evals", "data", "weighting", "losses",
          "bottom")
BOTTOM = ("registry", "tokens", "utils", "configs", "plugins")
# OpenUnlearning's top-level modules (its src/ on sys.path): only hosts/ may import them.
OPENUNLEARNING_MODULES = ("trainer", "data", "evals")
# Upward imports allowed on purpose: none. Nothing may be added here.
ALLOWED_UPWARD: Set[Tuple[str, str]] = set()

Edge = Tuple[str, str]


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BOTTOM:
        return "bottom"
    if parts[1] in LAYERS:
        return parts[1]
    raise AssertionError(f"{module}: not in any layer of ARCHITECTURE.md; add its folder to LAYERS or BOTTOM")


def package_modules(root: Path = ROOT) -> Dict[str, Path]:
    mods = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def imports_of(name: str, path: Path) -> Iterable[Tuple[str, int]]:
    """``(imported module, line)`` for every import statement anywhere in the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, node.lineno
            for alias in node.names:  # ``from pkg import submodule``
                yield f"{module}.{alias.name}", node.lineno


def import_edges(mods: Dict[str, Path]) -> Tuple[List[Edge], List[str]]:
    """The package's internal import edges, and the OpenUnlearning imports outside hosts/."""
    edges, ou_outside_hosts = set(), []
    for name, path in mods.items():
        for target, line in imports_of(name, path):
            if target in mods and target != name:
                edges.add((name, target))
            top = target.split(".")[0]
            if top in OPENUNLEARNING_MODULES and layer(name) != "hosts":
                ou_outside_hosts.append(f"{name}:{line} imports OpenUnlearning's {target}")
    return sorted(edges), ou_outside_hosts


def upward_imports(edges: Iterable[Edge], allowed: Set[Edge] = frozenset()) -> List[str]:
    return [f"{a} ({layer(a)}) imports {b} ({layer(b)}), a higher layer" for a, b in edges
            if LAYERS.index(layer(b)) < LAYERS.index(layer(a)) and (a, b) not in allowed]


def import_circles(edges: Iterable[Edge]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: Dict[str, List[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, on_stack, stack, circles = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
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
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def violations(edges: List[Edge], allowed: Set[Edge] = frozenset()) -> List[str]:
    return upward_imports(edges, allowed) + [f"import circle: {' <-> '.join(c)}" for c in import_circles(edges)]


# ---- the package ------------------------------------------------------------------------------
def test_every_module_is_in_a_layer():
    for name in package_modules():
        layer(name)


def test_no_upward_imports_and_no_circles():
    edges, _ = import_edges(package_modules())
    assert len(edges) > 100  # the graph was read
    problems = violations(edges, ALLOWED_UPWARD)
    assert not problems, "\n".join(problems)


def test_openunlearning_is_imported_only_by_its_host():
    _, outside = import_edges(package_modules())
    assert not outside, "\n".join(outside)


# ---- the checker itself, on synthetic graphs ----------------------------------------------------
def test_checker_flags_an_upward_import():
    ok = [("atwu_plugin.trainers.base", "atwu_plugin.losses.forget"), ("atwu_plugin.cli.demo", "atwu_plugin.registry")]
    assert violations(ok) == []
    up = ok + [("atwu_plugin.losses.forget", "atwu_plugin.weighting.base")]  # a loss reaching up into weighting
    problems = violations(up)
    assert problems == ["atwu_plugin.losses.forget (losses) imports atwu_plugin.weighting.base (weighting), "
                        "a higher layer"]
    assert violations([("atwu_plugin.registry", "atwu_plugin.weighting")])  # the bottom imports nothing above
    assert violations(up, allowed={up[-1]}) == []  # the allow-list is the only way past


def test_checker_flags_a_circle_within_one_layer():
    same_layer = [("atwu_plugin.hosts.lite", "atwu_plugin.hosts.lite_cell")]
    assert violations(same_layer) == []
    circle = same_layer + [("atwu_plugin.hosts.lite_cell", "atwu_plugin.hosts.checks"),
                           ("atwu_plugin.hosts.checks", "atwu_plugin.hosts.lite")]
    assert violations(circle) == [
        "import circle: atwu_plugin.hosts.checks <-> atwu_plugin.hosts.lite <-> atwu_plugin.hosts.lite_cell"]


def test_lazy_imports_count(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "losses").mkdir(parents=True)
    (pkg / "trainers").mkdir()
    for init in (pkg / "__init__.py", pkg / "losses" / "__init__.py", pkg / "trainers" / "__init__.py"):
        init.write_text("")
    (pkg / "trainers" / "base.py").write_text("")
    (pkg / "losses" / "forget.py").write_text("def f():\n    from ..trainers import base\n")
    edges, _ = import_edges(package_modules(tmp_path))
    assert ("atwu_plugin.losses.forget", "atwu_plugin.trainers.base") in edges
    assert violations(edges)
