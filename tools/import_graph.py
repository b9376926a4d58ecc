"""The import graph of the `latbot` package, checked against the layer table of docs/architecture.md
("## Layers"): no cycles, no upward imports, every module placed in a layer.

Every `.py` file under the package is parsed with `ast` (nothing is imported). Every import counts, wherever
it stands: top level, inside a function, a class body, a `try`, under `if TYPE_CHECKING:`; and so do
`importlib.import_module("latbot....")` / `__import__("latbot....")` with a literal name. Importing
`a.b.c` in any form also imports the packages on the way (`a.b`: its `__init__` runs first), except those
that enclose the importing module (`from latbot.data import spaces` inside `latbot/data/clips.py` is an
edge to `latbot.data.spaces` only). `from pkg import name` imports `pkg.name` where that is a module.

    python tools/import_graph.py                  # one line per problem; exit 1 if there is any
    python tools/import_graph.py --json           # the same, machine-readable
    python tools/import_graph.py --root DIR --layers FILE.md
    python tools/import_graph.py --planted        # plant every known kind of break into a small synthetic
                                                  # package and print the markdown table of what was caught

tests/test_import_graph.py runs the check on the package and reuses PLANTED_BREAKS from here.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tempfile
import textwrap
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / "latbot"
DEFAULT_LAYERS = REPO / "docs" / "architecture.md"
IMPORT_FUNCTIONS = {"import_module", "__import__"}  # importlib.import_module, builtins.__import__


# -- the layer table -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    index: int
    name: str
    entries: tuple[str, ...]  # module names or package prefixes; a dotless one (the root) matches exactly

    def __str__(self) -> str:
        return f"{self.index} {self.name}"


def parse_layers(markdown: str) -> list[Layer]:
    """The rows `| 0 | core | `latbot`, `latbot.errors` | ... |` of the table under the `## Layers` heading."""
    match = re.search(r"^## Layers[ \t]*\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    if match is None:
        raise ValueError("no '## Layers' section")
    layers: list[Layer] = []
    for line in match.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and len(cells) >= 3 and cells[0].isdigit():
            layers.append(Layer(int(cells[0]), cells[1], tuple(re.findall(r"`([^`]+)`", cells[2]))))
    if not layers:
        raise ValueError("the '## Layers' section has no table rows of the form | N | name | `module`, ... |")
    seen: dict[str, Layer] = {}
    for layer in layers:
        for entry in layer.entries:
            if entry in seen:
                raise ValueError(f"`{entry}` is in two layer rows: {seen[entry]} and {layer}")
            seen[entry] = layer
    return layers


def layer_of(module: str, layers: Iterable[Layer]) -> Layer | None:
    """The row whose entry matches `module` longest; a dotless entry (the root package) only exactly."""
    best: tuple[int, Layer] | None = None
    for layer in layers:
        for entry in layer.entries:
            matches = module == entry or ("." in entry and module.startswith(entry + "."))
            if matches and (best is None or len(entry) > best[0]):
                best = (len(entry), layer)
    return best[1] if best else None


# -- modules and their imports ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Module:
    name: str  # "latbot.data.clips"; a package is named by its __init__.py
    file: str  # shown in messages: relative to the package's parent directory, "latbot/data/clips.py"
    path: Path
    is_package: bool


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def find_modules(root: Path) -> dict[str, Module]:
    """Every `.py` file under the package directory `root` (the package is named after the directory)."""
    modules: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent)
        if "__pycache__" in relative.parts:
            continue
        parts = relative.with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = Module(name, relative.as_posix(), path, is_package)
    return modules


def _ancestors(name: str) -> Iterator[str]:
    """The enclosing packages of a dotted name, innermost first: "a.b.c" → "a.b", "a"."""
    while "." in name:
        name = name.rpartition(".")[0]
        yield name


def _package_of(module: Module) -> str:
    """The package a relative import in `module` starts from: itself for an __init__, else its parent."""
    return module.name if module.is_package else module.name.rpartition(".")[0]


def _resolve_relative(package: str, level: int, name: str) -> str | None:
    """`from ..x import y` (level 2, name "x") in a module of `package` → "<parent of package>.x";
    None if it climbs above the root."""
    base = package
    for _ in range(level - 1):
        if "." not in base:
            return None
        base = base.rpartition(".")[0]
    return f"{base}.{name}" if name else base


def _named_imports(module: Module, tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(dotted name, line) for every import in the file, wherever it stands. A `from pkg import a, b`
    yields "pkg", "pkg.a", "pkg.b" (the last two count only if they turn out to be modules)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(_package_of(module), node.level, node.module or "") if node.level else node.module
            if base:
                yield base, node.lineno
                for alias in node.names:
                    if alias.name != "*":
                        yield f"{base}.{alias.name}", node.lineno
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            first = node.args[0]
            if called in IMPORT_FUNCTIONS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                name = first.value
                if name.startswith("."):  # import_module(".x", package="latbot.data" | __package__)
                    package = _literal_package(module, node)
                    stripped = name.lstrip(".")
                    name = package and _resolve_relative(package, len(name) - len(stripped), stripped)
                if name:
                    yield name, node.lineno


def _literal_package(module: Module, call: ast.Call) -> str | None:
    """The `package` argument of import_module when it is a literal string or `__package__`."""
    candidates = [kw.value for kw in call.keywords if kw.arg == "package"] + call.args[1:2]
    for arg in candidates:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Name) and arg.id == "__package__":
            return _package_of(module)
    return None


def imports_of(module: Module, modules: dict[str, Module]) -> list[Edge]:
    """The edges from `module` to other modules of the package, one per (statement, target), in line order."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=module.file)
    enclosing = set(_ancestors(module.name))
    edges: dict[tuple[str, int], Edge] = {}
    for name, line in _named_imports(module, tree):
        # the module named, or the deepest module on its way ("pkg.CONSTANT" → "pkg"), then the packages
        # whose __init__ runs before it
        target = next((n for n in (name, *_ancestors(name)) if n in modules), None)
        if target is None:
            continue  # outside the package (stdlib, torch, ...)
        for executed in (target, *_ancestors(target)):
            if executed != module.name and executed not in enclosing and executed in modules:
                edges.setdefault((executed, line), Edge(module.name, executed, module.file, line))
    return sorted(edges.values(), key=lambda e: (e.line, e.target))


