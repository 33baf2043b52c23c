"""The shape of the code: imports point down with no cycle, the library never imports the
command line, the studio replaces no library function, no module grows past ~700 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folders and the package names they install as.
PACKAGES = {"jaxdream": ROOT / "jaxdream", "jaxdream.weights": ROOT / "weights", "jaxdream.cli": ROOT / "cli"}


def _modules() -> dict[str, Path]:
    mods = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(name: str, path: Path, known: dict) -> set[str]:
    """The modules of ``known`` that module ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            for alias in node.names:
                out.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def test_the_graph_sees_known_edges():
    graph = _graph()
    assert "jaxdream.objectives.gatys" in graph["jaxdream.style.run"] or \
        "jaxdream.objectives.gatys" in graph["jaxdream.style.plan"]
    assert "jaxdream.jobs.command" in graph["jaxdream.cli.main"]
    assert "jaxdream.runtime.memory" in graph["jaxdream.media.images"]


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_the_library_never_imports_the_command_line():
    graph = _graph()
    offenders = {m: sorted(i for i in deps if i.startswith("jaxdream.cli"))
                 for m, deps in graph.items() if not m.startswith("jaxdream.cli")}
    assert {m: d for m, d in offenders.items() if d} == {}


@pytest.mark.parametrize("layer, below", [
    ("jaxdream.runtime", ("jaxdream.nets", "jaxdream.objectives", "jaxdream.optim", "jaxdream.style",
                          "jaxdream.media", "jaxdream.jobs", "jaxdream.studio", "jaxdream.dream")),
    ("jaxdream.nets", ("jaxdream.objectives", "jaxdream.optim", "jaxdream.style", "jaxdream.jobs",
                       "jaxdream.studio", "jaxdream.dream", "jaxdream.video")),
    ("jaxdream.optim", ("jaxdream.objectives", "jaxdream.style", "jaxdream.jobs", "jaxdream.studio",
                        "jaxdream.dream", "jaxdream.video")),
    ("jaxdream.objectives", ("jaxdream.style", "jaxdream.jobs", "jaxdream.studio", "jaxdream.dream",
                             "jaxdream.video")),
    ("jaxdream.style", ("jaxdream.jobs", "jaxdream.studio", "jaxdream.video")),
    ("jaxdream.jobs", ("jaxdream.studio",)),
])
def test_imports_point_down(layer, below):
    """A layer imports nothing from the layers built on it."""
    graph = _graph()
    up = {m: sorted(d for d in deps if d.startswith(below)) for m, deps in graph.items()
          if m == layer or m.startswith(layer + ".")}
    assert {m: d for m, d in up.items() if d} == {}


def _module_setattrs(path: Path) -> list[str]:
    """``setattr(m, ...)`` calls in a file whose first argument is a module it imported."""
    tree = ast.parse(path.read_text())
    modules = {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names if alias.name.islower()}
    return [ast.unparse(node) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr"
            and isinstance(node.args[0], ast.Name) and node.args[0].id in modules]


def test_the_setattr_check_sees_a_module(tmp_path):
    (tmp_path / "m.py").write_text("from jaxdream import style\nsetattr(style, 'stylize', None)\n"
                                   "setattr(job, 'state', 1)\n")
    assert _module_setattrs(tmp_path / "m.py") == ["setattr(style, 'stylize', None)"]


def test_the_studio_replaces_no_library_function():
    found = {p.name: _module_setattrs(p) for p in (ROOT / "jaxdream" / "studio").glob("*.py")}
    assert {k: v for k, v in found.items() if v} == {}


def test_no_module_past_700_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > 700}
    assert long == {}
