"""The package's shape, enforced: phases import one way, libraries sit behind one module each.

cli -> pipeline -> {sources, kernel, build, board, release} -> config -> core; the phase
packages never import each other; the demo is a guest nothing imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "rk3576_build"
LAYER = {"core": 0, "config": 1, "sources": 2, "kernel": 2, "build": 2, "board": 2, "release": 2,
         "pipeline": 3, "cli": 4, "demo": 5}
PHASES = {name for name, level in LAYER.items() if level == 2}
# Each outside library behind its one module (or package).
EDGES = {
    "doit": ("rk3576_build/pipeline/", "rk3576_build/cli/"),
    "docker": ("rk3576_build/build/container.py",),
    "serial": ("rk3576_build/board/console.py",),
    "git": ("rk3576_build/kernel/tree.py",),
    "requests": ("rk3576_build/sources/http.py",),
    "urllib3": ("rk3576_build/sources/http.py",),
    "labgrid": ("rk3576_build/board/labgrid_place.py",),
    # core/oci.py is the registry edge; build/cache/backends.py until it switches to it
    "oras": ("rk3576_build/core/oci.py", "rk3576_build/build/cache/backends.py"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> list[tuple[str, ast.AST, bool]]:
    """(module imported, node, inside a function) for every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((alias.name, child, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (child.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                # `from package import submodule` imports the submodule; `from module import name`, the module
                out.extend((f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, child, in_function)
                           for alias in child.names)
            walk(child, nested)

    walk(tree, False)
    return out


MODULES = _modules()


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "rk3576_build" and parts[1] in LAYER else None


def test_every_module_lives_in_a_phase_package():
    loose = [name for name in _modules() if name.count(".") == 1 and _layer_of(name) is None]
    assert loose == [], f"modules outside the phase packages: {loose}"


def test_imports_run_one_way_and_phases_do_not_import_each_other():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        here = _layer_of(name)
        if here is None:
            continue
        for target, node, _ in _imports(name, path):
            there = _layer_of(target)
            if there is None or there == here or (target not in modules and target.rpartition(".")[0] not in modules):
                continue
            if LAYER[there] > LAYER[here] or (here in PHASES and there in PHASES):
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} {here} -> {there} ({target})")
    assert wrong == [], "imports against the rule:\n" + "\n".join(sorted(set(wrong)))


def test_each_outside_library_is_imported_by_its_one_module():
    wrong = []
    for name, path in _modules().items():
        rel = str(path.relative_to(REPO))
        for target, node, _ in _imports(name, path):
            top = target.split(".")[0]
            if top in EDGES and not rel.startswith(EDGES[top]):
                wrong.append(f"{rel}:{node.lineno} imports {top}")
    assert wrong == [], "\n".join(sorted(set(wrong)))


def test_function_local_imports_say_why():
    """Only lazy imports with a reason remain (fast --help, optional extras), each with a comment."""
    silent = []
    for name, path in _modules().items():
        lines = path.read_text().splitlines()
        for _target, node, in_function in _imports(name, path):
            if not in_function:
                continue
            here, row = lines[node.lineno - 1], node.lineno - 2
            while row >= 0 and lines[row].strip().startswith(("import ", "from ")):  # a block: its comment is above
                if "#" in lines[row]:
                    break
                row -= 1
            above = lines[row] if row >= 0 else ""
            if "#" not in here and not above.strip().startswith("#") and "#" not in above:
                silent.append(f"{path.relative_to(REPO)}:{node.lineno}: {here.strip()}")
    assert silent == [], "function-local imports without a reason:\n" + "\n".join(sorted(set(silent)))


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {name: {t for t, _, local in _imports(name, path) if t in modules and t != name and not local}
             for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, "import cycle: " + " -> ".join(trail + [name])
        state[name] = 1
        for dep in sorted(graph[name]):
            visit(dep, trail + [name])
        state[name] = 2

    for name in sorted(graph):
        visit(name, [])