# -- problems --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cycle:
    modules: tuple[str, ...]  # the whole strongly connected component, sorted
    path: tuple[Edge, ...]  # one concrete cycle through it, each edge with its file:line

    kind = "cycle"

    @property
    def files(self) -> set[str]:
        return {edge.file for edge in self.path}

    def __str__(self) -> str:
        # "a (a.py:3) -> b": a imports b at a.py:3
        steps = " -> ".join(f"{edge.source} ({edge.where})" for edge in self.path)
        line = f"cycle of {len(self.modules)}: {steps} -> {self.path[0].source}"
        rest = sorted(set(self.modules) - {edge.source for edge in self.path})
        if rest:
            line += f"; the other {len(rest)} in it: {', '.join(rest)}"
        return line


@dataclass(frozen=True)
class Upward:
    edge: Edge
    source_layer: Layer
    target_layer: Layer

    kind = "upward"

    @property
    def files(self) -> set[str]:
        return {self.edge.file}

    def __str__(self) -> str:
        e = self.edge
        return f"upward: {e.where} {e.source} ({self.source_layer}) imports {e.target} ({self.target_layer})"


@dataclass(frozen=True)
class Unplaced:
    module: str
    file: str

    kind = "unplaced"

    @property
    def files(self) -> set[str]:
        return {self.file}

    def __str__(self) -> str:
        return f"unplaced: {self.file} {self.module} matches no row of the layer table"


@dataclass
class Report:
    modules: int
    edges: int
    cycles: list[Cycle]
    upward: list[Upward]
    unplaced: list[Unplaced]

    @property
    def problems(self) -> list[Cycle | Upward | Unplaced]:
        return [*self.cycles, *self.upward, *self.unplaced]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        def count(items: list, noun: str) -> str:
            return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"

        counts = ", ".join(
            [count(self.cycles, "cycle"), count(self.upward, "upward import"), count(self.unplaced, "unplaced module")]
        )
        return f"import graph: {self.modules} modules, {self.edges} edges: " + ("ok" if self.ok else counts)

    def lines(self) -> list[str]:
        return [str(problem) for problem in self.problems]

    def to_json(self) -> dict:
        def edge(e: Edge) -> dict:
            return {"from": e.source, "to": e.target, "file": e.file, "line": e.line}

        return {
            "ok": self.ok,
            "modules": self.modules,
            "edges": self.edges,
            "cycles": [{"modules": list(c.modules), "path": [edge(e) for e in c.path]} for c in self.cycles],
            "upward": [
                {**edge(u.edge), "from_layer": str(u.source_layer), "to_layer": str(u.target_layer)}
                for u in self.upward
            ],
            "unplaced": [{"module": u.module, "file": u.file} for u in self.unplaced],
        }


def strongly_connected(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit): the components, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> Iterator[str]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        return iter(sorted(graph.get(node, ())))

    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, visit(start))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    work.append((child, visit(child)))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def shortest_cycle(start: str, members: set[str], edges: dict[str, dict[str, Edge]]) -> tuple[Edge, ...]:
    """A shortest cycle from `start` back to it through `members` (breadth first, names in sorted order)."""
    came_by: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(edges.get(node, {})):
            if target not in members:
                continue
            if target == start:
                path = [edges[node][target]]
                while path[0].source != start:
                    path.insert(0, came_by[path[0].source])
                return tuple(path)
            if target not in came_by:
                came_by[target] = edges[node][target]
                queue.append(target)
    raise ValueError(f"{start} is on no cycle")  # cannot happen for a component of more than one module


def check(root: Path = DEFAULT_ROOT, layers: list[Layer] | Path = DEFAULT_LAYERS) -> Report:
    """The report for the package directory `root` against a layer table (a list, or a markdown file)."""
    if isinstance(layers, Path):
        layers = parse_layers(layers.read_text(encoding="utf-8"))
    modules = find_modules(root)
    all_edges = [edge for module in modules.values() for edge in imports_of(module, modules)]
    graph: dict[str, dict[str, Edge]] = {name: {} for name in modules}
    for edge in all_edges:  # in file and line order: the first import of a target stands for it
        graph[edge.source].setdefault(edge.target, edge)

    cycles = [
        Cycle(tuple(component), shortest_cycle(component[0], set(component), graph))
        for component in strongly_connected(graph)
        if len(component) > 1
    ]
    cycles.sort(key=lambda c: (-len(c.modules), c.modules))

    placed = {name: layer_of(name, layers) for name in modules}
    upward_edges = [
        edge
        for edge in all_edges
        if placed[edge.source] is not None
        and placed[edge.target] is not None
        and placed[edge.target].index > placed[edge.source].index
    ]
    # `from latbot.recipes import schema` passes latbot.recipes on the way: one problem, the module named
    statements: dict[tuple[str, int], set[str]] = {}
    for edge in upward_edges:
        statements.setdefault((edge.source, edge.line), set()).add(edge.target)
    upward = [
        Upward(edge, placed[edge.source], placed[edge.target])
        for edge in upward_edges
        if not any(other.startswith(edge.target + ".") for other in statements[edge.source, edge.line])
    ]
    unplaced = [Unplaced(name, modules[name].file) for name, layer in placed.items() if layer is None]
    return Report(len(modules), sum(len(targets) for targets in graph.values()), cycles, upward, unplaced)


# -- planted breaks: the check is itself checked -----------------------------------------------------------
# A small package with the same shape as latbot, clean by construction, and using every legitimate pattern
# the check must not flag: a package __init__ importing its submodules, a module importing names from its
# enclosing package, relative imports, a literal import_module of a lower layer, TYPE_CHECKING and
# function-level imports going down, optional libraries outside the package.
SYNTHETIC_LAYERS = """\
# A synthetic package for the planted-break test

## Layers

| layer | name | modules | what lives here |
|---|---|---|---|
| 0 | core | `latbot`, `latbot.errors`, `latbot.registry` | errors, plugin lookup |
| 1 | data | `latbot.data` | spaces, rotations, clips, mixtures |
| 2 | models | `latbot.models` | the LAM |
| 3 | recipes | `latbot.recipes` | the schema and the loader |
| 4 | runs | `latbot.runs` | run directories |
| 5 | stages | `latbot.stages` | the stage life cycle |
| 6 | apps | `latbot.viz`, `latbot.serve` | what uses trained models |
| 7 | front ends | `latbot.cli` | the command |
"""

SYNTHETIC_PACKAGE: dict[str, str] = {
    "latbot/__init__.py": '"""The root package: imports nothing."""\n\n__version__ = "0"\n',
    "latbot/errors.py": "class LatbotError(Exception):\n    pass\n",
    "latbot/registry.py": """\
        import importlib

        from latbot.errors import LatbotError


        def find(kind):
            module = importlib.import_module("latbot.errors")  # a literal import of a lower module
            if kind != "lam":
                raise LatbotError(kind)
            return module
        """,
    "latbot/data/__init__.py": """\
        # a package __init__ importing its own submodules
        from latbot.data.spaces import DIM

        from . import rotations

        __all__ = ["DIM", "rotations"]
        """,
    "latbot/data/spaces.py": """\
        from latbot.errors import LatbotError

        DIM = 7


        def check(n):
            if n != DIM:
                raise LatbotError(n)
        """,
    "latbot/data/rotations.py": "import math\n\n\ndef rotate(x):\n    return math.cos(x)\n",
    "latbot/data/clips.py": """\
        # a name from the enclosing package: an edge to latbot.data.spaces only, not to latbot.data
        from latbot.data import spaces

        from .. import errors
        from .rotations import rotate

        K_ACTIONS = "actions"
        USED = (spaces, errors, rotate)
        """,
    "latbot/data/mixture.py": 'from latbot.data.spaces import DIM\n\nWEIGHTS = {"dim": DIM}\n',
    "latbot/models/__init__.py": '"""Models are imported by name."""\n',
    "latbot/models/lam.py": """\
        from typing import TYPE_CHECKING

        from latbot import registry
        from latbot.data.spaces import DIM

        if TYPE_CHECKING:
            from latbot.data.clips import K_ACTIONS


        class LAM:
            dim = DIM

            def build(self):
                from latbot.errors import LatbotError  # a function-level import of a lower layer

                return registry.find("lam"), LatbotError
        """,
    "latbot/recipes/__init__.py": '"""Recipes."""\n',
    "latbot/recipes/schema.py": "from latbot.data.spaces import DIM\n\n\nclass Recipe:\n    dim = DIM\n",
    "latbot/recipes/loader.py": """\
        import json

        from .schema import Recipe


        def load(text):
            return Recipe(), json.loads(text)
        """,
    "latbot/runs.py": """\
        from latbot.errors import LatbotError
        from latbot.recipes.loader import load


        def open_run(path):
            if not path:
                raise LatbotError(path)
            return load("{}")
        """,
    "latbot/stages/__init__.py": 'from latbot.stages.base import Stage\n\n__all__ = ["Stage"]\n',
    "latbot/stages/base.py": """\
        from latbot.models.lam import LAM
        from latbot.registry import find
        from latbot.runs import open_run


        class Stage:
            def run(self, path):
                return open_run(path), LAM(), find("lam")
        """,
    "latbot/viz.py": """\
        from latbot.runs import open_run

        try:
            import rerun  # an optional library outside the package: no edge
        except ImportError:
            rerun = None


        def show(path):
            return open_run(path), rerun
        """,
    "latbot/serve.py": """\
        import importlib


        def start(path):
            return importlib.import_module("latbot.runs").open_run(path)
        """,
    "latbot/cli/__init__.py": """\
        def main():
            from latbot.cli import commands  # the package's own submodule

            return commands
        """,
    "latbot/cli/commands.py": """\
        def train(path):
            from latbot.stages import base

            return base.Stage().run(path)


        def viz(path):
            import latbot.viz as v

            return v.show(path)


        def serve(path):
            return __import__("latbot.serve").serve.start(path)
        """,
}


@dataclass(frozen=True)
class Plant:
    file: str  # relative to the package's parent directory: "latbot/data/clips.py"; created if missing
    code: str  # appended to the file's source


@dataclass(frozen=True)
class PlantedBreak:
    name: str
    kind: str  # the problem it must cause: "cycle", "upward" or "unplaced"
    plants: tuple[Plant, ...]
    also: tuple[str, ...] = ()  # what else it causes in the synthetic package (an upward edge closing a loop)

    @property
    def files(self) -> set[str]:
        return {plant.file for plant in self.plants}


def _break(name: str, kind: str, *plants: tuple[str, str], also: tuple[str, ...] = ()) -> PlantedBreak:
    return PlantedBreak(name, kind, tuple(Plant(file, textwrap.dedent(code)) for file, code in plants), also)


PLANTED_BREAKS: list[PlantedBreak] = [
    _break("top-level `import latbot.cli` in a core module", "upward",
           ("latbot/errors.py", "import latbot.cli\n"), also=("cycle",)),
    _break("function-level import of a recipe module in data", "upward",
           ("latbot/data/mixture.py", """\
            def _recipe():
                from latbot.recipes.schema import Recipe

                return Recipe
            """)),
    _break("`from latbot.stages.base import Stage` inside a method of a model", "upward",
           ("latbot/models/lam.py", """\
            class _Planted:
                def run(self):
                    from latbot.stages.base import Stage

                    return Stage
            """), also=("cycle",)),
    _break("relative import upward: `from ..runs import open_run` in data", "upward",
           ("latbot/data/clips.py", "from ..runs import open_run\n")),
    _break("`from latbot import runs` in a data module", "upward",
           ("latbot/data/clips.py", "from latbot import runs\n")),
    _break("under `if TYPE_CHECKING:` in a model", "upward",
           ("latbot/models/lam.py", """\
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from latbot.recipes.loader import load
            """)),
    _break("inside try/except ImportError", "upward",
           ("latbot/data/clips.py", """\
            try:
                import latbot.viz
            except ImportError:
                pass
            """)),
    _break("inside a class body in a core module", "upward",
           ("latbot/registry.py", "class _Planted:\n    from latbot.data import spaces\n")),
    _break('`importlib.import_module("latbot.viz")` in a model', "upward",
           ("latbot/models/lam.py", """\
            def _viz():
                import importlib

                return importlib.import_module("latbot.viz")
            """)),
    _break('`__import__("latbot.serve")` in data', "upward",
           ("latbot/data/mixture.py", 'SERVE = __import__("latbot.serve")\n')),
    _break('`import_module(".runs", package="latbot")`: relative, hidden', "upward",
           ("latbot/data/clips.py", 'import importlib\n\nRUNS = importlib.import_module(".runs", package="latbot")\n')),
    _break("deep inside a nested function under if/for in a model", "upward",
           ("latbot/models/lam.py", """\
            def _deep(flag):
                if flag:
                    for _ in range(1):
                        def inner():
                            from latbot.runs import open_run

                            return open_run

                        return inner
            """)),
    _break("`from latbot.cli import main`: a higher package's `__init__` from data", "upward",
           ("latbot/data/mixture.py", "from latbot.cli import main\n")),
    _break("alias form `import latbot.recipes.loader as L` in data", "upward",
           ("latbot/data/clips.py", "import latbot.recipes.loader as L\n")),
    _break("star import `from latbot.viz import *` in a model", "upward",
           ("latbot/models/lam.py", "from latbot.viz import *\n")),
    _break("a package `__init__` importing upward: `from ..serve import start`", "upward",
           ("latbot/data/__init__.py", "from ..serve import start\n"), also=("cycle",)),
    _break("same-layer 2-cycle: spaces <-> rotations, both ways planted", "cycle",
           ("latbot/data/spaces.py", "import latbot.data.rotations\n"),
           ("latbot/data/rotations.py", "from latbot.data import spaces\n")),
    _break("same-layer 3-cycle: spaces -> rotations -> mixture -> spaces", "cycle",
           ("latbot/data/spaces.py", "from . import rotations\n"),
           ("latbot/data/rotations.py", "from latbot.data.mixture import WEIGHTS\n")),
    _break("cycle across layers: data imports a stage that reaches back to data", "cycle",
           ("latbot/data/spaces.py", "from latbot.stages import base\n"), also=("upward",)),
    _break("the registry cycle: a core module importing a stage", "cycle",
           ("latbot/registry.py", "def _stages():\n    import latbot.stages.base\n"), also=("upward",)),
    _break("cycle through a package `__init__`: `from latbot.stages import Stage` in runs", "cycle",
           ("latbot/runs.py", "def _stage():\n    from latbot.stages import Stage\n\n    return Stage\n"),
           also=("upward",)),
    _break("new top-level module in no layer row", "unplaced",
           ("latbot/newthing.py", "from latbot import errors\n")),
    _break("look-alike name: `latbot.datasets` is not under `latbot.data`", "unplaced",
           ("latbot/datasets.py", '"""Not a data module."""\n')),
    _break("new subpackage: the root entry `latbot` matches only the root itself", "unplaced",
           ("latbot/extras/__init__.py", '"""Extras."""\n'),
           ("latbot/extras/tools.py", "from latbot.data import spaces\n")),
]  # fmt: skip


def write_synthetic(where: Path) -> tuple[Path, Path]:
    """Write the synthetic package and its layer table under `where`: (package directory, table file)."""
    for file, source in SYNTHETIC_PACKAGE.items():
        path = where / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    layers = where / "layers.md"
    layers.write_text(SYNTHETIC_LAYERS, encoding="utf-8")
    return where / "latbot", layers


def plant(where: Path, plants: Iterable[Plant]) -> None:
    """Append each plant's code to its file under `where` (the package's parent), checking it still parses."""
    for p in plants:
        path = where / p.file
        path.parent.mkdir(parents=True, exist_ok=True)
        source = path.read_text(encoding="utf-8") if path.exists() else ""
        source = (source if source.endswith("\n") or not source else source + "\n") + "\n" + p.code
        ast.parse(source, filename=p.file)  # a planted break must be an import, not a syntax error
        path.write_text(source, encoding="utf-8")


def caught(report: Report, planted: PlantedBreak) -> bool:
    """A problem of the expected kind whose message names a planted file."""
    return any(p.kind == planted.kind and p.files & planted.files for p in report.problems)


def run_planted(where: Path) -> list[tuple[PlantedBreak, Report]]:
    """Each break planted into its own fresh copy of the synthetic package under `where`."""
    results = []
    for n, planted in enumerate(PLANTED_BREAKS, 1):
        root, layers = write_synthetic(where / f"case{n:02d}")
        plant(root.parent, planted.plants)
        results.append((planted, check(root, layers)))
    return results


def planted_table(results: list[tuple[PlantedBreak, Report]]) -> str:
    """The markdown table of planted breaks, ending with "n/n caught"."""
    rows = ["| # | planted break | planted in | expected | reported | caught |", "|---|---|---|---|---|---|"]
    for n, (planted, report) in enumerate(results, 1):
        reported = ", ".join(sorted({p.kind for p in report.problems})) or "nothing"
        files = ", ".join(f"`{file}`" for file in sorted(planted.files))
        mark = "yes" if caught(report, planted) else "**no**"
        rows.append(f"| {n} | {planted.name} | {files} | {planted.kind} | {reported} | {mark} |")
    hits = sum(caught(report, planted) for planted, report in results)
    return "\n".join([*rows, "", f"{hits}/{len(results)} caught"])


# -- command line ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the package directory (default: latbot/)")
    parser.add_argument("--layers", type=Path, default=DEFAULT_LAYERS, help="markdown with a '## Layers' table")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--planted", action="store_true", help="print the planted-break table instead")
    args = parser.parse_args(argv)

    if args.planted:
        with tempfile.TemporaryDirectory(prefix="import-graph-") as tmp:
            results = run_planted(Path(tmp))
        print(planted_table(results))
        return 0 if all(caught(report, planted) for planted, report in results) else 1

    try:
        report = check(args.root, args.layers)
    except (OSError, ValueError, SyntaxError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
        print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
